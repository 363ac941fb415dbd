//! How to log in to a database, as read from its connection Secret (pure): what `dhis.conf`, the
//! engine's Jobs and the operator's own maintenance connections use.

use k8s_openapi::api::core::v1::Secret;

/// Connection settings read from the database's credentials Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConnection {
    pub host: String,
    pub port: String,
    pub database: String,
    pub username: String,
    pub password: String,
}

/// Reads host/port/database/username/password from a Secret (CloudNativePG's app Secret names
/// the database `dbname`).
pub fn connection_from_secret(secret: &Secret) -> Option<DatabaseConnection> {
    let get = |k: &str| -> Option<String> {
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(k)) {
            return String::from_utf8(v.0.clone()).ok();
        }
        secret.string_data.as_ref().and_then(|d| d.get(k)).cloned()
    };
    Some(DatabaseConnection {
        host: get("host")?,
        port: get("port").unwrap_or_else(|| "5432".into()),
        database: get("database").or_else(|| get("dbname"))?,
        username: get("username")?,
        password: get("password")?,
    })
}
