//! The bound on reconciles in flight (`--max-concurrent-reconciles`), against the real
//! kube-apiserver: slow DHIS2s hold at most that many of the instance controller's turns at once,
//! and an instance whose DHIS2 answers at once still gets its turn and becomes Ready.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use dhis2_operator::crd::Dhis2Instance;
use dhis2_operator::rules::names::ENDPOINT_OVERRIDE_ANNOTATION as ANNOTATION;
use support::kube_env::*;

const LIMIT: u16 = 2;

/// A DHIS2 that takes `delay` to answer anything (an overloaded server): counts the requests in
/// progress and the most ever in progress at once.
struct SlowDhis2 {
    url: String,
    in_flight_peak: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl SlowDhis2 {
    async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight_peak = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (now, peak, count) = (in_flight.clone(), in_flight_peak.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (now, peak, count) = (now.clone(), peak.clone(), count.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(current, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong")
                        .await;
                });
            }
        });
        Self {
            url,
            in_flight_peak,
            requests,
        }
    }
}

async fn create_instance(client: &Client, ns: &str, name: &str, url: &str) {
    let obj: Dhis2Instance = serde_json::from_value(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
        "metadata": {"name": name, "annotations": {ANNOTATION: url}},
        "spec": {"version": "2.42.1", "environment": "staging", "adminSecretRef": "dhis2-admin"}
    }))
    .unwrap();
    Api::<Dhis2Instance>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create instance");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_dhis2s_hold_at_most_the_limit_and_a_healthy_instance_still_gets_its_turn() {
    let client = client().await;
    let ns = namespace(&client, "op-concurrency").await;
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    support::cluster_objects::admin_secret(&client, &ns).await;
    let slow = SlowDhis2::start(Duration::from_secs(3)).await;
    let healthy = FakeDhis2::start(Dhis2State::Up {
        version: "2.42.1".into(),
        revision: "r".into(),
    })
    .await;
    let _operator = Operator::start_with(
        &client,
        &ns,
        OperatorOptions {
            max_concurrent_reconciles: Some(LIMIT),
            ..Default::default()
        },
    )
    .await;
    for name in ["slow-1", "slow-2", "slow-3", "slow-4"] {
        create_instance(&client, &ns, name, &slow.url).await;
    }
    // Every slow instance's pod is ready and the operator is asking all of them how they are.
    wait_for(90, "the four slow DHIS2s to be asked", || async {
        (slow.requests.load(Ordering::SeqCst) >= 4).then_some(())
    })
    .await;
    create_instance(&client, &ns, "quick", &healthy.url).await;
    let quick = wait_for(60, "the quick instance to become Ready", || async {
        let i = Api::<Dhis2Instance>::namespaced(client.clone(), &ns)
            .get("quick")
            .await
            .ok()?;
        (i.status.as_ref()?.phase.as_deref() == Some("Ready")).then_some(i)
    })
    .await;
    assert_eq!(
        quick.status.and_then(|s| s.version).as_deref(),
        Some("2.42.1")
    );
    let peak = slow.in_flight_peak.load(Ordering::SeqCst);
    assert!(
        peak <= usize::from(LIMIT),
        "{peak} slow health checks ran at once with --max-concurrent-reconciles {LIMIT}"
    );
}
