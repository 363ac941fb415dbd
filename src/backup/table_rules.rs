//! Which tables' *data* a DHIS2 backup skips. DHIS2 regenerates analytics tables (the bare
//! `analytics` parent and `analytics_*`, with their event, enrollment, temp and `analytics_rs_*`
//! variants) and resource tables (`_*`), so their rows are dead weight in a backup; their
//! definitions are always kept. Metadata tables whose names merely begin with "analytics"
//! (`analyticstablehook`, `analyticsperiodboundary`) are configuration and are kept whole.
//!
//! Inheritance children (`analytics_2024` under `analytics`, `analytics_event_<uid>_2024`, …) are
//! matched by their own names, never through their parent: `pg_dump --exclude-table-data` of a
//! parent still dumps its children's rows, and row counts are taken per table (`ONLY`).
//!
//! `_deprecated_*` tables (pre-2.41 `_*` resource tables that later migrations rename out of the
//! way) are skipped like every `_*` table: DHIS2 reads its resource tables as `analytics_rs_*` from
//! 2.41 on, never reads or refills the renamed ones, and their rows are derived from metadata the
//! backup keeps; after a restore they exist, empty, until DHIS2 drops them.

use serde::{Deserialize, Serialize};

/// A table as the backup sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: &str, name: &str) -> Self {
        Self {
            schema: schema.to_string(),
            name: name.to_string(),
        }
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// A `pg_dump` table pattern matching exactly this table: inside double quotes, `*`, `?` and
    /// `.` are literal.
    pub fn exact_pg_dump_pattern(&self) -> String {
        format!(
            "\"{}\".\"{}\"",
            self.schema.replace('"', "\"\""),
            self.name.replace('"', "\"\"")
        )
    }
}

/// True when DHIS2 regenerates this table's rows, so a backup may skip them.
pub fn is_regenerated_by_dhis2(table: &TableName) -> bool {
    table.schema == "public"
        && (table.name == "analytics"
            || table.name.starts_with("analytics_")
            || table.name.starts_with('_'))
}

/// The tables whose data the backup skips, in the order given.
pub fn tables_with_skipped_data(tables: &[TableName], include_analytics: bool) -> Vec<TableName> {
    if include_analytics {
        return Vec::new();
    }
    tables
        .iter()
        .filter(|t| is_regenerated_by_dhis2(t))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(name: &str) -> bool {
        is_regenerated_by_dhis2(&TableName::new("public", name))
    }

    #[test]
    fn analytics_and_resource_tables_are_regenerated() {
        for name in [
            "analytics_2024",
            "analytics_temp_2024",
            "analytics_event_eBAyeGv0exc",
            "analytics_enrollment_ur1edk5oe2n",
            "analytics_ownership_ur1edk5oe2n",
            "analytics_rs_orgunitstructure",
            "_orgunitstructure",
            "_periodstructure",
            "_dataelementgroupsetstructure",
        ] {
            assert!(skipped(name), "{name} should be skipped");
        }
    }

    #[test]
    fn the_bare_analytics_parent_is_regenerated() {
        // DHIS2 2.41+ builds `analytics` as an UNLOGGED parent with yearly INHERITS children.
        assert!(skipped("analytics"));
    }

    #[test]
    fn inheritance_children_are_matched_by_their_own_names() {
        // `pg_dump --exclude-table-data` of a parent leaves its children's rows in the dump, and
        // row counts are per table (`ONLY`): each child must be matched by itself.
        for name in [
            "analytics_2024",
            "analytics_2025",
            "analytics_event_malcaseinv1",
            "analytics_event_malcaseinv1_2024",
            "analytics_event_malcaseinv1_2025",
            "analytics_enrollment_ur1edk5oe2n_2024",
        ] {
            assert!(skipped(name), "{name} should be skipped");
        }
    }

    #[test]
    fn deprecated_resource_tables_are_skipped() {
        for name in [
            "_deprecated_orgunitstructure",
            "_deprecated_periodstructure",
        ] {
            assert!(skipped(name), "{name} should be skipped");
        }
    }

    #[test]
    fn metadata_and_health_data_are_kept() {
        for name in [
            "analyticstablehook",
            "analyticsperiodboundary",
            "datavalue",
            "datavalueaudit",
            "organisationunit",
            "flyway_schema_history",
            "trackedentity_analytics_x",
            "analyticsx",
            "analytic",
        ] {
            assert!(!skipped(name), "{name} must be kept whole");
        }
    }

    #[test]
    fn only_the_public_schema_follows_dhis2_naming() {
        assert!(!is_regenerated_by_dhis2(&TableName::new(
            "audit",
            "analytics_2024"
        )));
    }

    #[test]
    fn include_analytics_skips_nothing() {
        let tables = vec![
            TableName::new("public", "analytics_2024"),
            TableName::new("public", "datavalue"),
        ];
        assert_eq!(tables_with_skipped_data(&tables, true), vec![]);
        assert_eq!(
            tables_with_skipped_data(&tables, false),
            vec![TableName::new("public", "analytics_2024")]
        );
    }

    #[test]
    fn pg_dump_patterns_are_literal() {
        assert_eq!(
            TableName::new("public", "_a*b.c\"d").exact_pg_dump_pattern(),
            "\"public\".\"_a*b.c\"\"d\""
        );
    }
}
