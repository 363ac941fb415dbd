//! Types shared by the backup resources: where backups are kept, how long, and when they run.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A backup repository: an S3-compatible bucket, or a directory on a volume claim. Exactly one of
/// `s3` and `volume`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3RepositorySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeRepositorySpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3RepositorySpec {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix inside the bucket, e.g. `hmis/production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Endpoint of an S3-compatible store (MinIO, SeaweedFS, Ceph), e.g. `https://s3.moh.gov.kh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style addressing (default: on with a custom endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Secret with `accessKey` and `secretKey`.
    pub credentials_secret_ref: String,
}

/// A directory on a PersistentVolumeClaim (e.g. an NFS share on another server).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRepositorySpec {
    pub claim_name: String,
    /// Directory inside the volume (default: its root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Which backups to keep (restic's `forget` semantics; the newest backup is always kept).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_monthly: Option<u32>,
}

/// A 5-field cron schedule in an IANA time zone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Minute hour day-of-month month day-of-week, e.g. `0 2 * * *` (02:00 every day).
    #[schemars(regex(pattern = r"^\S+ \S+ \S+ \S+ \S+$"))]
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. `Asia/Phnom_Penh` (default UTC). Daylight saving
    /// changes are followed: a time skipped by the change runs once, at the first valid instant.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Stops new runs; a running one finishes.
    #[serde(default)]
    pub suspend: bool,
}

pub fn default_time_zone() -> String {
    "UTC".into()
}

pub fn default_true() -> bool {
    true
}

/// Phase of a backup, restore or drill.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunPhase {
    Pending,
    Running,
    Completed,
    Failed,
}

impl RunPhase {
    pub fn is_finished(self) -> bool {
        matches!(self, RunPhase::Completed | RunPhase::Failed)
    }
}

/// The default deadline of a backup, restore or drill Job: long enough for a national database,
/// short enough that a hung one is noticed the same day.
pub const DEFAULT_DEADLINE_SECONDS: i64 = 6 * 3600;
pub fn default_deadline_seconds() -> i64 {
    DEFAULT_DEADLINE_SECONDS
}
