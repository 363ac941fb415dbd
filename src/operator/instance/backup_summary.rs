//! The instance's backup health at a glance (pure): the newest successful backup, the newest
//! finished drill and the next scheduled run, summarised from the instance's `Dhis2Backup`,
//! `Dhis2Drill` and `Dhis2BackupSchedule` objects, and the `BackupHealthy` condition an on-call
//! officer (and an alert) can trust.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::crd::backup_common::RunPhase;
use crate::crd::dhis2_instance::InstanceBackupStatus;
use crate::crd::{Dhis2Backup, Dhis2BackupSchedule, Dhis2Drill};

use crate::operator::kit::conditions::condition;

/// What the summary is made from: the instance's objects (already filtered to it).
pub struct BackupObservation<'a> {
    pub backups: &'a [&'a Dhis2Backup],
    pub drills: &'a [&'a Dhis2Drill],
    pub schedules: &'a [&'a Dhis2BackupSchedule],
    /// The next scheduled drill (from the instance's drill schedule), RFC 3339.
    pub next_drill_time: Option<String>,
    pub generation: Option<i64>,
}

fn phase_of_backup(b: &Dhis2Backup) -> Option<RunPhase> {
    b.status.as_ref().and_then(|s| s.phase)
}

/// RFC 3339 times compare correctly as text only when in one form; parse to be sure.
fn time(t: Option<&String>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// The summary and the `BackupHealthy` condition.
pub fn summarise_backups(o: &BackupObservation) -> (InstanceBackupStatus, Condition) {
    let finished_at =
        |b: &&&Dhis2Backup| time(b.status.as_ref().and_then(|s| s.completed_at.as_ref()));
    let newest_success = o
        .backups
        .iter()
        .filter(|b| phase_of_backup(b) == Some(RunPhase::Completed))
        .max_by_key(finished_at);
    let newest_finished = o
        .backups
        .iter()
        .filter(|b| phase_of_backup(b).is_some_and(RunPhase::is_finished))
        .max_by_key(finished_at);
    let drill_finished_at =
        |d: &&&Dhis2Drill| time(d.status.as_ref().and_then(|s| s.completed_at.as_ref()));
    let newest_drill = o
        .drills
        .iter()
        .filter(|d| {
            d.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(RunPhase::is_finished)
        })
        .max_by_key(drill_finished_at);
    let next_backup_time = o
        .schedules
        .iter()
        .filter(|s| !s.spec.suspend)
        .filter_map(|s| s.status.as_ref().and_then(|st| st.next_run_time.as_ref()))
        .filter_map(|t| time(Some(t)).map(|parsed| (parsed, t.clone())))
        .min()
        .map(|(_, t)| t);

    let success = newest_success.and_then(|b| b.status.as_ref());
    let drill = newest_drill.and_then(|d| d.status.as_ref());
    let drill_passed =
        drill.map(|d| d.phase == Some(RunPhase::Completed) && d.passed == Some(true));
    let summary = InstanceBackupStatus {
        last_backup_time: success.and_then(|s| s.completed_at.clone()),
        last_backup_id: success.and_then(|s| s.backup_id.clone()),
        last_backup_size: success.and_then(|s| s.size.clone()),
        last_drill_time: drill.and_then(|d| d.completed_at.clone()),
        last_drill_result: drill_passed.map(|p| if p { "Passed" } else { "Failed" }.to_string()),
        last_drill_rto_seconds: drill.and_then(|d| d.rto_seconds),
        last_drill_rpo_seconds: drill.and_then(|d| d.rpo_seconds),
        next_backup_time,
        next_drill_time: o.next_drill_time.clone(),
    };

    let g = o.generation;
    let healthy = if let Some(d) = newest_drill.filter(|_| drill_passed == Some(false)) {
        let why = d
            .status
            .as_ref()
            .map(|s| s.failures.join("; "))
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "see its status".into());
        condition(
            "BackupHealthy",
            false,
            "DrillFailed",
            format!(
                "restore drill {} failed: {why}",
                d.metadata.name.clone().unwrap_or_default()
            ),
            g,
        )
    } else if let Some(b) = newest_finished.filter(|b| phase_of_backup(b) == Some(RunPhase::Failed))
    {
        let why = b
            .status
            .as_ref()
            .and_then(|s| s.failure_reason.clone())
            .unwrap_or_else(|| "see its status".into());
        condition(
            "BackupHealthy",
            false,
            "BackupFailed",
            format!(
                "the newest backup {} failed: {why}",
                b.metadata.name.clone().unwrap_or_default()
            ),
            g,
        )
    } else if newest_success.is_none() {
        let (reason, message) = if o.schedules.iter().any(|s| !s.spec.suspend) {
            ("NoBackupYet", "no backup has completed yet")
        } else {
            (
                "NoBackupSchedule",
                "no backup has completed and no Dhis2BackupSchedule backs this instance up",
            )
        };
        condition("BackupHealthy", false, reason, message, g)
    } else {
        let mut message = format!(
            "last backup {} completed at {}",
            summary.last_backup_id.clone().unwrap_or_default(),
            summary.last_backup_time.clone().unwrap_or_default()
        );
        match &summary.last_drill_time {
            Some(t) => message.push_str(&format!("; last restore drill passed at {t}")),
            None => message.push_str("; no restore drill yet"),
        }
        condition("BackupHealthy", true, "BackupsHealthy", message, g)
    };
    (summary, healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backup(name: &str, phase: &str, completed: &str) -> Dhis2Backup {
        serde_json::from_value(json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"instanceRef": "hmis"},
            "status": {"phase": phase, "completedAt": completed, "backupId": format!("id-{name}"),
                "size": "1.2 GiB", "failureReason": "cannot connect to the database"}
        }))
        .unwrap()
    }

    fn drill(name: &str, passed: bool, completed: &str) -> Dhis2Drill {
        serde_json::from_value(json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Drill",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"instanceRef": "hmis"},
            "status": {"phase": "Completed", "passed": passed, "completedAt": completed,
                "rtoSeconds": 95.0, "rpoSeconds": 3600, "failures": if passed { json!([]) } else { json!(["row counts differ in datavalue"]) }}
        }))
        .unwrap()
    }

    fn schedule(next: &str, suspend: bool) -> Dhis2BackupSchedule {
        serde_json::from_value(json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2BackupSchedule",
            "metadata": {"name": "nightly", "namespace": "ns"},
            "spec": {"instanceRef": "hmis", "schedule": "0 2 * * *", "suspend": suspend},
            "status": {"nextRunTime": next}
        }))
        .unwrap()
    }

    fn summarise(
        backups: &[Dhis2Backup],
        drills: &[Dhis2Drill],
        schedules: &[Dhis2BackupSchedule],
    ) -> (InstanceBackupStatus, Condition) {
        let b: Vec<&Dhis2Backup> = backups.iter().collect();
        let d: Vec<&Dhis2Drill> = drills.iter().collect();
        let s: Vec<&Dhis2BackupSchedule> = schedules.iter().collect();
        summarise_backups(&BackupObservation {
            backups: &b,
            drills: &d,
            schedules: &s,
            next_drill_time: None,
            generation: Some(1),
        })
    }

    #[test]
    fn the_newest_success_and_drill_are_shown_and_healthy() {
        let (summary, healthy) = summarise(
            &[
                backup("b1", "Completed", "2026-11-24T19:05:00Z"),
                backup("b2", "Completed", "2026-11-25T19:05:00Z"),
                backup("b3", "Running", "2026-11-26T19:05:00Z"),
            ],
            &[drill("d1", true, "2026-11-22T20:10:00Z")],
            &[
                schedule("2026-11-26T19:00:00Z", false),
                schedule("2026-11-26T01:00:00Z", true),
            ],
        );
        assert_eq!(summary.last_backup_id.as_deref(), Some("id-b2"));
        assert_eq!(summary.last_backup_size.as_deref(), Some("1.2 GiB"));
        assert_eq!(summary.last_drill_result.as_deref(), Some("Passed"));
        assert_eq!(summary.last_drill_rto_seconds, Some(95.0));
        assert_eq!(
            summary.next_backup_time.as_deref(),
            Some("2026-11-26T19:00:00Z"),
            "a suspended schedule does not count"
        );
        assert_eq!(healthy.status, "True", "{healthy:?}");
    }

    #[test]
    fn a_failed_drill_or_a_failed_newest_backup_is_unhealthy_and_says_why() {
        let (summary, healthy) = summarise(
            &[backup("b1", "Completed", "2026-11-24T19:05:00Z")],
            &[
                drill("d1", true, "2026-11-15T20:10:00Z"),
                drill("d2", false, "2026-11-22T20:10:00Z"),
            ],
            &[],
        );
        assert_eq!(summary.last_drill_result.as_deref(), Some("Failed"));
        assert_eq!(
            (healthy.status.as_str(), healthy.reason.as_str()),
            ("False", "DrillFailed")
        );
        assert!(
            healthy.message.contains("row counts differ"),
            "{}",
            healthy.message
        );

        let (summary, healthy) = summarise(
            &[
                backup("b1", "Completed", "2026-11-24T19:05:00Z"),
                backup("b2", "Failed", "2026-11-25T19:01:00Z"),
            ],
            &[],
            &[schedule("2026-11-26T19:00:00Z", false)],
        );
        assert_eq!(
            summary.last_backup_id.as_deref(),
            Some("id-b1"),
            "the last good one is still shown"
        );
        assert_eq!(healthy.reason, "BackupFailed");
        assert!(
            healthy.message.contains("cannot connect"),
            "{}",
            healthy.message
        );

        let (_, healthy) = summarise(
            &[
                backup("b1", "Failed", "2026-11-24T19:05:00Z"),
                backup("b2", "Completed", "2026-11-25T19:01:00Z"),
            ],
            &[],
            &[],
        );
        assert_eq!(healthy.status, "True", "a success after a failure heals");
    }

    #[test]
    fn an_instance_nothing_backs_up_is_not_healthy() {
        let (summary, healthy) = summarise(&[], &[], &[]);
        assert_eq!(summary, InstanceBackupStatus::default());
        assert_eq!(healthy.reason, "NoBackupSchedule");
        let (_, healthy) = summarise(&[], &[], &[schedule("2026-11-26T19:00:00Z", false)]);
        assert_eq!(healthy.reason, "NoBackupYet");
    }
}
