//! The Kubernetes operator. It reconciles seven kinds — `Dhis2Database`, `Dhis2Instance` (and
//! its upgrades), `Dhis2Backup`, `Dhis2BackupSchedule` (and an instance's drill schedule),
//! `Dhis2Drill`, `Dhis2Restore`, `Dhis2Promotion` — one folder each. In a folder, `reconcile.rs`
//! is the thin I/O shell; `plan.rs` decides what happens next, `build.rs` builds the objects and
//! `status.rs` computes phase and conditions, all pure.
//!
//! - `database/`  — `Dhis2Database`: managed StatefulSet, external server, CloudNativePG (`cnpg/`)
//! - `instance/`  — `Dhis2Instance`: DHIS2 on Tomcat, `dhis.conf`, health, backup summary
//! - `upgrade/`   — an instance's upgrade, rollback and read-only copy
//! - `backup/`    — `Dhis2Backup`, and which repositories a backup or restore may name
//! - `schedule/`  — `Dhis2BackupSchedule` and an instance's drill schedule
//! - `drill/`     — `Dhis2Drill`
//! - `restore/`   — `Dhis2Restore`: logical restore or point-in-time recovery
//! - `promotion/` — `Dhis2Promotion`
//! - `kit/`       — Kubernetes plumbing that knows no DHIS2 kind: labels, server-side apply and
//!   pruning, one `patch_status`, one `create_once`, finalizers, conditions, client, clock
//! - `jobs/`      — the engine's Jobs and their outcome
//! - `telemetry/` — metrics and the HTTP endpoints
//! - `context.rs`, `error.rs` — what every reconcile shares; `run.rs` — starts them all
//!
//! A folder may use another's pure files, never its `reconcile.rs`. What `dhis2ctl` must agree on
//! with the operator (names, consent, durations, cron in a zone, what DHIS2 runs) is in
//! `crate::rules`, which `cli/` reads instead of this module (scripts/module_cycles.py checks).

pub mod backup;
pub mod context;
pub mod database;
pub mod drill;
pub mod error;
pub mod instance;
pub mod jobs;
pub mod kit;
pub mod promotion;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod telemetry;
pub mod upgrade;
