//! `Dhis2BackupSchedule` and an instance's drill schedule: objects made at each fire time.

pub mod build;
pub mod drill_reconcile;
pub mod plan;
pub mod reconcile;
pub mod run_history;
pub mod status;
