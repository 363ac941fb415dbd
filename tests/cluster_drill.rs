//! Restore drills in the cluster (`Dhis2Drill`): the operator starts a throw-away PostGIS server
//! of the drill's own, runs `dhis2ctl drill` in a Job against it, records the report (RPO, RTO,
//! passed, failures) and deletes everything it made. Real apiserver and job controller, real
//! PostgreSQL (the source data and the throw-away server the harness starts for the drill's
//! pod), real SeaweedFS; the backups are made by the engine directly, as an administrator would.

mod support;

use dhis2_operator::crd::backup_common::RunPhase;
use dhis2_operator::crd::{Dhis2Drill, Dhis2Instance};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::cluster_objects::{S3_SERVICE, s3_credentials, s3_repository};
use support::job_kubelet::{JobKubelet, RunState};
use support::kube_env::{self, Operator, wait_for};
use support::*;

struct Cluster {
    client: Client,
    ns: String,
    kubelet: JobKubelet,
    operator: Operator,
}

/// A namespace with the S3 credentials Secret, the job harness and the operator.
async fn cluster(prefix: &str) -> Cluster {
    let env = env();
    let client = kube_env::client().await;
    let ns = kube_env::namespace(&client, prefix).await;
    let kubelet = JobKubelet::start(client.clone(), &ns);
    kubelet.map_host(S3_SERVICE, env.s3_endpoint.trim_start_matches("http://"));
    s3_credentials(&env, &client, &ns).await;
    let operator = Operator::start(&client, &ns).await;
    Cluster {
        client,
        ns,
        kubelet,
        operator,
    }
}

/// A backup of small DHIS2-shaped data, taken by the engine as an administrator would; returns
/// (bucket, backup id, the backup's report).
async fn backup_of_hmis(prefix: &str) -> (String, String, serde_json::Value) {
    let env = env();
    let (_src, src_url) = env.seeded_database(prefix).await;
    let (bucket, repo) = env.create_bucket(&prefix.replace('_', "-")).await;
    let out = backup_run(&src_url, &repo, "hmis", &["-o", "json"]).await;
    assert_success(&out, "backup");
    let report = json(&out);
    let id = report["id"].as_str().unwrap().to_string();
    (bucket, id, report)
}

/// The instance the drills are about; with `repository`, its backup defaults name it.
async fn instance(c: &Cluster, repository: Option<serde_json::Value>) {
    let mut spec = json!({"version": "2.41.3", "environment": "production"});
    if let Some(r) = repository {
        spec["backup"] = json!({ "repository": r });
    }
    let instance: Dhis2Instance = serde_json::from_value(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
        "metadata": {"name": "hmis"}, "spec": spec
    }))
    .unwrap();
    Api::<Dhis2Instance>::namespaced(c.client.clone(), &c.ns)
        .create(&PostParams::default(), &instance)
        .await
        .unwrap();
}

async fn create_drill(c: &Cluster, name: &str, spec: serde_json::Value) {
    let drill: Dhis2Drill = serde_json::from_value(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Drill",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    Api::<Dhis2Drill>::namespaced(c.client.clone(), &c.ns)
        .create(&PostParams::default(), &drill)
        .await
        .unwrap();
}

/// Waits until the drill is finished and cleaned up.
async fn finished(c: &Cluster, name: &str) -> Dhis2Drill {
    let drills = Api::<Dhis2Drill>::namespaced(c.client.clone(), &c.ns);
    wait_for(
        240,
        &format!("drill {name} to finish and clean up"),
        || async {
            let d = drills.get(name).await.ok()?;
            let s = d.status.as_ref()?;
            (s.phase.is_some_and(RunPhase::is_finished) && s.cleaned_up == Some(true)).then_some(d)
        },
    )
    .await
}

async fn drill(c: &Cluster, name: &str, spec: serde_json::Value) -> Dhis2Drill {
    create_drill(c, name, spec).await;
    finished(c, name).await
}

/// Nothing the drill made is left: no pod, Service, Secret or Job (nor the Job's pods), and
/// the harness's throw-away server is stopped, its port closed and its names unmapped.
async fn assert_nothing_left(c: &Cluster, name: &str) {
    let selector = format!("dhis2operator.io/drill={name}");
    let lp = ListParams::default().labels(&selector);
    let pods = Api::<Pod>::namespaced(c.client.clone(), &c.ns);
    assert!(pods.list(&lp).await.unwrap().items.is_empty());
    let job_pods = ListParams::default().labels(&format!("job-name={name}-drill"));
    assert!(pods.list(&job_pods).await.unwrap().items.is_empty());
    let services = Api::<Service>::namespaced(c.client.clone(), &c.ns);
    assert!(services.list(&lp).await.unwrap().items.is_empty());
    assert!(
        services
            .get_opt(&format!("{name}-drill-db"))
            .await
            .unwrap()
            .is_none()
    );
    let jobs = Api::<Job>::namespaced(c.client.clone(), &c.ns);
    assert!(jobs.list(&lp).await.unwrap().items.is_empty());
    let secrets = Api::<Secret>::namespaced(c.client.clone(), &c.ns);
    assert!(
        secrets
            .get_opt(&format!("{name}-drill-db-credentials"))
            .await
            .unwrap()
            .is_none()
    );

    let servers = c.kubelet.drill_servers();
    let server_pod = format!("{name}-drill-db");
    assert_eq!(
        servers
            .started()
            .iter()
            .filter(|p| **p == server_pod)
            .count(),
        1,
        "one throw-away server for the drill"
    );
    // The pod is deleted before the drill records cleanedUp; the harness stops the server then.
    wait_for(30, "the throw-away server to stop", || async {
        servers.running().is_empty().then_some(())
    })
    .await;
    for host in [
        server_pod.clone(),
        format!("{server_pod}.{}.svc", c.ns),
        format!("{server_pod}.{}.svc.cluster.local", c.ns),
    ] {
        assert_eq!(c.kubelet.mapped_host(&host), None, "{host} unmapped");
    }
}

/// The drill Job the harness ran for `name`: exactly one.
fn drill_run(c: &Cluster, name: &str) -> support::job_kubelet::JobRun {
    let runs: Vec<_> = c
        .kubelet
        .runs()
        .into_iter()
        .filter(|r| r.job == format!("{name}-drill"))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

async fn warnings(c: &Cluster, kind: &str, name: &str) -> Vec<String> {
    let events = Api::<Event>::namespaced(c.client.clone(), &c.ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("DrillFailed")
                && e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
        })
        .filter_map(|e| e.message)
        .collect()
}

async fn wait_for_warning(c: &Cluster, kind: &str, name: &str) -> String {
    wait_for(
        30,
        &format!("a DrillFailed warning on {kind} {name}"),
        || async { warnings(c, kind, name).await.into_iter().next() },
    )
    .await
}

/// Waits until the instance's status summarises its drills as `result` (`Passed`/`Failed`).
async fn instance_drill_summary(c: &Cluster, result: &str) -> Dhis2Instance {
    let api = Api::<Dhis2Instance>::namespaced(c.client.clone(), &c.ns);
    wait_for(
        60,
        &format!("the instance to show the last drill {result}"),
        || async {
            let i = api.get("hmis").await.ok()?;
            let summary = i.status.as_ref()?.backup.as_ref()?;
            (summary.last_drill_result.as_deref() == Some(result)).then_some(i)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_restores_the_latest_backup_into_its_own_server_passes_and_leaves_nothing_behind() {
    let (bucket, id, backup) = backup_of_hmis("cdrill_ok").await;
    let c = cluster("cdrill-ok").await;
    instance(&c, Some(s3_repository(&bucket))).await;

    // The repository comes from the instance's backup settings; the backup is the latest.
    let d = drill(&c, "weekly", json!({"instanceRef": "hmis"})).await;
    let s = d.status.unwrap();
    assert_eq!(s.phase, Some(RunPhase::Completed), "{s:?}");
    assert_eq!(s.passed, Some(true), "{s:?}");
    assert!(s.failures.is_empty(), "{:?}", s.failures);
    assert_eq!(s.backup_id.as_deref(), Some(id.as_str()));
    assert_eq!(s.job_name.as_deref(), Some("weekly-drill"));
    let rto = s.rto_seconds.unwrap();
    assert!(rto > 0.0 && rto < 240.0, "{rto}");
    // RPO: from the backup's start to the drill's, as the engine measures it.
    let rpo = s.rpo_seconds.unwrap();
    let backup_started =
        chrono::DateTime::parse_from_rfc3339(backup["startedAt"].as_str().unwrap()).unwrap();
    let drill_started =
        chrono::DateTime::parse_from_rfc3339(s.started_at.as_deref().unwrap()).unwrap();
    let completed =
        chrono::DateTime::parse_from_rfc3339(s.completed_at.as_deref().unwrap()).unwrap();
    assert!(drill_started <= completed);
    assert!(
        rpo >= (drill_started - backup_started).num_seconds() - 1
            && rpo <= (completed - backup_started).num_seconds() + 1,
        "rpo {rpo}s"
    );
    assert!(s.rto.as_deref().is_some_and(|t| t.ends_with('s')), "{s:?}");
    assert!(s.rpo.as_deref().is_some_and(|t| !t.is_empty()), "{s:?}");
    let passed = s.conditions.iter().find(|c| c.type_ == "Passed").unwrap();
    assert_eq!(
        (passed.status.as_str(), passed.reason.as_str()),
        ("True", "DrillPassed")
    );
    // The instance's status summarises it (`kubectl get d2` shows Drill: Passed).
    let i = instance_drill_summary(&c, "Passed").await;
    let summary = i.status.unwrap().backup.unwrap();
    assert_eq!(summary.last_drill_rto_seconds, Some(rto));
    assert_eq!(summary.last_drill_rpo_seconds, Some(rpo));

    // The Job drilled into the throw-away server, never the production one.
    let run = drill_run(&c, "weekly");
    assert_eq!(run.state, RunState::Exited(0), "{}", run.output);
    let url = run
        .args
        .iter()
        .skip_while(|a| *a != "--scratch-database-url")
        .nth(1)
        .unwrap();
    assert_eq!(url, "postgresql://postgres@weekly-drill-db:5432/postgres");
    assert!(!run.output.contains(&env().secret_key));

    assert_nothing_left(&c, "weekly").await;
    assert!(warnings(&c, "Dhis2Drill", "weekly").await.is_empty());
    assert!(warnings(&c, "Dhis2Instance", "hmis").await.is_empty());

    let out = std::process::Command::new("kubectl")
        .args(["get", "d2drill", "-n", &c.ns])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "INSTANCE", "PHASE", "PASSED", "RTO", "RPO", "AGE"],
        "{text}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["weekly", "hmis", "Completed", "true"], "{text}");
    assert_eq!(row[4], s.rto.as_deref().unwrap(), "{text}");
    assert!(text.contains(s.rpo.as_deref().unwrap()), "{text}");

    // The operator killed while a drill's Job runs carries on from status and the objects'
    // names: one server, one Job, one report. A finished drill is never run again.
    let drills = Api::<Dhis2Drill>::namespaced(c.client.clone(), &c.ns);
    let before = drills.get("weekly").await.unwrap().status;
    let mut c = c;
    c.kubelet.pause();
    create_drill(
        &c,
        "weekly-again",
        json!({"instanceRef": "hmis", "backupId": id}),
    )
    .await;
    wait_for(120, "the second drill's Job to start", || async {
        c.kubelet
            .runs()
            .iter()
            .any(|r| r.job == "weekly-again-drill")
            .then_some(())
    })
    .await;
    c.operator.kill().await;
    c.operator.restart();
    c.kubelet.resume();
    let second = finished(&c, "weekly-again").await.status.unwrap();
    assert_eq!(second.passed, Some(true), "{second:?}");
    assert_eq!(second.backup_id.as_deref(), Some(id.as_str()));
    assert_eq!(drill_run(&c, "weekly-again").state, RunState::Exited(0));
    assert_nothing_left(&c, "weekly-again").await;
    assert_eq!(drills.get("weekly").await.unwrap().status, before);
    drill_run(&c, "weekly");
    assert_eq!(c.kubelet.drill_servers().started().len(), 2);
}

/// Damages the backup's database dump in S3: the same size with bytes changed, or cut short.
async fn damage_dump(bucket: &str, id: &str, keep_size: bool) {
    let s3 = env().s3_client();
    let key = format!("dhis2/hmis/{id}/database.pgdump.zst");
    let body = s3
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let mut data = body.body.collect().await.unwrap().into_bytes().to_vec();
    if keep_size {
        let middle = data.len() / 2;
        for b in &mut data[middle..middle + 64] {
            *b ^= 0x5a;
        }
    } else {
        data.truncate(data.len() / 2);
    }
    s3.put_object()
        .bucket(bucket)
        .key(&key)
        .body(data.into())
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_of_a_corrupted_backup_fails_says_why_warns_and_cleans_up() {
    let (bucket, id, _) = backup_of_hmis("cdrill_bad").await;
    let c = cluster("cdrill-bad").await;
    // The instance has no backup settings: the drills name their repository themselves.
    instance(&c, None).await;

    // Bytes changed, size kept: the backup is listed, the drill runs and does not pass.
    damage_dump(&bucket, &id, true).await;
    let d = drill(
        &c,
        "damaged",
        json!({"instanceRef": "hmis", "repository": s3_repository(&bucket)}),
    )
    .await;
    let s = d.status.unwrap();
    assert_eq!(s.phase, Some(RunPhase::Completed), "the drill ran: {s:?}");
    assert_eq!(s.passed, Some(false), "{s:?}");
    assert_eq!(s.backup_id.as_deref(), Some(id.as_str()));
    assert!(
        s.failures.iter().any(|f| f.starts_with("restore failed")),
        "{:?}",
        s.failures
    );
    assert!(s.rto_seconds.is_some() && s.rpo_seconds.is_some());
    let passed = s.conditions.iter().find(|c| c.type_ == "Passed").unwrap();
    assert_eq!(
        (passed.status.as_str(), passed.reason.as_str()),
        ("False", "DrillFailed")
    );
    // The engine exits 1 for a drill that ran and failed, with the full report.
    assert_eq!(drill_run(&c, "damaged").state, RunState::Exited(1));
    let warning = wait_for_warning(&c, "Dhis2Drill", "damaged").await;
    assert!(
        warning.contains(&id) && warning.contains("restore failed"),
        "{warning}"
    );
    let on_instance = wait_for_warning(&c, "Dhis2Instance", "hmis").await;
    assert!(on_instance.contains("damaged"), "{on_instance}");
    // The instance says its backups are not healthy, and why.
    let i = instance_drill_summary(&c, "Failed").await;
    let healthy = i
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "BackupHealthy")
        .unwrap();
    assert_eq!(
        (healthy.status.as_str(), healthy.reason.as_str()),
        ("False", "DrillFailed")
    );
    assert!(healthy.message.contains("damaged"), "{}", healthy.message);
    assert_nothing_left(&c, "damaged").await;

    // Cut short: no longer a complete backup; the drill of it cannot run.
    damage_dump(&bucket, &id, false).await;
    let d = drill(
        &c,
        "truncated",
        json!({"instanceRef": "hmis", "backupId": id, "repository": s3_repository(&bucket)}),
    )
    .await;
    let s = d.status.unwrap();
    assert_eq!(s.phase, Some(RunPhase::Failed), "{s:?}");
    assert_eq!(s.passed, Some(false));
    assert_eq!(s.failures.len(), 1, "{:?}", s.failures);
    assert!(
        s.failures[0].contains("no complete backup"),
        "{:?}",
        s.failures
    );
    assert_eq!(s.rto_seconds, None);
    let warning = wait_for_warning(&c, "Dhis2Drill", "truncated").await;
    assert!(warning.contains("could not run"), "{warning}");
    assert_nothing_left(&c, "truncated").await;

    // No repository at all: refused before any server is started.
    let d = drill(&c, "nowhere", json!({"instanceRef": "hmis"})).await;
    let s = d.status.unwrap();
    assert_eq!(s.phase, Some(RunPhase::Failed));
    assert!(
        s.failures[0].contains("spec.backup.repository"),
        "{:?}",
        s.failures
    );
    assert!(
        !c.kubelet
            .drill_servers()
            .started()
            .contains(&"nowhere-drill-db".to_string())
    );
    wait_for_warning(&c, "Dhis2Drill", "nowhere").await;

    let out = std::process::Command::new("kubectl")
        .args(["get", "d2drill", "-n", &c.ns, "--no-headers"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, phase) in [
        ("damaged", "Completed"),
        ("truncated", "Failed"),
        ("nowhere", "Failed"),
    ] {
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(row[..4], [name, "hmis", phase, "false"], "{text}");
    }
}
