//! Plays CloudNativePG, whose controller cannot run here (no kubelet, no images). Its CRDs are
//! real (CloudNativePG v1.30.0 and the Barman Cloud plugin v0.14.0, from ../shared/testdata/cnpg,
//! applied to the real kube-apiserver), so every `Cluster`, `ScheduledBackup` and `ObjectStore`
//! the operator makes is checked against CloudNativePG's own schema. What CloudNativePG would do
//! for a new `Cluster`, this harness does against the local PostgreSQL:
//! - `bootstrap.initdb`: a role and a database owned by it, then the Cluster's
//!   `postInitApplicationSQL` run as superuser in that database (as CloudNativePG runs it), then,
//!   when asked, DHIS2-shaped data seeded by the application role (so it owns it, as DHIS2's role
//!   owns its tables);
//! - `bootstrap.recovery`: a copy of the source cluster's database (it cannot replay WAL to a
//!   moment: the test checks the recovery target the operator asked for), logged in to by the
//!   source's role, as in a real recovery, where the roles come with the data;
//! - the `-rw` Service, the `<cluster>-app` Secret (`username`, `password`, `host` = the `-rw`
//!   Service, `port`, `dbname`, `uri`, `jdbc-uri`), while `enableSuperuserAccess` is on the
//!   `<cluster>-superuser` Secret (the local server's superuser, as `postgres` is CloudNativePG's;
//!   deleted when it is turned off, as CloudNativePG does),
//!   the `-rw` name mapped to the local PostgreSQL for the engine's Jobs, and a healthy `status`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhis2_operator::cnpg::Cluster;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::Env;
use super::job_kubelet::HostMapper;

const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/cnpg");
pub const HEALTHY: &str = "Cluster in healthy state";

fn kubectl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl")
}

/// Applies CloudNativePG's CRDs (the Kubernetes 1.20 variants) and, with `plugin`, the Barman
/// Cloud plugin's `ObjectStore` CRD; waits until they are served.
pub fn install_crds(plugin: bool) {
    let cnpg = format!("{CRDS}/cnpg-1.30-crds.k8s120.yaml");
    let store = format!("{CRDS}/barman-cloud-objectstore-crd.k8s120.yaml");
    let mut args = vec!["apply", "--server-side", "--force-conflicts", "-f", &cnpg];
    if plugin {
        args.extend(["-f", &store]);
    }
    let out = kubectl(&args);
    assert!(
        out.status.success(),
        "applying CloudNativePG's CRDs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut wait = vec![
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/clusters.postgresql.cnpg.io",
        "crd/scheduledbackups.postgresql.cnpg.io",
    ];
    if plugin {
        wait.push("crd/objectstores.barmancloud.cnpg.io");
    }
    assert!(
        kubectl(&wait).status.success(),
        "CloudNativePG's CRDs not established"
    );
    // Established is not yet served by discovery: wait until the resources are listed.
    for _ in 0..100 {
        let clusters = kubectl(&["get", "clusters.postgresql.cnpg.io", "-A"])
            .status
            .success();
        let stores = !plugin
            || kubectl(&["get", "objectstores.barmancloud.cnpg.io", "-A"])
                .status
                .success();
        if clusters && stores {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("CloudNativePG's APIs are not served after 20 s");
}

/// Removes CloudNativePG's CRDs (and with them every Cluster, ScheduledBackup, ObjectStore).
pub fn uninstall_crds() {
    let cnpg = format!("{CRDS}/cnpg-1.30-crds.k8s120.yaml");
    let store = format!("{CRDS}/barman-cloud-objectstore-crd.k8s120.yaml");
    let out = kubectl(&[
        "delete",
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
        "-f",
        &cnpg,
        "-f",
        &store,
    ]);
    assert!(
        out.status.success(),
        "deleting CloudNativePG's CRDs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..100 {
        if !kubectl(&["get", "crd", "clusters.postgresql.cnpg.io"])
            .status
            .success()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("CloudNativePG's CRDs still there after 20 s");
}

/// One cluster the harness made: the local database and role behind it.
#[derive(Debug, Clone)]
pub struct FakeCluster {
    pub database: String,
    pub role: String,
    pub password: String,
}

pub struct FakeCnpg {
    pub clusters: Arc<Mutex<HashMap<String, FakeCluster>>>,
    /// Clusters whose new database gets DHIS2-shaped data (`dhis2ctl demo seed`).
    pub seed: Arc<Mutex<Vec<String>>>,
    /// The superuser Secrets made (`true`) and deleted (`false`), by cluster, in order.
    pub superuser_log: Arc<Mutex<Vec<(String, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCnpg {
    pub fn start(env: Env, client: Client, namespace: &str, map_host: HostMapper) -> Self {
        let clusters: Arc<Mutex<HashMap<String, FakeCluster>>> = Arc::default();
        let seed: Arc<Mutex<Vec<String>>> = Arc::default();
        let ns = namespace.to_string();
        let superuser_log: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let (made, to_seed, superuser) = (clusters.clone(), seed.clone(), superuser_log.clone());
        let task = tokio::spawn(async move {
            let api: Api<Cluster> = Api::namespaced(client.clone(), &ns);
            loop {
                if let Ok(list) = api.list(&Default::default()).await {
                    for cluster in list {
                        let name = cluster.name_any();
                        if made.lock().unwrap().contains_key(&name) {
                            superuser_secret(&client, &ns, &cluster, &env, &superuser).await;
                            continue;
                        }
                        let seeded = to_seed.lock().unwrap().contains(&name);
                        let fake = bootstrap(&env, &cluster, &made, seeded).await;
                        publish(&client, &ns, &cluster, &fake, &env, &map_host).await;
                        made.lock().unwrap().insert(name, fake);
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Self {
            clusters,
            seed,
            superuser_log,
            task,
        }
    }

    /// The local database behind a cluster, once made.
    pub fn cluster(&self, name: &str) -> Option<FakeCluster> {
        self.clusters.lock().unwrap().get(name).cloned()
    }

    /// Seeds DHIS2-shaped data into the database of `cluster` when it is made.
    pub fn seed(&self, cluster: &str) {
        self.seed.lock().unwrap().push(cluster.to_string());
    }
}

impl Drop for FakeCnpg {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What CloudNativePG's bootstrap would leave: a database and the role that owns it.
async fn bootstrap(
    env: &Env,
    cluster: &Cluster,
    made: &Arc<Mutex<HashMap<String, FakeCluster>>>,
    seeded: bool,
) -> FakeCluster {
    let admin = env.client("postgres").await;
    let database = super::unique(&format!("cnpg_{}", cluster.name_any())).replace('-', "_");
    let bootstrap = cluster.spec.bootstrap.clone().unwrap_or_default();
    if let Some(recovery) = &bootstrap.recovery {
        // The source named in externalClusters: its server name (the plugin's `serverName`
        // parameter, or barmanObjectStore.serverName).
        let origin = cluster
            .spec
            .external_clusters
            .iter()
            .flatten()
            .find(|e| Some(&e.name) == recovery.source.as_ref())
            .expect("bootstrap.recovery.source names an external cluster");
        let server = origin
            .plugin
            .as_ref()
            .and_then(|p| p.parameters.as_ref()?.get("serverName").cloned())
            .or_else(|| origin.barman_object_store.as_ref()?.server_name.clone())
            .expect("the source's server name");
        let source = made
            .lock()
            .unwrap()
            .get(&server)
            .cloned()
            .unwrap_or_else(|| panic!("recovery from {server}, which the harness never made"));
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {database} TEMPLATE {}",
                source.database
            ))
            .await
            .expect("copy the source database");
        return FakeCluster {
            database,
            role: source.role,
            password: source.password,
        };
    }
    let initdb = bootstrap.initdb.unwrap_or_default();
    let role = database.clone();
    let password = super::unique("pw").replace('-', "");
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        .await
        .expect("create the application role");
    admin
        .batch_execute(&format!("CREATE DATABASE {database} OWNER {role}"))
        .await
        .expect("create the application database");
    let db = env.client(&database).await;
    for sql in initdb.post_init_application_sql.iter().flatten() {
        db.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("postInitApplicationSQL {sql:?} failed: {e}"));
    }
    if seeded {
        let url = app_url(env, &role, &password, &database);
        let out = super::dhis2ctl(&["demo", "seed", "--database-url", &url]).await;
        super::assert_success(&out, "demo seed as the application role");
    }
    FakeCluster {
        database,
        role,
        password,
    }
}

fn app_url(env: &Env, role: &str, password: &str, database: &str) -> String {
    let rest = env.pg_url.trim_start_matches("postgresql://");
    let host = rest.split_once('@').unwrap().1.split_once('/').unwrap().0;
    format!("postgresql://{role}:{password}@{host}/{database}")
}

/// The `-rw` Service, the app Secret, the host mapping and a healthy status.
async fn publish(
    client: &Client,
    ns: &str,
    cluster: &Cluster,
    fake: &FakeCluster,
    env: &Env,
    map_host: &HostMapper,
) {
    let name = cluster.name_any();
    let rw = format!("{name}-rw");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": rw, "labels": {"cnpg.io/cluster": name}},
        "spec": {"ports": [{"name": "postgres", "port": 5432, "protocol": "TCP", "targetPort": 5432}],
            "selector": {"cnpg.io/cluster": name, "cnpg.io/instanceRole": "primary"}}
    }))
    .unwrap();
    let _ = Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-app"), "labels": {"cnpg.io/cluster": name}},
        "type": "kubernetes.io/basic-auth",
        "stringData": {
            "username": fake.role, "user": fake.role, "password": fake.password,
            "host": rw, "port": "5432", "dbname": fake.database,
            "uri": format!("postgresql://{}:{}@{rw}.{ns}:5432/{}", fake.role, fake.password, fake.database),
            "jdbc-uri": format!("jdbc:postgresql://{rw}.{ns}:5432/{}?password={}&user={}", fake.database, fake.password, fake.role),
        }
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the app Secret");
    let target = env
        .pg_url
        .trim_start_matches("postgresql://")
        .split_once('@')
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .0
        .to_string();
    map_host(&rw, &target);
    let instances = cluster.spec.instances;
    set_status(
        client,
        ns,
        &name,
        json!({
            "phase": HEALTHY, "instances": instances, "readyInstances": instances,
            "currentPrimary": format!("{name}-1"), "targetPrimary": format!("{name}-1"),
            "writeService": rw, "readService": format!("{name}-r"),
        }),
    )
    .await;
}

/// With `enableSuperuserAccess` the `<cluster>-superuser` Secret; without, none (CloudNativePG
/// deletes the Secret it made, and the `postgres` role's password, when the access is turned off).
async fn superuser_secret(
    client: &Client,
    ns: &str,
    cluster: &Cluster,
    env: &Env,
    log: &Mutex<Vec<(String, bool)>>,
) {
    let name = cluster.name_any();
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let secret_name = format!("{name}-superuser");
    let Ok(existing) = secrets.get_opt(&secret_name).await else {
        return;
    };
    let wanted = cluster.spec.enable_superuser_access == Some(true);
    if wanted && existing.is_none() {
        let rest = env.pg_url.trim_start_matches("postgresql://");
        let (user, password) = rest.split_once('@').unwrap().0.split_once(':').unwrap();
        let superuser: Secret = serde_json::from_value(json!({
            "metadata": {"name": secret_name, "labels": {"cnpg.io/cluster": name}},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": user, "password": password}
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &superuser)
            .await
            .expect("create the superuser Secret");
        log.lock().unwrap().push((name, true));
    } else if !wanted && existing.is_some() {
        secrets
            .delete(&secret_name, &Default::default())
            .await
            .expect("delete the superuser Secret");
        log.lock().unwrap().push((name, false));
    }
}

/// Sets fields of a Cluster's status, as CloudNativePG reports them (a failover, say).
pub async fn set_status(client: &Client, ns: &str, cluster: &str, status: serde_json::Value) {
    Api::<Cluster>::namespaced(client.clone(), ns)
        .patch_status(
            cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .expect("set the Cluster's status");
}
