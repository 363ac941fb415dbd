//! Benchmark (issue 9), ignored in normal test runs; run by bench/backup_overhead.sh:
//! the operator's overhead on an on-demand backup — the wall time of the real
//! `dhis2ctl backup create INSTANCE --wait` until `Completed`, minus the engine's own backup time
//! (`status.durationSeconds`, from the engine's report). Everything is real (operator under its
//! namespaced Role, apiserver, job controller, engine, PostgreSQL, SeaweedFS) except the kubelet:
//! the JobKubelet harness starts the Job's command as soon as its poll sees the pod.
//!
//! Prints every run, then the medians of the overhead and of wall / engine.

mod support;

use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::job_kubelet::JobKubelet;
use support::kube_env::{Operator, client, namespace, wait_for};
use support::{assert_success, dhis2ctl, json as parse_json};

/// The S3 endpoint as the cluster would name it; the harness maps it to the test SeaweedFS.
const S3_SERVICE: &str = "seaweedfs.storage.svc";

fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

async fn secret(client: &Client, ns: &str, name: &str, data: serde_json::Value) {
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

/// `kubectl create -f -` of one object (the kinds here are all namespaced).
fn kubectl_create(ns: &str, object: serde_json::Value) {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .args(["create", "-n", ns, "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(object.to_string().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "kubectl create {object}");
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::test]
#[ignore = "benchmark: bench/backup_overhead.sh"]
async fn bench_backup_overhead() {
    let env = support::env();
    let client = client().await;
    let ns = namespace(&client, "bench-overhead").await;
    let _operator = Operator::start(&client, &ns).await;
    let kubelet = JobKubelet::start(client.clone(), &ns);
    kubelet.map_host(S3_SERVICE, env.s3_endpoint.trim_start_matches("http://"));
    let (database, _) = env.seeded_database("bo").await;
    let rest = env.pg_url.trim_start_matches("postgresql://");
    let (userinfo, hostpart) = rest.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    let (host, port) = hostpart.split_once('/').unwrap().0.split_once(':').unwrap();
    secret(
        &client,
        &ns,
        "moh-pg",
        json!({"host": host, "port": port, "database": database, "username": user, "password": password}),
    )
    .await;
    let (bucket, _repo) = env.create_bucket("bo").await;
    secret(
        &client,
        &ns,
        "backup-s3",
        json!({"accessKey": env.access_key, "secretKey": env.secret_key}),
    )
    .await;
    kubectl_create(
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Database",
            "metadata": {"name": "moh"}, "spec": {"provider": "external", "externalSecretRef": "moh-pg"}}),
    );
    kubectl_create(
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
            "metadata": {"name": "hmis"}, "spec": {"version": "2.41.3", "environment": "production",
            "databaseRef": "moh", "backup": {"repository": {"s3": {"bucket": bucket, "prefix": "dhis2",
            "endpoint": format!("http://{S3_SERVICE}:8333"), "pathStyle": true,
            "credentialsSecretRef": "backup-s3"}}}}}),
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    wait_for(60, "the instance's dhis.conf Secret", || async {
        secrets.get_opt("hmis-dhis-conf").await.ok().flatten()
    })
    .await;

    let mut overheads = Vec::new();
    let mut ratios = Vec::new();
    let mut walls = Vec::new();
    let mut engines = Vec::new();
    let mut names = Vec::new();
    for run in 1..=runs() {
        let start = Instant::now();
        let out = dhis2ctl(&[
            "backup", "create", "hmis", "--wait", "-n", &ns, "-o", "json",
        ])
        .await;
        let wall = start.elapsed().as_secs_f64();
        assert_success(&out, "backup create --wait");
        let backup = parse_json(&out);
        let name = backup["metadata"]["name"].as_str().unwrap().to_string();
        assert_eq!(
            backup["status"]["phase"], "Completed",
            "{name}: {}",
            backup["status"]
        );
        let engine = backup["status"]["durationSeconds"]
            .as_f64()
            .expect("status.durationSeconds");
        let overhead = wall - engine;
        println!(
            "run {run}: {name}: wall {wall:.3} s, engine {engine:.3} s, overhead {overhead:.3} s, wall/engine {:.2}",
            wall / engine
        );
        walls.push(wall);
        engines.push(engine);
        overheads.push(overhead);
        ratios.push(wall / engine);
        names.push(name);
        // The CLI names backups `<instance>-backup-<UTC second>`: the next one needs a new second.
        let next_second = 1.0 - chrono::Utc::now().timestamp_subsec_millis() as f64 / 1000.0;
        tokio::time::sleep(std::time::Duration::from_secs_f64(next_second + 0.01)).await;
    }
    // Every run made exactly one Job and one engine run.
    let made: Vec<String> = kubelet.runs().iter().map(|r| r.job.clone()).collect();
    assert_eq!(made.len(), names.len(), "{made:?}");
    let listed = Api::<dhis2_operator::crd::Dhis2Backup>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), names.len());
    assert!(listed.items.iter().all(|b| names.contains(&b.name_any())));
    println!(
        "median of {}: wall {:.3} s, engine {:.3} s, operator overhead {:.3} s (target <= 2 s), wall/engine {:.2}",
        overheads.len(),
        median(&walls),
        median(&engines),
        median(&overheads),
        median(&ratios)
    );
}
