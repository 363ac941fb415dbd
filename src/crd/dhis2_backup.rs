//! `Dhis2Backup`: one backup of one instance, made by the engine (`dhis2ctl backup run`) in a Job.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup_common::{
    RepositorySpec, RetentionSpec, RunPhase, default_deadline_seconds, default_true,
};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dhis2operator.io",
    version = "v1alpha1",
    kind = "Dhis2Backup",
    doc = "One backup of one DHIS2 instance: its database, and its file store unless left out. The operator runs it in a Job that writes it to the backup repository (an S3 bucket or a volume), then applies retention if asked; status tells whether it completed, its id and size, or why it failed.",
    plural = "dhis2backups",
    shortname = "d2backup",
    category = "dhis2",
    namespaced,
    status = "Dhis2BackupStatus",
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.instanceRef"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Backup ID","type":"string","jsonPath":".status.backupId","priority":1}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.size"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2BackupSpec {
    /// The `Dhis2Instance` (same namespace) to back up.
    #[schemars(length(min = 1, max = 63))]
    pub instance_ref: String,
    /// Include the file store volume (uploaded documents, images).
    #[serde(default = "default_true")]
    pub include_file_store: bool,
    /// Also keep the data of analytics and resource tables (DHIS2 regenerates it).
    #[serde(default)]
    pub include_analytics: bool,
    /// Where to store it (default: the instance's `spec.backup.repository`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositorySpec>,
    /// Retention applied to the instance's backups in the repository once this one succeeded
    /// (a schedule sets it from its own `retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
    /// IANA time zone for retention's days, weeks and months (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_time_zone: Option<String>,
    /// A backup still running after this long is stopped and `Failed`.
    #[serde(default = "default_deadline_seconds")]
    #[schemars(range(min = 60))]
    pub deadline_seconds: i64,
    /// Re-read the whole backup from the repository after writing it, and check every object's
    /// size and SHA-256 (`dhis2ctl backup run --verify`); the backup fails when it does not match.
    /// `status.verified` says it was done.
    #[serde(default)]
    pub verify: bool,
    /// Why it is taken: `Routine` (default); `BeforeRestore` keeps what is there just before a
    /// restore (the disaster-recovery runbook's "keep what is there now", possibly the damaged
    /// data: a restore or drill of `latest` never picks it); `PreUpgrade`, the way back from an
    /// upgrade (the operator sets it; retention keeps the two newest whatever their age).
    #[serde(default, skip_serializing_if = "BackupPurpose::is_routine")]
    pub purpose: BackupPurpose,
}

/// Why a backup is taken (`spec.purpose`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupPurpose {
    #[default]
    Routine,
    BeforeRestore,
    PreUpgrade,
}

impl BackupPurpose {
    pub fn is_routine(&self) -> bool {
        *self == BackupPurpose::Routine
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    /// The engine's backup id in the repository (`dhis2ctl backup list` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The repository, e.g. `s3://bucket/prefix` (no credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The Job that runs (ran) the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Human-readable size, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// DHIS2 schema version of the database (Flyway), e.g. `2.42.38`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhis2_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<String>,
    /// Outcome of retention after this backup, e.g. `kept 7, deleted 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// True when the backup is age-encrypted (restoring needs the identity or passphrase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// Until when S3 Object Lock keeps every object of the backup (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
    /// True when the whole backup was re-read from the repository after writing and matched
    /// (`spec.verify`); absent when it was not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Why it failed, in one line a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
