//! Upgrades of a `Dhis2Instance` (`spec.version` changed): check, pre-upgrade backup, Flyway
//! migration, rollback by restore; and the read-only copy that serves users meanwhile.

pub mod plan;
pub mod read_only_copy;
pub mod read_only_copy_reconcile;
pub mod reconcile;
