//! Types shared by the backup resources: where backups are kept, how long, and when they run.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A backup repository: an S3-compatible bucket, or a directory on a volume claim. Exactly one of
/// `s3` and `volume`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3RepositorySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeRepositorySpec>,
    /// Encrypt every backup in the Job, before anything leaves the pod (age). Without it, whoever
    /// reads the bucket or volume reads the health data and dhis.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
}

/// Client-side age encryption of every object of a backup (database, file store, dhis.conf).
/// Either public keys (`recipients`; restoring needs a private key, so the backup Jobs cannot
/// read old backups) or a passphrase (`passphraseSecretRef`; one secret does both).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// age public keys (`age1…`, printed by `age-keygen -y key.txt`) every backup is encrypted
    /// to. Public keys only: never put a private key (`AGE-SECRET-KEY-1…`) here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Secret holding an age identity (private key) under the key `identity`, mounted only into
    /// restore and drill Jobs. Needed to restore or drill encrypted backups; keep it out of the
    /// cluster until then if you can (create it when you need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret_ref: Option<String>,
    /// Passphrase mode instead of `recipients`: Secret holding the passphrase under the key
    /// `passphrase`, used to encrypt backups and to restore them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_secret_ref: Option<String>,
}

/// S3 Object Lock on every object of every backup: the store refuses to delete or overwrite
/// them before the date, whoever asks (ransomware included). The bucket needs versioning and
/// object lock enabled.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectLockSpec {
    /// Days each backup stays locked, counted from its start.
    #[schemars(range(min = 1, max = 3650))]
    pub days: u32,
    /// `Governance` (default: an administrator with s3:BypassGovernanceRetention can still lift
    /// it) or `Compliance` (nobody can, not even the account's root user, until the date).
    #[serde(default)]
    pub mode: ObjectLockMode,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ObjectLockMode {
    #[default]
    Governance,
    Compliance,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3RepositorySpec {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix inside the bucket, e.g. `hmis/production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Endpoint of an S3-compatible store (MinIO, SeaweedFS, Ceph), e.g. `https://s3.moh.gov.kh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket's region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style addressing (default: on with a custom endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Secret with `accessKey` and `secretKey`.
    pub credentials_secret_ref: String,
    /// Make every backup immutable for a number of days (S3 Object Lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLockSpec>,
}

/// A directory on a PersistentVolumeClaim (e.g. an NFS share on another server).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRepositorySpec {
    /// The PersistentVolumeClaim (same namespace).
    pub claim_name: String,
    /// Directory inside the volume (default: its root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Which backups to keep (restic's `forget` semantics; the newest backup is always kept).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep the newest N backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N days that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
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
