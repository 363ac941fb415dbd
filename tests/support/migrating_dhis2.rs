//! `MigratingDhis2`: a fake DHIS2 that plays the version the cluster runs and really migrates the
//! real database, for the upgrade tests (no kubelet and no DHIS2 run here).
//!
//! It follows the DHIS2 pods of one instance (labels `app.kubernetes.io/name=dhis2`,
//! `instance=<instance>`, `component=dhis2`; `FakeKubelet` marks them Running) every 300 ms. Each
//! Running pod is one DHIS2 node, started from its image tag (`dhis2/core:<version>`), as DHIS2
//! starts:
//! - it connects to the database (anew each time: a restore may have renamed another database
//!   into place), takes Flyway's session lock and reads the schema version (the highest
//!   successful version in `flyway_schema_history`, compared as versions);
//! - the pod's release line equal to the schema's: it serves at once and writes nothing;
//! - newer: it migrates in ONE transaction, as Flyway does (group=true): per release line
//!   `2.<L>.1` … `2.<L>.5` in `flyway_schema_history` (installed_rank continuing, success) and
//!   the table `upgrade_marker_2_<L>` (one row per migration), quickly, slowly, never finishing
//!   or failing half-way as [`Migration`] says; /api/system/ping and /info answer 503 meanwhile;
//! - older: it refuses to start (503 for as long as the pod runs; recorded as
//!   [`Observed::Refused`]): two versions fought over one database.
//!
//! A pod that goes (scaled to 0, replaced, deleted) takes its node with it: an open migration
//! transaction is abandoned and its connection closed at once, as a dying pod's would be, so
//! the server rolls it back and a restore can rename or drop the database. No connection is held
//! while a node is not starting or migrating.
//!
//! HTTP: while no DHIS2 pod runs, nothing listens on the port (connection refused, as a Service
//! without endpoints); while pods run but none is up, 503 (Tomcat answers, DHIS2 starting or
//! broken); once one is up, `pong`, and /api/system/info with its version (only to the admin account
//! `kube_env::ADMIN`, 401 otherwise, as DHIS2 and FakeDhis2), and `POST /api/resourceTables/analytics`
//! recorded with the authenticated user.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use dhis2_operator::upgrade::Dhis2Version;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

use super::kube_env::ADMIN;

/// How a node that finds an older schema migrates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    Quick,
    /// The transaction stays open this long (the migrations spread over it) before it commits.
    Slow(Duration),
    /// Half the migrations are written, then the transaction stays open until the pod goes.
    Never,
    /// Half the migrations are written, then one fails; all is rolled back and DHIS2 stays 503,
    /// as a real DHIS2 whose Flyway migration failed.
    FailHalfway,
}

/// Flyway migrations the fake writes for each release line it migrates to.
pub const MIGRATIONS_PER_LINE: u32 = 5;
/// The `application_name` of the fake's database sessions (`pg_stat_activity`).
pub const APPLICATION_NAME: &str = "migrating-dhis2";
/// Flyway's PostgreSQL lock key is its own; any fixed key serves the fake ("flyway" in ASCII).
const FLYWAY_LOCK_KEY: i64 = 0x666c_7977_6179;
const POLL: Duration = Duration::from_millis(300);
const RETRY: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The table a migration to release line `2.<major>` creates.
pub fn marker_table(major: u32) -> String {
    format!("upgrade_marker_2_{major}")
}

/// The version in an image reference's tag: `dhis2/core:2.42.1`, `registry:5000/dhis2/core:42.1.0`,
/// `…:2.42.1@sha256:…`.
pub fn image_version(image: &str) -> Option<Dhis2Version> {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    let (_, tag) = last.split_once(':')?;
    Dhis2Version::parse(tag).ok()
}

/// What the fake saw and did, in order. Pods are named; versions are as the image tag wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A pod began Running: DHIS2 `version` starts.
    PodStarted { pod: String, version: String },
    /// A pod's image carries no DHIS2 version in its tag: it answers 503.
    BadImage { pod: String, image: String },
    /// Flyway began: schema `from` (e.g. `2.42.52`) towards release `to`.
    MigrationStarted {
        pod: String,
        from: String,
        to: String,
        behaviour: Migration,
    },
    /// The migration transaction committed; the schema is now `schema` (e.g. `2.43.5`).
    MigrationCommitted {
        pod: String,
        to: String,
        schema: String,
    },
    /// A migration failed and was rolled back; the node stays 503.
    MigrationFailed {
        pod: String,
        to: String,
        error: String,
    },
    /// The pod went while its migration transaction was open: the connection was closed, so the
    /// server rolled it back.
    MigrationAbandoned { pod: String, to: String },
    /// DHIS2 `version` is up (ping answers pong).
    Serving { pod: String, version: String },
    /// The pod's version is older than the database's schema: it never starts.
    Refused {
        pod: String,
        version: String,
        schema: String,
    },
    /// A node was up when another pod migrated the schema past its version: two versions ran
    /// against one database. It answers 503 from then on.
    OutrunBySchema {
        pod: String,
        version: String,
        schema: String,
    },
    /// Starting failed on the database (unreachable, renamed away, no Flyway history); the node
    /// retries every second, as the kubelet restarts a crashed container.
    DatabaseError { pod: String, message: String },
    /// The port could not be listened on again (another process took it).
    ListenError(String),
    /// The pod stopped running (or was deleted).
    PodGone { pod: String },
}

/// What /api/system/ping and /info answer now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No DHIS2 pod runs: connection refused.
    Down,
    /// Pods run, none is up: 503.
    Unavailable,
    /// pong; /info reports this version.
    Up { version: String },
}

/// One DHIS2 node's state (one per Running pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// Connecting, waiting for Flyway's lock or reading the schema version.
    Starting,
    Migrating {
        to: String,
    },
    Up,
    /// Will not start (refused, failed migration, bad image, outrun by a newer schema).
    Broken {
        reason: String,
    },
}

pub struct MigratingDhis2 {
    /// Where the fake answers, for the `dhis2operator.io/endpoint-override` annotation.
    pub url: String,
    shared: Arc<Shared>,
    follower: JoinHandle<()>,
}

struct Shared {
    database_url: String,
    behaviour: Mutex<Migration>,
    /// By `<pod uid>/<image>`: a changed image is a restarted container.
    nodes: Mutex<BTreeMap<String, Node>>,
    observed: Mutex<Vec<Observed>>,
    served: Mutex<Vec<String>>,
    analytics_requests: Mutex<Vec<Option<String>>>,
    started: Mutex<u64>,
}

struct Node {
    pod: String,
    version: Option<Dhis2Version>,
    state: NodeState,
    /// Start order: when several nodes are up, the newest answers.
    order: u64,
    task: Option<JoinHandle<()>>,
}

impl MigratingDhis2 {
    /// Follows the DHIS2 pods of `instance` in `namespace`; migrates `database_url`
    /// (`postgresql://…` of the instance's database) as `behaviour` says.
    pub async fn start(
        client: Client,
        namespace: &str,
        instance: &str,
        database_url: &str,
        behaviour: Migration,
    ) -> Self {
        // The port is chosen now and stays; nothing listens until a DHIS2 pod runs.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .and_then(|l| l.local_addr())
            .expect("pick a port for the fake DHIS2");
        let shared = Arc::new(Shared {
            database_url: database_url.to_string(),
            behaviour: Mutex::new(behaviour),
            nodes: Mutex::default(),
            observed: Mutex::default(),
            served: Mutex::default(),
            analytics_requests: Mutex::default(),
            started: Mutex::new(0),
        });
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let selector = format!(
            "app.kubernetes.io/name=dhis2,app.kubernetes.io/instance={instance},app.kubernetes.io/component=dhis2"
        );
        let follower = tokio::spawn(follow(shared.clone(), pods, selector, addr));
        Self {
            url: format!("http://{addr}"),
            shared,
            follower,
        }
    }

    /// How migrations that start from now on behave.
    pub fn set_behaviour(&self, behaviour: Migration) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    pub fn answer(&self) -> Answer {
        self.shared.answer()
    }

    /// Everything seen and done so far, in order.
    pub fn observed(&self) -> Vec<Observed> {
        self.shared.observed.lock().unwrap().clone()
    }

    /// The versions /api/system/info reported (200), each change once, in order.
    pub fn served_versions(&self) -> Vec<String> {
        self.shared.served.lock().unwrap().clone()
    }

    /// Every `POST /api/resourceTables/analytics`: the user it authenticated as, or `None`.
    pub fn analytics_requests(&self) -> Vec<Option<String>> {
        self.shared.analytics_requests.lock().unwrap().clone()
    }

    /// The nodes running now: pod name and state.
    pub fn nodes(&self) -> Vec<(String, NodeState)> {
        self.shared
            .nodes
            .lock()
            .unwrap()
            .values()
            .map(|n| (n.pod.clone(), n.state.clone()))
            .collect()
    }

    /// Refusals and nodes outrun by a newer schema: two versions on one database.
    pub fn version_conflicts(&self) -> Vec<Observed> {
        self.observed()
            .into_iter()
            .filter(|o| {
                matches!(
                    o,
                    Observed::Refused { .. } | Observed::OutrunBySchema { .. }
                )
            })
            .collect()
    }
}

impl Drop for MigratingDhis2 {
    fn drop(&mut self) {
        self.follower.abort();
        for node in self.shared.nodes.lock().unwrap().values_mut() {
            if let Some(task) = node.task.take() {
                task.abort();
            }
        }
    }
}

impl Shared {
    fn record(&self, observed: Observed) {
        self.observed.lock().unwrap().push(observed);
    }

    fn set_state(&self, key: &str, state: NodeState) {
        if let Some(node) = self.nodes.lock().unwrap().get_mut(key) {
            node.state = state;
        }
    }

    fn answer(&self) -> Answer {
        let nodes = self.nodes.lock().unwrap();
        if nodes.is_empty() {
            return Answer::Down;
        }
        nodes
            .values()
            .filter(|n| n.state == NodeState::Up)
            .max_by_key(|n| n.order)
            .and_then(|n| n.version.as_ref())
            .map(|v| Answer::Up {
                version: v.to_string(),
            })
            .unwrap_or(Answer::Unavailable)
    }
}

/// Polls the pods, starts a node for each new Running pod, ends the nodes of pods gone, and
/// listens only while a pod runs.
async fn follow(shared: Arc<Shared>, pods: Api<Pod>, selector: String, addr: SocketAddr) {
    let mut server: Option<Server> = None;
    loop {
        if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
            let running: BTreeMap<String, (String, String)> = list
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .filter_map(|p| {
                    let image = dhis2_image(&p)?;
                    let key = format!("{}/{image}", p.uid().unwrap_or_default());
                    Some((key, (p.name_any(), image)))
                })
                .collect();
            end_nodes_of_pods_gone(&shared, &running);
            for (key, (pod, image)) in running {
                let known = shared.nodes.lock().unwrap().contains_key(&key);
                if !known {
                    start_node(&shared, key, pod, &image);
                }
            }
        }
        let any_pod = !shared.nodes.lock().unwrap().is_empty();
        match (any_pod, server.is_some()) {
            (true, false) => match Server::listen(shared.clone(), addr).await {
                Ok(s) => server = Some(s),
                Err(e) => shared.record(Observed::ListenError(e.to_string())),
            },
            (false, true) => {
                if let Some(s) = server.take() {
                    s.stop().await;
                }
            }
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

fn dhis2_image(pod: &Pod) -> Option<String> {
    let containers = &pod.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == "dhis2")
        .or(containers.first())?
        .image
        .clone()
}

fn end_nodes_of_pods_gone(shared: &Shared, running: &BTreeMap<String, (String, String)>) {
    let mut nodes = shared.nodes.lock().unwrap();
    let gone: Vec<String> = nodes
        .keys()
        .filter(|k| !running.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        let Some(mut node) = nodes.remove(&key) else {
            continue;
        };
        // Dropping the task drops its connection: the server sees it close and rolls back.
        if let Some(task) = node.task.take() {
            task.abort();
        }
        let mut observed = shared.observed.lock().unwrap();
        if let NodeState::Migrating { to } = node.state {
            observed.push(Observed::MigrationAbandoned {
                pod: node.pod.clone(),
                to,
            });
        }
        observed.push(Observed::PodGone { pod: node.pod });
    }
}

fn start_node(shared: &Arc<Shared>, key: String, pod: String, image: &str) {
    let version = image_version(image);
    let order = {
        let mut started = shared.started.lock().unwrap();
        *started += 1;
        *started
    };
    let state = match &version {
        Some(v) => {
            shared.record(Observed::PodStarted {
                pod: pod.clone(),
                version: v.to_string(),
            });
            NodeState::Starting
        }
        None => {
            shared.record(Observed::BadImage {
                pod: pod.clone(),
                image: image.to_string(),
            });
            let reason = format!("image {image} names no DHIS2 version in its tag");
            NodeState::Broken { reason }
        }
    };
    // In the map before its task runs, so the task's state changes land.
    let mut nodes = shared.nodes.lock().unwrap();
    let node = nodes.entry(key.clone()).or_insert(Node {
        pod: pod.clone(),
        version: version.clone(),
        state,
        order,
        task: None,
    });
    if let Some(v) = version {
        node.task = Some(tokio::spawn(run_node(shared.clone(), key, pod, v)));
    }
}

/// Starts DHIS2 `version` for one pod; retried while the database cannot be reached.
async fn run_node(shared: Arc<Shared>, key: String, pod: String, version: Dhis2Version) {
    loop {
        match start_dhis2(&shared, &key, &pod, &version).await {
            Ok(()) => return,
            Err(message) => {
                shared.set_state(&key, NodeState::Starting);
                shared.record(Observed::DatabaseError {
                    pod: pod.clone(),
                    message,
                });
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// A database session that ends (connection closed) when dropped.
struct Session {
    client: tokio_postgres::Client,
    connection: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Session {
    async fn open(url: &str, pod: &str) -> Result<Self, String> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| format!("bad database URL: {e}"))?;
        config
            .application_name(format!("{APPLICATION_NAME} {pod}"))
            .connect_timeout(CONNECT_TIMEOUT);
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| pg_error("connecting to the database", &e))?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { client, connection })
    }

    async fn run(&self, what: &str, sql: &str) -> Result<(), String> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| pg_error(what, &e))
    }

    /// The highest successful Flyway version that is a DHIS2 version, as `read_database_facts`
    /// reads it.
    async fn schema_version(&self) -> Result<Dhis2Version, String> {
        let rows = self
            .client
            .query(
                "SELECT version::text FROM public.flyway_schema_history
                 WHERE version IS NOT NULL AND success",
                &[],
            )
            .await
            .map_err(|e| pg_error("reading flyway_schema_history", &e))?;
        rows.iter()
            .filter_map(|r| Dhis2Version::parse(r.get::<_, &str>(0)).ok())
            .max()
            .ok_or_else(|| "flyway_schema_history holds no DHIS2 version".to_string())
    }
}

fn pg_error(what: &str, e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{what}: {}", db.message()),
        None => format!("{what}: {e}"),
    }
}

async fn start_dhis2(
    shared: &Arc<Shared>,
    key: &str,
    pod: &str,
    version: &Dhis2Version,
) -> Result<(), String> {
    let session = Session::open(&shared.database_url, pod).await?;
    // Flyway's lock: a second node waits while one migrates, then finds the schema migrated.
    session
        .run(
            "taking Flyway's lock",
            &format!("SELECT pg_advisory_lock({FLYWAY_LOCK_KEY})"),
        )
        .await?;
    let schema = session.schema_version().await?;
    match version.major().cmp(&schema.major()) {
        CmpOrdering::Less => {
            drop(session);
            shared.record(Observed::Refused {
                pod: pod.to_string(),
                version: version.to_string(),
                schema: schema.to_string(),
            });
            let reason =
                format!("DHIS2 {version} cannot run on a database migrated to schema {schema}");
            shared.set_state(key, NodeState::Broken { reason });
        }
        CmpOrdering::Equal => {
            drop(session);
            serve(shared, key, pod, version);
        }
        CmpOrdering::Greater => migrate(shared, key, pod, version, &schema, session).await?,
    }
    Ok(())
}

fn serve(shared: &Shared, key: &str, pod: &str, version: &Dhis2Version) {
    shared.set_state(key, NodeState::Up);
    shared.record(Observed::Serving {
        pod: pod.to_string(),
        version: version.to_string(),
    });
}

/// The statements of one Flyway migration: its change, then its history row.
fn migration_sql(major: u32, step: u32, rank: i32) -> String {
    let table = marker_table(major);
    let change = if step == 1 {
        format!(
            "CREATE TABLE public.{table} (step integer PRIMARY KEY, \
             migrated_at timestamp NOT NULL DEFAULT now()); \
             INSERT INTO public.{table} (step) VALUES (1);"
        )
    } else {
        format!("INSERT INTO public.{table} (step) VALUES ({step});")
    };
    let checksum = (major as i32) * 7919 + (step as i32) * 104_729;
    format!(
        "{change}
         INSERT INTO public.flyway_schema_history (installed_rank, version, description, type, \
           script, checksum, installed_by, installed_on, execution_time, success)
         VALUES ({rank}, '2.{major}.{step}', 'fake migration {step} of 2.{major}', 'SQL', \
           '2.{major}/V2_{major}_{step}__fake_migration_{step}.sql', {checksum}, current_user, \
           now(), 7, true);"
    )
}

async fn migrate(
    shared: &Arc<Shared>,
    key: &str,
    pod: &str,
    version: &Dhis2Version,
    schema: &Dhis2Version,
    session: Session,
) -> Result<(), String> {
    let behaviour = *shared.behaviour.lock().unwrap();
    let to = version.to_string();
    shared.set_state(key, NodeState::Migrating { to: to.clone() });
    shared.record(Observed::MigrationStarted {
        pod: pod.to_string(),
        from: schema.to_string(),
        to: to.clone(),
        behaviour,
    });
    session.run("beginning the migration", "BEGIN").await?;
    let next_rank: i32 = session
        .client
        .query_one(
            "SELECT coalesce(max(installed_rank), 0) + 1 FROM public.flyway_schema_history",
            &[],
        )
        .await
        .map_err(|e| pg_error("reading the last installed_rank", &e))?
        .get(0);
    let steps: Vec<(u32, u32)> = (schema.major().0 + 1..=version.major().0)
        .flat_map(|major| (1..=MIGRATIONS_PER_LINE).map(move |step| (major, step)))
        .collect();
    let written = match behaviour {
        Migration::Quick | Migration::Slow(_) => steps.len(),
        Migration::Never | Migration::FailHalfway => steps.len().div_ceil(2),
    };
    let pause = match behaviour {
        Migration::Slow(total) => total / steps.len().max(1) as u32,
        _ => Duration::ZERO,
    };
    for (i, (major, step)) in steps.iter().take(written).enumerate() {
        session
            .run(
                &format!("migration 2.{major}.{step}"),
                &migration_sql(*major, *step, next_rank + i as i32),
            )
            .await?;
        tokio::time::sleep(pause).await;
    }
    match behaviour {
        Migration::Never => std::future::pending::<()>().await,
        Migration::FailHalfway => {
            // A real failure from the server: the column the next migration adds already exists.
            let (major, _) = steps[0];
            let failure = session
                .run(
                    "migration",
                    &format!(
                        "ALTER TABLE public.{} ADD COLUMN step integer",
                        marker_table(major)
                    ),
                )
                .await;
            let error = failure.err().unwrap_or_else(|| "no failure".into());
            session.run("rolling back", "ROLLBACK").await?;
            drop(session);
            shared.record(Observed::MigrationFailed {
                pod: pod.to_string(),
                to: to.clone(),
                error: error.clone(),
            });
            let reason = format!("Flyway migration to {to} failed: {error}");
            shared.set_state(key, NodeState::Broken { reason });
            return Ok(());
        }
        Migration::Quick | Migration::Slow(_) => {}
    }
    session.run("committing the migration", "COMMIT").await?;
    drop(session);
    let (major, step) = steps.last().copied().unwrap_or((version.major().0, 0));
    let new_schema = format!("2.{major}.{step}");
    shared.record(Observed::MigrationCommitted {
        pod: pod.to_string(),
        to,
        schema: new_schema.clone(),
    });
    outrun_older_nodes(shared, key, version, &new_schema);
    serve(shared, key, pod, version);
    Ok(())
}

/// Nodes up on an older release line than the schema just committed can no longer work.
fn outrun_older_nodes(shared: &Shared, migrated_by: &str, version: &Dhis2Version, schema: &str) {
    let mut nodes = shared.nodes.lock().unwrap();
    for (key, node) in nodes.iter_mut() {
        let older = node
            .version
            .as_ref()
            .is_some_and(|v| v.major() < version.major());
        if key != migrated_by && node.state == NodeState::Up && older {
            let pod_version = node
                .version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default();
            shared.record(Observed::OutrunBySchema {
                pod: node.pod.clone(),
                version: pod_version.clone(),
                schema: schema.to_string(),
            });
            node.state = NodeState::Broken {
                reason: format!("DHIS2 {pod_version} runs on a database migrated to {schema}"),
            };
        }
    }
}

/// The HTTP side while pods run.
struct Server {
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    async fn listen(shared: Arc<Shared>, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { shutdown, task })
    }

    /// Stops listening (connections refused from then on) and closes the open connections.
    async fn stop(self) {
        let _ = self.shutdown.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// The user of a Basic authorization header, when it carries the admin account.
fn admin_user(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ADMIN.0, ADMIN.1))
    );
    (headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&expected))
        .then(|| ADMIN.0.to_string())
}

fn revision(version: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(version.as_bytes());
    hex::encode(digest)[..7].to_string()
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/api/system/ping",
            get(|State(s): State<Arc<Shared>>| async move {
                match s.answer() {
                    Answer::Up { .. } => (StatusCode::OK, "pong"),
                    _ => (StatusCode::SERVICE_UNAVAILABLE, ""),
                }
            }),
        )
        .route(
            "/api/system/info",
            get(|State(s): State<Arc<Shared>>, headers: HeaderMap| async move {
                let Answer::Up { version } = s.answer() else {
                    return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({})));
                };
                {
                    let mut served = s.served.lock().unwrap();
                    if served.last() != Some(&version) {
                        served.push(version.clone());
                    }
                }
                if admin_user(&headers).is_none() {
                    // DHIS2 answers /api/system/info only to an authenticated user.
                    return (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"httpStatus": "Unauthorized", "httpStatusCode": 401,
                            "status": "ERROR", "message": "Unauthorized"})),
                    );
                }
                (
                    StatusCode::OK,
                    axum::Json(json!({"version": version, "revision": revision(&version),
                        "buildTime": "2024-05-01T10:00:00.000", "serverDate": "2026-11-25T10:00:00.000",
                        "databaseInfo": {"name": "dhis2", "spatialSupport": true},
                        "readOnlyMode": false, "nodeId": "node-1"})),
                )
            }),
        )
        .route(
            "/api/resourceTables/analytics",
            post(|State(s): State<Arc<Shared>>, headers: HeaderMap| async move {
                let user = admin_user(&headers);
                s.analytics_requests.lock().unwrap().push(user.clone());
                match (s.answer(), user) {
                    (Answer::Up { .. }, Some(_)) => (
                        StatusCode::OK,
                        axum::Json(json!({"httpStatus": "OK", "httpStatusCode": 200, "status": "OK",
                            "message": "Initiated inMemoryAnalyticsJob",
                            "response": {"responseType": "JobConfigurationWebMessageResponse",
                                "name": "inMemoryAnalyticsJob", "id": "pQtXmjMTB3b",
                                "jobType": "ANALYTICS_TABLE", "jobStatus": "SCHEDULED",
                                "relativeNotifierEndpoint": "/api/system/tasks/ANALYTICS_TABLE/pQtXmjMTB3b"}})),
                    ),
                    (Answer::Up { .. }, None) => (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"httpStatus": "Unauthorized", "httpStatusCode": 401,
                            "status": "ERROR", "message": "Unauthorized"})),
                    ),
                    _ => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({}))),
                }
            }),
        )
        .with_state(shared)
}
