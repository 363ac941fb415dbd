//! The per-instance metrics of docs/metrics.md ("Per instance", "Backups and drills, per
//! instance"), read off what the operator already knows: the instances' status and the
//! `Dhis2Backup` objects (pure; `src/operator/telemetry/fleet_collector.rs` feeds it the watch stores at each scrape).
//!
//! Labels are the contract's: `namespace`, `dhis2_instance`, `environment`, and `version` on
//! `dhis2_instance_info` alone. Never a backup id, a time or an error message. The instance's
//! name is `dhis2_instance`, not `instance`: that one is Prometheus's own (the scrape target).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;

use crate::backup_metrics;
use crate::crd::backup_common::RunPhase;
use crate::crd::dhis2_instance::Environment;
use crate::crd::upgrade::UpgradeOutcome;
use crate::crd::{Dhis2Backup, Dhis2Database, Dhis2Instance};

use crate::rules::names::dedicated_database_name;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct InstanceLabels {
    pub namespace: String,
    pub dhis2_instance: String,
    pub environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub namespace: String,
    pub dhis2_instance: String,
    pub environment: String,
    pub version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeriesType {
    Gauge,
    Counter,
}

/// One metric family: its series name (a counter's with `_total`), its help, and one value per
/// instance that has it.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub series_type: SeriesType,
    pub series: Vec<(InstanceLabels, f64)>,
}

/// What one scrape shows.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FleetMetrics {
    pub info: Vec<(VersionLabels, f64)>,
    pub families: Vec<FleetFamily>,
}

/// Failed backups already counted, per instance, by the backup's UID: a counter never goes
/// down when a failed `Dhis2Backup` is deleted later (history limits), and only failures that
/// ended after the operator started count (a restart starts the counter at 0, which Prometheus
/// reads as a reset, not as new failures).
#[derive(Debug, Default)]
pub struct FailureTally {
    counted: BTreeMap<(String, String), BTreeSet<String>>,
}

impl FailureTally {
    /// Counts the failed backups among `backups` that ended at or after `since`.
    pub fn observe(&mut self, backups: &[&Dhis2Backup], since: DateTime<Utc>) {
        for b in backups {
            let Some(status) = &b.status else { continue };
            if status.phase != Some(RunPhase::Failed) {
                continue;
            }
            let ended = status
                .completed_at
                .as_deref()
                .or(status.started_at.as_deref())
                .and_then(parse_time)
                .or_else(|| {
                    b.creation_timestamp()
                        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
                });
            if ended.is_none_or(|t| t < since) {
                continue;
            }
            let key = (
                b.namespace().unwrap_or_default(),
                b.spec.instance_ref.clone(),
            );
            let uid = b.uid().unwrap_or_else(|| b.name_any());
            self.counted.entry(key).or_default().insert(uid);
        }
    }

    pub fn count(&self, namespace: &str, instance: &str) -> u64 {
        self.counted
            .get(&(namespace.to_string(), instance.to_string()))
            .map_or(0, |s| s.len() as u64)
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn seconds(s: Option<&str>) -> Option<f64> {
    s.and_then(parse_time).map(|t| t.timestamp() as f64)
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

pub fn environment_label(e: Environment) -> &'static str {
    match e {
        Environment::Staging => "staging",
        Environment::Production => "production",
        Environment::Training => "training",
        Environment::Other => "other",
    }
}

/// The metrics of every instance. `failures` has already observed `backups`.
pub fn fleet_metrics(
    instances: &[&Dhis2Instance],
    databases: &[&Dhis2Database],
    backups: &[&Dhis2Backup],
    failures: &FailureTally,
) -> FleetMetrics {
    let mut f = Families::default();
    let mut info = vec![];
    for i in instances {
        let namespace = i.namespace().unwrap_or_default();
        let name = i.name_any();
        let labels = InstanceLabels {
            namespace: namespace.clone(),
            dhis2_instance: name.clone(),
            environment: environment_label(i.spec.environment).to_string(),
        };
        let status = i.status.clone().unwrap_or_default();
        let version = status
            .deployed_version
            .clone()
            .unwrap_or_else(|| i.spec.version.clone());
        info.push((
            VersionLabels {
                namespace: labels.namespace.clone(),
                dhis2_instance: labels.dhis2_instance.clone(),
                environment: labels.environment.clone(),
                version,
            },
            1.0,
        ));
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let up = status
            .last_health_check
            .as_deref()
            .is_some_and(|h| h.starts_with("pong"));
        f.set(READY, &labels, Some(flag(ready)));
        f.set(UP, &labels, Some(flag(up)));
        f.set(REPLICAS_DESIRED, &labels, Some(i.spec.replicas as f64));
        f.set(
            REPLICAS_READY,
            &labels,
            Some(status.ready_replicas.unwrap_or(0) as f64),
        );
        let database = i
            .spec
            .database_ref
            .clone()
            .unwrap_or_else(|| dedicated_database_name(&name));
        f.set(
            DATABASE_SIZE,
            &labels,
            databases
                .iter()
                .find(|d| {
                    d.name_any() == database && d.namespace().as_deref() == Some(namespace.as_str())
                })
                .and_then(|d| d.status.as_ref()?.size_bytes)
                .map(|b| b as f64),
        );
        let upgrading = status.upgrade.as_ref().filter(|u| !u.phase.is_finished());
        f.set(
            UPGRADE_IN_PROGRESS,
            &labels,
            Some(flag(upgrading.is_some())),
        );
        f.set(
            UPGRADE_PHASE_STARTED,
            &labels,
            upgrading.and_then(|u| seconds(u.phase_started_at.as_deref().or(Some(&u.started_at)))),
        );
        let last_upgrade = status.upgrade_history.first();
        f.set(
            LAST_UPGRADE_SUCCESS,
            &labels,
            last_upgrade.map(|r| flag(r.outcome == UpgradeOutcome::Succeeded)),
        );
        f.set(
            LAST_UPGRADE_TIME,
            &labels,
            last_upgrade.and_then(|r| seconds(Some(&r.finished_at))),
        );

        let summary = status.backup.clone().unwrap_or_default();
        let newest = backups
            .iter()
            .filter(|b| {
                b.namespace().as_deref() == Some(namespace.as_str())
                    && b.spec.instance_ref == name
                    && b.status
                        .as_ref()
                        .is_some_and(|s| s.phase == Some(RunPhase::Completed))
            })
            .filter_map(|b| b.status.as_ref())
            .max_by_key(|s| s.completed_at.as_deref().and_then(parse_time));
        f.set(
            BACKUP_LAST_SUCCESS,
            &labels,
            seconds(summary.last_backup_time.as_deref())
                .or_else(|| newest.and_then(|s| seconds(s.completed_at.as_deref()))),
        );
        f.set(
            BACKUP_LAST_SIZE,
            &labels,
            newest.and_then(|s| s.size_bytes).map(|b| b as f64),
        );
        f.set(
            BACKUP_LAST_DURATION,
            &labels,
            newest.and_then(|s| s.duration_seconds),
        );
        f.set(
            BACKUP_FAILURES,
            &labels,
            Some(failures.count(&namespace, &name) as f64),
        );
        f.set(
            BACKUP_NEXT,
            &labels,
            seconds(summary.next_backup_time.as_deref()),
        );
        f.set(
            DRILL_LAST_TIME,
            &labels,
            seconds(summary.last_drill_time.as_deref()),
        );
        f.set(
            DRILL_LAST_SUCCESS,
            &labels,
            summary
                .last_drill_result
                .as_deref()
                .map(|r| flag(r == "Passed")),
        );
        f.set(DRILL_LAST_RTO, &labels, summary.last_drill_rto_seconds);
        f.set(
            DRILL_LAST_RPO,
            &labels,
            summary.last_drill_rpo_seconds.map(|s| s as f64),
        );
    }
    FleetMetrics {
        info,
        families: f.into_families(),
    }
}

type Spec = (&'static str, &'static str, SeriesType);

const READY: Spec = (
    "dhis2_instance_ready",
    "1 when the instance's Ready condition is True",
    SeriesType::Gauge,
);
const UP: Spec = (
    "dhis2_instance_up",
    "1 when DHIS2 answered /api/system/ping at the last probe",
    SeriesType::Gauge,
);
const REPLICAS_DESIRED: Spec = (
    "dhis2_instance_replicas_desired",
    "DHIS2 replicas asked for (spec.replicas)",
    SeriesType::Gauge,
);
const REPLICAS_READY: Spec = (
    "dhis2_instance_replicas_ready",
    "DHIS2 pods ready",
    SeriesType::Gauge,
);
const DATABASE_SIZE: Spec = (
    "dhis2_instance_database_size_bytes",
    "pg_database_size of the instance's database (absent until measured)",
    SeriesType::Gauge,
);
const UPGRADE_IN_PROGRESS: Spec = (
    "dhis2_instance_upgrade_in_progress",
    "1 while an upgrade runs",
    SeriesType::Gauge,
);
const UPGRADE_PHASE_STARTED: Spec = (
    "dhis2_instance_upgrade_phase_started_timestamp_seconds",
    "When the current upgrade phase began",
    SeriesType::Gauge,
);
const LAST_UPGRADE_SUCCESS: Spec = (
    "dhis2_instance_last_upgrade_success",
    "1 when the last finished upgrade succeeded, 0 when it was refused, rolled back or failed",
    SeriesType::Gauge,
);
const LAST_UPGRADE_TIME: Spec = (
    "dhis2_instance_last_upgrade_timestamp_seconds",
    "When the last upgrade finished",
    SeriesType::Gauge,
);
// The backup and drill metrics share their names and help with the textfile
// (`crate::backup_metrics`).
const BACKUP_LAST_SUCCESS: Spec = (
    backup_metrics::LAST_SUCCESS.name,
    backup_metrics::LAST_SUCCESS.help,
    SeriesType::Gauge,
);
const BACKUP_LAST_SIZE: Spec = (
    backup_metrics::LAST_SIZE.name,
    backup_metrics::LAST_SIZE.help,
    SeriesType::Gauge,
);
const BACKUP_LAST_DURATION: Spec = (
    backup_metrics::LAST_DURATION.name,
    backup_metrics::LAST_DURATION.help,
    SeriesType::Gauge,
);
const BACKUP_FAILURES: Spec = (
    backup_metrics::FAILURES.name,
    backup_metrics::FAILURES.help,
    SeriesType::Counter,
);
const BACKUP_NEXT: Spec = (
    "dhis2_backup_next_scheduled_timestamp_seconds",
    "The next scheduled backup",
    SeriesType::Gauge,
);
const DRILL_LAST_TIME: Spec = (
    backup_metrics::DRILL_LAST.name,
    backup_metrics::DRILL_LAST.help,
    SeriesType::Gauge,
);
const DRILL_LAST_SUCCESS: Spec = (
    backup_metrics::DRILL_SUCCESS.name,
    backup_metrics::DRILL_SUCCESS.help,
    SeriesType::Gauge,
);
const DRILL_LAST_RTO: Spec = (
    backup_metrics::DRILL_RTO.name,
    backup_metrics::DRILL_RTO.help,
    SeriesType::Gauge,
);
const DRILL_LAST_RPO: Spec = (
    backup_metrics::DRILL_RPO.name,
    backup_metrics::DRILL_RPO.help,
    SeriesType::Gauge,
);

/// Every family in a fixed order, each listed even with no series (HELP and TYPE stay put).
const ALL: [Spec; 18] = [
    READY,
    UP,
    REPLICAS_DESIRED,
    REPLICAS_READY,
    DATABASE_SIZE,
    UPGRADE_IN_PROGRESS,
    UPGRADE_PHASE_STARTED,
    LAST_UPGRADE_SUCCESS,
    LAST_UPGRADE_TIME,
    BACKUP_LAST_SUCCESS,
    BACKUP_LAST_SIZE,
    BACKUP_LAST_DURATION,
    BACKUP_FAILURES,
    BACKUP_NEXT,
    DRILL_LAST_TIME,
    DRILL_LAST_SUCCESS,
    DRILL_LAST_RTO,
    DRILL_LAST_RPO,
];

#[derive(Default)]
struct Families {
    series: BTreeMap<&'static str, Vec<(InstanceLabels, f64)>>,
}

impl Families {
    /// Records a value; `None` leaves the series absent (not measured, or not applicable).
    fn set(&mut self, spec: Spec, labels: &InstanceLabels, value: Option<f64>) {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            self.series
                .entry(spec.0)
                .or_default()
                .push((labels.clone(), v));
        }
    }

    fn into_families(mut self) -> Vec<FleetFamily> {
        ALL.iter()
            .map(|&(name, help, series_type)| FleetFamily {
                name,
                help,
                series_type,
                series: self.series.remove(name).unwrap_or_default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(name: &str, status: serde_json::Value) -> Dhis2Instance {
        serde_json::from_value(json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
            "metadata": {"name": name, "namespace": "moh"},
            "spec": {"version": "2.42.1", "environment": "production", "replicas": 2},
            "status": status,
        }))
        .unwrap()
    }

    fn backup(name: &str, phase: &str, completed: &str, size: u64) -> Dhis2Backup {
        serde_json::from_value(json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
            "metadata": {"name": name, "namespace": "moh", "uid": format!("uid-{name}")},
            "spec": {"instanceRef": "hmis"},
            "status": {"phase": phase, "startedAt": "2026-12-06T01:59:00Z",
                "completedAt": completed, "sizeBytes": size, "durationSeconds": 61.5},
        }))
        .unwrap()
    }

    fn value(m: &FleetMetrics, name: &str, instance: &str) -> Option<f64> {
        m.families
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name}"))
            .series
            .iter()
            .find(|(l, _)| l.dhis2_instance == instance)
            .map(|(_, v)| *v)
    }

    fn since() -> DateTime<Utc> {
        parse_time("2026-12-06T00:00:00Z").unwrap()
    }

    #[test]
    fn an_instance_s_state_backups_and_drills_become_its_series() {
        let hmis = instance(
            "hmis",
            json!({
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-06T00:00:00Z", "reason": "Ready", "message": ""}],
                "lastHealthCheck": "pong (DHIS2 2.42.1)", "readyReplicas": 2,
                "deployedVersion": "2.42.1",
                "backup": {"lastBackupTime": "2026-12-06T02:01:00Z", "lastDrillTime": "2026-12-06T03:10:00Z",
                    "lastDrillResult": "Failed", "lastDrillRtoSeconds": 412.5, "lastDrillRpoSeconds": 4200,
                    "nextBackupTime": "2026-12-07T02:00:00Z"},
                "upgradeHistory": [{"fromVersion": "2.41.3", "toVersion": "2.42.1", "startedAt": "2026-12-01T05:00:00Z",
                    "finishedAt": "2026-12-01T06:00:00Z", "outcome": "Succeeded"}],
            }),
        );
        let old = backup("old", "Completed", "2026-12-05T02:01:00Z", 100);
        let new = backup("new", "Completed", "2026-12-06T02:01:00Z", 2_500_000_000);
        let failed = backup("failed", "Failed", "2026-12-06T04:00:00Z", 0);
        let before_start = backup("before", "Failed", "2026-12-05T04:00:00Z", 0);
        let backups = [&old, &new, &failed, &before_start];
        let mut tally = FailureTally::default();
        tally.observe(&backups, since());
        let db: Dhis2Database = serde_json::from_value(json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Database",
            "metadata": {"name": "hmis-db", "namespace": "moh"},
            "spec": {"provider": "external", "externalSecretRef": "moh-pg"},
            "status": {"sizeBytes": 7_000_000_000u64},
        }))
        .unwrap();
        let m = fleet_metrics(&[&hmis], &[&db], &backups, &tally);
        assert_eq!(
            value(&m, "dhis2_instance_database_size_bytes", "hmis"),
            Some(7e9),
            "its dedicated database's measured size"
        );

        assert_eq!(m.info.len(), 1);
        assert_eq!(m.info[0].0.version, "2.42.1");
        assert_eq!(m.info[0].0.environment, "production");
        assert_eq!(value(&m, "dhis2_instance_ready", "hmis"), Some(1.0));
        assert_eq!(value(&m, "dhis2_instance_up", "hmis"), Some(1.0));
        assert_eq!(
            value(&m, "dhis2_instance_replicas_ready", "hmis"),
            Some(2.0)
        );
        assert_eq!(
            value(&m, "dhis2_instance_upgrade_in_progress", "hmis"),
            Some(0.0)
        );
        let phase = "dhis2_instance_upgrade_phase_started_timestamp_seconds";
        assert_eq!(value(&m, phase, "hmis"), None);
        assert_eq!(
            value(&m, "dhis2_instance_last_upgrade_success", "hmis"),
            Some(1.0)
        );
        let t = |s: &str| parse_time(s).unwrap().timestamp() as f64;
        assert_eq!(
            value(&m, "dhis2_backup_last_success_timestamp_seconds", "hmis"),
            Some(t("2026-12-06T02:01:00Z"))
        );
        assert_eq!(
            value(&m, "dhis2_backup_last_size_bytes", "hmis"),
            Some(2.5e9),
            "the newest completed backup's size"
        );
        assert_eq!(
            value(&m, "dhis2_backup_last_duration_seconds", "hmis"),
            Some(61.5)
        );
        assert_eq!(
            value(&m, "dhis2_backup_failures_total", "hmis"),
            Some(1.0),
            "only the failure after the operator started"
        );
        assert_eq!(value(&m, "dhis2_drill_last_success", "hmis"), Some(0.0));
        assert_eq!(
            value(&m, "dhis2_drill_last_rto_seconds", "hmis"),
            Some(412.5)
        );
        assert_eq!(
            value(&m, "dhis2_drill_last_rpo_seconds", "hmis"),
            Some(4200.0)
        );
        assert_eq!(
            value(&m, "dhis2_backup_next_scheduled_timestamp_seconds", "hmis"),
            Some(t("2026-12-07T02:00:00Z"))
        );
    }

    #[test]
    fn a_new_instance_has_a_zero_failure_count_and_no_backup_or_drill_series() {
        let fresh = instance(
            "fresh",
            json!({"lastHealthCheck": "no answer from DHIS2: refused"}),
        );
        let m = fleet_metrics(&[&fresh], &[], &[], &FailureTally::default());
        assert_eq!(value(&m, "dhis2_backup_failures_total", "fresh"), Some(0.0));
        assert_eq!(value(&m, "dhis2_instance_up", "fresh"), Some(0.0));
        assert_eq!(value(&m, "dhis2_instance_ready", "fresh"), Some(0.0));
        assert_eq!(
            m.info[0].0.version, "2.42.1",
            "spec.version until one is deployed"
        );
        for absent in [
            "dhis2_backup_last_success_timestamp_seconds",
            "dhis2_backup_last_size_bytes",
            "dhis2_drill_last_success",
            "dhis2_instance_last_upgrade_success",
            "dhis2_backup_next_scheduled_timestamp_seconds",
            "dhis2_instance_database_size_bytes",
        ] {
            assert_eq!(value(&m, absent, "fresh"), None, "{absent}");
        }
        assert_eq!(m.families.len(), ALL.len(), "every family, even empty");
    }

    #[test]
    fn an_upgrade_in_progress_shows_its_phase_start_and_a_failed_one_a_zero() {
        let hmis = instance(
            "hmis",
            json!({
                "upgrade": {"phase": "Migrating", "fromVersion": "2.41.3", "toVersion": "2.42.1",
                    "toImage": "dhis2/core:2.42.1", "startedAt": "2026-12-06T05:00:00Z",
                    "phaseStartedAt": "2026-12-06T05:10:00Z"},
                "upgradeHistory": [{"fromVersion": "2.41.3", "toVersion": "2.42.0", "startedAt": "2026-12-01T05:00:00Z",
                    "finishedAt": "2026-12-01T07:00:00Z", "outcome": "RolledBack"}],
            }),
        );
        let m = fleet_metrics(&[&hmis], &[], &[], &FailureTally::default());
        assert_eq!(
            value(&m, "dhis2_instance_upgrade_in_progress", "hmis"),
            Some(1.0)
        );
        assert_eq!(
            value(
                &m,
                "dhis2_instance_upgrade_phase_started_timestamp_seconds",
                "hmis"
            ),
            Some(parse_time("2026-12-06T05:10:00Z").unwrap().timestamp() as f64)
        );
        assert_eq!(
            value(&m, "dhis2_instance_last_upgrade_success", "hmis"),
            Some(0.0)
        );
    }

    #[test]
    fn the_instance_is_labelled_dhis2_instance_never_prometheus_s_own_instance() {
        use prometheus_client::metrics::{family::Family, gauge::Gauge};
        let family = Family::<InstanceLabels, Gauge>::default();
        family
            .get_or_create(&InstanceLabels {
                namespace: "moh".into(),
                dhis2_instance: "hmis".into(),
                environment: "production".into(),
            })
            .set(1);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("dhis2_instance_up", "Up", family);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let label = backup_metrics::INSTANCE_LABEL;
        assert!(
            text.contains(&format!(
                "dhis2_instance_up{{namespace=\"moh\",{label}=\"hmis\",environment=\"production\"}} 1"
            )),
            "{text}"
        );
    }

    #[test]
    fn a_counted_failure_stays_counted_after_its_backup_is_deleted() {
        let failed = backup("failed", "Failed", "2026-12-06T04:00:00Z", 0);
        let mut tally = FailureTally::default();
        tally.observe(&[&failed], since());
        tally.observe(&[&failed], since());
        assert_eq!(tally.count("moh", "hmis"), 1, "once each");
        tally.observe(&[], since());
        assert_eq!(tally.count("moh", "hmis"), 1);
        assert_eq!(tally.count("moh", "other"), 0);
    }
}
