//! Where an instance's database is and how to log in to it: the `Dhis2Database` the instance
//! uses and the Secret with its connection settings (managed: `<database>-credentials`, written
//! by the operator; external: `spec.externalSecretRef`). Shared by the instance controller
//! (dhis.conf) and the engine's Jobs (which get the password from the same Secret by reference).

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::crd::dhis2_database::{DatabaseProvider, Dhis2Database};
use crate::crd::dhis2_instance::Dhis2Instance;
use crate::postgres::DatabaseTarget;

use crate::operator::context::Context;
use crate::operator::database::cnpg::build::app_secret_name;
use crate::operator::database::connection_settings::DatabaseConnection;
use crate::operator::database::connection_settings::connection_from_secret;
use crate::operator::error::{Error, Result};
use crate::rules::names::{credentials_secret_name, dedicated_database_name};

/// The `Dhis2Database` an instance uses: `spec.databaseRef`, else its dedicated `<instance>-db`.
pub fn instance_database_name(instance: &Dhis2Instance) -> String {
    instance
        .spec
        .database_ref
        .clone()
        .unwrap_or_else(|| dedicated_database_name(&instance.name_any()))
}

/// The Secret that holds a database's host, port, database, username and password (cnpg:
/// CloudNativePG's `<cluster>-app`, whose host is the `-rw` Service of the primary).
pub fn connection_secret_name(db: &Dhis2Database) -> String {
    match db.spec.provider {
        DatabaseProvider::Managed => credentials_secret_name(&db.name_any()),
        DatabaseProvider::External => db.spec.external_secret_ref.clone().unwrap_or_default(),
        DatabaseProvider::Cnpg => app_secret_name(&db.name_any()),
    }
}

/// A database's connection settings and the Secret they were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSecret {
    pub secret_name: String,
    pub connection: DatabaseConnection,
}

/// Reads the database's connection Secret; `Ok(Err(why))` when it is missing or incomplete.
pub async fn read_database_secret(
    ctx: &Context,
    ns: &str,
    db: &Dhis2Database,
) -> Result<std::result::Result<DatabaseSecret, String>> {
    let secret_name = connection_secret_name(db);
    let secret = ctx
        .api::<Secret>(ns)
        .get_opt(&secret_name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {secret_name}"), e))?;
    Ok(secret
        .as_ref()
        .and_then(connection_from_secret)
        .map(|connection| DatabaseSecret {
            secret_name: secret_name.clone(),
            connection,
        })
        .ok_or_else(|| {
            format!("Secret {secret_name} with the database credentials is missing or incomplete")
        }))
}

/// The operator's own connection to a database (its checks before an upgrade, the external
/// database probe), from the connection Secret's values.
pub fn database_target(
    conn: &DatabaseConnection,
    field: &'static str,
) -> std::result::Result<DatabaseTarget, String> {
    let url = format!(
        "postgresql://{}@{}:{}/{}",
        urlencode(&conn.username),
        conn.host,
        conn.port,
        urlencode(&conn.database)
    );
    DatabaseTarget::parse(&url, field)
        .map(|t| t.with_password(&conn.password))
        .map_err(|e| e.to_string())
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
