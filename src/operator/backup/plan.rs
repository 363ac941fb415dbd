//! What a `Dhis2Backup` does next (pure). A backup is one attempt: it starts once, its Job is
//! never re-created, and it always ends `Completed` or `Failed` — a vanished Job, an evicted
//! pod, a passed deadline and a wait that never ends are failures with a reason, so nothing ever
//! blocks the backups that come after it.

use crate::job_report::{BackupJobReport, JobReport};

use crate::operator::jobs::outcome::JobOutcome;

/// Where the backup's Job is.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// No Job, and none was made for this backup yet: it may start.
    NotStarted,
    Running,
    Completed(BackupJobReport),
    Failed {
        reason: String,
        report: Option<BackupJobReport>,
    },
}

/// `job_recorded`: the status already names the Job (it was created). `job_deleting`: the Job
/// has a deletion timestamp (foreground deletion waits for its pods).
pub fn job_progress(
    job_name: &str,
    job_recorded: bool,
    job_deleting: bool,
    outcome: JobOutcome,
) -> Progress {
    let deleted = || Progress::Failed {
        reason: format!(
            "the Job {job_name} was deleted before it finished; create a new Dhis2Backup to try again"
        ),
        report: None,
    };
    match outcome {
        JobOutcome::Missing if job_recorded => deleted(),
        JobOutcome::Missing => Progress::NotStarted,
        JobOutcome::Running if job_deleting => deleted(),
        JobOutcome::Running => Progress::Running,
        JobOutcome::Succeeded(Some(JobReport::Backup(report))) => Progress::Completed(report),
        JobOutcome::Succeeded(_) => Progress::Failed {
            reason: format!(
                "the Job {job_name} succeeded but left no backup report (its termination message); see `dhis2ctl backup list` for what the repository holds"
            ),
            report: None,
        },
        JobOutcome::Failed { reason, report } => Progress::Failed {
            reason,
            report: match report {
                Some(JobReport::Backup(r)) => Some(r),
                _ => None,
            },
        },
    }
}

/// What a backup that has not started found of what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Everything is there.
    Ready,
    /// Something the cluster may still provide (the instance, a Secret, the file store claim).
    Missing(String),
    /// A spec that cannot work until a person changes it.
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartStep {
    CreateJob,
    /// Stay `Pending` with this message.
    Wait(String),
    Fail(String),
}

/// Whether a backup that has not started starts now. `busy_with`: another backup of the same
/// instance that is running (one at a time: two dumps would double the load on the database and
/// race on the repository). `waited_seconds`: since the backup was created; a backup that could
/// not start within its deadline fails instead of waiting forever.
pub fn start_step(
    readiness: &Readiness,
    busy_with: Option<&str>,
    instance: &str,
    waited_seconds: i64,
    deadline_seconds: i64,
) -> StartStep {
    let wait = match (readiness, busy_with) {
        (Readiness::Invalid(why), _) => return StartStep::Fail(why.clone()),
        (Readiness::Missing(why), _) => why.clone(),
        (Readiness::Ready, Some(other)) => format!(
            "waiting for Dhis2Backup {other} of instance {instance} to finish (one backup of an instance at a time)"
        ),
        (Readiness::Ready, None) => return StartStep::CreateJob,
    };
    if waited_seconds >= deadline_seconds {
        StartStep::Fail(format!(
            "could not start within its deadline of {deadline_seconds}s (spec.deadlineSeconds): {wait}"
        ))
    } else {
        StartStep::Wait(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> BackupJobReport {
        BackupJobReport {
            id: "20261125T020000Z-1a2b3c4d".into(),
            repository: "s3://moh/hmis".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_job_is_made_once_and_its_disappearance_is_a_failure() {
        assert_eq!(
            job_progress("b-backup", false, false, JobOutcome::Missing),
            Progress::NotStarted
        );
        for (recorded, deleting, outcome) in [
            (true, false, JobOutcome::Missing),
            (true, true, JobOutcome::Running),
            (false, true, JobOutcome::Running),
        ] {
            let Progress::Failed { reason, .. } =
                job_progress("b-backup", recorded, deleting, outcome)
            else {
                panic!("not a failure")
            };
            assert!(
                reason.starts_with("the Job b-backup was deleted"),
                "{reason}"
            );
        }
        // A Job found without a status naming it (the operator stopped right after making
        // it) is adopted, not made again.
        assert_eq!(
            job_progress("b-backup", false, false, JobOutcome::Running),
            Progress::Running
        );
    }

    #[test]
    fn the_engine_report_decides_the_outcome() {
        assert_eq!(
            job_progress(
                "b",
                true,
                false,
                JobOutcome::Succeeded(Some(JobReport::Backup(report())))
            ),
            Progress::Completed(report())
        );
        assert!(matches!(
            job_progress("b", true, false, JobOutcome::Succeeded(None)),
            Progress::Failed { .. }
        ));
        let failed = JobOutcome::Failed {
            reason: "cannot connect to the database: password authentication failed".into(),
            report: Some(JobReport::Failed { error: "x".into() }),
        };
        assert_eq!(
            job_progress("b", true, false, failed),
            Progress::Failed {
                reason: "cannot connect to the database: password authentication failed".into(),
                report: None
            }
        );
    }

    #[test]
    fn one_backup_of_an_instance_at_a_time_and_no_wait_lasts_forever() {
        assert_eq!(
            start_step(&Readiness::Ready, None, "hmis", 0, 3600),
            StartStep::CreateJob
        );
        let StartStep::Wait(why) = start_step(&Readiness::Ready, Some("hmis-a"), "hmis", 10, 3600)
        else {
            panic!()
        };
        assert!(why.contains("Dhis2Backup hmis-a"), "{why}");
        let StartStep::Fail(why) =
            start_step(&Readiness::Ready, Some("hmis-a"), "hmis", 3600, 3600)
        else {
            panic!()
        };
        assert!(
            why.starts_with("could not start within its deadline of 3600s"),
            "{why}"
        );
        let missing = Readiness::Missing("Dhis2Instance hmis does not exist".into());
        assert_eq!(
            start_step(&missing, None, "hmis", 5, 3600),
            StartStep::Wait("Dhis2Instance hmis does not exist".into())
        );
        let invalid = Readiness::Invalid("no backup repository".into());
        assert_eq!(
            start_step(&invalid, None, "hmis", 0, 3600),
            StartStep::Fail("no backup repository".into())
        );
    }
}
