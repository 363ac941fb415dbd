//! Errors of the upgrade check (a Blocked verdict is a result, not an error).

use crate::postgres::PostgresError;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The command line is wrong (a version that is none): exit code 2.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error(
        "{target} has no successful migration in flyway_schema_history: it is not a DHIS2 database, or DHIS2 never started on it; give the running version with --from VERSION to check anyway"
    )]
    NoSchemaVersion { target: String },
}
