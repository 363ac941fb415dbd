//! The Kubernetes operator: reconciles `Dhis2Database`, `Dhis2Instance` and `Dhis2Backup`
//! resources. Decisions
//! (what objects are needed, what is wrong with a spec, what status to report) are pure functions
//! in their own files; the controllers are the thin I/O shell around them.

pub mod apply;
pub mod backoff;
pub mod backup_build;
pub mod backup_controller;
pub mod backup_schedule_controller;
pub mod backup_status;
pub mod backup_step;
pub mod clock;
pub mod conditions;
pub mod context;
pub mod credentials;
pub mod database_build;
pub mod database_connection;
pub mod database_controller;
pub mod dhis_conf;
pub mod drill_schedule_controller;
pub mod engine_job;
pub mod error;
pub mod health;
pub mod instance_build;
pub mod instance_controller;
pub mod job_outcome;
pub mod labels;
pub mod metrics;
pub mod quantity;
pub mod run;
pub mod run_history;
pub mod schedule_build;
pub mod schedule_plan;
pub mod schedule_status;
pub mod scheduled_objects;
pub mod server;
pub mod status;
pub mod storage;
pub mod validate;
