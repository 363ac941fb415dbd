//! `Dhis2Drill`: a restore drill that measures RTO/RPO, run by an engine Job.

pub mod build;
pub mod plan;
pub mod reconcile;
