//! What tests/helm_chart.rs, tests/examples.rs and tests/crds.rs share: the chart rendered by Helm's own engine
//! (charts/render.py, PyPI helm-python-sdk), YAML streams as JSON values, and kubectl against the
//! test kube-apiserver (v1.20.2, started by scripts/test.sh).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Runs a program; (success, stdout, stderr). Panics, naming the setup step, when it is missing.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): run scripts/testenv/install.sh, which installs it")
        });
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The chart rendered with these values (a JSON object) as `helm template` would print it, or
/// Helm's refusal.
pub fn render(values: &serde_json::Value) -> Result<String, String> {
    let values = values.to_string();
    let (ok, out, err) = run(
        "python3",
        &["charts/render.py", "template", "--values", &values],
        None,
    );
    if ok { Ok(out) } else { Err(err) }
}

/// The documents of a YAML stream (comment-only documents dropped).
pub fn docs(text: &str) -> Vec<serde_json::Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |doc: &mut String| {
        let meaningful = doc
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if meaningful {
            let value: serde_json::Value =
                serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("not YAML ({e}):\n{doc}"));
            docs.push(value);
        }
        doc.clear();
    };
    for line in text.lines() {
        if line.trim_end() == "---" {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}

pub fn kinds(docs: &[serde_json::Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The one document of this kind and name.
pub fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds(docs)))
}

/// A YAML stream of these documents (JSON is YAML).
pub fn stream(docs: &[&serde_json::Value]) -> String {
    docs.iter()
        .map(|d| format!("---\n{d}\n"))
        .collect::<String>()
}

pub fn kubeconfig() -> PathBuf {
    PathBuf::from(std::env::var("KUBECONFIG").expect(
        "KUBECONFIG is not set: run the tests with scripts/test.sh, which starts a kube-apiserver",
    ))
}

pub fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let config = kubeconfig();
    let mut all = vec!["--kubeconfig", config.to_str().expect("KUBECONFIG path")];
    all.extend_from_slice(args);
    let (ok, out, err) = run("kubectl", &all, stdin);
    (ok, format!("{out}{err}"))
}

/// The committed CRDs, applied once per test binary and Established (custom resources can then
/// be dry-run).
pub fn install_crds() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let (ok, text) = kubectl(
            &["apply", "-f", "-"],
            Some(&read("manifests/crds/dhis2operator.io.yaml")),
        );
        assert!(ok, "{text}");
        let (ok, text) = kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd/dhis2instances.dhis2operator.io",
                "crd/dhis2databases.dhis2operator.io",
                "crd/dhis2backupschedules.dhis2operator.io",
            ],
            None,
        );
        assert!(ok, "{text}");
    });
}

/// Creates a namespace unless it exists (a server-side dry run needs the namespaces it writes to).
pub fn ensure_namespace(name: &str) {
    let (ok, text) = kubectl(&["create", "namespace", name], None);
    assert!(ok || text.contains("AlreadyExists"), "{text}");
}

/// `kubectl apply --dry-run=server` of a YAML stream: the real apiserver's validation and
/// admission, nothing stored. Returns kubectl's output (one line per object) or panics with it.
pub fn server_dry_run(yaml: &str) -> String {
    let (ok, text) = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(yaml));
    assert!(ok, "the apiserver refused:\n{text}");
    text
}

/// `kubernetes-validate --strict` (PyPI) of a YAML stream against the oldest and the newest
/// Kubernetes schemas it ships: unknown fields and wrong types in built-in kinds are errors.
/// Kinds it has no schema for (our CRDs, monitoring.coreos.com) are only warned about.
pub fn kubernetes_validate(yaml: &str, what: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{what}.yaml"));
    std::fs::write(&file, yaml).expect("write");
    for version in ["1.25.0", "1.37.0"] {
        let (ok, out, err) = run(
            "kubernetes-validate",
            &[
                "--strict",
                "--quiet",
                "--no-warn",
                "-k",
                version,
                file.to_str().expect("path"),
            ],
            None,
        );
        assert!(
            ok,
            "kubernetes-validate --strict (Kubernetes {version}) refused {what}:\n{out}{err}"
        );
    }
}

/// `text` as the test apiserver takes it: the chart's PodDisruptionBudget is `policy/v1`, which
/// Kubernetes serves from 1.21; the test server is 1.20, which has the same object (the same
/// fields) only as `policy/v1beta1`. Helm picks the version from the server's API versions.
pub fn pdb_as_the_test_server_serves_it(text: &str) -> String {
    text.replace(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget",
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget",
    )
}
