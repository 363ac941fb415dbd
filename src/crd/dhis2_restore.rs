//! `Dhis2Restore`: a backup restored into a new instance, or over an existing one with explicit
//! consent (and approval for production). DHIS2 is stopped during the restore, the database is
//! swapped atomically by the engine, DHIS2 started again and asked to regenerate analytics.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup_common::{RepositorySpec, default_deadline_seconds, default_true};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dhis2operator.io",
    version = "v1alpha1",
    kind = "Dhis2Restore",
    doc = "Puts a backup back: into a new DHIS2 instance, or over an existing one when its name is typed again in confirmOverwrite (and, for production, approvedBy names who agreed). The operator stops DHIS2, restores the database (keeping the one it replaces) and the file store, starts DHIS2 again and asks it to regenerate analytics.",
    plural = "dhis2restores",
    shortname = "d2restore",
    category = "dhis2",
    namespaced,
    status = "Dhis2RestoreStatus",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source.instance"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.instance"}"#,
    printcolumn = r#"{"name":"Backup ID","type":"string","jsonPath":".status.backupId"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2RestoreSpec {
    pub source: RestoreSource,
    pub target: RestoreTarget,
    /// Required to restore over an existing instance: its name, typed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_overwrite: Option<String>,
    /// Required (with `confirmOverwrite`) to restore over a `production` instance: who approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub approved_by: Option<String>,
    /// Ask DHIS2 to regenerate analytics tables after the restore (they are not in the backup).
    #[serde(default = "default_true")]
    pub regenerate_analytics: bool,
    /// Restore the file store as well (when the backup has one).
    #[serde(default = "default_true")]
    pub include_file_store: bool,
    /// Point-in-time recovery (a `cnpg` database with WAL archiving): the database as it was at
    /// this moment (RFC 3339, e.g. `2026-12-07T10:13:00+07:00`), replayed by CloudNativePG into
    /// a new cluster `<restore>-db`; the target instance is pointed at it and the database it
    /// used before is kept. Instead of `backupRef`/`backupId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<String>,
    /// A restore still running after this long is stopped and `Failed`.
    #[serde(default = "default_deadline_seconds")]
    #[schemars(range(min = 60))]
    pub deadline_seconds: i64,
    /// Restore without first checking that the database server has room for the restored
    /// database beside the current one (which is kept as `<database>__replaced_<time>`): for
    /// when the check's estimate is known to be wrong. The check reads a managed or cnpg
    /// database's `spec.storage.size`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_space_check: bool,
}

/// Which backup: of which instance, which one, from which repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// The instance the backup was made of (its name groups backups in the repository).
    #[schemars(length(min = 1, max = 63))]
    pub instance: String,
    /// A `Dhis2Backup` object (its backup id and repository are used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_ref: Option<String>,
    /// A backup id in the repository, or `latest` (the default when `backupRef` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The repository (default: the source instance's `spec.backup.repository`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositorySpec>,
}

/// Where to restore: an existing instance (with consent), or a new one created from the source
/// instance's spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// The `Dhis2Instance` restored into: an existing one (with `confirmOverwrite`), or the name
    /// of a new one.
    #[schemars(length(min = 1, max = 63))]
    pub instance: String,
    /// For a new instance: overrides of the source's spec. Without them the new instance gets
    /// its own managed database, no hostname, and the source's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_instance: Option<NewInstanceOverrides>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewInstanceOverrides {
    /// A `Dhis2Database` for the new instance (default: its own managed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_ref: Option<String>,
    /// Public host name of the new instance (default: none, no Ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `staging`, `production`, `training` or `other` (default: the source's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<super::dhis2_instance::Environment>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2RestoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `ScalingDown`, `Restoring`, `Starting`, `Completed`, `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub phase: Option<RestorePhase>,
    /// The backup restored: always a concrete id once the restore has started (`latest` is
    /// resolved while still Pending, before DHIS2 is stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The repository restored from (no credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The spec as it was when the restore started (its target, source and consent): the
    /// restore acts only on this. A spec changed afterwards is refused (condition
    /// `SpecChangeRefused`); create a new `Dhis2Restore` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_with: Option<Dhis2RestoreSpec>,
    /// The repository the backup is read from, as resolved when the restore started (a Secret's
    /// name, never credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repository: Option<RepositorySpec>,
    /// True when the operator created the target instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_created: Option<bool>,
    /// DHIS2 replicas before the restore, restored afterwards (kept here so an operator
    /// restart mid-restore still knows them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The database as it was before, kept by the engine as `<name>__replaced_<time>` (after a
    /// point-in-time recovery: the `Dhis2Database` the target used before, kept as it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_database: Option<String>,
    /// Whether the restored database was swapped in (true also when a later step failed: then
    /// the target holds the restored database, and `replacedDatabase` the one it had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_swapped: Option<bool>,
    /// Whether the file store was restored (false: the files are as they were before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_store_restored: Option<bool>,
    /// Point-in-time recovery: the new cnpg `Dhis2Database` the target now uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_database: Option<String>,
    /// `requested`, `not requested`, or why the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics_regeneration: Option<String>,
    /// What happened, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Where a restore is. Written to `status.phase` as its name; a name this operator does not know
/// (written by a newer one) reads as `Pending`, so an object is never unreadable for its phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(from = "String", into = "String")]
pub enum RestorePhase {
    /// Not started: waiting for consent, a backup, or a repository.
    #[default]
    Pending,
    /// Holding the target: DHIS2 is being stopped.
    ScalingDown,
    /// The engine's Job restores into the target's database.
    Restoring,
    /// DHIS2 is starting again on the restored database.
    Starting,
    Completed,
    Failed,
}

impl RestorePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RestorePhase::Pending => "Pending",
            RestorePhase::ScalingDown => "ScalingDown",
            RestorePhase::Restoring => "Restoring",
            RestorePhase::Starting => "Starting",
            RestorePhase::Completed => "Completed",
            RestorePhase::Failed => "Failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, RestorePhase::Completed | RestorePhase::Failed)
    }
}

impl From<String> for RestorePhase {
    fn from(name: String) -> Self {
        match name.as_str() {
            "ScalingDown" => RestorePhase::ScalingDown,
            "Restoring" => RestorePhase::Restoring,
            "Starting" => RestorePhase::Starting,
            "Completed" => RestorePhase::Completed,
            "Failed" => RestorePhase::Failed,
            _ => RestorePhase::Pending,
        }
    }
}

impl From<RestorePhase> for String {
    fn from(phase: RestorePhase) -> Self {
        phase.as_str().to_string()
    }
}

impl std::fmt::Display for RestorePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_is_written_as_its_name_and_an_unknown_name_reads_as_pending() {
        for phase in [
            RestorePhase::Pending,
            RestorePhase::ScalingDown,
            RestorePhase::Restoring,
            RestorePhase::Starting,
            RestorePhase::Completed,
            RestorePhase::Failed,
        ] {
            let json = serde_json::to_value(phase).unwrap();
            assert_eq!(json, serde_json::json!(phase.as_str()));
            assert_eq!(serde_json::from_value::<RestorePhase>(json).unwrap(), phase);
        }
        let status: Dhis2RestoreStatus =
            serde_json::from_value(serde_json::json!({"phase": "Verifying"})).unwrap();
        assert_eq!(status.phase, Some(RestorePhase::Pending));
    }
}
