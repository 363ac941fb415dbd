//! A `Dhis2Backup`'s status in each phase (pure). Times are written once, at the transition that sets them, never
//! on every reconcile.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::crd::backup_common::RunPhase;
use crate::crd::dhis2_backup::Dhis2BackupStatus;
use crate::job_report::BackupJobReport;
use crate::output::human_bytes;

use crate::operator::kit::conditions::{condition, merge_conditions};

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn seconds_between(start: &str, end: &str) -> Option<f64> {
    let start = DateTime::parse_from_rfc3339(start).ok()?;
    let end = DateTime::parse_from_rfc3339(end).ok()?;
    Some((end - start).num_milliseconds().max(0) as f64 / 1000.0)
}

fn with_progress(
    old: &Dhis2BackupStatus,
    mut status: Dhis2BackupStatus,
    generation: Option<i64>,
    active: bool,
    reason: &str,
    message: &str,
) -> Dhis2BackupStatus {
    status.observed_generation = generation;
    status.conditions = merge_conditions(
        &old.conditions,
        vec![condition(
            "Progressing",
            active,
            reason,
            message,
            generation,
        )],
    );
    status
}

/// Waiting to start, and why.
pub fn pending_status(
    old: &Dhis2BackupStatus,
    generation: Option<i64>,
    repository: Option<String>,
    why: &str,
) -> Dhis2BackupStatus {
    let status = Dhis2BackupStatus {
        phase: Some(RunPhase::Pending),
        repository: repository.or_else(|| old.repository.clone()),
        ..old.clone()
    };
    with_progress(old, status, generation, true, "Waiting", why)
}

/// The Job runs (or was found running after a restart: the first start time is kept).
pub fn running_status(
    old: &Dhis2BackupStatus,
    generation: Option<i64>,
    job_name: &str,
    repository: Option<String>,
    now: DateTime<Utc>,
) -> Dhis2BackupStatus {
    let status = Dhis2BackupStatus {
        phase: Some(RunPhase::Running),
        job_name: Some(job_name.to_string()),
        repository: repository.or_else(|| old.repository.clone()),
        started_at: old.started_at.clone().or_else(|| Some(rfc3339(now))),
        ..old.clone()
    };
    with_progress(
        old,
        status,
        generation,
        true,
        "Running",
        &format!("the engine runs in Job {job_name}"),
    )
}

fn apply_report(status: &mut Dhis2BackupStatus, report: &BackupJobReport) {
    status.backup_id = Some(report.id.clone()).filter(|id| !id.is_empty());
    status.repository = Some(report.repository.clone()).filter(|r| !r.is_empty());
    status.started_at = Some(report.started_at.clone());
    status.completed_at = Some(report.completed_at.clone());
    status.duration_seconds = seconds_between(&report.started_at, &report.completed_at);
    status.size_bytes = Some(report.size_bytes);
    status.size = Some(human_bytes(report.size_bytes));
    status.dhis2_version = report.dhis2_schema_version.clone();
    status.postgres_version = Some(report.postgres_version.clone());
    status.retention = report.retention.clone();
    status.encrypted = Some(report.encrypted);
    status.locked_until = report.locked_until.clone();
    status.verified = report.verified;
}

pub fn completed_status(
    old: &Dhis2BackupStatus,
    generation: Option<i64>,
    report: &BackupJobReport,
) -> Dhis2BackupStatus {
    let mut status = Dhis2BackupStatus {
        phase: Some(RunPhase::Completed),
        failure_reason: None,
        ..old.clone()
    };
    apply_report(&mut status, report);
    let message = format!(
        "backup {} stored in {}",
        report.id,
        status.repository.as_deref().unwrap_or("the repository")
    );
    with_progress(old, status, generation, false, "Completed", &message)
}

pub fn failed_status(
    old: &Dhis2BackupStatus,
    generation: Option<i64>,
    reason: &str,
    report: Option<&BackupJobReport>,
    now: DateTime<Utc>,
) -> Dhis2BackupStatus {
    let mut status = Dhis2BackupStatus {
        phase: Some(RunPhase::Failed),
        failure_reason: Some(reason.to_string()),
        ..old.clone()
    };
    match report {
        Some(r) => apply_report(&mut status, r),
        None => {
            let completed = rfc3339(now);
            status.duration_seconds = status
                .started_at
                .as_deref()
                .and_then(|s| seconds_between(s, &completed));
            status.completed_at = Some(completed);
        }
    }
    with_progress(old, status, generation, false, "Failed", reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> BackupJobReport {
        BackupJobReport {
            id: "20261125T020000Z-1a2b3c4d".into(),
            repository: "s3://moh/hmis".into(),
            started_at: "2026-11-25T02:00:00+00:00".into(),
            completed_at: "2026-11-25T02:01:30.500+00:00".into(),
            size_bytes: 3 * 1024 * 1024,
            dhis2_schema_version: Some("2.41.3".into()),
            postgres_version: "15.8".into(),
            retention: Some("kept 7, deleted 1".into()),
            encrypted: true,
            locked_until: None,
            verified: Some(true),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_completed_backup_carries_the_engine_report() {
        let running = running_status(
            &Dhis2BackupStatus::default(),
            Some(1),
            "b-backup",
            Some("s3://moh/hmis".into()),
            at("2026-11-25T02:00:00Z"),
        );
        let done = completed_status(&running, Some(1), &report());
        assert_eq!(done.phase, Some(RunPhase::Completed));
        assert_eq!(done.backup_id.as_deref(), Some("20261125T020000Z-1a2b3c4d"));
        assert_eq!(done.job_name.as_deref(), Some("b-backup"));
        assert_eq!(done.size.as_deref(), Some("3.00 MiB"));
        assert_eq!(done.duration_seconds, Some(90.5));
        assert_eq!(done.dhis2_version.as_deref(), Some("2.41.3"));
        assert_eq!(done.postgres_version.as_deref(), Some("15.8"));
        assert_eq!(done.retention.as_deref(), Some("kept 7, deleted 1"));
        assert_eq!(done.conditions[0].status, "False");
        assert_eq!(done.verified, Some(true));
    }

    #[test]
    fn verified_is_what_the_engine_reported() {
        let unverified = BackupJobReport {
            verified: None,
            ..report()
        };
        let done = completed_status(&Dhis2BackupStatus::default(), Some(1), &unverified);
        assert_eq!(done.verified, None, "not asked for: not claimed");
        // The report as the engine writes it into the termination message.
        let message = crate::job_report::JobReport::Backup(report()).to_bounded_json();
        assert!(message.contains(r#""verified":true"#), "{message}");
        let Some(crate::job_report::JobReport::Backup(parsed)) =
            crate::job_report::JobReport::parse(&message)
        else {
            panic!("{message}")
        };
        let done = completed_status(&Dhis2BackupStatus::default(), Some(1), &parsed);
        assert_eq!(done.verified, Some(true));
    }

    #[test]
    fn times_are_set_once() {
        let first = running_status(
            &Dhis2BackupStatus::default(),
            Some(1),
            "b-backup",
            None,
            at("2026-11-25T02:00:00Z"),
        );
        let again = running_status(
            &first,
            Some(1),
            "b-backup",
            None,
            at("2026-11-25T02:05:00Z"),
        );
        assert_eq!(first, again);
        let failed = failed_status(
            &again,
            Some(1),
            "the Job b-backup was deleted before it finished",
            None,
            at("2026-11-25T02:10:00Z"),
        );
        assert_eq!(failed.started_at.as_deref(), Some("2026-11-25T02:00:00Z"));
        assert_eq!(failed.completed_at.as_deref(), Some("2026-11-25T02:10:00Z"));
        assert_eq!(failed.duration_seconds, Some(600.0));
        assert_eq!(failed.phase, Some(RunPhase::Failed));
    }
}
