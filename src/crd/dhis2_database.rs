//! `Dhis2Database`: a PostgreSQL server with PostGIS for DHIS2, run by the operator (`managed`)
//! or provided by the ministry (`external`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, Resources, VolumeSpec};

pub const DEFAULT_POSTGIS_IMAGE: &str = "postgis/postgis:16-3.4";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dhis2operator.io",
    version = "v1alpha1",
    kind = "Dhis2Database",
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
    /// ministry runs; the operator only checks it can connect.
    #[serde(default)]
    pub provider: DatabaseProvider,
    /// PostGIS image for `managed` (default postgis/postgis:16-3.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Data volume for `managed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<VolumeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// PostgreSQL settings that override the operator's DHIS2-tuned defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// For `external`: a Secret with keys host, port, database, username, password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret_ref: Option<String>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseProvider {
    #[default]
    Managed,
    External,
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
}
