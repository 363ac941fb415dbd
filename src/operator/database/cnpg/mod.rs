//! A `Dhis2Database` with `provider: cnpg`: CloudNativePG's `Cluster`, its WAL archive and
//! scheduled base backups, its health, and what it takes from the instances using it.

pub mod archive;
pub mod build;
pub mod inherited;
pub mod reconcile;
pub mod status;
pub mod superuser;
