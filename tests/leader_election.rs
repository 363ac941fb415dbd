//! Two operator replicas against the real kube-apiserver, each under the operator's
//! ServiceAccount: only the holder of the leader Lease reconciles, the other waits (ready, its
//! `dhis2_operator_leader` at 0), takes over within the Lease's term when the leader is killed,
//! and a replica stopped with SIGTERM exits cleanly and gives the Lease up.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use dhis2_operator::crd::Dhis2Instance;
use support::kube_env::*;
use support::prometheus::free_port;

const LEASE: &str = "dhis2-operator";

/// What the leader election needs beyond role.yaml: the chart's leader-election Role and
/// RoleBinding (as rendered into manifests/operator/namespaced/operator.yaml), moved into the
/// test namespace, which is here the operator's own.
async fn grant_leader_election(admin: &Client, ns: &str) {
    const RENDERED: &str = include_str!("../manifests/operator/namespaced/operator.yaml");
    let applied = apply_rbac_documents(admin, ns, RENDERED, |name| {
        name == "dhis2-operator-leader-election"
    })
    .await;
    assert_eq!(
        applied, 2,
        "the rendered manifests' leader-election Role and RoleBinding"
    );
}

async fn holder(admin: &Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(admin.clone(), ns)
        .get_opt(LEASE)
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn create_instance(admin: &Client, ns: &str, name: &str) {
    let obj: Dhis2Instance = serde_json::from_value(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
        "metadata": {"name": name},
        "spec": {"version": "2.42.1", "environment": "staging"}
    }))
    .unwrap();
    Api::<Dhis2Instance>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create instance");
}

/// Whether a controller has written the instance's status yet.
async fn reconciled(admin: &Client, ns: &str, name: &str) -> bool {
    Api::<Dhis2Instance>::namespaced(admin.clone(), ns)
        .get(name)
        .await
        .ok()
        .and_then(|i| i.status)
        .and_then(|s| s.phase)
        .is_some()
}

async fn scrape(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("operator's HTTP endpoint");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn leader_gauge(metrics: &str) -> Option<&str> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("dhis2_operator_leader "))
}

async fn replica(admin: &Client, ns: &str, identity: &str, port: u16) -> Operator {
    Operator::start_with(
        admin,
        ns,
        OperatorOptions {
            metrics_addr: Some(format!("127.0.0.1:{port}")),
            leader_identity: Some(identity.into()),
            ..Default::default()
        },
    )
    .await
}

#[tokio::test]
async fn only_the_leader_reconciles_and_the_other_replica_takes_over_when_it_dies() {
    let admin = client().await;
    let ns = namespace(&admin, "leader").await;
    grant_leader_election(&admin, &ns).await;

    let (port_a, port_b) = (free_port(), free_port());
    let mut first = replica(&admin, &ns, "replica-a", port_a).await;
    wait_for(30, "replica-a to take the Lease", || async {
        (holder(&admin, &ns).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    create_instance(&admin, &ns, "before").await;
    wait_for(30, "the leader to reconcile `before`", || async {
        reconciled(&admin, &ns, "before").await.then_some(())
    })
    .await;

    let mut second = replica(&admin, &ns, "replica-b", port_b).await;
    // The waiting replica is alive and ready (a rolling update can proceed) and says it waits.
    let metrics = wait_for(30, "replica-b to serve /metrics", || async {
        reqwest::get(format!("http://127.0.0.1:{port_b}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })
    .await;
    assert_eq!(leader_gauge(&metrics), Some("0"), "{metrics}");
    assert_eq!(scrape(port_b, "/readyz").await.0, 200);
    assert_eq!(leader_gauge(&scrape(port_a, "/metrics").await.1), Some("1"));
    assert_eq!(holder(&admin, &ns).await.as_deref(), Some("replica-a"));

    // The leader dies without a word (SIGKILL: no release). Its Lease stays valid for at least
    // 5 s more (renewed every 10 s, 15 s term), so an instance made now waits: no replica
    // reconciles it until the standby has taken over.
    first.kill().await;
    let killed = Instant::now();
    create_instance(&admin, &ns, "after").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !reconciled(&admin, &ns, "after").await,
        "the waiting replica reconciled while the Lease was still the dead leader's"
    );
    wait_for(30, "replica-b to take the Lease", || async {
        (holder(&admin, &ns).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let took_over = killed.elapsed();
    wait_for(30, "the new leader to reconcile `after`", || async {
        reconciled(&admin, &ns, "after").await.then_some(())
    })
    .await;
    let reconciled_after = killed.elapsed();
    println!(
        "leader killed → Lease taken over in {:.1} s, new instance reconciled in {:.1} s",
        took_over.as_secs_f64(),
        reconciled_after.as_secs_f64()
    );
    assert!(
        took_over <= Duration::from_secs(20),
        "takeover took {took_over:?}: the Lease's term is 15 s, then a random wait of up to 1 s"
    );
    assert_eq!(leader_gauge(&scrape(port_b, "/metrics").await.1), Some("1"));

    // Stopped as Kubernetes stops a pod: the controllers stop, the Lease is given up, exit 0.
    let status = second
        .terminate(20)
        .await
        .expect("replica-b to exit after SIGTERM");
    assert!(status.success(), "replica-b exited with {status}");
    assert_eq!(
        holder(&admin, &ns).await,
        None,
        "a replica that stops gives the Lease up"
    );
}

#[tokio::test]
async fn a_replica_without_rights_on_leases_says_which_rights_it_needs() {
    let admin = client().await;
    let ns = namespace(&admin, "leader-rbac").await;
    // role.yaml only: no leader-election Role.
    let kubeconfig = operator_kubeconfig(&admin, &ns).await;
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_dhis2-operator"))
        .args(["run", "--namespace", &ns, "--metrics-addr", "127.0.0.1:0"])
        .args([
            "--log-format",
            "text",
            "--leader-elect",
            "--lease-namespace",
            &ns,
        ])
        .env("KUBECONFIG", &kubeconfig)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the replica to exit when it cannot use the Lease")
        .expect("run dhis2-operator");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("get, create and patch on leases.coordination.k8s.io"),
        "the error names the missing rights: {stderr}"
    );
}

#[tokio::test]
async fn leader_election_without_a_namespace_is_refused_with_the_fix() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dhis2-operator"))
        .args(["run", "--leader-elect"])
        .env_remove("POD_NAMESPACE")
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .await
        .expect("run dhis2-operator");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--lease-namespace"), "{stderr}");
}
