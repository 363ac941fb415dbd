//! Operator harness: the real kube-apiserver from scripts/test.sh, the real operator binary in
//! its own namespace, a fake kubelet (no kubelet runs here: it marks pods Ready or not) and a
//! fake DHIS2 answering /api/system/ping and /api/system/info as DHIS2 documents them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

pub async fn client() -> Client {
    dhis2_operator::install_crypto_provider();
    assert!(
        std::env::var("KUBECONFIG").is_ok(),
        "KUBECONFIG is not set: run the tests with scripts/test.sh, which starts a kube-apiserver"
    );
    install_crds();
    Client::try_default().await.expect("kube client")
}

/// Applies the committed CRDs once per test binary, so each test file stands on its own.
fn install_crds() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let crds = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/manifests/crds/dhis2operator.io.yaml"
        );
        let ok = std::process::Command::new("kubectl")
            .args(["apply", "-f", crds])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new("kubectl")
                .args([
                    "wait",
                    "--for=condition=Established",
                    "--timeout=30s",
                    "crd/dhis2instances.dhis2operator.io",
                    "crd/dhis2databases.dhis2operator.io",
                ])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "could not install the CRDs with kubectl");
    });
}

/// A fresh namespace for one test.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = super::unique(prefix);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// Polls until `check` returns Some, or panics after `secs` with `what`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator binary, watching one namespace; killed when dropped.
pub struct Operator {
    child: tokio::process::Child,
    namespace: String,
}

impl Operator {
    pub fn start(namespace: &str) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dhis2-operator"))
            .args([
                "run",
                "--namespace",
                namespace,
                "--metrics-addr",
                "127.0.0.1:0",
                "--log-format",
                "text",
            ])
            .env("RUST_LOG", "warn,kube_client=error")
            .kill_on_drop(true)
            .spawn()
            .expect("start dhis2-operator");
        Self {
            child,
            namespace: namespace.to_string(),
        }
    }

    /// SIGKILL, as a crash or an evicted pod would.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    pub fn restart(&mut self) {
        *self = Self::start(&self.namespace.clone());
    }
}

/// Plays the kubelet: every pod in the namespace becomes Running and Ready (or not ready).
pub struct FakeKubelet {
    pub ready: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubelet {
    pub fn start(client: Client, namespace: &str) -> Self {
        let ready = Arc::new(AtomicBool::new(true));
        let flag = ready.clone();
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    let want = if flag.load(Ordering::SeqCst) {
                        "True"
                    } else {
                        "False"
                    };
                    for pod in list {
                        let is = pod
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                            .map(|c| c.status.clone());
                        if is.as_deref() == Some(want) {
                            continue;
                        }
                        let status = json!({"status": {"phase": "Running", "conditions": [
                            {"type": "Ready", "status": want}, {"type": "ContainersReady", "status": want}]}});
                        let _ = pods
                            .patch_status(
                                &pod.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&status),
                            )
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Self { ready, task }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Debug)]
pub enum Dhis2State {
    Up {
        version: String,
        revision: String,
    },
    /// Tomcat answers 503 while DHIS2 starts and Flyway migrates.
    Migrating,
}

/// A fake DHIS2: `/api/system/ping` → `pong`, `/api/system/info` → version and revision
/// (only with the admin account; stripped otherwise, as DHIS2 does for non-superusers).
pub struct FakeDhis2 {
    pub url: String,
    pub state: Arc<Mutex<Dhis2State>>,
    task: tokio::task::JoinHandle<()>,
}

pub const ADMIN: (&str, &str) = ("operator", "district");

impl FakeDhis2 {
    pub async fn start(state: Dhis2State) -> Self {
        let state = Arc::new(Mutex::new(state));
        let app = Router::new()
            .route(
                "/api/system/ping",
                get(|State(s): State<Arc<Mutex<Dhis2State>>>| async move {
                    match &*s.lock().unwrap() {
                        Dhis2State::Up { .. } => (StatusCode::OK, "pong"),
                        Dhis2State::Migrating => (StatusCode::SERVICE_UNAVAILABLE, ""),
                    }
                }),
            )
            .route(
                "/api/system/info",
                get(
                    |State(s): State<Arc<Mutex<Dhis2State>>>, headers: axum::http::HeaderMap| async move {
                        use base64::Engine;
                        let expected = format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ADMIN.0, ADMIN.1))
                        );
                        let authorised = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&expected);
                        match &*s.lock().unwrap() {
                            Dhis2State::Up { version, revision } if authorised => (
                                StatusCode::OK,
                                axum::Json(json!({"version": version, "revision": revision,
                                    "buildTime": "2024-05-01T10:00:00.000", "serverDate": "2026-11-25T10:00:00.000",
                                    "databaseInfo": {"name": "dhis2", "spatialSupport": true},
                                    "readOnlyMode": false, "nodeId": "node-1"})),
                            ),
                            Dhis2State::Up { version, .. } => (StatusCode::OK, axum::Json(json!({"version": version}))),
                            Dhis2State::Migrating => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({}))),
                        }
                    },
                ),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    pub fn set(&self, state: Dhis2State) {
        *self.state.lock().unwrap() = state;
    }

    /// Stops answering at all.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for FakeDhis2 {
    fn drop(&mut self) {
        self.task.abort();
    }
}
