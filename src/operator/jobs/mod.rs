//! The engine's Jobs (`dhis2ctl` inside the operator's image) and how they ended.

pub mod engine_job;
pub mod outcome;
