//! A real Prometheus scrapes the real operator (running against the real kube-apiserver) and
//! evaluates the shipped alert rules (manifests/monitoring/prometheus-rules.yaml) with its real
//! rule engine: an instance's series appear with the contract's labels, a backup that fails in
//! its Job fires DHIS2BackupFailing, a successful one sets the freshness series, and DHIS2
//! going silent in the fake turns `dhis2_instance_up` to 0 and DHIS2Down pending. The raw
//! scrape passes `promtool check metrics`, and names the DHIS2 instance `dhis2_instance`, never
//! `instance` (Prometheus's own: the target's address, which it keeps).

mod support;

use dhis2_operator::crd::{Dhis2Backup, Dhis2Instance};
use kube::api::Api;
use serde_json::json;
use support::cluster_objects::{
    S3_SERVICE, admin_secret, create, external_database, s3_credentials, s3_repository,
    set_external_database_password,
};
use support::job_kubelet::JobKubelet;
use support::kube_env::{
    Dhis2State, FakeDhis2, FakeKubelet, Operator, OperatorOptions, client, namespace, wait_for,
};
use support::prometheus::{
    Prometheus, assert_no_instance_label, assert_promtool_accepts_metrics, free_port,
};

const RULES: &str = "manifests/monitoring/prometheus-rules.yaml";

async fn backup_phase(api: &Api<Dhis2Backup>, name: &str, want: &str) {
    wait_for(120, &format!("{name} to be {want}"), || async {
        let b = api.get(name).await.ok()?;
        let phase = b.status?.phase?;
        (format!("{phase:?}") == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_operator_and_the_rules_fire_on_a_failed_backup_and_dhis2_down() {
    let env = support::env();
    let client = client().await;
    let ns = namespace(&client, "prom").await;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let _operator = Operator::start_with(
        &client,
        &ns,
        OperatorOptions {
            metrics_addr: Some(metrics_addr.clone()),
            ..Default::default()
        },
    )
    .await;
    let _pods = FakeKubelet::start(client.clone(), &ns);
    let jobs = JobKubelet::start(client.clone(), &ns);
    jobs.map_host(S3_SERVICE, env.s3_endpoint.trim_start_matches("http://"));
    let dhis2 = FakeDhis2::start(Dhis2State::Up {
        version: "2.42.1".into(),
        revision: "a1b2c3d".into(),
    })
    .await;
    let (database, _) = env.seeded_database("prom").await;
    external_database(&env, &client, &ns, "moh", &database).await;
    let (bucket, _) = env.create_bucket("prom").await;
    s3_credentials(&env, &client, &ns).await;
    admin_secret(&client, &ns).await;
    create::<Dhis2Instance>(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
            "metadata": {"name": "hmis",
                "annotations": {"dhis2operator.io/endpoint-override": dhis2.url}},
            "spec": {"version": "2.42.1", "environment": "production", "databaseRef": "moh",
                "adminSecretRef": "dhis2-admin",
                "backup": {"repository": s3_repository(&bucket)}}}),
    )
    .await;
    let prometheus = Prometheus::start(
        "dhis2-operator",
        &metrics_addr,
        &[std::path::Path::new(RULES)],
    )
    .await;
    let selector = format!("{{namespace=\"{ns}\",dhis2_instance=\"hmis\"}}");

    // The operator and the instance, with the contract's labels (honor_labels keeps `namespace`).
    assert_eq!(
        prometheus.wait_value("dhis2_operator_build_info", 60).await,
        1.0
    );
    let info = prometheus
        .query(&format!("dhis2_instance_info{selector}"))
        .await;
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].0["version"], "2.42.1");
    assert_eq!(info[0].0["environment"], "production");
    assert_eq!(
        info[0].0["instance"], metrics_addr,
        "Prometheus's own `instance` is the target's address"
    );
    assert_eq!(
        prometheus
            .wait_value(&format!("dhis2_instance_up{selector} == 1"), 90)
            .await,
        1.0,
        "DHIS2 answers its ping"
    );
    assert_eq!(
        prometheus
            .wait_value(&format!("dhis2_backup_failures_total{selector}"), 30)
            .await,
        0.0,
        "exported at 0 before any failure"
    );
    prometheus
        .wait_value(
            "dhis2_operator_last_reconcile_timestamp_seconds{kind=\"Dhis2Instance\"}",
            30,
        )
        .await;
    let size = prometheus
        .wait_value(&format!("dhis2_instance_database_size_bytes{selector}"), 30)
        .await;
    assert!(size > 1e6, "the seeded database measures {size} bytes");

    // A backup that fails in its Job (wrong database password) fires DHIS2BackupFailing.
    set_external_database_password(&client, &ns, "moh", "not-the-password").await;
    let backups = Api::<Dhis2Backup>::namespaced(client.clone(), &ns);
    create::<Dhis2Backup>(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
            "metadata": {"name": "hmis-failing"}, "spec": {"instanceRef": "hmis"}}),
    )
    .await;
    backup_phase(&backups, "hmis-failing", "Failed").await;
    assert_eq!(
        prometheus
            .wait_value(&format!("dhis2_backup_failures_total{selector} == 1"), 30)
            .await,
        1.0
    );
    let alert = prometheus
        .wait_alert("DHIS2BackupFailing", "hmis", "firing", 30)
        .await;
    assert_eq!(alert["labels"]["namespace"], ns.as_str());
    assert_eq!(alert["labels"]["environment"], "production");

    // A backup that completes: freshness, size and duration.
    set_external_database_password(&client, &ns, "moh", &env.secrets()[1]).await;
    create::<Dhis2Backup>(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
            "metadata": {"name": "hmis-nightly"}, "spec": {"instanceRef": "hmis"}}),
    )
    .await;
    backup_phase(&backups, "hmis-nightly", "Completed").await;
    let age = prometheus
        .wait_value(
            &format!("time() - dhis2_backup_last_success_timestamp_seconds{selector}"),
            30,
        )
        .await;
    assert!((0.0..300.0).contains(&age), "last backup {age} s ago");
    let size = prometheus
        .wait_value(&format!("dhis2_backup_last_size_bytes{selector}"), 30)
        .await;
    assert!(size > 0.0, "{size}");
    // Before it, the instance "never had a backup" (DHIS2BackupMissing pending for 26 h); now not.
    wait_for(30, "DHIS2BackupMissing to clear", || async {
        prometheus
            .query("ALERTS{alertname=\"DHIS2BackupMissing\",dhis2_instance=\"hmis\"}")
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    // DHIS2 goes silent: up turns 0 and DHIS2Down is pending (it fires after 5 minutes).
    dhis2.stop();
    prometheus
        .wait_value(&format!("dhis2_instance_up{selector} == 0"), 120)
        .await;
    prometheus
        .wait_alert("DHIS2Down", "hmis", "pending", 30)
        .await;

    // What Prometheus scraped passes promtool's checks.
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_promtool_accepts_metrics(&text, "the operator's /metrics");
    assert_no_instance_label(&text, "the operator's /metrics");
    for secret in env.secrets() {
        assert!(!text.contains(&secret), "a secret in /metrics");
    }
}
