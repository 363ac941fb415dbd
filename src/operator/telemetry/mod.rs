//! What the operator tells Prometheus: reconcile and fleet metrics, and its HTTP endpoints.

pub mod fleet_collector;
pub mod fleet_metrics;
pub mod format;
pub mod metrics;
pub mod server;
