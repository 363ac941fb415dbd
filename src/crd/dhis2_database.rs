//! `Dhis2Database`: a PostgreSQL server with PostGIS for DHIS2, run by the operator (`managed`),
//! provided by the ministry (`external`), or a highly available CloudNativePG cluster (`cnpg`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup_common::RepositorySpec;
use super::common::{DeletionPolicy, Resources, VolumeSpec};

pub const DEFAULT_POSTGIS_IMAGE: &str = "postgis/postgis:16-3.4";
/// CloudNativePG's PostGIS operand image (same PostgreSQL and PostGIS majors as the default).
pub const DEFAULT_CNPG_POSTGIS_IMAGE: &str = "ghcr.io/cloudnative-pg/postgis:16-3.4";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dhis2operator.io",
    version = "v1alpha1",
    kind = "Dhis2Database",
    doc = "The PostgreSQL/PostGIS server a DHIS2 instance keeps its data in: run by the operator (managed), one the ministry already runs (external), or a highly available CloudNativePG cluster (cnpg). The operator runs the managed and cnpg ones with settings tuned for DHIS2, checks that it can connect, and reports whether the database is ready and how big it is.",
    plural = "dhis2databases",
    shortname = "d2db",
    category = "dhis2",
    namespaced,
    status = "Dhis2DatabaseStatus",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.serverVersion"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2DatabaseSpec {
    /// `managed`: the operator runs PostgreSQL+PostGIS in a StatefulSet. `external`: a server the
    /// ministry runs; the operator only checks it can connect. `cnpg`: a CloudNativePG `Cluster`
    /// (replicas, failover, WAL archiving and point-in-time recovery; CloudNativePG must be
    /// installed).
    #[serde(default)]
    pub provider: DatabaseProvider,
    /// PostGIS image (default postgis/postgis:16-3.4 for `managed`,
    /// ghcr.io/cloudnative-pg/postgis:16-3.4 for `cnpg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Data volume for `managed`, and of each instance for `cnpg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<VolumeSpec>,
    /// CPU and memory of the PostgreSQL pods (`managed`, `cnpg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// PostgreSQL settings that override the operator's DHIS2-tuned defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// For `external`: a Secret with keys host, port, database, username, password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret_ref: Option<String>,
    /// For `cnpg`: instances, WAL archiving and base backups, recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnpg: Option<CnpgSpec>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// `spec.cnpg`: how the CloudNativePG cluster is run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CnpgSpec {
    /// PostgreSQL instances: one primary, the rest streaming replicas that take over when it
    /// fails (default: 3 when a production Dhis2Instance uses this database, else 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: Option<i32>,
    /// Continuous WAL archiving and base backups, the ground of point-in-time recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<CnpgBackupSpec>,
    /// Create the cluster as a copy of another cnpg `Dhis2Database`'s archive, replayed up to a
    /// moment (set by a `Dhis2Restore` with `pointInTime`; read only when the cluster is made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<CnpgRecoverySpec>,
}

/// `spec.cnpg.backup`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CnpgBackupSpec {
    /// `false` turns WAL archiving and base backups off (default on whenever a repository is
    /// known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// An S3 repository for the WAL archive and base backups (default: `spec.backup.repository`
    /// of the Dhis2Instance using this database). Kept under `<prefix>/_cnpg/` beside the
    /// logical backups. Barman Cloud cannot age-encrypt: a repository with `encryption` is not
    /// used for the archive (name one without it, protected by the store's server-side
    /// encryption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositorySpec>,
    /// When base backups are taken: cron in UTC, five fields (`0 1 * * *`) or CloudNativePG's
    /// six with seconds (default `0 0 1 * * *`, 01:00 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How far back point-in-time recovery reaches: base backups and WAL older than this are
    /// removed by Barman, e.g. `30d`, `4w`, `6m` (default `30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]*[dwm]$"))]
    pub retention: Option<String>,
}

/// `spec.cnpg.recovery`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CnpgRecoverySpec {
    /// The cluster (the cnpg `Dhis2Database`'s name) whose WAL archive and base backups are
    /// replayed; it may since have been deleted, its archive is what counts.
    #[schemars(length(min = 1, max = 63))]
    pub source: String,
    /// The S3 repository holding the source's archive (under `<prefix>/_cnpg/<source>/`;
    /// default: this database's own archive repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositorySpec>,
    /// Replay up to this moment (RFC 3339, e.g. `2026-12-07T10:13:00+07:00`); absent: to the
    /// end of the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseProvider {
    #[default]
    Managed,
    External,
    Cnpg,
}

impl DatabaseProvider {
    /// As written in `spec.provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseProvider::Managed => "managed",
            DatabaseProvider::External => "external",
            DatabaseProvider::Cnpg => "cnpg",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dhis2DatabaseStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Provisioning, Ready, Degraded or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The provider the database was first Ready with: a later `spec.provider` is refused (the
    /// data stays on the server it is on; the operator never points DHIS2 at an empty one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<DatabaseProvider>,
    /// PostgreSQL version the server reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// `host:port` DHIS2 connects to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret with the connection settings (host, port, database, username, password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// `pg_database_size` of the database, measured at each check (external databases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The CloudNativePG cluster, as CloudNativePG reports it (`provider: cnpg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnpg: Option<CnpgStatus>,
}

/// `status.cnpg`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CnpgStatus {
    /// The `Cluster` (postgresql.cnpg.io/v1) in this namespace.
    pub cluster: String,
    /// CloudNativePG's phase, e.g. `Cluster in healthy state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_instances: Option<i64>,
    /// The pod running the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// `plugin` (Barman Cloud plugin `ObjectStore`), `barmanObjectStore` (CloudNativePG's
    /// built-in Barman Cloud) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_archiving: Option<String>,
    /// Where WAL and base backups go (`s3://bucket/prefix/_cnpg`), no credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// The earliest moment point-in-time recovery can reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<String>,
    /// When the newest base backup succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// The `Dhis2Restore` for which the operator turned the cluster's superuser access
    /// (`enableSuperuserAccess`) on; it is off when none needs it. Written as null when off,
    /// so that the status merge patch clears it.
    #[serde(default)]
    pub superuser_for: Option<String>,
    /// What the cluster took from the instances using it, kept so that it stays as it was when
    /// none uses it any more (after a point-in-time restore moved its instance to a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited: Option<CnpgInherited>,
}

/// `status.cnpg.inherited`: the settings a cnpg cluster takes from the instances using it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CnpgInherited {
    /// A production instance used it: three PostgreSQL instances unless `spec.cnpg.instances`.
    #[serde(default)]
    pub production: bool,
    /// The backup repository its WAL archive goes to unless `spec.cnpg.backup.repository`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<crate::crd::backup_common::RepositorySpec>,
    /// Where the repository was named, e.g. `spec.backup.repository of Dhis2Instance hmis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_from: Option<String>,
}
