//! `Dhis2Drill`: proof that a backup restores. The latest (or a named) backup is restored into a
//! throw-away PostGIS pod, checked by the engine, and everything created is deleted; the report
//! (RPO, RTO, checks) stays in status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup_common::{RepositorySpec, RunPhase, default_deadline_seconds};

/// The throw-away server's image: the newest PostgreSQL restores dumps of every older one.
pub const DEFAULT_DRILL_POSTGIS_IMAGE: &str = "postgis/postgis:16-3.4";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dhis2operator.io",
    version = "v1alpha1",
    kind = "Dhis2Drill",
    doc = "A restore drill: proof that an instance's backup can be restored. The operator restores the backup into a throw-away PostgreSQL server, checks the data, records how long it took (RTO) and how old the data was (RPO), then deletes everything it created. Live DHIS2 is not touched.",
    plural = "dhis2drills",
    shortname = "d2drill",
    category = "dhis2",
    namespaced,
    status = "Dhis2DrillStatus",
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.instanceRef"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Passed","type":"boolean","jsonPath":".status.passed"}"#,
    printcolumn = r#"{"name":"RTO","type":"string","jsonPath":".status.rto"}"#,
    printcolumn = r#"{"name":"RPO","type":"string","jsonPath":".status.rpo"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2DrillSpec {
    /// The `Dhis2Instance` (same namespace) whose backup is drilled.
    #[schemars(length(min = 1, max = 63))]
    pub instance_ref: String,
    /// Backup id, or `latest` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The repository (default: the instance's `spec.backup.repository`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositorySpec>,
    /// Image of the throw-away PostGIS server (default postgis/postgis:16-3.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgis_image: Option<String>,
    /// A drill still running after this long is stopped and `Failed`.
    #[serde(default = "default_deadline_seconds")]
    #[schemars(range(min = 60))]
    pub deadline_seconds: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2DrillStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Did the backup restore and pass every check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    /// Recovery point: how old the restored data was (since the backup started), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<i64>,
    /// Recovery time: restore and checks, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// Human-readable RPO and RTO, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<String>,
    /// What failed (checks that did not pass, or why the drill could not run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// True once the throw-away server, its volume and the Job are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaned_up: Option<bool>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
