//! The Helm chart (charts/dhis2-operator) rendered by Helm v4's own engine (PyPI helm-python-sdk,
//! through charts/render.py): it lints strictly, its values are checked by its schema with the
//! field named, what it renders is accepted by kubernetes-validate --strict and by the real
//! kube-apiserver of scripts/test.sh (server-side dry run), and the committed manifests
//! (manifests/install.yaml, manifests/operator/**, which the operator's own tests run under) are
//! exactly its rendering. Also the image: the Dockerfile lints and its runtime steps run here.

mod install_support;

use install_support::{
    docs, ensure_namespace, find, install_crds, kinds, kubernetes_validate,
    pdb_as_the_test_server_serves_it, read, render, run, server_dry_run, stream,
};
use serde_json::{Value, json};

const RELEASE: &str = "dhis2-operator";
const NAMESPACE: &str = "dhis2-operator";

#[test]
fn committed_renderings_and_chart_copies_are_up_to_date() {
    let (ok, out, err) = run("python3", &["charts/render.py", "check"], None);
    assert!(ok, "{out}{err}");
}

#[test]
fn the_charts_crds_are_the_rust_types_upgraded_with_the_chart_and_kept_on_uninstall() {
    let rendered = docs(&render(&json!({})).expect("the default values render"));
    let mut crds: Vec<Value> = rendered
        .into_iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    for crd in &mut crds {
        let name = crd["metadata"]["name"].clone();
        let metadata = crd["metadata"].as_object_mut().expect("metadata");
        let annotations = metadata.remove("annotations").unwrap_or_default();
        assert_eq!(
            annotations["helm.sh/resource-policy"], "keep",
            "{name}: `helm uninstall` must keep it (deleting a CRD deletes all its objects)"
        );
        let labels = metadata.remove("labels").unwrap_or_default();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{name}");
    }
    assert_eq!(
        crds,
        docs(&dhis2_operator::crd::crds_yaml()),
        "the chart's templates/crds.yaml is stale: regenerate manifests/crds/ (tests/crds.rs says how), then run `python3 charts/render.py write`"
    );
    let without = docs(&render(&json!({"crds": {"create": false}})).expect("renders"));
    assert!(
        !kinds(&without).contains(&"CustomResourceDefinition".to_string()),
        "crds.create=false renders no CRD"
    );
    assert!(
        !std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/dhis2-operator/crds"
        ))
        .exists(),
        "charts/dhis2-operator/crds/ is installed once and never upgraded by Helm: the CRDs belong in templates/"
    );
}

#[test]
fn the_chart_lints_strictly_with_every_tested_values_set() {
    for values in [json!({}), namespaced_monitoring_one_replica()] {
        let (ok, out, err) = run(
            "python3",
            &["charts/render.py", "lint", "--values", &values.to_string()],
            None,
        );
        assert!(ok, "helm lint --strict with {values}:\n{out}{err}");
    }
}

fn container(docs: &[Value]) -> &Value {
    &find(docs, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env(container, name).and_then(|e| e["value"].as_str().map(str::to_string))
}

fn field_ref(container: &Value, name: &str) -> Option<String> {
    env(container, name).and_then(|e| {
        e["valueFrom"]["fieldRef"]["fieldPath"]
            .as_str()
            .map(str::to_string)
    })
}

#[test]
fn default_values_two_replicas_with_leader_election_accepted_by_the_apiserver() {
    let text = render(&json!({})).expect("the default values render");
    let objects = docs(&text);
    assert_eq!(
        kinds(&objects),
        [
            "PodDisruptionBudget",
            "ServiceAccount",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment"
        ],
        "the default rendering, in install order"
    );

    // Roles for people: a backup operator backs up and drills, a restore approver restores and
    // promotes; neither edits an instance (its repositories) nor reads a Secret.
    let may = |role: &str, verb: &str, resource: &str| {
        find(&objects, "ClusterRole", role)["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| {
                r["apiGroups"] == json!(["dhis2operator.io"])
                    && r["verbs"].as_array().unwrap().contains(&json!(verb))
                    && r["resources"]
                        .as_array()
                        .unwrap()
                        .contains(&json!(resource))
            })
    };
    let backup_operator = "dhis2-operator-backup-operator";
    let restore_approver = "dhis2-operator-restore-approver";
    assert!(may(backup_operator, "create", "dhis2backups"));
    assert!(may(backup_operator, "create", "dhis2drills"));
    assert!(!may(backup_operator, "create", "dhis2restores"));
    assert!(may(restore_approver, "create", "dhis2restores"));
    assert!(may(restore_approver, "create", "dhis2promotions"));
    assert!(!may(restore_approver, "create", "dhis2backups"));
    for role in [backup_operator, restore_approver, "dhis2-operator-viewer"] {
        assert!(may(role, "list", "dhis2instances"), "{role}");
        for verb in ["create", "update", "patch", "delete"] {
            assert!(!may(role, verb, "dhis2instances"), "{role} {verb}");
            assert!(!may(role, verb, "dhis2databases"), "{role} {verb}");
        }
        let rules = &find(&objects, "ClusterRole", role)["rules"];
        assert!(!rules.to_string().contains("secrets"), "{role}: {rules}");
    }

    let deployment = find(&objects, "Deployment", RELEASE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], RELEASE);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert!(
        pod["affinity"]["podAntiAffinity"].is_object(),
        "two replicas are spread over nodes"
    );
    let c = container(&objects);
    assert_eq!(c["image"], "dhis2-operator:0.1.0", "appVersion is the tag");
    assert_eq!(
        env_value(c, "ENGINE_IMAGE").as_deref(),
        Some("dhis2-operator:0.1.0"),
        "the Jobs run the operator's own image"
    );
    assert_eq!(env_value(c, "LEADER_ELECT").as_deref(), Some("true"));
    assert_eq!(
        env_value(c, "LEASE_NAME").as_deref(),
        Some("dhis2-operator")
    );
    assert_eq!(field_ref(c, "POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(
        field_ref(c, "POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    assert_eq!(env(c, "WATCH_NAMESPACE"), None, "cluster mode watches all");
    assert_eq!(
        env_value(c, "METRICS_ADDR").as_deref(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");

    // Leader election: a Lease in the operator's own namespace, nothing more.
    let lease_role = find(&objects, "Role", "dhis2-operator-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        lease_role["rules"][0],
        json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch"]})
    );
    let binding = find(&objects, "RoleBinding", "dhis2-operator-leader-election");
    assert_eq!(binding["subjects"][0]["name"], RELEASE);
    assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);

    // The Service selects the Deployment's pods.
    let service = find(&objects, "Service", "dhis2-operator-metrics");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&labels[k], v, "the Service selects the operator's pods");
    }

    // Two replicas: a drain leaves one running.
    let pdb = find(&objects, "PodDisruptionBudget", RELEASE);
    assert_eq!(
        pdb["apiVersion"], "policy/v1",
        "offline renderings use policy/v1"
    );
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        *labels_of(deployment)
    );
    // Scrape annotations are opt-in (with a ServiceMonitor as well, every alert fired twice).
    assert!(
        deployment["spec"]["template"]["metadata"]["annotations"].is_null(),
        "no prometheus.io annotations by default"
    );

    kubernetes_validate(&text, "default-values");
    install_crds();
    ensure_namespace(NAMESPACE);
    let out = server_dry_run(&pdb_as_the_test_server_serves_it(&text));
    for object in [
        "poddisruptionbudget.policy/dhis2-operator",
        "customresourcedefinition.apiextensions.k8s.io/dhis2instances.dhis2operator.io",
        "clusterrole.rbac.authorization.k8s.io/dhis2-operator",
        "role.rbac.authorization.k8s.io/dhis2-operator-leader-election",
        "deployment.apps/dhis2-operator",
        "service/dhis2-operator-metrics",
    ] {
        assert!(out.contains(object), "{object} missing: {out}");
    }

    // manifests/install.yaml: the namespace, then this rendering (the CRDs among it).
    let install = docs(&read("manifests/install.yaml"));
    assert_eq!(install[0]["kind"], "Namespace");
    assert_eq!(install[0]["metadata"]["name"], NAMESPACE);
    assert_eq!(&install[1..], &objects[..]);
}

fn labels_of(deployment: &Value) -> &Value {
    &deployment["spec"]["selector"]["matchLabels"]
}

/// What a cluster's own policies and conventions ask of a chart: names, extra settings,
/// security contexts, scraping the way the site does it, a `helm test`, and NOTES that name
/// nothing a chart user does not have.
#[test]
fn a_site_can_rename_extend_secure_and_scrape_the_operator_its_own_way() {
    let values = json!({
        "fullnameOverride": "moh-operator",
        "nameOverride": "hmis-operator",
        "replicaCount": 1,
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.moh.gov.kh:3128"}],
        "extraArgs": ["--metrics-addr", "0.0.0.0:9090"],
        "metrics": {"port": 9090, "scrapeAnnotations": true},
        "monitoring": {"podMonitor": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}}},
        "podSecurityContext": {"runAsNonRoot": true, "runAsUser": 1001, "fsGroup": 1001},
        "containerSecurityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "seLinuxOptions": {"type": "spc_t"}},
    });
    let (ok, out, notes) = run(
        "python3",
        &[
            "charts/render.py",
            "template",
            "--values",
            &values.to_string(),
            "--hooks",
            "--notes",
        ],
        None,
    );
    assert!(ok, "{notes}");
    let objects = docs(&out);
    assert!(
        !kinds(&objects).contains(&"PodDisruptionBudget".to_string()),
        "one replica: a PodDisruptionBudget of minAvailable 1 would block every drain"
    );
    let deployment = find(&objects, "Deployment", "moh-operator");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "hmis-operator"
    );
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/port"],
        "9090"
    );
    assert_eq!(template["spec"]["securityContext"]["runAsUser"], 1001);
    assert_eq!(template["spec"]["securityContext"]["fsGroup"], 1001);
    let c = &template["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["seLinuxOptions"]["type"], "spc_t");
    assert_eq!(
        c["args"],
        json!([
            "run",
            "--log-format",
            "json",
            "--metrics-addr",
            "0.0.0.0:9090"
        ])
    );
    assert_eq!(
        env_value(c, "HTTPS_PROXY").as_deref(),
        Some("http://proxy.moh.gov.kh:3128")
    );
    let monitor = find(&objects, "PodMonitor", "moh-operator");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["honorLabels"],
        true
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // `helm test`: a pod of the operator's own image asks the metrics Service.
    let test_pod = find(&objects, "Pod", "moh-operator-test-metrics");
    assert_eq!(test_pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    assert_eq!(test_pod["spec"]["containers"][0]["image"], c["image"]);
    let script = test_pod["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap();
    assert!(
        script.contains("moh-operator-metrics.dhis2-operator.svc") && script.contains("9090"),
        "{script}"
    );
    let (ok, out, err) = run("bash", &["-n"], Some(script));
    assert!(ok, "the test pod's script does not parse: {out}{err}");
    let installed = render(&values).expect("renders");
    assert!(
        !installed.contains("helm.sh/hook"),
        "hooks are not installed objects: install.yaml must not carry the test pod"
    );

    // NOTES.txt: a chart user has the chart, not this repository.
    for notes in [notes, {
        let (_, _, default_notes) = run(
            "python3",
            &["charts/render.py", "template", "--notes"],
            None,
        );
        default_notes
    }] {
        assert!(notes.contains("helm test"), "{notes}");
        for path in ["manifests/", "charts/", "docs/", "README"] {
            assert!(
                !notes.contains(path),
                "NOTES.txt names the repository's {path}: {notes}"
            );
        }
    }
}

const WATCHED: &str = "chart-test-watched";

fn namespaced_monitoring_one_replica() -> Value {
    json!({
        "replicaCount": 1,
        "leaderElection": {"enabled": false},
        "rbac": {"mode": "namespaced", "namespaces": [WATCHED]},
        "image": {"repository": "registry.moh.gov.kh/dhis2-operator", "tag": "0.1.0-test"},
        "engineImage": "registry.moh.gov.kh/dhis2-engine:0.1.0-test",
        "monitoring": {
            "serviceMonitor": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": true},
            "grafanaDashboard": {"enabled": true, "namespace": "monitoring"}
        }
    })
}

#[test]
fn namespaced_mode_with_monitoring_and_one_replica() {
    let text = render(&namespaced_monitoring_one_replica()).expect("renders");
    let objects = docs(&text);
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount",
            "ConfigMap",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Role",
            "Role",
            "Role",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "PrometheusRule",
            "ServiceMonitor"
        ],
        "nothing cluster-wide, and no Lease rights without leader election"
    );
    let deployment = find(&objects, "Deployment", RELEASE);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["strategy"]["type"], "Recreate",
        "without leader election never two operators at once"
    );
    assert!(deployment["spec"]["template"]["spec"]["affinity"].is_null());
    let c = container(&objects);
    assert_eq!(c["image"], "registry.moh.gov.kh/dhis2-operator:0.1.0-test");
    assert_eq!(
        env_value(c, "ENGINE_IMAGE").as_deref(),
        Some("registry.moh.gov.kh/dhis2-engine:0.1.0-test")
    );
    assert_eq!(env_value(c, "WATCH_NAMESPACE").as_deref(), Some(WATCHED));
    assert_eq!(env(c, "LEADER_ELECT"), None);

    let role = find(&objects, "Role", RELEASE);
    assert_eq!(role["metadata"]["namespace"], WATCHED);
    let binding = find(&objects, "RoleBinding", RELEASE);
    assert_eq!(binding["metadata"]["namespace"], WATCHED);
    assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);

    // The same rules in both modes, and the same as the committed manifests the operator's
    // integration tests run under (tests/crds.rs checks those against each other).
    let cluster = docs(&render(&json!({})).expect("renders"));
    assert_eq!(
        role["rules"],
        find(&cluster, "ClusterRole", RELEASE)["rules"]
    );
    let committed = docs(&read("manifests/operator/namespaced/role.yaml"));
    assert_eq!(role["rules"], find(&committed, "Role", RELEASE)["rules"]);

    // Monitoring, from the files manifests/monitoring/ generates (no second hand-kept copy).
    let rule_file = docs(&read("manifests/monitoring/prometheus-rules.yaml"));
    let rule = find(&objects, "PrometheusRule", RELEASE);
    assert_eq!(rule["spec"]["groups"], rule_file[0]["groups"]);
    let dashboard = find(&objects, "ConfigMap", "dhis2-operator-grafana-dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dashboard["data"]["dhis2-operator.json"],
        read("manifests/monitoring/grafana-dashboard.json")
    );
    let monitor = find(&objects, "ServiceMonitor", RELEASE);
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    // The ServiceMonitor finds the Service and its port (the apiserver here has no
    // monitoring.coreos.com CRDs, so this is checked here instead of by a dry run).
    let service = find(&objects, "Service", "dhis2-operator-metrics");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&service["metadata"]["labels"][k], v, "selects the Service");
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    // The PrometheusRule's rules, checked by promtool as a rule file.
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        json!({"groups": rule["spec"]["groups"]}).to_string(),
    )
    .unwrap();
    let (ok, out, err) = run(
        "promtool",
        &["check", "rules", rules.to_str().unwrap()],
        None,
    );
    assert!(ok, "promtool check rules:\n{out}{err}");

    // Built-in kinds: strict schemas and the apiserver. ServiceMonitor and PrometheusRule are
    // left out of the dry run: their CRDs (Prometheus Operator) are not installed here.
    kubernetes_validate(&text, "namespaced-monitoring");
    let builtin: Vec<&Value> = objects
        .iter()
        .filter(|d| d["apiVersion"] != "monitoring.coreos.com/v1")
        .collect();
    install_crds();
    for ns in [NAMESPACE, WATCHED, "monitoring"] {
        ensure_namespace(ns);
    }
    let out = server_dry_run(&stream(&builtin));
    assert!(
        out.contains("role.rbac.authorization.k8s.io/dhis2-operator"),
        "{out}"
    );
    assert!(
        out.contains("configmap/dhis2-operator-grafana-dashboard"),
        "{out}"
    );
}

#[test]
fn values_the_schema_refuses_are_refused_naming_the_field() {
    for (values, field) in [
        (json!({"replicaCount": "two"}), "/replicaCount"),
        (
            json!({"replicaCount": 2, "leaderElection": {"enabled": false}}),
            "/replicaCount",
        ),
        (json!({"rbac": {"mode": "namespaced"}}), "/rbac/namespaces"),
        (
            json!({"rbac": {"mode": "namespaced", "namespaces": ["hmis", "hmis-staging"]}}),
            "/rbac/namespaces",
        ),
        (
            json!({"rbac": {"mode": "cluster", "namespaces": ["hmis"]}}),
            "/rbac/namespaces",
        ),
        (json!({"rbac": {"mode": "everywhere"}}), "/rbac/mode"),
        (
            json!({"rbac": {"mode": "namespaced", "namespaces": ["HMIS_Staging"]}}),
            "/rbac/namespaces/0",
        ),
        (json!({"metrics": {"port": 80}}), "/metrics/port"),
        (
            json!({"resources": {"limits": {"memory": "lots"}}}),
            "/resources/limits/memory",
        ),
        (
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "/image/pullPolicy",
        ),
        (json!({"replicas": 2}), "'replicas'"),
        (json!({"logFormat": "xml"}), "/logFormat"),
        (
            json!({"monitoring": {"serviceMonitor": {"enabled": true}, "podMonitor": {"enabled": true}}}),
            "/monitoring",
        ),
        (json!({"nameOverride": "HMIS_Operator"}), "/nameOverride"),
        (json!({"crds": {"create": "yes"}}), "/crds/create"),
        (json!({"extraEnv": [{"value": "x"}]}), "/extraEnv/0"),
        (json!({"extraArgs": [7]}), "/extraArgs/0"),
        (
            json!({"podDisruptionBudget": {"minAvailable": 2}}),
            "/podDisruptionBudget",
        ),
    ] {
        match render(&values) {
            Ok(_) => panic!("accepted bad values {values}"),
            Err(message) => assert!(
                message.contains(field),
                "the refusal of {values} should name {field}: {message}"
            ),
        }
    }
}

// The image -------------------------------------------------------------------------------------

#[test]
fn the_dockerfile_lints_clean() {
    let (ok, out, err) = run("hadolint", &["Dockerfile"], None);
    assert!(ok, "hadolint Dockerfile:\n{out}{err}");
}

/// The major version of an image tag such as `postgis/postgis:16-3.4`.
fn postgis_major(image: &str) -> u32 {
    image
        .rsplit(':')
        .next()
        .and_then(|tag| tag.split('-').next())
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("no major version in {image}"))
}

#[test]
fn the_image_carries_the_client_tools_of_the_newest_server_the_operator_runs() {
    let dockerfile = read("Dockerfile");
    let pg_major: u32 = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG PG_MAJOR="))
        .expect("ARG PG_MAJOR= in the Dockerfile")
        .trim()
        .parse()
        .expect("a number");
    for image in [
        dhis2_operator::crd::dhis2_database::DEFAULT_POSTGIS_IMAGE,
        dhis2_operator::crd::dhis2_drill::DEFAULT_DRILL_POSTGIS_IMAGE,
    ] {
        assert!(
            pg_major >= postgis_major(image),
            "the image's pg_dump {pg_major} cannot dump the operator's {image}: raise ARG PG_MAJOR"
        );
    }
    // Every binary the crate builds goes into the image.
    for bin in ["dhis2-operator", "dhis2ctl", "kubectl-dhis2"] {
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "{bin} is not copied into the image"
        );
    }
    let ignore = read(".dockerignore");
    for needed in ["!Cargo.toml", "!Cargo.lock", "!src/", "!docker/"] {
        assert!(
            ignore.lines().any(|l| l == needed),
            ".dockerignore: {needed}"
        );
    }
}

/// The PostgreSQL major whose client tools this machine has (Debian's layout, as in the image).
fn local_pg_major() -> u32 {
    std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql: run scripts/testenv/install.sh")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|m| std::path::Path::new(&format!("/usr/lib/postgresql/{m}/bin/pg_dump")).exists())
        .max()
        .expect("a PostgreSQL client in /usr/lib/postgresql")
}

fn install_script(pg_major: u32, arg: &str) -> (bool, String) {
    let (ok, out, err) = run(
        "env",
        &[
            &format!("PG_MAJOR={pg_major}"),
            "sh",
            "docker/install-runtime-packages.sh",
            arg,
        ],
        None,
    );
    (ok, format!("{out}{err}"))
}

/// The image's runtime stage cannot be built here (no registry for base images). What runs
/// here is the same script the Dockerfile runs: its check of the installed tools against this
/// Debian machine, and its package plan resolved by apt against Debian's archive. Not proven
/// here: the PostgreSQL repository's part (postgresql-client-16 on bookworm), which needs that
/// repository.
#[test]
fn the_runtime_package_script_checks_the_tools_and_resolves_its_packages() {
    let local = local_pg_major();
    let (ok, out) = install_script(local, "--verify");
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("PostgreSQL {local} client tools")),
        "{out}"
    );

    let (ok, out) = install_script(99, "--verify");
    assert!(!ok, "a missing major must fail: {out}");
    assert!(
        out.contains("/usr/lib/postgresql/99/bin/pg_dump is missing"),
        "{out}"
    );

    let (ok, out) = install_script(local, "--plan");
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("postgresql-client-{local}: Debian")),
        "{out}"
    );
    let (ok, out) = install_script(99, "--plan");
    assert!(ok, "{out}");
    assert!(
        out.contains("postgresql-client-99: PostgreSQL's repository")
            && out.contains("from Debian: postgresql-common"),
        "{out}"
    );
}

/// The binaries run, and need no shared library beyond the C runtime that debian-slim has
/// (libc6 and libgcc-s1): nothing the runtime stage forgot to install.
#[test]
fn the_binaries_run_and_need_only_the_base_images_libraries() {
    for (bin, path) in [
        ("dhis2-operator", env!("CARGO_BIN_EXE_dhis2-operator")),
        ("dhis2ctl", env!("CARGO_BIN_EXE_dhis2ctl")),
        ("kubectl-dhis2", env!("CARGO_BIN_EXE_kubectl-dhis2")),
    ] {
        let (ok, out, err) = run(path, &["--version"], None);
        assert!(ok, "{bin} --version: {out}{err}");
        let (ok, out, err) = run("ldd", &[path], None);
        assert!(ok, "ldd {bin}: {out}{err}");
        for line in out.lines() {
            assert!(!line.contains("not found"), "{bin}: {line}");
            let Some(lib) = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(str::to_string)
            else {
                continue; // linux-vdso
            };
            let real = std::fs::canonicalize(&lib).unwrap_or_else(|_| lib.clone().into());
            let (ok, owner, err) = run("dpkg", &["-S", real.to_str().unwrap()], None);
            let (ok2, owner2, _) = run("dpkg", &["-S", &lib], None);
            let owner = if ok {
                owner
            } else if ok2 {
                owner2
            } else {
                err
            };
            let package = owner
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            assert!(
                ["libc6", "libgcc-s1"].contains(&package.as_str()),
                "{bin} needs {lib} from {package:?}, which debian-slim does not have: add it to docker/install-runtime-packages.sh"
            );
        }
    }
}
