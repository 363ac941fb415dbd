//! The Kubernetes operator: reconciles `Dhis2Database`, `Dhis2Instance` and `Dhis2Backup`
//! resources. Decisions
//! (what objects are needed, what is wrong with a spec, what status to report) are pure functions
//! in their own files; the controllers are the thin I/O shell around them.

pub mod analytics;
pub mod apply;
pub mod backoff;
pub mod backup_build;
pub mod backup_controller;
pub mod backup_index;
pub mod backup_status;
pub mod backup_step;
pub mod backup_summary;
pub mod clock;
pub mod conditions;
pub mod context;
pub mod credentials;
pub mod database_build;
pub mod database_connection;
pub mod database_controller;
pub mod dhis_conf;
pub mod drill_build;
pub mod drill_controller;
pub mod drill_plan;
pub mod engine_job;
pub mod error;
pub mod health;
pub mod instance_build;
pub mod instance_controller;
pub mod job_outcome;
pub mod labels;
pub mod metrics;
pub mod quantity;
pub mod restore_controller;
pub mod restore_job;
pub mod restore_steps;
pub mod run;
pub mod server;
pub mod status;
pub mod storage;
pub mod validate;
