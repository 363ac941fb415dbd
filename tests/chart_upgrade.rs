//! Upgrading the operator with Helm upgrades its CRDs. The chart before this release kept them
//! in `crds/`, which Helm installs once and never upgrades: after an operator upgrade the API
//! server silently pruned every field the new operator added. Now they are templates; this
//! test installs the previous chart (the chart at commit b3c47ff, packaged in
//! tests/fixtures/charts/) on the real kube-apiserver, shows a new field pruned, upgrades as
//! docs/guides/upgrading-the-operator.md says, shows the field kept, and shows that
//! `helm uninstall` keeps the CRDs and the objects.
//!
//! It deletes and re-creates the cluster's dhis2operator.io CRDs, so it runs alone in its own
//! binary (cargo runs test binaries one after another); the CRDs it leaves are this version's.

mod install_support;

use install_support::{docs, kubectl, run};
use serde_json::{Value, json};

const PREVIOUS_CHART: &str = "tests/fixtures/charts/dhis2-operator-0.0.0-git.b3c47ff.tgz";
const RELEASE: &str = "chart-upgrade";
const NAMESPACE: &str = "chart-upgrade";
/// A field of Dhis2Instance's spec that the previous chart's CRD does not have.
const NEW_FIELD: &str = "keepReplacedDatabasesDays";
const PLURALS: [&str; 7] = [
    "dhis2instances",
    "dhis2databases",
    "dhis2backups",
    "dhis2backupschedules",
    "dhis2restores",
    "dhis2drills",
    "dhis2promotions",
];

fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let (ok, text) = kubectl(args, stdin);
    assert!(ok, "kubectl {}: {text}", args.join(" "));
    text
}

fn helm(args: &[&str]) -> (bool, String) {
    let mut all = vec!["scripts/helm.py"];
    all.extend_from_slice(args);
    let (ok, out, err) = run("python3", &all, None);
    (ok, format!("{out}{err}"))
}

fn helm_ok(args: &[&str]) -> String {
    let (ok, text) = helm(args);
    assert!(ok, "helm {}: {text}", args.join(" "));
    text
}

/// A cluster as the previous chart left it: no dhis2operator.io CRD but those it installed.
/// Objects other test binaries left behind lose their finalizers first (no operator runs to
/// remove them, and a CRD is deleted only once all its objects are).
fn remove_the_crds() {
    for plural in PLURALS {
        let (ok, text) = kubectl(&["get", plural, "-A", "-o", "json"], None);
        if !ok {
            continue; // no such CRD
        }
        let list: Value = serde_json::from_str(&text).expect("a list");
        for item in list["items"].as_array().into_iter().flatten() {
            if item["metadata"]["finalizers"].is_array() {
                let ns = item["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = item["metadata"]["name"].as_str().unwrap();
                let _ = kubectl(
                    &[
                        "patch",
                        plural,
                        name,
                        "-n",
                        ns,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ],
                    None,
                );
            }
        }
    }
    let crds: Vec<String> = PLURALS
        .iter()
        .map(|p| format!("crd/{p}.dhis2operator.io"))
        .collect();
    let mut args = vec![
        "delete",
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
    ];
    args.extend(crds.iter().map(String::as_str));
    kubectl_ok(&args, None);
}

fn instance(extra: Value) -> String {
    let mut spec = json!({"version": "2.42.1", "environment": "staging"});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({
        "apiVersion": "dhis2operator.io/v1alpha1",
        "kind": "Dhis2Instance",
        "metadata": {"name": "hmis", "namespace": NAMESPACE},
        "spec": spec,
    })
    .to_string()
}

fn stored_spec() -> Value {
    let text = kubectl_ok(
        &[
            "get",
            "dhis2instance",
            "hmis",
            "-n",
            NAMESPACE,
            "-o",
            "json",
        ],
        None,
    );
    serde_json::from_str::<Value>(&text).expect("json")["spec"].clone()
}

fn crd_has_new_field() -> bool {
    let text = kubectl_ok(
        &[
            "get",
            "crd",
            "dhis2instances.dhis2operator.io",
            "-o",
            "json",
        ],
        None,
    );
    let crd: Value = serde_json::from_str(&text).expect("json");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        [NEW_FIELD]
        .is_object()
}

/// Every field path of a structural schema (`spec.backup.repository`, `spec.env[]`), sorted.
fn field_paths(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(properties) = schema["properties"].as_object() {
        for (name, sub) in properties {
            let path = format!("{prefix}.{name}");
            out.push(path.clone());
            field_paths(sub, &path, out);
        }
    }
    if schema["items"].is_object() {
        field_paths(&schema["items"], &format!("{prefix}[]"), out);
    }
    out.sort();
}

/// The one-time step of docs/guides/upgrading-the-operator.md for an install of a chart from
/// before 0.1.0: the CRDs `crds/` installed become the release's, so Helm may upgrade them.
fn adopt_the_crds() {
    for plural in PLURALS {
        let crd = format!("crd/{plural}.dhis2operator.io");
        kubectl_ok(
            &[
                "label",
                &crd,
                "--overwrite",
                "app.kubernetes.io/managed-by=Helm",
            ],
            None,
        );
        kubectl_ok(
            &[
                "annotate",
                &crd,
                "--overwrite",
                &format!("meta.helm.sh/release-name={RELEASE}"),
                &format!("meta.helm.sh/release-namespace={NAMESPACE}"),
            ],
            None,
        );
    }
}

#[test]
fn an_operator_upgraded_with_helm_gets_its_new_crd_fields_and_uninstall_keeps_them() {
    // No operator runs (replicaCount 0): the node of scripts/test.sh would run it, and it
    // would act on every namespace. The CRDs and objects are what this test is about.
    let values = json!({"replicaCount": 0}).to_string();
    remove_the_crds();
    let _ = helm(&["uninstall", RELEASE, "-n", NAMESPACE]);

    // The previous chart: its CRDs come from crds/ and lack the new field.
    helm_ok(&[
        "install",
        RELEASE,
        PREVIOUS_CHART,
        "-n",
        NAMESPACE,
        "--create-namespace",
        "--values",
        &values,
    ]);
    assert!(
        !crd_has_new_field(),
        "the previous chart's CRD has no {NEW_FIELD}"
    );
    // As any API client writes it (dhis2ctl, the operator, GitOps tools): kubectl's own
    // client-side check would refuse it; the API server drops it without a word.
    kubectl_ok(
        &["apply", "--validate=false", "-f", "-"],
        Some(&instance(json!({NEW_FIELD: 3}))),
    );
    assert!(
        stored_spec()[NEW_FIELD].is_null(),
        "the old CRD prunes the new field: {}",
        stored_spec()
    );

    // Helm refuses to take over CRDs it did not create from templates: it says so, and
    // changes nothing.
    let upgrade = [
        "upgrade",
        RELEASE,
        "charts/dhis2-operator",
        "-n",
        NAMESPACE,
        "--values",
        &values,
    ];
    let (ok, refusal) = helm(&upgrade);
    assert!(
        !ok,
        "the upgrade took over CRDs without the documented step: {refusal}"
    );
    assert!(refusal.contains("CustomResourceDefinition"), "{refusal}");
    assert!(!crd_has_new_field());

    // The documented upgrade: adopt the CRDs once, then `helm upgrade`.
    adopt_the_crds();
    helm_ok(&upgrade);
    assert!(crd_has_new_field(), "helm upgrade upgraded the CRDs");
    // The same write; what is stored is the API server's decision (kubectl's cached schema
    // would still be the old one for minutes).
    kubectl_ok(
        &["apply", "--validate=false", "-f", "-"],
        Some(&instance(json!({NEW_FIELD: 3}))),
    );
    assert_eq!(
        stored_spec()[NEW_FIELD],
        3,
        "the new field is kept: {}",
        stored_spec()
    );

    // What the upgrade applied is exactly this version's CRDs.
    let expected = docs(&dhis2_operator::crd::crds_yaml());
    for crd in &expected {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let text = kubectl_ok(&["get", "crd", name, "-o", "json"], None);
        let stored: Value = serde_json::from_str(&text).unwrap();
        let schema = |crd: &Value| {
            let mut paths = Vec::new();
            field_paths(
                &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
                "",
                &mut paths,
            );
            paths
        };
        assert_eq!(
            schema(&stored),
            schema(crd),
            "{name}: every field of this version"
        );
    }

    // Uninstalling the operator keeps the CRDs, and so every Dhis2Instance and backup record.
    helm_ok(&["uninstall", RELEASE, "-n", NAMESPACE]);
    for plural in PLURALS {
        kubectl_ok(&["get", "crd", &format!("{plural}.dhis2operator.io")], None);
    }
    assert_eq!(
        stored_spec()[NEW_FIELD],
        3,
        "the instance outlives the release"
    );

    // Leave the cluster as the other test binaries expect it.
    kubectl_ok(&["delete", "namespace", NAMESPACE, "--wait=false"], None);
}
