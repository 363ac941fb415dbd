//! How an engine Job ended, read from the Job's conditions and its pod's termination message
//! (pure). A Job that vanished, a pod that was evicted or killed, a deadline passed: each is a
//! failure with a reason a person can act on, never a state that waits forever.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use crate::job_report::JobReport;

use crate::operator::jobs::engine_job::ENGINE_CONTAINER;

#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// Not finished yet (pending, or running).
    Running,
    /// Finished successfully; the engine's report when it left one.
    Succeeded(Option<JobReport>),
    /// Finished unsuccessfully: why, and the engine's report when it left one (a drill that
    /// ran but did not pass exits 1 with a full report).
    Failed {
        reason: String,
        report: Option<JobReport>,
    },
    /// The Job is gone (deleted by someone, or never created).
    Missing,
}

fn condition<'a>(
    job: &'a Job,
    kind: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

/// The engine container's termination: (exit code, reason, message).
fn termination(pod: &Pod) -> Option<(i32, Option<String>, Option<String>)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let status = statuses
        .iter()
        .find(|s| s.name == ENGINE_CONTAINER)
        .or(statuses.first())?;
    let t = status.state.as_ref()?.terminated.as_ref()?;
    Some((t.exit_code, t.reason.clone(), t.message.clone()))
}

/// The report of the newest finished pod of the Job.
fn report_of(pods: &[Pod]) -> Option<JobReport> {
    pods.iter()
        .filter_map(termination)
        .filter_map(|(_, _, message)| message.as_deref().and_then(JobReport::parse))
        .next()
}

/// Why the pods failed, when the engine could not say: evicted, OOM-killed, an exit code with
/// the log's tail.
fn pod_failure(pods: &[Pod]) -> Option<String> {
    for pod in pods {
        let status = pod.status.as_ref();
        if status.and_then(|s| s.reason.as_deref()) == Some("Evicted") {
            let message = status.and_then(|s| s.message.clone()).unwrap_or_default();
            return Some(
                format!("the pod was evicted: {message}")
                    .trim_end_matches([':', ' '])
                    .to_string(),
            );
        }
        if let Some((code, reason, message)) = termination(pod)
            && code != 0
        {
            let mut text = match reason.as_deref() {
                Some("OOMKilled") => {
                    "the engine ran out of memory (OOMKilled); raise the Job's memory limit"
                        .to_string()
                }
                _ => format!("the engine exited with code {code}"),
            };
            if let Some(m) = message.filter(|m| !m.trim().is_empty()) {
                let last = m.trim().lines().last().unwrap_or_default().to_string();
                text.push_str(&format!(": {last}"));
            }
            return Some(text);
        }
    }
    None
}

pub fn job_outcome(job: Option<&Job>, pods: &[Pod]) -> JobOutcome {
    let Some(job) = job else {
        return JobOutcome::Missing;
    };
    let report = report_of(pods);
    if condition(job, "Complete").is_some() {
        return JobOutcome::Succeeded(report);
    }
    if let Some(failed) = condition(job, "Failed") {
        let reason = match (&report, failed.reason.as_deref()) {
            (Some(JobReport::Failed { error }), _) => error.clone(),
            (Some(JobReport::Restore(r)), _) if r.failure.is_some() => {
                r.failure.clone().unwrap_or_default()
            }
            (_, Some("DeadlineExceeded")) => format!(
                "stopped after its deadline of {}s (spec.deadlineSeconds)",
                job.spec
                    .as_ref()
                    .and_then(|s| s.active_deadline_seconds)
                    .unwrap_or_default()
            ),
            _ => pod_failure(pods)
                .or_else(|| failed.message.clone())
                .unwrap_or_else(|| "the Job failed".into()),
        };
        return JobOutcome::Failed { reason, report };
    }
    JobOutcome::Running
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j"},
            "spec": {"activeDeadlineSeconds": 600, "template": {}},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    fn terminated(code: i32, reason: &str, message: &str) -> Pod {
        pod(
            json!({"phase": if code == 0 {"Succeeded"} else {"Failed"}, "containerStatuses": [{
            "name": "engine", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": code, "reason": reason, "message": message}}}]}),
        )
    }

    #[test]
    fn a_vanished_job_is_missing_and_an_unfinished_one_runs() {
        assert_eq!(job_outcome(None, &[]), JobOutcome::Missing);
        assert_eq!(job_outcome(Some(&job(json!([]))), &[]), JobOutcome::Running);
    }

    #[test]
    fn success_carries_the_engine_report() {
        let message = r#"{"kind":"backup","id":"20261125T020000Z-1a2b3c4d","repository":"s3://b","startedAt":"x","completedAt":"y","sizeBytes":10,"postgresVersion":"15.8"}"#;
        let outcome = job_outcome(
            Some(&job(json!([{"type": "Complete", "status": "True"}]))),
            &[terminated(0, "Completed", message)],
        );
        let JobOutcome::Succeeded(Some(JobReport::Backup(b))) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(b.id, "20261125T020000Z-1a2b3c4d");
    }

    #[test]
    fn failures_say_why() {
        let failed = job(
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]),
        );
        let engine = terminated(
            1,
            "Error",
            r#"{"kind":"failed","error":"cannot connect to the database: password authentication failed for user \"dhis\""}"#,
        );
        let JobOutcome::Failed { reason, .. } = job_outcome(Some(&failed), &[engine]) else {
            panic!()
        };
        assert!(
            reason.contains("password authentication failed"),
            "{reason}"
        );

        let oom = terminated(137, "OOMKilled", "");
        let JobOutcome::Failed { reason, .. } = job_outcome(Some(&failed), &[oom]) else {
            panic!()
        };
        assert!(reason.contains("out of memory"), "{reason}");

        let evicted = pod(
            json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: ephemeral-storage."}),
        );
        let JobOutcome::Failed { reason, .. } = job_outcome(Some(&failed), &[evicted]) else {
            panic!()
        };
        assert!(
            reason.starts_with("the pod was evicted: The node was low"),
            "{reason}"
        );

        let late = job(json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]));
        let JobOutcome::Failed { reason, .. } = job_outcome(Some(&late), &[]) else {
            panic!()
        };
        assert!(reason.contains("deadline of 600s"), "{reason}");
    }
}
