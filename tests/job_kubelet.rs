//! The Job harness itself (tests/support/job_kubelet.rs) against the real apiserver and the real
//! job controller: engine Jobs built by the operator's own builder run, and the job controller
//! marks them Complete or Failed from the pod status the harness writes.

mod support;

use std::collections::{BTreeMap, HashMap};

use dhis2_operator::crd::backup_common::{RepositorySpec, S3RepositorySpec};
use dhis2_operator::job_report::JobReport;
use dhis2_operator::operator::jobs::engine_job::{
    EngineInputs, EngineJob, build_engine_job, repository_inputs, secret_env,
};
use dhis2_operator::operator::jobs::outcome::{JobOutcome, job_outcome};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::job_kubelet::{JobKubelet, RunState, expand, rewrite_hosts, rewrite_paths};
use support::kube_env::{client, namespace, wait_for};

fn engine_job(ns: &str, name: &str, args: &[&str], inputs: EngineInputs) -> Job {
    build_engine_job(&EngineJob {
        name: name.into(),
        namespace: ns.into(),
        owner: None,
        labels: BTreeMap::from([("test".to_string(), "job-kubelet".to_string())]),
        args: args.iter().map(|a| a.to_string()).collect(),
        inputs,
        deadline_seconds: 600,
        affinity: None,
        image: "dhis2-operator:test".into(),
    })
}

async fn create_secret(client: &Client, ns: &str, name: &str, data: serde_json::Value) {
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

/// Waits for the Job's Complete or Failed condition; returns the outcome as the operator reads it.
async fn finished(client: &Client, ns: &str, name: &str) -> JobOutcome {
    let jobs = Api::<Job>::namespaced(client.clone(), ns);
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    wait_for(60, &format!("Job {name} to finish"), || async {
        let job = jobs.get(name).await.ok()?;
        let pods = pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
            .ok()?
            .items;
        match job_outcome(Some(&job), &pods) {
            JobOutcome::Running => None,
            outcome => Some(outcome),
        }
    })
    .await
}

fn s3_repository(bucket: &str) -> RepositorySpec {
    RepositorySpec {
        s3: Some(S3RepositorySpec {
            bucket: bucket.into(),
            prefix: Some("dhis2".into()),
            // A cluster-internal name: the harness maps it to the test SeaweedFS.
            endpoint: Some("http://seaweedfs.storage.svc:8333".into()),
            region: None,
            path_style: Some(true),
            credentials_secret_ref: "backup-s3".into(),
            object_lock: None,
        }),
        volume: None,
        encryption: None,
    }
}

#[tokio::test]
async fn job_pods_run_their_command_and_the_job_controller_finishes_the_job() {
    let env = support::env();
    let client = client().await;
    let ns = namespace(&client, "jk").await;
    let kubelet = JobKubelet::start(client.clone(), &ns);
    let endpoint = env.s3_endpoint.trim_start_matches("http://").to_string();
    kubelet.map_host("seaweedfs.storage.svc", &endpoint);
    let jobs = Api::<Job>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let (bucket, _) = env.create_bucket("jk").await;

    // A missing Secret: the pod waits like the kubelet's CreateContainerConfigError...
    let inputs = repository_inputs(&s3_repository(&bucket), true).unwrap();
    let job = engine_job(
        &ns,
        "list",
        &["backup", "list", "--instance", "hmis"],
        inputs,
    );
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let waiting = wait_for(30, "CreateContainerConfigError", || async {
        let pod = pods
            .list(&ListParams::default().labels("job-name=list"))
            .await
            .ok()?
            .items
            .pop()?;
        let status = pod.status?.container_statuses?.pop()?.state?.waiting?;
        (status.reason.as_deref() == Some("CreateContainerConfigError")).then_some(status)
    })
    .await;
    assert_eq!(
        waiting.message.as_deref(),
        Some("secret \"backup-s3\" not found")
    );
    // ...and starts once the Secret exists; the keys come from it, the endpoint is mapped.
    create_secret(
        &client,
        &ns,
        "backup-s3",
        json!({"accessKey": env.access_key, "secretKey": env.secret_key}),
    )
    .await;
    assert_eq!(
        finished(&client, &ns, "list").await,
        JobOutcome::Succeeded(None)
    );
    let run = kubelet
        .runs()
        .into_iter()
        .find(|r| r.job == "list")
        .unwrap();
    assert_eq!(run.state, RunState::Exited(0), "{}", run.output);
    let pod = pods
        .list(&ListParams::default().labels("job-name=list"))
        .await
        .unwrap()
        .items
        .pop()
        .unwrap();
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let terminated = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );

    // A failing engine: its report (the termination file) becomes the reason.
    let inputs = repository_inputs(&s3_repository("no-such-bucket-jk"), true).unwrap();
    let job = engine_job(
        &ns,
        "list-missing",
        &["backup", "list", "--instance", "hmis"],
        inputs,
    );
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let JobOutcome::Failed { reason, report } = finished(&client, &ns, "list-missing").await else {
        panic!("the Job did not fail")
    };
    assert!(
        matches!(report, Some(JobReport::Failed { .. })),
        "{report:?}"
    );
    assert!(reason.contains("no-such-bucket-jk"), "{reason}");

    // A crash before any report: FallbackToLogsOnError gives the output's tail.
    let job = engine_job(&ns, "typo", &["backup", "rnu"], EngineInputs::default());
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let JobOutcome::Failed { reason, report } = finished(&client, &ns, "typo").await else {
        panic!("the Job did not fail")
    };
    assert_eq!(report, None);
    assert!(reason.contains("exited with code 2"), "{reason}");
    let message = terminated_message(&pods, "typo").await;
    assert!(message.contains("'rnu'"), "{message}");
}

async fn terminated_message(pods: &Api<Pod>, job: &str) -> String {
    let pod = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap()
        .items
        .pop()
        .unwrap();
    let state = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap();
    state.terminated.unwrap().message.unwrap_or_default()
}

#[tokio::test]
async fn a_held_or_running_command_dies_with_its_pod() {
    let client = client().await;
    let ns = namespace(&client, "jk-kill").await;
    let kubelet = JobKubelet::start(client.clone(), &ns);
    let jobs = Api::<Job>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let mut job = engine_job(&ns, "slow", &[], EngineInputs::default());
    let container = &mut job
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0];
    container.command = Some(vec!["sleep".into()]);
    container.args = Some(vec!["$(SECONDS_TO_SLEEP)".into()]);
    container.env = Some(vec![
        dhis2_operator::operator::jobs::engine_job::plain_env("SECONDS_TO_SLEEP", "300"),
        secret_env("UNUSED", "present", "key"),
    ]);
    create_secret(&client, &ns, "present", json!({"key": "v"})).await;

    // Paused: the pod shows Running, nothing started.
    kubelet.pause();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    wait_for(30, "the pod to show Running", || async {
        let pod = pods
            .list(&ListParams::default().labels("job-name=slow"))
            .await
            .ok()?
            .items
            .pop()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    assert_eq!(kubelet.runs()[0].state, RunState::Held);
    kubelet.resume();
    wait_for(30, "the command to start", || async {
        (kubelet.runs()[0].state == RunState::Running).then_some(())
    })
    .await;

    // The Job deleted: its pod goes, the process is killed.
    jobs.delete("slow", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(30, "the command to be killed", || async {
        (kubelet.runs()[0].state == RunState::Killed).then_some(())
    })
    .await;
    assert_eq!(kubelet.runs()[0].args, vec!["$(SECONDS_TO_SLEEP)"]);
    let left = pods.list(&ListParams::default()).await.unwrap().items;
    assert!(
        left.iter().all(|p| p.name_any() != "slow"),
        "pods left: {left:?}"
    );
}

#[test]
fn env_expansion_and_rewriting_follow_kubernetes() {
    let vars = HashMap::from([("A".to_string(), "x".to_string())]);
    assert_eq!(expand("$(A)-$$(A)-$(B)-$", &vars), "x-$(A)-$(B)-$");

    let paths = vec![
        ("/opt/dhis2/files".to_string(), "/tmp/k/files".to_string()),
        ("/opt/dhis2".to_string(), "/tmp/k/conf".to_string()),
        ("/tmp".to_string(), "/tmp/k/tmp".to_string()),
    ];
    assert_eq!(
        rewrite_paths(
            "--files-dir=/opt/dhis2/files /opt/dhis2/dhis.conf /tmp /opt/dhis2x",
            &paths
        ),
        "--files-dir=/tmp/k/files /tmp/k/conf/dhis.conf /tmp/k/tmp /opt/dhis2x"
    );

    let hosts = BTreeMap::from([
        ("db-postgresql".to_string(), "127.0.0.1:55432".to_string()),
        ("s3".to_string(), "127.0.0.1".to_string()),
    ]);
    assert_eq!(
        rewrite_hosts(
            "postgresql://u@db-postgresql:5432/d db-postgresql http://s3:8333 s3x my-db-postgresql",
            &hosts
        ),
        "postgresql://u@127.0.0.1:55432/d 127.0.0.1 http://127.0.0.1:8333 s3x my-db-postgresql"
    );
}
