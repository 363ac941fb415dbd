//! Kubernetes plumbing that knows no DHIS2 kind: labels and annotation names, server-side
//! apply and orphan pruning, conditions, the client, backoff, the clock, quantities, shared
//! watches and leadership.

pub mod apply;
pub mod backoff;
pub mod client;
pub mod clock;
pub mod conditions;
pub mod create_once;
pub mod finalizers;
pub mod labels;
pub mod leadership;
pub mod quantity;
pub mod scheduled_objects;
pub mod secret_values;
pub mod shared_watch;
pub mod status_patch;
