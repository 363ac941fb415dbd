//! How a `Dhis2Instance` is upgraded when its `spec.version` changes, and what the operator
//! records of it: the upgrade in progress (a state machine a restarted operator resumes) and the
//! last upgrades (`dhis2ctl history`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec.upgrade`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// `Automatic` (default): a new `spec.version` is upgraded to at once. `Manual`: the upgrade
    /// waits until `approvedBy` is set and `approvedVersion` names the new version.
    #[serde(default)]
    pub policy: UpgradePolicy,
    /// Who approved the upgrade to `approvedVersion` (recorded in the upgrade's history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The version `approvedBy` approved; an approval never carries over to a later version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_version: Option<String>,
    /// How long DHIS2 may take to migrate the database and answer with the new version before
    /// the upgrade is rolled back (Flyway can run for hours on a national database).
    #[serde(default = "default_upgrade_timeout_seconds")]
    #[schemars(range(min = 300))]
    pub timeout_seconds: i64,
    /// Keep DHIS2 readable while the new version migrates: the previous version serves users
    /// read-only (`system.read_only_mode = on`) from a copy restored from the pre-upgrade backup,
    /// and the instance's Service points to it until the upgrade succeeds or is rolled back. The
    /// pre-upgrade backup then includes analytics tables, so dashboards keep working; the copy
    /// needs room for a second database on the same server and its own file store.
    #[serde(default)]
    pub read_only_during_upgrade: bool,
}

impl Default for UpgradeSpec {
    /// What an instance without `spec.upgrade` gets: automatic, a two-hour migration limit.
    fn default() -> Self {
        Self {
            policy: UpgradePolicy::default(),
            approved_by: None,
            approved_version: None,
            timeout_seconds: default_upgrade_timeout_seconds(),
            read_only_during_upgrade: false,
        }
    }
}

pub fn default_upgrade_timeout_seconds() -> i64 {
    2 * 3600
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpgradePolicy {
    #[default]
    Automatic,
    Manual,
}

/// Where an upgrade is. The order is the order of the steps:
/// Checking → Stopping → BackingUp → Preparing → Migrating → (done), or RollingBack → Failed;
/// Refused and Failed stay until `spec.version` changes again.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpgradePhase {
    /// The version, the database and the policy are checked; DHIS2 still runs.
    Checking,
    /// The manual policy waits for `spec.upgrade.approvedBy`/`approvedVersion`; DHIS2 still runs.
    AwaitingApproval,
    /// DHIS2 is stopped (two versions never run against one database; nothing is written after
    /// the backup).
    Stopping,
    /// The pre-upgrade `Dhis2Backup` runs.
    BackingUp,
    /// Materialized SQL views are dropped, as DHIS2's upgrade guide asks.
    Preparing,
    /// The new version runs with one replica while Flyway migrates the database.
    Migrating,
    /// The pre-upgrade backup is being restored and the previous version started.
    RollingBack,
    /// Not started: the checks blocked it. DHIS2 runs the previous version, untouched.
    Refused,
    /// Ended without the new version; `outcome` says how (rolled back, backup failed, …).
    Failed,
}

impl UpgradePhase {
    /// Refused and Failed wait for a new `spec.version`; the rest move on by themselves.
    pub fn is_finished(self) -> bool {
        matches!(self, UpgradePhase::Refused | UpgradePhase::Failed)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpgradeOutcome {
    /// DHIS2 runs the new version.
    Succeeded,
    /// The checks refused it; nothing was changed.
    Refused,
    /// The pre-upgrade backup failed; DHIS2 was started again on the untouched database.
    BackupFailed,
    /// The migration failed or timed out; the pre-upgrade backup was restored and the previous
    /// version runs again.
    RolledBack,
    /// The rollback's restore failed: DHIS2 is left stopped (the database may be half-migrated).
    RollbackFailed,
    /// `spec.version` changed before the database was touched.
    Cancelled,
    /// A step before the database was touched did not end within its deadline (DHIS2 did not
    /// stop); DHIS2 was started again on the untouched database.
    TimedOut,
}

/// `status.upgrade`: the upgrade in progress, or the last one that failed or was refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    pub phase: UpgradePhase,
    pub from_version: String,
    pub to_version: String,
    /// The image the previous version ran (started again on rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    /// The image of the new version.
    pub to_image: String,
    /// RFC 3339.
    pub started_at: String,
    /// When the phase began (RFC 3339): timeouts count from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<String>,
    /// The pre-upgrade `Dhis2Backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// Its backup id in the repository: the way back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The `Dhis2Restore` that rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_name: Option<String>,
    /// Materialized SQL views dropped before the migration (DHIS2 recreates them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_views: Vec<String>,
    /// Checks that warned (they do not stop the upgrade).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Set once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<UpgradeOutcome>,
    /// Why it is rolling back, failed or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// When the new version first answered users while it migrated (RFC 3339): anything written
    /// to it since is not in the pre-upgrade backup, and a rollback keeps it only in the replaced
    /// database the restore leaves beside the restored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_version_answered_at: Option<String>,
    /// After a failed rollback: what lets DHIS2 run again (a `Dhis2Restore` that restored the
    /// database since, or the `dhis2operator.io/accept-migrated-database` annotation). Until
    /// then DHIS2 stays stopped, whatever `spec.version` says: its database may be half-migrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_by: Option<String>,
    /// What is happening or why it ended, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One finished upgrade in `status.upgradeHistory` (newest first, the last ten).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRecord {
    pub from_version: String,
    pub to_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: UpgradeOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How many finished upgrades `status.upgradeHistory` keeps.
pub const UPGRADE_HISTORY_LIMIT: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_without_spec_upgrade_gets_two_hours_like_one_with_an_empty_one() {
        let empty: UpgradeSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, UpgradeSpec::default());
        assert_eq!(UpgradeSpec::default().timeout_seconds, 7200);
    }
}
