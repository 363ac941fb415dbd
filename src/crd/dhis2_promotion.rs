//! `Dhis2Promotion`: take the DHIS2 version a staging instance has proven to a production
//! instance, once every gate passes; production then upgrades with its own checks, verified
//! pre-upgrade backup and rollback.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dhis2operator.io",
    version = "v1alpha1",
    kind = "Dhis2Promotion",
    doc = "Takes the DHIS2 version a staging instance has proven to a production instance. The operator checks the gates (staging is Ready, has run the version long enough and passed a restore drill since; production has a recent backup; someone approved) and only then sets production's version; production then upgrades with its own checks, backup and rollback.",
    plural = "dhis2promotions",
    shortname = "d2promo",
    category = "dhis2",
    namespaced,
    status = "Dhis2PromotionStatus",
    printcolumn = r#"{"name":"From","type":"string","jsonPath":".spec.from"}"#,
    printcolumn = r#"{"name":"To","type":"string","jsonPath":".spec.to"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2PromotionSpec {
    /// The staging `Dhis2Instance` that proved the version.
    #[schemars(length(min = 1, max = 63))]
    pub from: String,
    /// The namespace of `from` (default: this promotion's). The operator only reads staging's
    /// status there; an operator installed for one namespace needs `get` on `dhis2instances` in
    /// it (a Role and RoleBinding for its ServiceAccount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub from_namespace: Option<String>,
    /// The production `Dhis2Instance` to upgrade.
    #[schemars(length(min = 1, max = 63))]
    pub to: String,
    /// The version to promote (default: the version staging runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How long staging must have run the version, e.g. `72h`, `3d`, `30m`.
    #[serde(default = "default_min_soak")]
    pub min_soak: String,
    /// How old production's newest backup may be, e.g. `26h`.
    #[serde(default = "default_max_backup_age")]
    pub max_backup_age: String,
    /// Who approved taking the version to production (recorded on production's upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

pub fn default_min_soak() -> String {
    "72h".into()
}

pub fn default_max_backup_age() -> String {
    "26h".into()
}

/// One gate and what it found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionGate {
    /// `StagingReady`, `Soaked`, `StagingDrillPassed`, `ProductionBackupFresh`, `Approved`.
    pub name: String,
    pub passed: bool,
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2PromotionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Blocked` (a gate has not passed), `Upgrading`, `Succeeded`, `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The version promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub gates: Vec<PromotionGate>,
    /// When production's version was set (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Production's pre-upgrade backup id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
