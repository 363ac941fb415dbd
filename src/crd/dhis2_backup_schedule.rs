//! `Dhis2BackupSchedule`: backups of one instance on a cron schedule in a time zone, with
//! retention applied after each success. The operator schedules itself (no CronJob).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup_common::{
    RetentionSpec, default_deadline_seconds, default_time_zone, default_true,
};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dhis2operator.io",
    version = "v1alpha1",
    kind = "Dhis2BackupSchedule",
    doc = "Regular backups of one DHIS2 instance, e.g. every night at 02:00 in the ministry's time zone. At each fire time the operator creates a Dhis2Backup, and after each success deletes the backups the retention rules no longer keep.",
    plural = "dhis2backupschedules",
    shortname = "d2schedule",
    category = "dhis2",
    namespaced,
    status = "Dhis2BackupScheduleStatus",
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.instanceRef"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Time Zone","type":"string","jsonPath":".spec.timeZone"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last Success","type":"date","jsonPath":".status.lastSuccessfulTime"}"#,
    printcolumn = r#"{"name":"Next Run","type":"string","jsonPath":".status.nextRunTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2BackupScheduleSpec {
    /// The `Dhis2Instance` (same namespace) to back up.
    #[schemars(length(min = 1, max = 63))]
    pub instance_ref: String,
    /// Minute hour day-of-month month day-of-week, e.g. `0 2 * * *` (02:00 every day).
    #[schemars(regex(pattern = r"^\S+ \S+ \S+ \S+ \S+$"))]
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. `Asia/Phnom_Penh` (default UTC).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Stops new backups; a running one finishes.
    #[serde(default)]
    pub suspend: bool,
    /// Applied to the instance's backups in the repository after each successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
    /// Completed `Dhis2Backup` objects kept (the backups themselves follow `retention`).
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 1000))]
    pub successful_backups_history_limit: u32,
    /// Failed `Dhis2Backup` objects kept.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 1000))]
    pub failed_backups_history_limit: u32,
    /// Include the file store volume (uploaded documents, images) in each backup.
    #[serde(default = "default_true")]
    pub include_file_store: bool,
    /// Also keep the data of analytics and resource tables (DHIS2 regenerates it).
    #[serde(default)]
    pub include_analytics: bool,
    /// A backup still running after this long is stopped and `Failed`.
    #[serde(default = "default_deadline_seconds")]
    #[schemars(range(min = 60))]
    pub deadline_seconds: i64,
    /// Re-read each backup from the repository after writing it (the backups' `spec.verify`).
    #[serde(default)]
    pub verify: bool,
}

fn default_successful_history() -> u32 {
    7
}

fn default_failed_history() -> u32 {
    3
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2BackupScheduleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The fire time of the newest backup this schedule created (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// When the newest of its backups completed successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
    /// The `Dhis2Backup` it created last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// The next fire time (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<String>,
    /// Outcome of the last retention run, e.g. `kept 7, deleted 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retention: Option<String>,
    /// `Ready` (schedule valid and running), `Suspended`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
