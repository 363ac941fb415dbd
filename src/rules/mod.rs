//! The decisions `dhis2ctl` and the operator must agree on (pure): names of objects and
//! annotations, consent to overwrite, moments, cron in a zone, durations, what DHIS2 runs, and how a
//! backup repository is described and protected. Neither side owns them; `cli/` reads these, never
//! `operator/`.

pub mod cron_schedule;
pub mod deployed_version;
pub mod duration;
pub mod moment;
pub mod names;
pub mod repository;
pub mod repository_protection;
pub mod restore_consent;
