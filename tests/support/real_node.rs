//! The real one-node cluster of `scripts/testenv/up.sh --with-node`: pods really run (kubelet,
//! containerd, runc), Services and DNS really route, PVCs are really bound. No fake kubelet, no
//! endpoint override: the operator runs as a pod installed from `manifests/install.yaml`, under
//! its own ServiceAccount, and reaches DHIS2, PostgreSQL and S3 the way it does in production.
//!
//! The tests on this node look at the cluster as a user does: `kubectl` (get, logs, exec into the
//! database pod for `psql`), `dhis2ctl`, and HTTP to Services from inside the node's network.

use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The namespace `manifests/install.yaml` installs the operator into.
pub const OPERATOR_NAMESPACE: &str = "dhis2-operator";

/// What `up.sh --with-node` exported.
#[derive(Clone, Debug)]
pub struct Node {
    /// The project's image, as `manifests/install.yaml` names it.
    pub operator_image: String,
    /// PostgreSQL + PostGIS (the postgis/postgis image's interface).
    pub postgres_image: String,
    /// The DHIS2 stand-in's repository; its tags are DHIS2 versions.
    pub dhis2_image: String,
    /// The test S3 server as pods reach it.
    pub s3_in_cluster: String,
    netns: String,
    /// `key=value` of the namespace annotation that lets a namespace's pods onto the node.
    namespace_annotation: (String, String),
}

impl Node {
    /// The DHIS2 stand-in image of `version`.
    pub fn dhis2(&self, version: &str) -> String {
        format!("{}:{version}", self.dhis2_image)
    }
}

pub fn node() -> Node {
    let get = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the tests with scripts/test.sh, which starts the real node (scripts/testenv/up.sh --with-node)")
        })
    };
    let annotation = get("DHIS2_TEST_NODE_NAMESPACE_ANNOTATION");
    let (key, value) = annotation
        .split_once('=')
        .expect("DHIS2_TEST_NODE_NAMESPACE_ANNOTATION is key=value");
    Node {
        operator_image: get("DHIS2_OPERATOR_IMAGE"),
        postgres_image: get("DHIS2_TEST_POSTGRES_IMAGE"),
        dhis2_image: get("DHIS2_TEST_DHIS2_IMAGE"),
        s3_in_cluster: get("DHIS2_TEST_S3_ENDPOINT_IN_CLUSTER"),
        netns: get("DHIS2_TEST_NODE_NETNS"),
        namespace_annotation: (key.to_string(), value.to_string()),
    }
}

/// `kubectl ARGS` (the admin's KUBECONFIG).
pub fn kubectl(args: &[&str]) -> Output {
    Command::new("kubectl")
        .args(args)
        .output()
        .expect("run kubectl")
}

/// `kubectl ARGS`, which must succeed; its stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl apply -f -` of `yaml`.
pub fn kubectl_apply(yaml: &str) {
    kubectl_apply_with(&["apply", "-f", "-"], yaml);
}

fn kubectl_apply_with(args: &[&str], yaml: &str) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates `name` with the annotation that lets its pods onto the real node. Applied server-side
/// under a field manager of its own: a later `kubectl apply --server-side` of manifests naming
/// the same Namespace (install.yaml) then leaves the annotation alone.
pub fn create_node_namespace(node: &Node, name: &str) {
    let (key, value) = &node.namespace_annotation;
    kubectl_apply_with(
        &[
            "apply",
            "--server-side",
            "--field-manager=dhis2-test-node",
            "-f",
            "-",
        ],
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  annotations:\n    {key}: '{value}'\n"
        ),
    );
}

/// A fresh namespace for one journey, its pods allowed onto the real node.
pub async fn journey_namespace(client: &Client, node: &Node, prefix: &str) -> String {
    let name = super::unique(prefix);
    let (key, value) = &node.namespace_annotation;
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": name, "annotations": {key.as_str(): value.as_str()}}}),
    )
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// Installs the operator as a user does (docs/guides/install.md): `manifests/install.yaml` as it is
/// committed — two replicas with leader election, cluster-wide, under its ServiceAccount — with
/// the project's image already on the node, as on an air-gapped site. Waits until both replicas
/// are ready and one holds the Lease.
pub fn install_operator(node: &Node) {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/install.yaml");
    let text = std::fs::read_to_string(manifest).unwrap();
    assert!(
        text.contains(&format!("image: \"{}\"", node.operator_image)),
        "manifests/install.yaml does not name the image up.sh loaded ({})",
        node.operator_image
    );
    create_node_namespace(node, OPERATOR_NAMESPACE);
    kubectl_apply_with(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &for_this_server(&text),
    );
    kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        OPERATOR_NAMESPACE,
        "deployment/dhis2-operator",
        "--timeout=180s",
    ]);
    wait_blocking(60, "the operator's Lease to have a holder", || {
        let holder = leader_pod();
        (!holder.is_empty()).then_some(holder)
    });
}

/// install.yaml as this server takes it: the PodDisruptionBudget is `policy/v1`, which
/// Kubernetes serves from 1.21; the test node is 1.20, which has the same object (the same
/// `minAvailable` and selector) only as `policy/v1beta1`.
fn for_this_server(install_yaml: &str) -> String {
    const V1: &str = "apiVersion: policy/v1\nkind: PodDisruptionBudget\n";
    assert!(
        install_yaml.contains(V1),
        "manifests/install.yaml has no policy/v1 PodDisruptionBudget"
    );
    let versions = kubectl_ok(&["api-versions"]);
    if versions.lines().any(|v| v.trim() == "policy/v1") {
        install_yaml.to_string()
    } else {
        install_yaml.replace(
            V1,
            "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\n",
        )
    }
}

/// Removes what `install_operator` installed but the CRDs (other test binaries use them, and
/// an operator left running would act on their namespaces).
pub fn uninstall_operator() {
    for args in [
        [
            "delete",
            "namespace",
            OPERATOR_NAMESPACE,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ]
        .as_slice(),
        [
            "delete",
            "clusterrolebinding,clusterrole",
            "-l",
            "app.kubernetes.io/name=dhis2-operator",
            "--ignore-not-found",
        ]
        .as_slice(),
    ] {
        let out = kubectl(args);
        if !out.status.success() {
            eprintln!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The name of the operator pod holding the Lease (the one that acts); empty while none does.
pub fn leader_pod() -> String {
    let out = kubectl(&[
        "get",
        "lease",
        "-n",
        OPERATOR_NAMESPACE,
        "dhis2-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `check` every second until it returns Some; panics after `secs` naming `what`.
pub fn wait_blocking<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `psql -tA` in the database's pod, as a DBA would (`kubectl exec`); the output trimmed.
pub fn psql(ns: &str, pod: &str, sql: &str) -> String {
    kubectl_ok(&[
        "exec",
        "-n",
        ns,
        pod,
        "--",
        "sh",
        "-c",
        "psql -v ON_ERROR_STOP=1 -tA -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c \"$0\"",
        sql,
    ])
    .trim()
    .to_string()
}

/// Runs `args` inside the node's network (where ClusterIPs and pod addresses route).
pub fn in_node_network(node: &Node, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", node.netns))
        .args(args)
        .output()
        .expect("run nsenter")
}

/// `http://<ClusterIP>:<port>` of a Service, for requests from inside the node's network.
pub fn service_url(ns: &str, service: &str) -> String {
    let out = kubectl_ok(&[
        "get",
        "service",
        "-n",
        ns,
        service,
        "-o",
        "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}",
    ]);
    format!("http://{}", out.trim())
}

/// GET `url` from inside the node's network (basic auth with `login`): status code and body.
pub fn http_get(node: &Node, url: &str, login: Option<(&str, &str)>) -> (u16, String) {
    let user = login.map(|(u, p)| format!("{u}:{p}"));
    let mut args = vec!["curl", "-s", "-m", "10", "-w", "\n%{http_code}"];
    if let Some(user) = &user {
        args.extend(["-u", user.as_str()]);
    }
    args.push(url);
    let out = in_node_network(node, &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The Ready condition of every pod with these labels, e.g. `app.kubernetes.io/instance=hmis`.
pub fn pod_names(ns: &str, selector: &str) -> Vec<String> {
    kubectl_ok(&[
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// Everything a failed journey leaves for whoever reads the CI log: pods, events, the
/// operator's log.
pub fn dump_namespace(ns: &str) {
    for args in [
        vec![
            "get",
            "all,pvc,d2,d2db,d2backup,d2restore",
            "-n",
            ns,
            "-o",
            "wide",
        ],
        vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
        vec![
            "logs",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=dhis2-operator",
            "--tail=80",
            "--prefix",
        ],
    ] {
        let out = kubectl(&args);
        eprintln!(
            "--- kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Deletes the operator pod that holds the Lease (as a node drain or a crash would take it);
/// the other replica takes over once the Lease runs out.
pub fn delete_leader_pod() {
    let leader = leader_pod();
    kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        OPERATOR_NAMESPACE,
        &leader,
        "--wait=false",
    ]);
}

/// Restarts the node's kubelet (`node.sh restart-kubelet`): pods keep running in containerd,
/// the kubelet finds them again.
pub fn restart_kubelet() {
    let dir = std::env::var("DHIS2_TEST_NODE_DIR").expect("DHIS2_TEST_NODE_DIR");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testenv/node.sh");
    let out = Command::new(script)
        .args(["restart-kubelet", &dir])
        .output()
        .expect("run node.sh");
    assert!(
        out.status.success(),
        "node.sh restart-kubelet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
