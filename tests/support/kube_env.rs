//! Operator harness: the real kube-apiserver from scripts/test.sh, the real operator binary in
//! its own namespace, a fake kubelet (no kubelet runs here: it marks pods Ready or not; the pods
//! of Jobs are left to `job_kubelet::JobKubelet`, which runs their commands) and a fake DHIS2
//! answering /api/system/ping, /api/system/info and /api/resourceTables/analytics as DHIS2
//! documents them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
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
                    "crd/dhis2backups.dhis2operator.io",
                    "crd/dhis2backupschedules.dhis2operator.io",
                    "crd/dhis2restores.dhis2operator.io",
                    "crd/dhis2drills.dhis2operator.io",
                    "crd/dhis2promotions.dhis2operator.io",
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

/// Every object of a kind in the namespace.
pub async fn list_all<K>(client: &Client, ns: &str) -> Vec<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// The messages of the namespace's Events with this reason.
pub async fn event_messages(client: &Client, ns: &str, reason: &str) -> Vec<String> {
    list_all::<k8s_openapi::api::core::v1::Event>(client, ns)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect()
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

/// The namespaced-mode RBAC the operator ships (manifests/operator/namespaced/role.yaml).
const OPERATOR_ROLE: &str = include_str!("../../manifests/operator/namespaced/role.yaml");
pub const OPERATOR_SERVICE_ACCOUNT: &str = "dhis2-operator";

/// How a test starts the operator.
#[derive(Clone)]
pub struct OperatorOptions {
    /// `--allow-endpoint-override`: the tests' fake DHIS2 is reached through the annotation.
    pub allow_endpoint_override: bool,
    /// `--clock-file`: the operator's "now" is read from this file (RFC 3339), so a test moves
    /// time by writing it (see [`set_clock`]) instead of sleeping until a fire time.
    pub clock_file: Option<std::path::PathBuf>,
    /// `--metrics-addr` (default: a port of the system's choosing, unknown to the test).
    pub metrics_addr: Option<String>,
    /// `--leader-elect` with this identity, the Lease in the watched namespace.
    pub leader_identity: Option<String>,
    /// `--max-concurrent-reconciles` (default: the operator's).
    pub max_concurrent_reconciles: Option<u16>,
}

impl Default for OperatorOptions {
    fn default() -> Self {
        Self {
            allow_endpoint_override: true,
            clock_file: None,
            metrics_addr: None,
            leader_identity: None,
            max_concurrent_reconciles: None,
        }
    }
}

/// The operator's clock in a file the test moves (`--clock-file`), starting at the real now.
pub struct TestClock {
    _dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
}

impl TestClock {
    pub fn starting_now() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("now");
        let clock = Self { _dir: dir, path };
        clock.set(chrono::Utc::now());
        clock
    }

    /// Starting at `rfc3339`, written as given (its offset kept).
    pub fn at(rfc3339: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("now");
        set_clock(&path, rfc3339);
        Self { _dir: dir, path }
    }

    /// Moves the clock to `rfc3339`, written as given.
    pub fn set_to(&self, rfc3339: &str) {
        set_clock(&self.path, rfc3339);
    }

    fn set(&self, t: chrono::DateTime<chrono::Utc>) {
        set_clock(
            &self.path,
            &t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }

    /// Moves the clock forward.
    pub fn advance(&self, seconds: i64) {
        let now = std::fs::read_to_string(&self.path).unwrap();
        let now = chrono::DateTime::parse_from_rfc3339(now.trim()).unwrap();
        self.set(now.with_timezone(&chrono::Utc) + chrono::Duration::seconds(seconds));
    }
}

/// Sets the operator's clock (`OperatorOptions::clock_file`) to `rfc3339`.
pub fn set_clock(clock_file: &std::path::Path, rfc3339: &str) {
    std::fs::write(clock_file, rfc3339).expect("write the clock file");
}

/// The operator binary, watching one namespace; killed when dropped. It runs in namespaced
/// mode under the ServiceAccount and Role of manifests/operator/namespaced/ (token from the
/// TokenRequest API), never as cluster-admin: what the manifests do not grant, it cannot do.
/// The harness itself keeps the admin credentials of KUBECONFIG.
pub struct Operator {
    child: tokio::process::Child,
    namespace: String,
    pub kubeconfig: std::path::PathBuf,
    options: OperatorOptions,
}

/// Applies the Roles and RoleBindings of a rendered YAML stream that `keep` selects (by name)
/// into `namespace`, the bindings' ServiceAccount moved there too; returns how many.
pub async fn apply_rbac_documents(
    admin: &Client,
    namespace: &str,
    yaml: &str,
    keep: impl Fn(&str) -> bool,
) -> usize {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

    let pp = PatchParams::apply("dhis2-operator-tests").force();
    let mut applied = 0;
    for doc in yaml.split("\n---\n") {
        let Ok(mut value) = serde_saphyr::from_str::<serde_json::Value>(doc) else {
            continue;
        };
        if !keep(value["metadata"]["name"].as_str().unwrap_or_default()) {
            continue;
        }
        value["metadata"]["namespace"] = json!(namespace);
        match value["kind"].as_str() {
            Some("Role") => {
                let role: Role = serde_json::from_value(value).unwrap();
                Api::<Role>::namespaced(admin.clone(), namespace)
                    .patch(&role.name_any(), &pp, &Patch::Apply(&role))
                    .await
                    .expect("apply Role");
            }
            Some("RoleBinding") => {
                value["subjects"][0]["namespace"] = json!(namespace);
                let binding: RoleBinding = serde_json::from_value(value).unwrap();
                Api::<RoleBinding>::namespaced(admin.clone(), namespace)
                    .patch(&binding.name_any(), &pp, &Patch::Apply(&binding))
                    .await
                    .expect("apply RoleBinding");
            }
            _ => continue,
        }
        applied += 1;
    }
    applied
}

/// Installs the manifest's ServiceAccount, Role and RoleBinding in `namespace` (the binding
/// pointing at the ServiceAccount there) and writes a kubeconfig with a token for it.
pub async fn operator_kubeconfig(admin: &Client, namespace: &str) -> std::path::PathBuf {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;

    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": OPERATOR_SERVICE_ACCOUNT}})).unwrap();
    match accounts.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create ServiceAccount: {e}"),
    }
    let applied = apply_rbac_documents(admin, namespace, OPERATOR_ROLE, |_| true).await;
    assert_eq!(applied, 2, "role.yaml: a Role and a RoleBinding");
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 4 * 3600}}))
            .unwrap();
    let token = accounts
        .create_token_request(OPERATOR_SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the operator's ServiceAccount")
        .status
        .and_then(|s| s.token)
        .expect("token");
    let admin_config = kube::config::Kubeconfig::read().expect("read KUBECONFIG");
    let server = admin_config.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("server in KUBECONFIG");
    let path = std::env::temp_dir().join(format!("dhis2-operator-{namespace}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}}}]\nusers: [{{name: {OPERATOR_SERVICE_ACCOUNT}, user: {{token: \"{token}\"}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: {OPERATOR_SERVICE_ACCOUNT}, namespace: {namespace}}}}}]\ncurrent-context: t\n"
    );
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .expect("write kubeconfig");
        f.write_all(text.as_bytes()).unwrap();
    }
    path
}

/// A client with the operator's credentials (its ServiceAccount token), as the operator sees
/// the cluster.
pub async fn client_from(kubeconfig: &std::path::Path) -> Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .expect("kube config");
    Client::try_from(config).expect("client")
}

impl Operator {
    pub async fn start(admin: &Client, namespace: &str) -> Self {
        Self::start_with(admin, namespace, OperatorOptions::default()).await
    }

    /// The operator reading "now" from `clock`.
    pub async fn start_with_clock(admin: &Client, namespace: &str, clock: &TestClock) -> Self {
        let options = OperatorOptions {
            clock_file: Some(clock.path.clone()),
            ..Default::default()
        };
        Self::start_with(admin, namespace, options).await
    }

    pub async fn start_with(admin: &Client, namespace: &str, options: OperatorOptions) -> Self {
        let kubeconfig = operator_kubeconfig(admin, namespace).await;
        Self::spawn(namespace, kubeconfig, options)
    }

    fn spawn(namespace: &str, kubeconfig: std::path::PathBuf, options: OperatorOptions) -> Self {
        let mut args = vec![
            "run",
            "--namespace",
            namespace,
            "--metrics-addr",
            options.metrics_addr.as_deref().unwrap_or("127.0.0.1:0"),
            "--log-format",
            "text",
        ];
        if options.allow_endpoint_override {
            args.push("--allow-endpoint-override");
        }
        let clock_file = options.clock_file.as_ref().map(|p| p.display().to_string());
        if let Some(path) = &clock_file {
            args.extend(["--clock-file", path.as_str()]);
        }
        if let Some(identity) = &options.leader_identity {
            args.extend([
                "--leader-elect",
                "--lease-namespace",
                namespace,
                "--lease-identity",
                identity.as_str(),
            ]);
        }
        let concurrency = options.max_concurrent_reconciles.map(|n| n.to_string());
        if let Some(n) = &concurrency {
            args.extend(["--max-concurrent-reconciles", n.as_str()]);
        }
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dhis2-operator"))
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn,kube_client=error")
            .kill_on_drop(true)
            .spawn()
            .expect("start dhis2-operator");
        Self {
            child,
            namespace: namespace.to_string(),
            kubeconfig,
            options,
        }
    }

    /// The process has not exited (no crash, no crash loop).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, as a crash or an evicted pod would.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, as Kubernetes stops a pod; waits up to `secs` for the process to end.
    pub async fn terminate(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let pid = self.child.id()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    pub fn restart(&mut self) {
        *self = Self::spawn(
            &self.namespace.clone(),
            self.kubeconfig.clone(),
            self.options.clone(),
        );
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
                    for pod in list.into_iter().filter(|p| !left_to_others(p)) {
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

/// Pods FakeKubelet leaves alone: the pods of Jobs (tests/support/job_kubelet.rs runs them) and
/// a drill's throw-away database server.
fn left_to_others(pod: &Pod) -> bool {
    let labels = pod.labels();
    labels.contains_key(super::job_kubelet::JOB_NAME_LABEL)
        || labels
            .get("app.kubernetes.io/component")
            .map(String::as_str)
            == Some("drill-database")
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
/// (only with the admin account; 401 otherwise, as DHIS2 answers an unauthenticated request),
/// `POST /api/resourceTables/analytics` → starts the analytics job (only with the admin
/// account; 401 otherwise), each request recorded in `analytics_requests`.
pub struct FakeDhis2 {
    pub url: String,
    pub state: Arc<Mutex<Dhis2State>>,
    /// Every `POST /api/resourceTables/analytics`: the user it authenticated as, or `None`.
    pub analytics_requests: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

pub const ADMIN: (&str, &str) = ("operator", "district");

/// The user of a Basic authorization header, when it carries the admin account.
fn admin_user(headers: &axum::http::HeaderMap) -> Option<String> {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ADMIN.0, ADMIN.1))
    );
    (headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&expected))
        .then(|| ADMIN.0.to_string())
}

impl FakeDhis2 {
    pub async fn start(state: Dhis2State) -> Self {
        let state = Arc::new(Mutex::new(state));
        let analytics_requests: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let recorded = analytics_requests.clone();
        let app = Router::new()
            .route(
                "/api/resourceTables/analytics",
                post(
                    move |State(s): State<Arc<Mutex<Dhis2State>>>, headers: axum::http::HeaderMap| {
                        let recorded = recorded.clone();
                        async move {
                            let user = admin_user(&headers);
                            recorded.lock().unwrap().push(user.clone());
                            let up = matches!(&*s.lock().unwrap(), Dhis2State::Up { .. });
                            match (up, user) {
                                (false, _) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({}))),
                                (true, None) => (
                                    StatusCode::UNAUTHORIZED,
                                    axum::Json(json!({"httpStatus": "Unauthorized", "httpStatusCode": 401,
                                        "status": "ERROR", "message": "Unauthorized"})),
                                ),
                                // DHIS2's JobConfigurationWebMessageResponse: the job started.
                                (true, Some(_)) => (
                                    StatusCode::OK,
                                    axum::Json(json!({"httpStatus": "OK", "httpStatusCode": 200, "status": "OK",
                                        "message": "Initiated inMemoryAnalyticsJob",
                                        "response": {"responseType": "JobConfigurationWebMessageResponse",
                                            "name": "inMemoryAnalyticsJob", "id": "pQtXmjMTB3b",
                                            "created": "2026-11-25T10:00:00.000", "jobType": "ANALYTICS_TABLE",
                                            "jobStatus": "SCHEDULED",
                                            "jobParameters": {"skipResourceTables": false, "skipTableTypes": []},
                                            "relativeNotifierEndpoint": "/api/system/tasks/ANALYTICS_TABLE/pQtXmjMTB3b"}})),
                                ),
                            }
                        }
                    },
                ),
            )
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
                        let authorised = admin_user(&headers).is_some();
                        match &*s.lock().unwrap() {
                            Dhis2State::Up { version, revision } if authorised => (
                                StatusCode::OK,
                                axum::Json(json!({"version": version, "revision": revision,
                                    "buildTime": "2024-05-01T10:00:00.000", "serverDate": "2026-11-25T10:00:00.000",
                                    "databaseInfo": {"name": "dhis2", "spatialSupport": true},
                                    "readOnlyMode": false, "nodeId": "node-1"})),
                            ),
                            // DHIS2 answers /api/system/info only to an authenticated user.
                            Dhis2State::Up { .. } => (
                                StatusCode::UNAUTHORIZED,
                                axum::Json(json!({"httpStatus": "Unauthorized", "httpStatusCode": 401,
                                    "status": "ERROR", "message": "Unauthorized"})),
                            ),
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
        Self {
            url,
            state,
            analytics_requests,
            task,
        }
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
