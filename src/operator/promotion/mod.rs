//! `Dhis2Promotion`: staging's version promoted to production after a soak.

pub mod plan;
pub mod reconcile;
