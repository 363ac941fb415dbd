//! `Dhis2Backup`: one backup, run by an engine Job into the instance's repository.

pub mod build;
pub mod plan;
pub mod reconcile;
pub mod repository_scope;
pub mod status;
