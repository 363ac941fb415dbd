//! `Dhis2Database`: a managed PostgreSQL + PostGIS StatefulSet, an external server, or a
//! CloudNativePG cluster (`cnpg/`).

pub mod build;
pub mod cnpg;
pub mod connection;
pub mod connection_settings;
pub mod credentials;
pub mod reconcile;
pub mod storage;
