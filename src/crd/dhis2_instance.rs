//! `Dhis2Instance`: one DHIS2 (the `dhis2/core` image on Tomcat) with its dhis.conf, file store,
//! Service and Ingress, over a `Dhis2Database`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup_common::{RepositorySpec, ScheduleSpec};
use super::common::{DeletionPolicy, Resources, VolumeSpec};
use super::upgrade::{UpgradeRecord, UpgradeSpec, UpgradeStatus};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dhis2operator.io",
    version = "v1alpha1",
    kind = "Dhis2Instance",
    doc = "One DHIS2 server: the version to run, its environment, database, file store, public host name and backup settings. The operator runs DHIS2 (Deployment, dhis.conf, Service, Ingress), checks that it answers, and carries out version upgrades with a backup first and a rollback when they fail.",
    plural = "dhis2instances",
    shortname = "d2",
    shortname = "dhis2",
    category = "dhis2",
    namespaced,
    status = "Dhis2InstanceStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".spec.environment"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"date","jsonPath":".status.backup.lastBackupTime"}"#,
    printcolumn = r#"{"name":"Drill","type":"string","jsonPath":".status.backup.lastDrillResult"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2InstanceSpec {
    /// DHIS2 version, e.g. `2.41.3` (or `41.3.0`); selects the `dhis2/core` image tag.
    #[schemars(regex(pattern = r"^(2\.)?[0-9]{2}\.[0-9]+(\.[0-9]+)?$"))]
    pub version: String,
    /// Image override (e.g. an immutable `dhis2/core:41.3.0-<timestamp>` tag or a mirror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `staging`, `production`, `training` or `other`. Labels the instance's metrics and alerts;
    /// a `production` instance is never refreshed, and a restore over it needs `approvedBy`.
    pub environment: Environment,
    /// DHIS2 replicas; more than one needs `redis` (DHIS2 clusters require it).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 20))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// A `Dhis2Database` in the same namespace; when absent the instance gets its own managed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_ref: Option<String>,
    /// Volume of the dedicated managed database (when `databaseRef` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_storage: Option<VolumeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_store: Option<FileStore>,
    /// Public host name: sets server.base.url and an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The Ingress made for `hostname`: its class, TLS Secret and annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Extra dhis.conf keys (the operator's own keys win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dhis_conf: BTreeMap<String, String>,
    /// JVM options (JAVA_OPTS); the operator's defaults size the heap from the memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jvm_options: Option<String>,
    /// Redis, required by DHIS2 for more than one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// Secret with `username`/`password` of a DHIS2 account the operator uses for
    /// /api/system/info (non-superusers get a stripped answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret_ref: Option<String>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Days a database that a restore replaced (`<database>__replaced_<time>`: what the instance
    /// held before the restore, and after an upgrade's rollback what users wrote to the failed
    /// new version) stays on the database server before the operator drops it to give its room
    /// back.
    #[serde(default = "default_keep_replaced_databases_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub keep_replaced_databases_days: u32,
    /// Backup defaults for this instance: the repository every backup, schedule, restore and
    /// drill of it uses unless they name another, and the restore-drill schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<InstanceBackupSpec>,
    /// How a change of `spec.version` is carried out: checks, a pre-upgrade backup, the
    /// migration with a time limit, and a rollback by restore when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceBackupSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositorySpec>,
    /// Restore drills on a schedule, e.g. `{schedule: "0 3 * * 0", timeZone: Asia/Phnom_Penh}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<ScheduleSpec>,
}

fn default_replicas() -> i32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Staging,
    Production,
    Training,
    Other,
}

/// Where DHIS2 keeps uploaded files: a volume (filesystem provider) or S3.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileStore {
    /// A volume the operator claims for the files (the default when `s3` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSpec>,
    /// An S3-compatible bucket instead of the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3FileStore>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3FileStore {
    /// Bucket holding DHIS2's uploaded files.
    pub bucket: String,
    /// Endpoint of an S3-compatible store (default: AWS S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Secret with `accessKey` and `secretKey`.
    pub credentials_secret_ref: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// IngressClass, e.g. `nginx` (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// TLS Secret for the hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Annotations of the Ingress, e.g. for cert-manager or the ingress controller.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Redis host name.
    pub host: String,
    /// Redis port (default 6379).
    #[serde(default = "default_redis_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Secret with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<String>,
    /// Connect to Redis over TLS.
    #[serde(default)]
    pub ssl: bool,
}

fn default_redis_port() -> i32 {
    6379
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2InstanceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Provisioning, Migrating, Ready, Degraded or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Ready`, `Progressing`, `Degraded`, `DatabaseReady`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The version DHIS2 itself reports (/api/system/info → version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// /api/system/info → revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Outcome of the last health probe, e.g. `pong`, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_health_check: Option<String>,
    /// URL DHIS2 answers on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Backups and drills of this instance, summarised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<InstanceBackupStatus>,
    /// The DHIS2 version the operator runs (the image's); differs from `spec.version` while an
    /// upgrade is in progress, refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_version: Option<String>,
    /// The image the operator runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_image: Option<String>,
    /// The upgrade in progress, or the last one that was refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// Finished upgrades, newest first (the last ten).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrade_history: Vec<UpgradeRecord>,
    /// The read-only copy serving users while an upgrade migrates the database
    /// (`spec.upgrade.readOnlyDuringUpgrade`), until it is removed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_copy: Option<ReadOnlyCopyStatus>,
}

/// `status.readOnlyCopy`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadOnlyCopyStatus {
    /// The `Dhis2Instance` running the previous version read-only.
    pub instance: String,
    /// Its database, on the instance's database server (dropped when the copy is removed).
    pub database: String,
    /// True while the instance's Service sends users to the copy.
    #[serde(default)]
    pub serving: bool,
    /// What the copy is doing, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the copy could not be made or restored, and what to do; the upgrade goes on without
    /// it (users wait for the new version) and the copy is not tried again in this upgrade.
    /// Written as null when there is none, so that the status merge patch clears it.
    #[serde(default)]
    pub failure: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceBackupStatus {
    /// Completion time of the newest successful backup (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_size: Option<String>,
    /// Completion time of the newest finished drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill_time: Option<String>,
    /// `Passed` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill_result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill_rto_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill_rpo_seconds: Option<i64>,
    /// The earliest next run of this instance's backup schedules (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_backup_time: Option<String>,
    /// The earliest next scheduled drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_drill_time: Option<String>,
}

pub fn default_keep_replaced_databases_days() -> u32 {
    7
}
