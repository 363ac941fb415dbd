//! `Dhis2Restore`: a logical restore by an engine Job, or a point-in-time recovery by
//! CloudNativePG, with DHIS2 stopped meanwhile and analytics regenerated after.

pub mod analytics;
pub mod build;
pub mod plan;
pub mod point_in_time;
pub mod reconcile;
pub mod status;
