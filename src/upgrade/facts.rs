//! What the upgrade check knows about a database, read by `preflight` (or built by hand in
//! tests and by the operator): plain data, no I/O.

use serde::Serialize;

use super::version::Dhis2Version;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseFacts {
    /// `server_version_num`, e.g. 150018 for PostgreSQL 15.18.
    pub server_version_num: u32,
    /// One entry per extension DHIS2 needs.
    pub extensions: Vec<ExtensionFact>,
    /// Highest successful version in `flyway_schema_history` (`None`: no history).
    pub schema_version: Option<Dhis2Version>,
    /// Flyway migrations recorded as failed (`2.43.45 add enrollment categoryoptioncombo`).
    pub failed_migrations: Vec<String>,
    /// The category option combos named `default` (`None`: the table does not exist).
    pub default_category_option_combos: Option<DefaultCategoryOptionCombos>,
    /// Single events (programs without registration) with no occurred date (`None`: the
    /// database has no such table any more, e.g. already on 2.43).
    pub single_events_without_occurred_date: Option<i64>,
    /// Data elements and tracked entity attributes of the value type `TRACKER_ASSOCIATE`
    /// (`None`: the tables do not exist).
    pub tracker_associate_value_types: Option<FoundRows>,
}

/// Rows a check found: how many, and the first few described.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FoundRows {
    pub count: i64,
    pub listed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionFact {
    pub name: String,
    /// The version installed in this database.
    pub installed_version: Option<String>,
    /// The version the server could install (its packages), if any.
    pub available_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultCategoryOptionCombos {
    pub count: i64,
    /// One of them has DHIS2's canonical default uid `HllvX50cXC0`.
    pub canonical_present: bool,
    /// The first few of them, by id.
    pub listed: Vec<CategoryOptionComboRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CategoryOptionComboRow {
    pub id: i64,
    pub uid: String,
    pub name: String,
}

impl DatabaseFacts {
    pub fn extension(&self, name: &str) -> Option<&ExtensionFact> {
        self.extensions.iter().find(|e| e.name == name)
    }
}
