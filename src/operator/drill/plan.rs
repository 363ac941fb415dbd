//! What a `Dhis2Drill` does next (pure): from its status and the objects found, one step —
//! start the throw-away server, wait for it, start the Job, wait for it, record the outcome,
//! clean up. Everything it needs is in status or found by deterministic names, so an operator
//! restart at any point carries on where it stopped; a finished drill never runs again.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::crd::backup_common::RunPhase;
use crate::crd::dhis2_drill::Dhis2DrillStatus;
use crate::job_report::{DrillJobReport, JobReport};
use crate::output::human_duration;

use crate::operator::jobs::outcome::JobOutcome;
use crate::operator::kit::conditions::{condition, merge_conditions};

/// How long the throw-away server may take to become ready (image pull, initdb, PostGIS).
pub const SERVER_READY_BOUND_SECONDS: i64 = 600;

/// The throw-away server's pod as found.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerPod {
    Absent,
    /// Exists, not ready yet: what it is doing (phase, waiting reason).
    Starting(String),
    Ready,
}

/// What reconciling found.
#[derive(Debug, Clone)]
pub struct DrillObservation {
    pub phase: Option<RunPhase>,
    pub started_at: Option<DateTime<Utc>>,
    /// Status names the Job: it was created.
    pub job_recorded: bool,
    pub cleaned_up: bool,
    /// Why the drill cannot run at all (no repository, an object of ours taken by someone else).
    pub blocked: Option<String>,
    pub secret: bool,
    pub service: bool,
    pub pod: ServerPod,
    pub job: JobOutcome,
    pub now: DateTime<Utc>,
}

/// How a drill ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DrillResult {
    /// The engine ran the drill (passed or not) and reported.
    Ran(DrillJobReport),
    /// The drill could not run; why.
    CouldNotRun(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum DrillStep {
    /// Create whichever of the server's Secret, Pod and Service are missing; phase Running.
    StartServer,
    /// The Secret is gone but the pod runs with its password: delete the pod to start afresh.
    ReplaceServer,
    WaitForServer,
    StartJob,
    WaitForJob,
    /// Write the final status (and tell people when it failed).
    Record(DrillResult),
    /// Delete what is left; `cleanedUp` once nothing is.
    CleanUp,
    Done,
}

pub fn next_step(o: &DrillObservation) -> DrillStep {
    let leftovers =
        o.secret || o.service || o.pod != ServerPod::Absent || o.job != JobOutcome::Missing;
    if o.phase.is_some_and(RunPhase::is_finished) {
        return if leftovers || !o.cleaned_up {
            DrillStep::CleanUp
        } else {
            DrillStep::Done
        };
    }
    match &o.job {
        JobOutcome::Succeeded(Some(JobReport::Drill(report)))
        | JobOutcome::Failed {
            report: Some(JobReport::Drill(report)),
            ..
        } => return DrillStep::Record(DrillResult::Ran(report.clone())),
        JobOutcome::Succeeded(_) => {
            return DrillStep::Record(DrillResult::CouldNotRun(
                "the drill Job finished without a drill report".into(),
            ));
        }
        JobOutcome::Failed { reason, .. } => {
            return DrillStep::Record(DrillResult::CouldNotRun(format!(
                "the drill Job failed: {reason}"
            )));
        }
        JobOutcome::Running => return DrillStep::WaitForJob,
        JobOutcome::Missing if o.job_recorded => {
            return DrillStep::Record(DrillResult::CouldNotRun(
                "the drill Job was deleted before it reported".into(),
            ));
        }
        JobOutcome::Missing => {}
    }
    if let Some(why) = &o.blocked {
        return DrillStep::Record(DrillResult::CouldNotRun(why.clone()));
    }
    if !o.secret && o.pod != ServerPod::Absent {
        return DrillStep::ReplaceServer;
    }
    if !o.secret || !o.service || o.pod == ServerPod::Absent || o.phase != Some(RunPhase::Running) {
        return DrillStep::StartServer;
    }
    match &o.pod {
        ServerPod::Ready => DrillStep::StartJob,
        ServerPod::Starting(what) => {
            let waited = o
                .started_at
                .map(|s| (o.now - s).num_seconds())
                .unwrap_or_default();
            if waited > SERVER_READY_BOUND_SECONDS {
                DrillStep::Record(DrillResult::CouldNotRun(format!(
                    "the throw-away PostGIS server was not ready within {}: {what}",
                    human_duration(SERVER_READY_BOUND_SECONDS)
                )))
            } else {
                DrillStep::WaitForServer
            }
        }
        ServerPod::Absent => DrillStep::StartServer,
    }
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The status of a drill that has just started its server.
pub fn running_status(
    old: &Dhis2DrillStatus,
    backup_id: Option<&str>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Dhis2DrillStatus {
    Dhis2DrillStatus {
        observed_generation: generation,
        phase: Some(RunPhase::Running),
        backup_id: old
            .backup_id
            .clone()
            .or_else(|| backup_id.map(str::to_string)),
        started_at: old.started_at.clone().or_else(|| Some(timestamp(now))),
        ..old.clone()
    }
}

/// The final status: `Completed` when the engine ran the drill (passed or not), `Failed` when
/// it could not run. Nothing is cleaned up yet.
pub fn finished_status(
    old: &Dhis2DrillStatus,
    result: &DrillResult,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Dhis2DrillStatus {
    let mut status = Dhis2DrillStatus {
        observed_generation: generation,
        completed_at: Some(timestamp(now)),
        started_at: old.started_at.clone().or_else(|| Some(timestamp(now))),
        cleaned_up: Some(false),
        ..old.clone()
    };
    let passed = match result {
        DrillResult::Ran(r) => {
            status.phase = Some(RunPhase::Completed);
            status.backup_id = Some(r.backup_id.clone());
            status.passed = Some(r.passed);
            status.rpo_seconds = Some(r.rpo_seconds);
            status.rto_seconds = Some(r.rto_seconds);
            status.rpo = Some(human_duration(r.rpo_seconds));
            // Rounded up: a drill never reads as taking no time.
            status.rto = Some(human_duration(r.rto_seconds.ceil() as i64));
            status.failures = r.failures.clone();
            r.passed
        }
        DrillResult::CouldNotRun(why) => {
            status.phase = Some(RunPhase::Failed);
            status.passed = Some(false);
            status.failures = vec![why.clone()];
            false
        }
    };
    let (reason, message) = match (result, passed) {
        (DrillResult::Ran(r), true) => (
            "DrillPassed",
            format!("backup {} restored and passed every check", r.backup_id),
        ),
        (DrillResult::Ran(_), false) => ("DrillFailed", status.failures.join("; ")),
        (DrillResult::CouldNotRun(why), _) => ("DrillCouldNotRun", why.clone()),
    };
    status.conditions = merge_conditions(
        &old.conditions,
        vec![condition("Passed", passed, reason, message, generation)],
    );
    status
}

/// The Warning Event of a failed drill (on the drill and on its instance); `None` when it passed.
pub fn failure_event(result: &DrillResult) -> Option<String> {
    match result {
        DrillResult::Ran(r) if r.passed => None,
        DrillResult::Ran(r) => Some(format!(
            "restore drill of backup {} failed: {}",
            r.backup_id,
            r.failures.join("; ")
        )),
        DrillResult::CouldNotRun(why) => Some(format!("restore drill could not run: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fresh() -> DrillObservation {
        DrillObservation {
            phase: None,
            started_at: None,
            job_recorded: false,
            cleaned_up: false,
            blocked: None,
            secret: false,
            service: false,
            pod: ServerPod::Absent,
            job: JobOutcome::Missing,
            now: at("2026-11-29T03:00:00Z"),
        }
    }

    fn running(pod: ServerPod) -> DrillObservation {
        DrillObservation {
            phase: Some(RunPhase::Running),
            started_at: Some(at("2026-11-29T03:00:00Z")),
            secret: true,
            service: true,
            pod,
            ..fresh()
        }
    }

    fn report(passed: bool) -> DrillJobReport {
        DrillJobReport {
            backup_id: "20261129T020000Z-1a2b3c4d".into(),
            passed,
            rpo_seconds: 3720,
            rto_seconds: 42.2,
            failures: if passed {
                vec![]
            } else {
                vec!["restore failed: checksum mismatch".into()]
            },
        }
    }

    #[test]
    fn a_new_drill_starts_its_own_server_then_the_job_once_the_server_is_ready() {
        assert_eq!(next_step(&fresh()), DrillStep::StartServer);
        // Created, status not yet written (the operator restarted): the same step again.
        let half = DrillObservation {
            secret: true,
            pod: ServerPod::Starting("Pending".into()),
            ..fresh()
        };
        assert_eq!(next_step(&half), DrillStep::StartServer);
        assert_eq!(
            next_step(&running(ServerPod::Starting("Pending".into()))),
            DrillStep::WaitForServer
        );
        assert_eq!(next_step(&running(ServerPod::Ready)), DrillStep::StartJob);
        let evicted = running(ServerPod::Absent);
        assert_eq!(next_step(&evicted), DrillStep::StartServer);
        let lost_secret = DrillObservation {
            secret: false,
            ..running(ServerPod::Ready)
        };
        assert_eq!(next_step(&lost_secret), DrillStep::ReplaceServer);
        let mut job = running(ServerPod::Ready);
        job.job = JobOutcome::Running;
        job.job_recorded = true;
        assert_eq!(next_step(&job), DrillStep::WaitForJob);
    }

    #[test]
    fn a_server_that_never_gets_ready_fails_the_drill_after_the_bound() {
        let mut o = running(ServerPod::Starting("ImagePullBackOff".into()));
        o.now = at("2026-11-29T03:09:00Z");
        assert_eq!(next_step(&o), DrillStep::WaitForServer);
        o.now = at("2026-11-29T03:10:01Z");
        let DrillStep::Record(DrillResult::CouldNotRun(why)) = next_step(&o) else {
            panic!("{:?}", next_step(&o))
        };
        assert!(
            why.contains("not ready within 10m 0s: ImagePullBackOff"),
            "{why}"
        );
    }

    #[test]
    fn the_engine_report_is_recorded_whether_the_drill_passed_or_not() {
        let mut o = running(ServerPod::Ready);
        o.job_recorded = true;
        o.job = JobOutcome::Succeeded(Some(JobReport::Drill(report(true))));
        assert_eq!(
            next_step(&o),
            DrillStep::Record(DrillResult::Ran(report(true)))
        );
        // A drill that ran but did not pass exits 1: the Job failed, the report is complete.
        o.job = JobOutcome::Failed {
            reason: "the engine exited with code 1".into(),
            report: Some(JobReport::Drill(report(false))),
        };
        assert_eq!(
            next_step(&o),
            DrillStep::Record(DrillResult::Ran(report(false)))
        );
    }

    #[test]
    fn a_drill_that_cannot_run_says_why() {
        let blocked = DrillObservation {
            blocked: Some("no backup repository".into()),
            ..fresh()
        };
        assert_eq!(
            next_step(&blocked),
            DrillStep::Record(DrillResult::CouldNotRun("no backup repository".into()))
        );
        let mut o = running(ServerPod::Ready);
        o.job_recorded = true;
        o.job = JobOutcome::Failed {
            reason: "no complete backup 2026 of instance hmis".into(),
            report: Some(JobReport::Failed {
                error: "no complete backup 2026 of instance hmis".into(),
            }),
        };
        let DrillStep::Record(DrillResult::CouldNotRun(why)) = next_step(&o) else {
            panic!()
        };
        assert!(why.contains("no complete backup"), "{why}");
        o.job = JobOutcome::Succeeded(None);
        assert!(matches!(
            next_step(&o),
            DrillStep::Record(DrillResult::CouldNotRun(_))
        ));
        o.job = JobOutcome::Missing;
        let DrillStep::Record(DrillResult::CouldNotRun(why)) = next_step(&o) else {
            panic!()
        };
        assert!(why.contains("deleted"), "{why}");
    }

    #[test]
    fn a_finished_drill_never_runs_again_and_leaves_nothing_behind() {
        let mut o = running(ServerPod::Ready);
        o.phase = Some(RunPhase::Completed);
        o.job = JobOutcome::Succeeded(Some(JobReport::Drill(report(true))));
        assert_eq!(next_step(&o), DrillStep::CleanUp);
        let gone = DrillObservation {
            phase: Some(RunPhase::Failed),
            blocked: Some("no backup repository".into()),
            ..fresh()
        };
        assert_eq!(
            next_step(&gone),
            DrillStep::CleanUp,
            "cleanedUp not yet set"
        );
        let done = DrillObservation {
            cleaned_up: true,
            ..gone
        };
        assert_eq!(next_step(&done), DrillStep::Done);
    }

    #[test]
    fn the_status_carries_the_report_in_numbers_and_words() {
        let start = running_status(
            &Dhis2DrillStatus::default(),
            None,
            Some(1),
            at("2026-11-29T03:00:00Z"),
        );
        assert_eq!(start.phase, Some(RunPhase::Running));
        assert_eq!(start.started_at.as_deref(), Some("2026-11-29T03:00:00Z"));
        let again = running_status(&start, None, Some(1), at("2026-11-29T03:05:00Z"));
        assert_eq!(
            again.started_at, start.started_at,
            "the start stays the start"
        );

        let now = at("2026-11-29T03:01:00Z");
        let s = finished_status(&start, &DrillResult::Ran(report(true)), Some(1), now);
        assert_eq!(s.phase, Some(RunPhase::Completed));
        assert_eq!(s.passed, Some(true));
        assert_eq!(s.rpo.as_deref(), Some("1h 2m"));
        assert_eq!(s.rto.as_deref(), Some("43s"));
        assert_eq!(s.rto_seconds, Some(42.2));
        assert_eq!(s.completed_at.as_deref(), Some("2026-11-29T03:01:00Z"));
        assert_eq!(s.cleaned_up, Some(false));
        assert_eq!(s.conditions[0].status, "True");
        assert!(failure_event(&DrillResult::Ran(report(true))).is_none());

        let failed = finished_status(&start, &DrillResult::Ran(report(false)), Some(1), now);
        assert_eq!(failed.phase, Some(RunPhase::Completed));
        assert_eq!(failed.passed, Some(false));
        assert_eq!(failed.failures, vec!["restore failed: checksum mismatch"]);
        assert_eq!(failed.conditions[0].reason, "DrillFailed");
        assert!(
            failure_event(&DrillResult::Ran(report(false)))
                .unwrap()
                .contains("checksum mismatch")
        );

        let result = DrillResult::CouldNotRun("no backup repository".into());
        let not_run = finished_status(&Dhis2DrillStatus::default(), &result, Some(1), now);
        assert_eq!(not_run.phase, Some(RunPhase::Failed));
        assert_eq!(not_run.passed, Some(false));
        assert_eq!(not_run.failures, vec!["no backup repository"]);
        assert_eq!(not_run.rto, None);
        assert!(failure_event(&result).unwrap().contains("could not run"));
    }
}
