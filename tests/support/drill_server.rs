//! Plays the kubelet for a drill's throw-away PostGIS pod (label
//! `app.kubernetes.io/component: drill-database`): no kubelet runs here, so each such pod gets a
//! real, throw-away PostgreSQL 15 + PostGIS server on this machine instead of the image.
//!
//! - Start: `initdb` (Debian's binaries in /usr/lib/postgresql/15/bin, as the `postgres` OS user)
//!   into a temporary directory, superuser `POSTGRES_USER` (default `postgres`) with the pod's
//!   `POSTGRES_PASSWORD` (env value or secretKeyRef, read from the Secret), scram-sha-256 over
//!   TCP; started on a free loopback port. As the postgis image does, `POSTGRES_DB` (when not
//!   `postgres`) is created with the PostGIS extensions in it, so `postgres` stays empty.
//! - Then the pod is marked Running and Ready, and every Service whose selector matches the pod
//!   is mapped to the server: `<svc>`, `<svc>.<ns>.svc` and `<svc>.<ns>.svc.cluster.local` →
//!   `127.0.0.1:<port>`, through the callback given to [`DrillServers::start`]. `JobKubelet`
//!   starts one of these for its namespace and passes its own host map, so the drill Job it runs
//!   reaches the server by the Service's name (`<svc>:5432` becomes `127.0.0.1:<port>`).
//! - Stop: when the pod is deleted (or marked for deletion, which a kubelet then completes) the
//!   server is stopped, its directory removed and its host names unmapped.
//!
//! [`DrillServers::started`] and [`DrillServers::running`] let tests check that a server was
//! started for a drill and is gone afterwards.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const SERVER_COMPONENT: &str = "drill-database";

/// One real PostgreSQL server in a temporary directory, owned by the `postgres` OS user.
pub struct ThrowAwayPostgres {
    dir: Option<tempfile::TempDir>,
    pub port: u16,
}

fn as_postgres(program: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("runuser");
    cmd.args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")]);
    cmd
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn run(mut cmd: std::process::Command, what: &str, log: &Path) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    Err(format!(
        "{what} failed: {}{}\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

impl ThrowAwayPostgres {
    /// initdb + start; blocking (call from `spawn_blocking`).
    pub fn start(user: &str, password: &str) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("drill-postgis-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let path = dir.path().to_path_buf();
        let chown = |p: &Path| {
            std::process::Command::new("chown")
                .args(["postgres:postgres", &p.to_string_lossy()])
                .status()
                .map_err(|e| e.to_string())
        };
        chown(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let pwfile = path.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).map_err(|e| e.to_string())?;
        chown(&pwfile)?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        let data = path.join("data");
        let log = path.join("postgres.log");
        let mut initdb = as_postgres("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", user, "--auth-local=peer", "--auth-host=scram-sha-256"])
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(initdb, "initdb", &log)?;
        let _ = std::fs::remove_file(&pwfile);
        let port = free_port().map_err(|e| e.to_string())?;
        let mut start = as_postgres("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {port} -k '{}' -c listen_addresses=127.0.0.1 -c max_locks_per_transaction=256",
                path.display()
            ))
            .arg("start");
        run(start, "pg_ctl start", &log)?;
        Ok(Self {
            dir: Some(dir),
            port,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().to_path_buf())
    }

    /// Runs SQL as the superuser over the local socket (peer authentication).
    pub fn psql(&self, user: &str, database: &str, sql: &str) -> Result<(), String> {
        let dir = self.dir().ok_or("stopped")?;
        let mut cmd = as_postgres("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                database,
                "-c",
                sql,
            ]);
        run(cmd, "psql", &dir.join("postgres.log"))
    }

    /// What the postgis image's init script does for `POSTGRES_DB`.
    pub fn create_postgis_database(&self, user: &str, database: &str) -> Result<(), String> {
        let quoted = format!("\"{}\"", database.replace('"', "\"\""));
        self.psql(user, "postgres", &format!("CREATE DATABASE {quoted}"))?;
        for ext in [
            "postgis",
            "postgis_topology",
            "fuzzystrmatch",
            "postgis_tiger_geocoder",
        ] {
            self.psql(
                user,
                database,
                &format!("CREATE EXTENSION IF NOT EXISTS {ext} CASCADE"),
            )?;
        }
        Ok(())
    }

    /// Stops the server (immediate shutdown: nothing on it is kept) and removes its directory.
    pub fn stop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let mut stop = as_postgres("pg_ctl");
            stop.arg("-D").arg(dir.path().join("data")).args([
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
                "stop",
            ]);
            let _ = stop.output();
            drop(dir);
        }
    }
}

impl Drop for ThrowAwayPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Host-name mapping: `(host, Some(addr))` maps, `(host, None)` unmaps.
pub type MapHost = Arc<dyn Fn(&str, Option<SocketAddr>) + Send + Sync>;

#[derive(Default)]
struct State {
    /// Pod uid → its server (None while starting).
    servers: HashMap<String, Option<ThrowAwayPostgres>>,
    /// Pod uid → host names mapped for it.
    hosts: HashMap<String, Vec<String>>,
    /// Pod names a server was started for, in order.
    started: Vec<String>,
    /// Pod uid → pod name.
    names: HashMap<String, String>,
}

/// Watches one namespace for drill-database pods and gives each a real server.
pub struct DrillServers {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

fn env_of(pod: &Pod) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
}

async fn resolve_env(secrets: &Api<Secret>, pod: &Pod) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for var in env_of(pod) {
        if let Some(v) = var.value {
            out.insert(var.name, v);
        } else if let Some(key) = var.value_from.and_then(|f| f.secret_key_ref) {
            let secret = secrets
                .get_opt(&key.name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("Secret {} not found", key.name))?;
            let value = secret
                .data
                .and_then(|d| d.get(&key.key).map(|v| v.0.clone()))
                .ok_or_else(|| format!("Secret {} has no {}", key.name, key.key))?;
            out.insert(var.name, String::from_utf8_lossy(&value).into_owned());
        }
    }
    Ok(out)
}

fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.labels().get(k) == Some(v))
}

impl DrillServers {
    pub fn start(client: Client, namespace: &str, map_host: MapHost) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let ns = namespace.to_string();
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let services: Api<Service> = Api::namespaced(client.clone(), &ns);
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let selector = format!("app.kubernetes.io/component={SERVER_COMPONENT}");
            loop {
                if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                    let idle = list.items.is_empty() && st.lock().unwrap().servers.is_empty();
                    if idle {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                    let services = services
                        .list(&ListParams::default())
                        .await
                        .map(|l| l.items)
                        .unwrap_or_default();
                    tick(&st, &list.items, &services, &pods, &secrets, &ns, &map_host).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Self { state, task }
    }

    /// Pod names a server was started for.
    pub fn started(&self) -> Vec<String> {
        self.state.lock().unwrap().started.clone()
    }

    /// Pods whose server is running now, with its address.
    pub fn running(&self) -> Vec<(String, SocketAddr)> {
        let st = self.state.lock().unwrap();
        st.servers
            .iter()
            .filter_map(|(uid, s)| {
                let s = s.as_ref()?;
                Some((st.names.get(uid).cloned().unwrap_or_default(), s.addr()))
            })
            .collect()
    }
}

impl Drop for DrillServers {
    fn drop(&mut self) {
        self.task.abort();
        let servers: Vec<_> = self
            .state
            .lock()
            .map(|mut s| s.servers.drain().collect())
            .unwrap_or_default();
        drop(servers);
    }
}

async fn tick(
    state: &Arc<Mutex<State>>,
    pods: &[Pod],
    services: &[Service],
    api: &Api<Pod>,
    secrets: &Api<Secret>,
    ns: &str,
    map_host: &MapHost,
) {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    // Gone or going: stop the server, unmap, and finish the deletion as a kubelet does.
    let stale: Vec<String> = {
        let st = state.lock().unwrap();
        st.servers
            .keys()
            .filter(|uid| {
                !live
                    .iter()
                    .any(|p| p.uid().as_deref() == Some(uid.as_str()))
            })
            .cloned()
            .collect()
    };
    for uid in stale {
        let (server, hosts) = {
            let mut st = state.lock().unwrap();
            (
                st.servers.remove(&uid).flatten(),
                st.hosts.remove(&uid).unwrap_or_default(),
            )
        };
        for h in hosts {
            map_host(&h, None);
        }
        if let Some(mut server) = server {
            let _ = tokio::task::spawn_blocking(move || server.stop()).await;
        }
    }
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
    {
        let _ = api
            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await;
    }
    for pod in live {
        let Some(uid) = pod.uid() else { continue };
        let known = state.lock().unwrap().servers.contains_key(&uid);
        if !known {
            state.lock().unwrap().servers.insert(uid.clone(), None);
            let env = match resolve_env(secrets, pod).await {
                Ok(env) => env,
                Err(e) => {
                    // Not ready yet (the Secret may follow): try again next round.
                    eprintln!("drill_server: pod {}: {e}", pod.name_any());
                    state.lock().unwrap().servers.remove(&uid);
                    continue;
                }
            };
            let user = env
                .get("POSTGRES_USER")
                .cloned()
                .unwrap_or_else(|| "postgres".into());
            let Some(password) = env.get("POSTGRES_PASSWORD").cloned() else {
                eprintln!(
                    "drill_server: pod {} has no POSTGRES_PASSWORD",
                    pod.name_any()
                );
                continue;
            };
            let database = env.get("POSTGRES_DB").cloned();
            let started = tokio::task::spawn_blocking(move || {
                let server = ThrowAwayPostgres::start(&user, &password)?;
                if let Some(db) = database.filter(|d| d != "postgres") {
                    server.create_postgis_database(&user, &db)?;
                }
                Ok::<_, String>(server)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            let server = match started {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("drill_server: pod {}: {e}", pod.name_any());
                    continue;
                }
            };
            let status = json!({"status": {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                    {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{
                    "name": "postgis", "ready": true, "restartCount": 0, "started": true,
                    "image": "postgis", "imageID": "",
                    "state": {"running": {"startedAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}}}]
            }});
            {
                let mut st = state.lock().unwrap();
                st.started.push(pod.name_any());
                st.names.insert(uid.clone(), pod.name_any());
                st.servers.insert(uid.clone(), Some(server));
            }
            let _ = api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await;
        }
        // Services may come after the pod: map them every round.
        let addr = {
            let st = state.lock().unwrap();
            st.servers
                .get(&uid)
                .and_then(|s| s.as_ref().map(|s| s.addr()))
        };
        let Some(addr) = addr else { continue };
        for svc in services.iter().filter(|s| selects(s, pod)) {
            let name = svc.name_any();
            for host in [
                name.clone(),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}.svc.cluster.local"),
            ] {
                let new = {
                    let mut st = state.lock().unwrap();
                    let mapped = st.hosts.entry(uid.clone()).or_default();
                    let new = !mapped.contains(&host);
                    if new {
                        mapped.push(host.clone());
                    }
                    new
                };
                if new {
                    map_host(&host, Some(addr));
                }
            }
        }
    }
}
