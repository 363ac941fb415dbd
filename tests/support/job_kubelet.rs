//! `JobKubelet`: plays the kubelet for the pods of Jobs, because no kubelet (and no container
//! runtime, no scheduler) can run on the test machines. Everything else is real: the apiserver,
//! the kube-controller-manager's job controller (which creates the pods and marks the Job
//! Complete / Failed / DeadlineExceeded from the pod phases this harness writes), PostgreSQL and
//! S3.
//!
//! What is faked, and how, for every pod labelled `job-name` in one namespace:
//! - The first container's command runs as a local process (`dhis2ctl` → the binary built by
//!   cargo, anything else from PATH) in its own process group, with a clean environment: the
//!   container's env (`value` with `$(VAR)` expansion, `secretKeyRef` / `configMapKeyRef` read
//!   with the admin client, `fieldRef` for the pod's name and namespace) plus the "image env"
//!   PATH and DHIS2_PG_BIN_DIR from the test process. A missing Secret or key leaves the pod
//!   Pending with a waiting `CreateContainerConfigError`, retried on every poll like the kubelet.
//! - Volumes are local directories: a Secret / ConfigMap → its keys as files in a temp dir;
//!   emptyDir → a temp dir; a persistentVolumeClaim → one directory per claim that tests fill
//!   through [`JobKubelet::claim_dir`] (the claim must exist; read-only mounts stay writable).
//!   The mount paths (and the termination message path, e.g. `/dev/termination-log`) are
//!   rewritten to those directories in the args and the plain env values, longest path first, in
//!   one pass. File contents (e.g. a mounted dhis.conf) are not rewritten.
//! - Host names are rewritten by a map a test can extend at any time ([`JobKubelet::map_host`]):
//!   in args and plain env values, `name:port` becomes the target (`host:port`, or the target
//!   host with the original port when the target has none) and a bare `name` becomes the
//!   target's host. A name matches only as a whole host name (neighbours are not letters,
//!   digits, `-` or `.`): pick service names that do not also occur as words in paths.
//!   Values from Secrets are never rewritten.
//! - Status: Running with a running container while the command runs; on exit Succeeded (exit 0)
//!   or Failed with `state.terminated` {exitCode, reason Completed / Error, message}: the
//!   termination file's content (≤ 4096 bytes), or, with `FallbackToLogsOnError`, an empty file
//!   and a failure, the output's last 80 lines within 2048 bytes.
//! - A pod deleted while its command runs (Job deleted, deadline passed) gets its process group
//!   killed, as the kubelet stops the container.
//! - [`JobKubelet::pause`] holds new commands: their pods show Running but nothing starts until
//!   [`JobKubelet::resume`] (never `--resolve-only`, which only reads the repository). [`JobKubelet::runs`] tells what ran, for assertions.
//! - A drill's throw-away database pod (component `drill-database`) gets a real PostgreSQL 15 +
//!   PostGIS server on a free loopback port, with its Services' names mapped to it for the Jobs
//!   and unmapped when the pod goes (tests/support/drill_server.rs; [`JobKubelet::drill_servers`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::drill_server::DrillServers;

/// The label the job controller puts on the pods of a Job.
pub const JOB_NAME_LABEL: &str = "job-name";
/// The kubelet keeps at most this much of a termination message.
const MAX_MESSAGE_BYTES: usize = 4096;
/// `FallbackToLogsOnError`: the last 80 lines of the log, at most 2048 bytes.
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;
/// How much output a [`JobRun`] keeps (the tail), for failure messages in tests.
const KEPT_OUTPUT_BYTES: usize = 64 * 1024;

/// One command the harness ran (or holds, or is running).
#[derive(Debug, Clone)]
pub struct JobRun {
    pub pod: String,
    /// The pod's `job-name` label.
    pub job: String,
    /// The container's args as written in the pod (before any expansion or rewriting).
    pub args: Vec<String>,
    pub state: RunState,
    /// The tail of stdout and stderr, interleaved.
    pub output: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Paused: the pod shows Running, the command has not started.
    Held,
    Running,
    Exited(i32),
    /// The pod was deleted while the command was held or running; the process was killed.
    Killed,
}

impl JobRun {
    pub fn exit_code(&self) -> Option<i32> {
        match self.state {
            RunState::Exited(code) => Some(code),
            _ => None,
        }
    }
}

/// Maps a host name to `host:port` for the commands the harness runs.
pub type HostMapper = Arc<dyn Fn(&str, &str) + Send + Sync>;

pub struct JobKubelet {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    drill_servers: DrillServers,
}

struct Shared {
    admin: Client,
    namespace: String,
    root: tempfile::TempDir,
    hosts: Mutex<BTreeMap<String, String>>,
    paused: AtomicBool,
    pods: Mutex<HashMap<String, PodState>>,
    runs: Mutex<Vec<JobRun>>,
    /// Process groups of running commands, killed when the harness is dropped.
    groups: Mutex<HashMap<String, u32>>,
}

enum PodState {
    /// The container could not be configured yet (reason, message): retried on every poll.
    Waiting(String, String),
    Held(Box<Prepared>),
    Running(Option<oneshot::Sender<()>>),
    Done,
}

/// A pod's command, ready to run locally.
struct Prepared {
    uid: String,
    pod: String,
    container: String,
    image: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    workdir: PathBuf,
    termination_file: PathBuf,
    fallback_to_logs: bool,
}

impl JobKubelet {
    pub fn start(admin: Client, namespace: &str) -> JobKubelet {
        let shared = Arc::new(Shared {
            admin,
            namespace: namespace.to_string(),
            root: tempfile::Builder::new()
                .prefix(&format!("job-kubelet-{namespace}-"))
                .tempdir()
                .expect("job kubelet temp dir"),
            hosts: Mutex::new(BTreeMap::new()),
            paused: AtomicBool::new(false),
            pods: Mutex::new(HashMap::new()),
            runs: Mutex::new(Vec::new()),
            groups: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(poll(shared.clone()));
        let hosts = shared.clone();
        let drill_servers = DrillServers::start(
            shared.admin.clone(),
            namespace,
            Arc::new(move |name: &str, target: Option<std::net::SocketAddr>| {
                let mut map = hosts.hosts.lock().unwrap();
                match target {
                    Some(addr) => map.insert(name.to_string(), addr.to_string()),
                    None => map.remove(name),
                };
            }),
        );
        JobKubelet {
            shared,
            task,
            drill_servers,
        }
    }

    /// The throw-away database servers of drills in this namespace.
    pub fn drill_servers(&self) -> &DrillServers {
        &self.drill_servers
    }

    /// Where `name` leads now, if it is mapped.
    pub fn mapped_host(&self, name: &str) -> Option<String> {
        self.shared.hosts.lock().unwrap().get(name).cloned()
    }

    /// `map_host` for another task (the CloudNativePG harness maps the Services it makes).
    pub fn host_mapper(&self) -> HostMapper {
        let shared = self.shared.clone();
        Arc::new(move |name: &str, target: &str| {
            shared
                .hosts
                .lock()
                .unwrap()
                .insert(name.to_string(), target.to_string());
        })
    }

    /// From now on, `name` in args and env values means `target` (`host:port` or `host`).
    pub fn map_host(&self, name: &str, target: &str) {
        self.shared
            .hosts
            .lock()
            .unwrap()
            .insert(name.to_string(), target.to_string());
    }

    /// The local directory that stands for the claim `claim` in this namespace (created).
    pub fn claim_dir(&self, claim: &str) -> PathBuf {
        self.shared.claim_dir(claim)
    }

    /// Commands of new pods are held (their pods show Running) until `resume`.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Every command seen so far, in the order they were picked up.
    pub fn runs(&self) -> Vec<JobRun> {
        self.shared.runs.lock().unwrap().clone()
    }
}

impl Drop for JobKubelet {
    fn drop(&mut self) {
        self.task.abort();
        for pgid in self.shared.groups.lock().unwrap().values() {
            kill_group(*pgid);
        }
    }
}

impl Shared {
    fn claim_dir(&self, claim: &str) -> PathBuf {
        let dir = self.root.path().join("claims").join(claim);
        std::fs::create_dir_all(&dir).expect("claim dir");
        dir
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    fn update_run(&self, pod: &str, f: impl FnOnce(&mut JobRun)) {
        if let Some(run) = self
            .runs
            .lock()
            .unwrap()
            .iter_mut()
            .rev()
            .find(|r| r.pod == pod)
        {
            f(run);
        }
    }
}

fn kill_group(pgid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn poll(shared: Arc<Shared>) {
    let pods = shared.pods_api();
    loop {
        if let Ok(list) = pods
            .list(&ListParams::default().labels(JOB_NAME_LABEL))
            .await
        {
            sync(&shared, list.items).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sync(shared: &Arc<Shared>, pods: Vec<Pod>) {
    let present: HashSet<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    // Deleted pods: stop their commands, as the kubelet stops the containers.
    {
        let mut states = shared.pods.lock().unwrap();
        for (uid, state) in states.iter_mut() {
            if present.contains(uid) {
                continue;
            }
            match state {
                PodState::Running(cancel) => {
                    if let Some(cancel) = cancel.take() {
                        let _ = cancel.send(());
                    }
                }
                PodState::Held(prepared) => {
                    let pod = prepared.pod.clone();
                    shared.update_run(&pod, |r| r.state = RunState::Killed);
                    *state = PodState::Done;
                }
                _ => {}
            }
        }
    }
    for pod in pods {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            // The kubelet confirms a graceful deletion once the containers are stopped.
            let _ = shared
                .pods_api()
                .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let paused = shared.paused.load(Ordering::SeqCst);
        let known = {
            let states = shared.pods.lock().unwrap();
            match states.get(&uid) {
                None => None,
                Some(PodState::Waiting(reason, message)) => {
                    Some(Some((reason.clone(), message.clone())))
                }
                Some(_) => Some(None),
            }
        };
        match known {
            // Picked up already (held, running or done).
            Some(None) => {
                if !paused {
                    let held = {
                        let mut states = shared.pods.lock().unwrap();
                        match states.remove(&uid) {
                            Some(PodState::Held(prepared)) => Some(prepared),
                            Some(other) => {
                                states.insert(uid.clone(), other);
                                None
                            }
                            None => None,
                        }
                    };
                    if let Some(prepared) = held {
                        run(shared, *prepared);
                    }
                }
            }
            previous => {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if previous.is_none() && !matches!(phase, None | Some("Pending")) {
                    // Not ours: a pod another harness already ran.
                    continue;
                }
                match prepare(shared, &pod).await {
                    Ok(prepared) => {
                        let args = first_container(&pod)
                            .and_then(|c| c.args.clone())
                            .unwrap_or_default();
                        // Finding which backup `latest` is only reads the repository.
                        let hold = paused && !args.iter().any(|a| a == "--resolve-only");
                        shared.runs.lock().unwrap().push(JobRun {
                            pod: prepared.pod.clone(),
                            job: pod
                                .labels()
                                .get(JOB_NAME_LABEL)
                                .cloned()
                                .unwrap_or_default(),
                            args,
                            state: if hold {
                                RunState::Held
                            } else {
                                RunState::Running
                            },
                            output: String::new(),
                        });
                        set_running(shared, &prepared).await;
                        if hold {
                            shared
                                .pods
                                .lock()
                                .unwrap()
                                .insert(uid, PodState::Held(Box::new(prepared)));
                        } else {
                            run(shared, prepared);
                        }
                    }
                    Err((reason, message)) => {
                        if previous.flatten() != Some((reason.clone(), message.clone())) {
                            set_waiting(shared, &pod, &reason, &message).await;
                        }
                        shared
                            .pods
                            .lock()
                            .unwrap()
                            .insert(uid, PodState::Waiting(reason, message));
                    }
                }
            }
        }
    }
}

fn first_container(pod: &Pod) -> Option<&Container> {
    pod.spec.as_ref()?.containers.first()
}

async fn patch_status(shared: &Shared, pod: &str, status: serde_json::Value) {
    let _ = shared
        .pods_api()
        .patch_status(pod, &PatchParams::default(), &Patch::Merge(&status))
        .await;
}

async fn set_waiting(shared: &Shared, pod: &Pod, reason: &str, message: &str) {
    let container = first_container(pod);
    let status = json!({"status": {"phase": "Pending", "containerStatuses": [{
        "name": container.map(|c| c.name.clone()).unwrap_or_default(),
        "image": container.and_then(|c| c.image.clone()).unwrap_or_default(),
        "imageID": "", "ready": false, "restartCount": 0, "started": false,
        "state": {"waiting": {"reason": reason, "message": message}}}]}});
    patch_status(shared, &pod.name_any(), status).await;
}

async fn set_running(shared: &Shared, p: &Prepared) {
    let now = now();
    let status = json!({"status": {"phase": "Running", "startTime": now,
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
        "containerStatuses": [{"name": p.container, "image": p.image, "imageID": "", "ready": true,
        "restartCount": 0, "started": true, "state": {"running": {"startedAt": now}}}]}});
    patch_status(shared, &p.pod, status).await;
}

type ConfigError = (String, String);

fn config_error(message: String) -> ConfigError {
    ("CreateContainerConfigError".into(), message)
}

fn mount_error(message: String) -> ConfigError {
    ("ContainerCreating".into(), message)
}

async fn secret(shared: &Shared, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(shared.admin.clone(), &shared.namespace)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

async fn config_map(shared: &Shared, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(shared.admin.clone(), &shared.namespace)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

fn secret_entries(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut entries: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        entries.insert(k.clone(), v.clone().into_bytes());
    }
    entries
}

fn config_map_entries(map: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut entries: BTreeMap<String, Vec<u8>> = map
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in map.binary_data.iter().flatten() {
        entries.insert(k.clone(), v.0.clone());
    }
    entries
}

/// A Secret or ConfigMap volume as the kubelet makes it: its entries written into `dir`, an empty
/// directory when the object is missing but optional, else the kubelet's mount error naming
/// `what` (e.g. `secret "x"`).
fn mount_entries(
    dir: &Path,
    entries: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    optional: bool,
    volume: &str,
    what: &str,
) -> Result<(), ConfigError> {
    match entries {
        Some(entries) => write_entries(dir, &entries, items).map_err(|e| {
            mount_error(format!(
                "MountVolume.SetUp failed for volume \"{volume}\" : {e}"
            ))
        }),
        None if optional => std::fs::create_dir_all(dir).map_err(|e| mount_error(e.to_string())),
        None => Err(mount_error(format!(
            "MountVolume.SetUp failed for volume \"{volume}\" : {what} not found"
        ))),
    }
}

fn write_entries(
    dir: &Path,
    entries: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let pairs: Vec<(String, String)> = match items {
        Some(items) => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect(),
        None => entries.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, path) in pairs {
        let value = entries
            .get(&key)
            .ok_or_else(|| format!("configmap or secret references non-existent key {key}"))?;
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&file, value).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Resolves the pod's first container into a local command, or says why the kubelet could not
/// start it yet.
async fn prepare(shared: &Shared, pod: &Pod) -> Result<Prepared, ConfigError> {
    let name = pod.name_any();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| config_error("pod has no spec".into()))?;
    let container = spec
        .containers
        .first()
        .ok_or_else(|| config_error("pod has no container".into()))?;
    let pod_dir = shared.root.path().join("pods").join(&name);

    // Volumes → local directories.
    let mut volume_dirs: HashMap<String, PathBuf> = HashMap::new();
    for volume in spec.volumes.iter().flatten() {
        let dir = if let Some(source) = &volume.secret {
            let secret_name = source.secret_name.clone().unwrap_or_default();
            let entries = secret(shared, &secret_name)
                .await
                .map(|s| secret_entries(&s));
            let dir = pod_dir.join("volumes").join(&volume.name);
            mount_entries(
                &dir,
                entries,
                source.items.as_ref(),
                source.optional == Some(true),
                &volume.name,
                &format!("secret \"{secret_name}\""),
            )?;
            dir
        } else if let Some(source) = &volume.config_map {
            let map_name = source.name.clone();
            let entries = config_map(shared, &map_name)
                .await
                .map(|m| config_map_entries(&m));
            let dir = pod_dir.join("volumes").join(&volume.name);
            mount_entries(
                &dir,
                entries,
                source.items.as_ref(),
                source.optional == Some(true),
                &volume.name,
                &format!("configmap \"{map_name}\""),
            )?;
            dir
        } else if let Some(source) = &volume.persistent_volume_claim {
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(shared.admin.clone(), &shared.namespace);
            if claims
                .get_opt(&source.claim_name)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                return Err(mount_error(format!(
                    "persistentvolumeclaim \"{}\" not found",
                    source.claim_name
                )));
            }
            shared.claim_dir(&source.claim_name)
        } else if volume.empty_dir.is_some() {
            let dir = pod_dir.join("volumes").join(&volume.name);
            std::fs::create_dir_all(&dir).map_err(|e| mount_error(e.to_string()))?;
            dir
        } else {
            return Err(mount_error(format!(
                "job kubelet: volume \"{}\" has a source this harness does not support",
                volume.name
            )));
        };
        volume_dirs.insert(volume.name.clone(), dir);
    }

    // Mount paths and the termination message path → local paths.
    let mut paths: Vec<(String, String)> = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let dir = volume_dirs
            .get(&mount.name)
            .ok_or_else(|| config_error(format!("volume mount {} has no volume", mount.name)))?;
        let local = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let local = dir.join(sub);
                std::fs::create_dir_all(&local).map_err(|e| mount_error(e.to_string()))?;
                local
            }
            None => dir.clone(),
        };
        paths.push((
            mount.mount_path.trim_end_matches('/').to_string(),
            local.display().to_string(),
        ));
    }
    std::fs::create_dir_all(&pod_dir).map_err(|e| mount_error(e.to_string()))?;
    let termination_file = pod_dir.join("termination-log");
    std::fs::write(&termination_file, b"").map_err(|e| mount_error(e.to_string()))?;
    let termination_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    paths.push((termination_path, termination_file.display().to_string()));
    paths.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    let hosts = shared.hosts.lock().unwrap().clone();
    let rewrite = |s: &str| rewrite_paths(&rewrite_hosts(s, &hosts), &paths);

    // Env, in order: `$(VAR)` refers to variables defined before it.
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        let defined: HashMap<String, String> = env.iter().cloned().collect();
        let value = if let Some(value) = &var.value {
            rewrite(&expand(value, &defined))
        } else if let Some(from) = &var.value_from {
            if let Some(key_ref) = &from.secret_key_ref {
                let optional = key_ref.optional == Some(true);
                match secret(shared, &key_ref.name).await {
                    None if optional => continue,
                    None => {
                        return Err(config_error(format!(
                            "secret \"{}\" not found",
                            key_ref.name
                        )));
                    }
                    Some(s) => match secret_entries(&s).get(&key_ref.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(config_error(format!(
                                "couldn't find key {} in Secret {}/{}",
                                key_ref.key, shared.namespace, key_ref.name
                            )));
                        }
                    },
                }
            } else if let Some(key_ref) = &from.config_map_key_ref {
                let optional = key_ref.optional == Some(true);
                match config_map(shared, &key_ref.name).await {
                    None if optional => continue,
                    None => {
                        return Err(config_error(format!(
                            "configmap \"{}\" not found",
                            key_ref.name
                        )));
                    }
                    Some(m) => match config_map_entries(&m).get(&key_ref.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(config_error(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                key_ref.key, shared.namespace, key_ref.name
                            )));
                        }
                    },
                }
            } else if let Some(field) = &from.field_ref {
                match field.field_path.as_str() {
                    "metadata.name" => name.clone(),
                    "metadata.namespace" => shared.namespace.clone(),
                    other => {
                        return Err(config_error(format!(
                            "job kubelet: fieldRef {other} is not supported"
                        )));
                    }
                }
            } else {
                return Err(config_error(format!(
                    "job kubelet: env {} has a source this harness does not support",
                    var.name
                )));
            }
        } else {
            String::new()
        };
        env.retain(|(n, _)| n != &var.name);
        env.push((var.name.clone(), value));
    }
    let all: HashMap<String, String> = env.iter().cloned().collect();

    let command = container
        .command
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| config_error("job kubelet: the container has no command".into()))?;
    let mut argv: Vec<String> = command
        .iter()
        .chain(container.args.iter().flatten())
        .map(|a| rewrite(&expand(a, &all)))
        .collect();
    let program = match argv.remove(0).as_str() {
        "dhis2ctl" => PathBuf::from(env!("CARGO_BIN_EXE_dhis2ctl")),
        other => PathBuf::from(other),
    };
    let workdir = match container.working_dir.as_deref() {
        Some(dir) => PathBuf::from(rewrite(dir)),
        None => pod_dir.clone(),
    };
    // What the image would provide.
    let mut process_env: Vec<(String, String)> = ["PATH", "DHIS2_PG_BIN_DIR"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    process_env.push(("HOME".into(), pod_dir.display().to_string()));
    process_env.extend(env);
    Ok(Prepared {
        uid,
        pod: name,
        container: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        program,
        args: argv,
        env: process_env,
        workdir,
        termination_file,
        fallback_to_logs: container.termination_message_policy.as_deref()
            == Some("FallbackToLogsOnError"),
    })
}

/// Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`, anything
/// else stays as written.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = vars.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

/// Replaces each mount path (a whole path or a path prefix ending at `/`) by its local
/// directory, in one pass, longest path first (`paths` is sorted so).
pub fn rewrite_paths(input: &str, paths: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut i = 0;
    'outer: while i < input.len() {
        let before_ok = input[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !is_path_char(c));
        if before_ok {
            for (from, to) in paths {
                if from.is_empty() || !input[i..].starts_with(from.as_str()) {
                    continue;
                }
                let next = input[i + from.len()..].chars().next();
                if next.is_none_or(|c| c == '/' || !is_path_char(c)) {
                    out.push_str(to);
                    i += from.len();
                    continue 'outer;
                }
            }
        }
        let c = input[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.')
}

/// Replaces whole host names by their targets: `name:port` → the target (or the target's host
/// with that port when the target has no port), a bare `name` → the target's host.
pub fn rewrite_hosts(input: &str, hosts: &BTreeMap<String, String>) -> String {
    if hosts.is_empty() {
        return input.to_string();
    }
    let mut names: Vec<(&String, &String)> = hosts.iter().collect();
    names.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = String::new();
    let mut i = 0;
    'outer: while i < input.len() {
        let before_ok = input[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !is_host_char(c));
        if before_ok {
            for (name, target) in &names {
                if !input[i..].starts_with(name.as_str()) {
                    continue;
                }
                let after = &input[i + name.len()..];
                if after.chars().next().is_some_and(is_host_char) {
                    continue;
                }
                let (target_host, target_port) = match target.rsplit_once(':') {
                    Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
                    _ => (target.as_str(), None),
                };
                let port_len = after
                    .strip_prefix(':')
                    .map(|p| p.chars().take_while(char::is_ascii_digit).count())
                    .unwrap_or(0);
                if port_len > 0 {
                    let port = &after[1..1 + port_len];
                    out.push_str(target_host);
                    out.push(':');
                    out.push_str(target_port.unwrap_or(port));
                    i += name.len() + 1 + port_len;
                } else {
                    out.push_str(target_host);
                    i += name.len();
                }
                continue 'outer;
            }
        }
        let c = input[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The last `FALLBACK_LINES` lines of the output, within `FALLBACK_BYTES`.
fn log_tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(FALLBACK_LINES);
    let tail = lines[start..].join("\n");
    cut_front(&tail, FALLBACK_BYTES)
}

/// The last `max` bytes of `text`, on a character boundary.
fn cut_front(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// Starts the command of a prepared pod in the background.
fn run(shared: &Arc<Shared>, p: Prepared) {
    let (cancel_tx, cancel_rx) = oneshot::channel();
    shared
        .pods
        .lock()
        .unwrap()
        .insert(p.uid.clone(), PodState::Running(Some(cancel_tx)));
    shared.update_run(&p.pod, |r| r.state = RunState::Running);
    tokio::spawn(execute(shared.clone(), p, cancel_rx));
}

async fn execute(shared: Arc<Shared>, p: Prepared, cancel: oneshot::Receiver<()>) {
    let started_at = now();
    let output = Arc::new(Mutex::new(Vec::<u8>::new()));
    let spawned = tokio::process::Command::new(&p.program)
        .args(&p.args)
        .env_clear()
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&p.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let message = format!("failed to start {}: {e}", p.program.display());
            finish(&shared, &p, &started_at, 128, "StartError", message).await;
            return;
        }
    };
    if let Some(pid) = child.id() {
        shared.groups.lock().unwrap().insert(p.uid.clone(), pid);
    }
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(collect(stdout, output.clone())));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(collect(stderr, output.clone())));
    }
    let pgid = child.id();
    let killed = tokio::select! {
        status = child.wait() => Err(status),
        _ = cancel => Ok(()),
    };
    shared.groups.lock().unwrap().remove(&p.uid);
    let status = match killed {
        Ok(()) => {
            if let Some(pgid) = pgid {
                kill_group(pgid);
            }
            let _ = child.wait().await;
            for reader in readers {
                let _ = reader.await;
            }
            let tail = cut_front(
                &String::from_utf8_lossy(&output.lock().unwrap()),
                KEPT_OUTPUT_BYTES,
            );
            shared.update_run(&p.pod, |r| {
                r.state = RunState::Killed;
                r.output = tail;
            });
            shared
                .pods
                .lock()
                .unwrap()
                .insert(p.uid.clone(), PodState::Done);
            return;
        }
        Err(status) => status,
    };
    // Children left behind by the command die with the container.
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    for reader in readers {
        let _ = reader.await;
    }
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + s.signal().unwrap_or(9)
        }),
        Err(_) => 128,
    };
    let written = std::fs::read(&p.termination_file).unwrap_or_default();
    let mut message = cut_front(&String::from_utf8_lossy(&written), MAX_MESSAGE_BYTES);
    let out = output.lock().unwrap().clone();
    if message.trim().is_empty() && code != 0 && p.fallback_to_logs {
        message = log_tail(&out);
    }
    shared.update_run(&p.pod, |r| {
        r.output = cut_front(&String::from_utf8_lossy(&out), KEPT_OUTPUT_BYTES);
    });
    let reason = if code == 0 { "Completed" } else { "Error" };
    finish(&shared, &p, &started_at, code, reason, message).await;
}

async fn collect<R: tokio::io::AsyncRead + Unpin>(mut reader: R, into: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        into.lock().unwrap().extend_from_slice(&buf[..n]);
    }
}

async fn finish(
    shared: &Shared,
    p: &Prepared,
    started_at: &str,
    code: i32,
    reason: &str,
    message: String,
) {
    shared.update_run(&p.pod, |r| r.state = RunState::Exited(code));
    shared
        .pods
        .lock()
        .unwrap()
        .insert(p.uid.clone(), PodState::Done);
    let mut terminated = json!({"exitCode": code, "reason": reason,
        "startedAt": started_at, "finishedAt": now()});
    if !message.is_empty() {
        terminated["message"] = json!(message);
    }
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let status = json!({"status": {"phase": phase,
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"},
                       {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"}],
        "containerStatuses": [{"name": p.container, "image": p.image, "imageID": "", "ready": false,
        "restartCount": 0, "started": false, "state": {"terminated": terminated}}]}});
    patch_status(shared, &p.pod, status).await;
}
