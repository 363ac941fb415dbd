//! `Dhis2Instance`: DHIS2 on Tomcat (`dhis.conf`, file store, Service, Ingress), its health
//! and its backup summary.

pub mod backup_index;
pub mod backup_summary;
pub mod build;
pub mod dhis_conf;
pub mod health;
pub mod reconcile;
pub mod replaced_databases;
pub mod status;
pub mod validate;
