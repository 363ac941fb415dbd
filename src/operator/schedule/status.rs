//! The status of a `Dhis2BackupSchedule` (pure): when it last fired and what that made, its last
//! success and retention outcome (read from its `Dhis2Backup` objects), the next run, and the
//! `Ready` and `Suspended` conditions. Nothing in it changes between fire times, so writing it
//! does not wake the controller again.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::crd::backup_common::RunPhase;
use crate::crd::dhis2_backup::Dhis2Backup;
use crate::crd::dhis2_backup_schedule::Dhis2BackupScheduleStatus;

use crate::operator::kit::conditions::{condition, merge_conditions};
use crate::operator::schedule::build::{rfc3339, run_time};

/// What the controller found out this time.
pub struct ScheduleObservation<'a> {
    pub generation: Option<i64>,
    /// The spec's problem (bad cron, bad time zone), if any.
    pub invalid: Option<String>,
    pub suspended: bool,
    pub zone: Option<Tz>,
    pub last_schedule_time: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    /// The `Dhis2Backup` objects this schedule owns now.
    pub backups: &'a [Dhis2Backup],
}

fn phase(b: &Dhis2Backup) -> Option<RunPhase> {
    b.status.as_ref().and_then(|s| s.phase)
}

pub fn backup_schedule_status(
    old: &Dhis2BackupScheduleStatus,
    seen: &ScheduleObservation,
) -> Dhis2BackupScheduleStatus {
    let newest = seen
        .backups
        .iter()
        .max_by_key(|b| (run_time(&b.metadata), b.name_any()));
    let newest_completed = seen
        .backups
        .iter()
        .filter(|b| phase(b) == Some(RunPhase::Completed))
        .max_by_key(|b| (run_time(&b.metadata), b.name_any()));
    let completed_status = newest_completed.and_then(|b| b.status.as_ref());
    let local = |t: DateTime<Utc>| match seen.zone {
        Some(z) => format!("{} {z}", t.with_timezone(&z).format("%Y-%m-%d %H:%M")),
        None => rfc3339(t),
    };
    let ready = match (&seen.invalid, seen.suspended) {
        (Some(problem), _) => condition(
            "Ready",
            false,
            "InvalidSpec",
            problem.clone(),
            seen.generation,
        ),
        (None, true) => condition(
            "Ready",
            true,
            "Suspended",
            "suspended (spec.suspend): no new backups until it is resumed",
            seen.generation,
        ),
        (None, false) => condition(
            "Ready",
            true,
            "Scheduled",
            match seen.next_run {
                Some(next) => format!("next backup {}", local(next)),
                None => "the schedule has no further fire time".into(),
            },
            seen.generation,
        ),
    };
    let suspended = if seen.suspended {
        condition(
            "Suspended",
            true,
            "Suspended",
            "spec.suspend is true",
            seen.generation,
        )
    } else {
        condition(
            "Suspended",
            false,
            "Active",
            "backups run on schedule",
            seen.generation,
        )
    };
    Dhis2BackupScheduleStatus {
        observed_generation: seen.generation,
        last_schedule_time: seen
            .last_schedule_time
            .map(rfc3339)
            .or_else(|| old.last_schedule_time.clone()),
        last_successful_time: completed_status
            .and_then(|s| s.completed_at.clone())
            .or_else(|| old.last_successful_time.clone()),
        last_backup: newest
            .map(|b| b.name_any())
            .or_else(|| old.last_backup.clone()),
        next_run_time: seen.next_run.map(rfc3339),
        last_retention: completed_status
            .and_then(|s| s.retention.clone())
            .or_else(|| old.last_retention.clone()),
        conditions: merge_conditions(&old.conditions, vec![ready, suspended]),
    }
}

/// The Ready condition of a status, for tests and callers that report it.
pub fn ready_condition(status: &Dhis2BackupScheduleStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == "Ready")
}

#[cfg(test)]
mod tests {
    use crate::crd::dhis2_backup::Dhis2BackupStatus;
    use crate::operator::schedule::build::parse_time;

    use super::*;

    fn backup(
        name: &str,
        fire: &str,
        phase: Option<RunPhase>,
        completed: Option<&str>,
        retention: Option<&str>,
    ) -> Dhis2Backup {
        let mut b: Dhis2Backup = serde_json::from_value(serde_json::json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
            "metadata": {"name": name, "annotations": {"dhis2operator.io/scheduled-time": fire}},
            "spec": {"instanceRef": "hmis"}
        }))
        .unwrap();
        b.status = Some(Dhis2BackupStatus {
            phase,
            completed_at: completed.map(String::from),
            retention: retention.map(String::from),
            ..Default::default()
        });
        b
    }

    fn utc(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn the_status_reports_the_newest_backup_success_retention_and_next_run() {
        let backups = vec![
            backup(
                "s-1",
                "2026-11-22T19:00:00Z",
                Some(RunPhase::Completed),
                Some("2026-11-22T19:03:00Z"),
                Some("kept 2, deleted 0"),
            ),
            backup(
                "s-2",
                "2026-11-23T19:00:00Z",
                Some(RunPhase::Completed),
                Some("2026-11-23T19:04:00Z"),
                Some("kept 3, deleted 1"),
            ),
            backup(
                "s-3",
                "2026-11-24T19:00:00Z",
                Some(RunPhase::Failed),
                None,
                None,
            ),
            backup("s-4", "2026-11-25T19:00:00Z", None, None, None),
        ];
        let status = backup_schedule_status(
            &Dhis2BackupScheduleStatus::default(),
            &ScheduleObservation {
                generation: Some(2),
                invalid: None,
                suspended: false,
                zone: Some(chrono_tz::Asia::Phnom_Penh),
                last_schedule_time: Some(utc("2026-11-25T19:00:00Z")),
                next_run: Some(utc("2026-11-26T19:00:00Z")),
                backups: &backups,
            },
        );
        assert_eq!(
            status.last_schedule_time.as_deref(),
            Some("2026-11-25T19:00:00Z")
        );
        assert_eq!(status.last_backup.as_deref(), Some("s-4"));
        assert_eq!(
            status.last_successful_time.as_deref(),
            Some("2026-11-23T19:04:00Z")
        );
        assert_eq!(status.last_retention.as_deref(), Some("kept 3, deleted 1"));
        assert_eq!(
            status.next_run_time.as_deref(),
            Some("2026-11-26T19:00:00Z")
        );
        let ready = ready_condition(&status).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Scheduled")
        );
        assert_eq!(
            ready.message,
            "next backup 2026-11-27 02:00 Asia/Phnom_Penh"
        );
    }

    #[test]
    fn history_deleted_by_limits_keeps_what_the_status_knew() {
        let old = Dhis2BackupScheduleStatus {
            last_successful_time: Some("2026-11-20T19:02:00Z".into()),
            last_retention: Some("kept 7, deleted 1".into()),
            last_backup: Some("s-0".into()),
            ..Default::default()
        };
        let status = backup_schedule_status(
            &old,
            &ScheduleObservation {
                generation: Some(1),
                invalid: None,
                suspended: true,
                zone: None,
                last_schedule_time: None,
                next_run: None,
                backups: &[],
            },
        );
        assert_eq!(status.last_successful_time, old.last_successful_time);
        assert_eq!(status.last_retention, old.last_retention);
        assert_eq!(status.last_backup, old.last_backup);
        assert_eq!(status.next_run_time, None);
        let suspended = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Suspended")
            .unwrap();
        assert_eq!(suspended.status, "True");
    }

    #[test]
    fn an_invalid_spec_is_not_ready_and_says_why() {
        let status = backup_schedule_status(
            &Dhis2BackupScheduleStatus::default(),
            &ScheduleObservation {
                generation: Some(3),
                invalid: Some("spec.timeZone: 'Mars/Olympus' is not an IANA time zone name".into()),
                suspended: false,
                zone: None,
                last_schedule_time: None,
                next_run: None,
                backups: &[],
            },
        );
        let ready = ready_condition(&status).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(ready.message.contains("spec.timeZone"));
        assert_eq!(ready.observed_generation, Some(3));
    }
}
