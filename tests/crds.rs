//! The CRDs: the committed YAML matches the Rust types, and a real kube-apiserver (v1.20.2,
//! started by scripts/test.sh) accepts them, applies defaults, and refuses bad specs at apply
//! time with the field named.

mod install_support;

use install_support::{docs, kubectl, pdb_as_the_test_server_serves_it};

const COMMITTED: &str = include_str!("../manifests/crds/dhis2operator.io.yaml");

#[test]
fn committed_crds_match_the_rust_types() {
    assert!(
        dhis2_operator::crd::crds_yaml() == COMMITTED,
        "manifests/crds/dhis2operator.io.yaml is stale: run `cargo run --bin dhis2-operator -- crd > manifests/crds/dhis2operator.io.yaml`"
    );
}

fn instance(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: dhis2operator.io/v1alpha1\nkind: Dhis2Instance\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{spec}"
    )
}

#[test]
fn the_apiserver_accepts_the_crds_defaults_specs_and_refuses_bad_ones() {
    let (ok, text) = kubectl(&["apply", "-f", "-"], Some(COMMITTED));
    assert!(ok, "{text}");
    let (ok, text) = kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/dhis2instances.dhis2operator.io",
            "crd/dhis2databases.dhis2operator.io",
        ],
        None,
    );
    assert!(ok, "{text}");
    // `kubectl explain` says what each kind is for (#[kube(doc = …)]), once the apiserver has
    // published the CRDs' OpenAPI.
    let mut explained = String::new();
    for _ in 0..60 {
        let (ok, text) = kubectl(&["explain", "dhis2instance"], None);
        explained = text;
        if ok && explained.contains("One DHIS2 server") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        explained.contains("One DHIS2 server") && !explained.contains("Auto-generated"),
        "{explained}"
    );

    let good = instance(
        "hmis-staging",
        "  version: \"2.41.3\"\n  environment: staging\n",
    );
    let (ok, text) = kubectl(&["apply", "-f", "-"], Some(&good));
    assert!(ok, "{text}");
    let (ok, json) = kubectl(
        &["get", "dhis2instance", "hmis-staging", "-o", "json"],
        None,
    );
    assert!(ok, "{json}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["spec"]["replicas"], 1, "replicas defaults to 1");
    assert_eq!(
        value["spec"]["deletionPolicy"], "Retain",
        "health data is kept by default"
    );
    let (ok, text) = kubectl(&["get", "d2"], None);
    assert!(
        ok && text.contains("hmis-staging"),
        "short name works: {text}"
    );
    for column in ["PHASE", "VERSION", "READY", "ENVIRONMENT", "AGE"] {
        assert!(
            text.contains(column),
            "printer column {column} missing: {text}"
        );
    }

    for (spec, field) in [
        (
            "  version: \"latest\"\n  environment: staging\n",
            "spec.version",
        ),
        (
            "  version: \"2.41.3\"\n  environment: prod\n",
            "spec.environment",
        ),
        (
            "  version: \"2.41.3\"\n  environment: staging\n  replicas: -1\n",
            "spec.replicas",
        ),
        (
            "  version: \"2.41.3\"\n  environment: staging\n  databaseStorage:\n    size: lots\n",
            "spec.databaseStorage.size",
        ),
        ("  environment: staging\n", "spec.version: Required value"),
    ] {
        let (ok, text) = kubectl(
            &["apply", "--validate=false", "--dry-run=server", "-f", "-"],
            Some(&instance("bad", spec)),
        );
        assert!(!ok, "accepted a bad spec:\n{spec}");
        assert!(
            text.contains(field),
            "the refusal should name {field}: {text}"
        );
    }
}

#[test]
fn the_operator_manifests_are_accepted_by_the_apiserver() {
    let manifests = include_str!("../manifests/operator/operator.yaml");
    // The namespace must exist for a server-side dry run of the namespaced objects.
    let (ok, text) = kubectl(&["create", "namespace", "dhis2-operator"], None);
    assert!(ok || text.contains("AlreadyExists"), "{text}");
    let (ok, text) = kubectl(
        &["apply", "--validate=false", "--dry-run=server", "-f", "-"],
        Some(&pdb_as_the_test_server_serves_it(manifests)),
    );
    assert!(ok, "{text}");
    for object in [
        "clusterrole.rbac.authorization.k8s.io/dhis2-operator",
        "deployment.apps/dhis2-operator",
    ] {
        assert!(text.contains(object), "{object} missing: {text}");
    }
}

fn rules_of(docs: &[serde_json::Value], kind: &str) -> serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))["rules"]
        .clone()
}

#[test]
fn cluster_mode_grants_exactly_what_namespaced_mode_grants() {
    let cluster = docs(include_str!("../manifests/operator/operator.yaml"));
    let namespaced = docs(include_str!("../manifests/operator/namespaced/role.yaml"));
    let rules = rules_of(&cluster, "ClusterRole");
    assert_eq!(rules, rules_of(&namespaced, "Role"));
    // Least privilege: Secrets by name only, nothing beyond what the controllers do.
    for rule in rules.as_array().unwrap() {
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(!verbs.contains(&"*") && !resources.contains(&"*"), "{rule}");
        assert!(!verbs.contains(&"deletecollection"), "{rule}");
        if resources.contains(&"secrets") {
            assert!(
                !verbs.contains(&"list") && !verbs.contains(&"watch"),
                "Secrets are never listed or watched: {rule}"
            );
        }
    }
}

#[test]
fn the_namespaced_mode_manifests_are_accepted_by_the_apiserver() {
    let (ok, text) = kubectl(&["create", "namespace", "dhis2-operator"], None);
    assert!(ok || text.contains("AlreadyExists"), "{text}");
    let (ok, text) = kubectl(
        &["apply", "--validate=false", "--dry-run=server", "-f", "-"],
        Some(&pdb_as_the_test_server_serves_it(include_str!(
            "../manifests/operator/namespaced/operator.yaml"
        ))),
    );
    assert!(ok, "{text}");
    assert!(text.contains("deployment.apps/dhis2-operator"), "{text}");
    let (ok, text) = kubectl(
        &[
            "apply",
            "--validate=false",
            "--dry-run=server",
            "-n",
            "dhis2-operator",
            "-f",
            "-",
        ],
        Some(include_str!("../manifests/operator/namespaced/role.yaml")),
    );
    assert!(ok, "{text}");
    for object in [
        "role.rbac.authorization.k8s.io/dhis2-operator",
        "rolebinding.rbac.authorization.k8s.io/dhis2-operator",
    ] {
        assert!(text.contains(object), "{object} missing: {text}");
    }
    let (ok, text) = kubectl(
        &[
            "apply",
            "--validate=false",
            "--dry-run=server",
            "-n",
            "dhis2-operator",
            "-f",
            "-",
        ],
        Some(include_str!(
            "../manifests/operator/namespaced/user-roles.yaml"
        )),
    );
    assert!(ok, "{text}");
    for role in ["viewer", "backup-operator", "restore-approver"] {
        let object = format!("role.rbac.authorization.k8s.io/dhis2-operator-{role}");
        assert!(text.contains(&object), "{object} missing: {text}");
    }
}
