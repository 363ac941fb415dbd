//! `dhis2ctl upgrade INSTANCE --to VERSION` and `dhis2ctl history INSTANCE` as an administrator
//! uses them, run as the real binary against the real apiserver. No operator runs: the test
//! writes the instance's status as the operator records it (admin `patch_status`) and checks
//! what the command line reads from it and asks of it (`spec.version`, the approval).

mod support;

use std::process::Output;
use std::time::Duration;

use dhis2_operator::crd::{Dhis2Backup, Dhis2Instance, Dhis2Restore};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::cluster_objects::{create, s3_repository};
use support::kube_env::{client, namespace, wait_for};
use support::{dhis2ctl, json as parse_json, stderr, stdout};

const BUCKET: &str = "moh-dhis2-backups";
const BACKUP_ID: &str = "20261206T050112Z-7f3a";

struct Cluster {
    client: Client,
    ns: String,
}

impl Cluster {
    async fn new(prefix: &str) -> Self {
        let client = client().await;
        let ns = namespace(&client, prefix).await;
        Self { client, ns }
    }

    fn instances(&self) -> Api<Dhis2Instance> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// `name` with spec.version `spec_version`, an S3 repository, and (as the operator records
    /// it) DHIS2 `deployed` running; `upgrade` is the spec's `spec.upgrade`.
    async fn instance(&self, name: &str, spec_version: &str, deployed: &str, upgrade: Value) {
        let mut spec = json!({"version": spec_version, "environment": "production",
            "replicas": 2, "adminSecretRef": "dhis2-admin",
            "backup": {"repository": s3_repository(BUCKET)}});
        if !upgrade.is_null() {
            spec["upgrade"] = upgrade;
        }
        create::<Dhis2Instance>(
            &self.client,
            &self.ns,
            json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
                "metadata": {"name": name}, "spec": spec}),
        )
        .await;
        self.status(
            name,
            json!({"phase": "Ready", "version": deployed, "deployedVersion": deployed,
                "deployedImage": format!("dhis2/core:{deployed}")}),
        )
        .await;
    }

    /// Writes status fields as the operator would (merge patch: `null` removes a field).
    async fn status(&self, name: &str, status: Value) {
        self.instances()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap_or_else(|e| panic!("status of {name}: {e}"));
    }

    async fn get(&self, name: &str) -> Dhis2Instance {
        self.instances().get(name).await.unwrap()
    }

    async fn ctl(&self, args: &[&str]) -> Output {
        let mut args = args.to_vec();
        args.extend(["-n", self.ns.as_str()]);
        tokio::time::timeout(Duration::from_secs(120), dhis2ctl(&args))
            .await
            .unwrap_or_else(|_| panic!("dhis2ctl {args:?} still running after 2 minutes"))
    }
}

fn upgrade_status(
    phase: &str,
    from: &str,
    to: &str,
    outcome: Option<&str>,
    message: &str,
) -> Value {
    let mut u = json!({"phase": phase, "fromVersion": from, "toVersion": to,
        "fromImage": format!("dhis2/core:{from}"), "toImage": format!("dhis2/core:{to}"),
        "startedAt": "2026-12-06T05:00:00Z", "phaseStartedAt": "2026-12-06T05:01:00Z",
        "backupId": BACKUP_ID, "message": message});
    if let Some(outcome) = outcome {
        u["outcome"] = json!(outcome);
    }
    u
}

fn record(from: &str, to: &str, outcome: &str, finished: &str, message: &str) -> Value {
    json!({"fromVersion": from, "toVersion": to, "startedAt": "2026-12-06T05:00:00Z",
        "finishedAt": finished, "outcome": outcome, "backupId": BACKUP_ID,
        "approvedBy": "Dr Sok Chenda", "message": message})
}

fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}:\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

#[tokio::test]
async fn a_dry_run_prints_the_plan_and_changes_nothing_and_applying_asks_the_operator() {
    let c = Cluster::new("cli-upgrade-plan").await;
    c.instance("hmis", "2.41.3", "2.41.3", Value::Null).await;
    // The last completed backup (4m 10s) is the estimate of the pre-upgrade backup's downtime.
    create::<Dhis2Backup>(
        &c.client,
        &c.ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
            "metadata": {"name": "hmis-nightly-202612060200"}, "spec": {"instanceRef": "hmis"}}),
    )
    .await;
    Api::<Dhis2Backup>::namespaced(c.client.clone(), &c.ns)
        .patch_status(
            "hmis-nightly-202612060200",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Completed", "durationSeconds": 250.0}})),
        )
        .await
        .unwrap();
    let before = c.get("hmis").await.metadata.resource_version;

    let out = c
        .ctl(&["upgrade", "hmis", "--to", "2.42.0", "--dry-run"])
        .await;
    assert_code(&out, 0, "upgrade --dry-run");
    let text = stdout(&out);
    assert!(text.contains("DHIS2 2.41.3 → 2.42.0"), "{text}");
    assert!(
        text.contains(&format!("Backup into:  s3://{BUCKET}/dhis2")),
        "{text}"
    );
    let steps: Vec<usize> = [
        "Checking:",
        "Stopping:",
        "BackingUp:",
        "Preparing:",
        "Migrating:",
    ]
    .iter()
    .map(|s| {
        text.find(s)
            .unwrap_or_else(|| panic!("no step {s} in:\n{text}"))
    })
    .collect();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "steps out of order:\n{text}"
    );
    assert!(text.contains("flyway_schema_history"), "{text}");
    assert!(
        text.contains("about 4m 10s") && text.contains("hmis-nightly-202612060200"),
        "{text}"
    );
    assert!(text.contains("rolled back after 2h 0m"), "{text}");
    assert!(text.contains("Rollback: "), "{text}");
    assert!(text.contains("dry run: nothing was changed"), "{text}");
    assert_eq!(c.get("hmis").await.metadata.resource_version, before);

    let out = c
        .ctl(&[
            "upgrade",
            "hmis",
            "--to",
            "2.42.0",
            "--dry-run",
            "-o",
            "json",
        ])
        .await;
    assert_code(&out, 0, "upgrade --dry-run -o json");
    let report = parse_json(&out);
    assert_eq!(
        report["plan"]["backupRepository"],
        json!(format!("s3://{BUCKET}/dhis2"))
    );
    assert_eq!(report["plan"]["steps"].as_array().unwrap().len(), 5);
    assert_eq!(report["plan"]["downtime"]["backupSeconds"], json!(250.0));
    assert_eq!(report["changed"], json!([]));
    assert_eq!(c.get("hmis").await.metadata.resource_version, before);

    // --database-url runs the operator's checks here: shown in the plan; when they block,
    // nothing is changed (exit 1).
    let env = support::env();
    let (_, url) = env.create_database("cli_upgrade_checks").await;
    let out = c
        .ctl(&[
            "upgrade",
            "hmis",
            "--to",
            "2.42.0",
            "--dry-run",
            "--database-url",
            &url,
        ])
        .await;
    assert_code(&out, 0, "upgrade --dry-run --database-url");
    let text = stdout(&out);
    assert!(
        text.contains("The same checks, run here (--database-url)")
            && text.contains("flyway migrations    passed"),
        "{text}"
    );
    let out = c
        .ctl(&["upgrade", "hmis", "--to", "2.99.0", "--database-url", &url])
        .await;
    assert_code(&out, 1, "upgrade blocked by the checks");
    assert!(stdout(&out).contains("blocked"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the checks block the upgrade to 2.99.0")
            && stderr(&out).contains("nothing was changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.get("hmis").await.metadata.resource_version, before);

    // Applied with an approval: spec.version and spec.upgrade.approvedBy/approvedVersion.
    let out = c
        .ctl(&[
            "upgrade",
            "hmis",
            "--to",
            "2.42.0",
            "--approve",
            "Dr Sok Chenda",
        ])
        .await;
    assert_code(&out, 0, "upgrade --approve");
    assert!(
        stdout(&out).contains("spec.version of hmis is now 2.42.0"),
        "{}",
        stdout(&out)
    );
    let spec = c.get("hmis").await.spec;
    assert_eq!(spec.version, "2.42.0");
    let settings = spec.upgrade.expect("spec.upgrade");
    assert_eq!(settings.approved_by.as_deref(), Some("Dr Sok Chenda"));
    assert_eq!(settings.approved_version.as_deref(), Some("2.42.0"));

    // Manual policy without --approve: applied, and says how to approve; the approval given
    // while the operator awaits it sets only the approval and keeps the policy.
    c.instance("sandbox", "2.41.3", "2.41.3", json!({"policy": "Manual"}))
        .await;
    let out = c.ctl(&["upgrade", "sandbox", "--to", "2.42.0"]).await;
    assert_code(&out, 0, "upgrade, Manual");
    let text = stdout(&out);
    assert!(text.contains("AwaitingApproval:"), "{text}");
    assert!(
        text.contains("waits for an approval")
            && text.contains("dhis2ctl upgrade sandbox --to 2.42.0 --approve NAME"),
        "{text}"
    );
    assert_eq!(c.get("sandbox").await.spec.version, "2.42.0");
    c.status(
        "sandbox",
        json!({"upgrade": upgrade_status("AwaitingApproval", "2.41.3", "2.42.0", None, "checks passed; spec.upgrade.policy is Manual")}),
    )
    .await;
    let out = c
        .ctl(&["upgrade", "sandbox", "--to", "2.42.0", "--approve", "Dara"])
        .await;
    assert_code(&out, 0, "approving");
    let settings = c.get("sandbox").await.spec.upgrade.unwrap();
    assert_eq!(settings.approved_by.as_deref(), Some("Dara"));
    assert_eq!(settings.approved_version.as_deref(), Some("2.42.0"));
    assert_eq!(
        settings.policy,
        dhis2_operator::crd::upgrade::UpgradePolicy::Manual
    );
}

#[tokio::test]
async fn a_downgrade_and_an_upgrade_in_progress_are_refused_before_any_change() {
    let c = Cluster::new("cli-upgrade-refused").await;
    c.instance("hmis", "2.42.0", "2.42.0", Value::Null).await;
    c.status(
        "hmis",
        json!({"upgradeHistory": [record("2.41.3", "2.42.0", "Succeeded", "2026-12-06T05:40:00Z", "DHIS2 runs 2.42.0")]}),
    )
    .await;
    let before = c.get("hmis").await.metadata.resource_version;

    let out = c.ctl(&["upgrade", "hmis", "--to", "2.41.3"]).await;
    assert_code(&out, 2, "a downgrade");
    let err = stderr(&out);
    assert!(
        err.contains("--to 2.41.3 is older than the running DHIS2 2.42.0")
            && err.contains("cannot be downgraded")
            && err.contains(&format!(
                "dhis2ctl restore {BACKUP_ID} --from hmis --to hmis"
            )),
        "{err}"
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert_eq!(c.get("hmis").await.metadata.resource_version, before);

    // The operator migrates to 2.43.0: another upgrade is refused, naming the phase.
    c.status(
        "hmis",
        json!({"phase": "Upgrading", "upgrade": upgrade_status("Migrating", "2.42.0", "2.43.0", None, "DHIS2 2.43.0 is migrating the database: 3 min of at most 120 min")}),
    )
    .await;
    let before = c.get("hmis").await.metadata.resource_version;
    for to in ["2.43.1", "2.43.0"] {
        let out = c.ctl(&["upgrade", "hmis", "--to", to, "--wait"]).await;
        assert_code(&out, 1, "an upgrade in progress");
        let err = stderr(&out);
        assert!(
            err.contains("from 2.42.0 to 2.43.0 is in progress (phase Migrating")
                && err.contains("nothing was changed"),
            "{err}"
        );
    }
    assert_eq!(c.get("hmis").await.metadata.resource_version, before);

    // No repository: the pre-upgrade backup would fail after DHIS2 was stopped. No admin
    // account: the operator could never see the new version run, and would roll back.
    for (name, missing, setting) in [
        (
            "bare",
            "spec.backup.repository",
            json!({"adminSecretRef": "dhis2-admin"}),
        ),
        (
            "anonymous",
            "spec.adminSecretRef",
            json!({"backup": {"repository": s3_repository(BUCKET)}}),
        ),
    ] {
        let mut spec = json!({"version": "2.41.3", "environment": "training", "replicas": 1});
        spec.as_object_mut()
            .unwrap()
            .extend(setting.as_object().unwrap().clone());
        create::<Dhis2Instance>(
            &c.client,
            &c.ns,
            json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
                "metadata": {"name": name}, "spec": spec}),
        )
        .await;
        let out = c.ctl(&["upgrade", name, "--to", "2.42.0"]).await;
        assert_code(&out, 1, missing);
        assert!(stderr(&out).contains(missing), "{}", stderr(&out));
        assert_eq!(c.get(name).await.spec.version, "2.41.3");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_goes_back_to_the_running_version_until_cleared_then_waits_for_the_upgrade() {
    let c = Cluster::new("cli-upgrade-retry").await;
    c.instance("hmis", "2.42.0", "2.41.3", Value::Null).await;
    let refused = "refused, nothing was changed and DHIS2 2.41.3 keeps running: default category option combos: 2 named default";
    c.status(
        "hmis",
        json!({"upgrade": upgrade_status("Refused", "2.41.3", "2.42.0", Some("Refused"), refused),
            "upgradeHistory": [record("2.41.3", "2.42.0", "Refused", "2026-12-06T05:00:05Z", refused)]}),
    )
    .await;

    // Without --retry: refused (spec.version is already 2.42.0), saying how.
    let out = c.ctl(&["upgrade", "hmis", "--to", "2.42.0"]).await;
    assert_code(&out, 2, "the same version again");
    let err = stderr(&out);
    assert!(
        err.contains("ended Refused")
            && err.contains("--retry")
            && err.contains("default category option combos"),
        "{err}"
    );

    // The operator's part, played here: clear status.upgrade once spec.version is back at
    // 2.41.3, then run the upgrade to 2.42.0 and record its success.
    let operator = {
        let c = Cluster {
            client: c.client.clone(),
            ns: c.ns.clone(),
        };
        tokio::spawn(async move {
            wait_for(60, "spec.version back at 2.41.3", || async {
                (c.get("hmis").await.spec.version == "2.41.3").then_some(())
            })
            .await;
            // The command waits for the clearing: spec.version stays at 2.41.3 meanwhile.
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(c.get("hmis").await.spec.version, "2.41.3");
            c.status("hmis", json!({"upgrade": null})).await;
            wait_for(60, "spec.version at 2.42.0 again", || async {
                (c.get("hmis").await.spec.version == "2.42.0").then_some(())
            })
            .await;
            c.status(
                "hmis",
                json!({"phase": "Upgrading", "upgrade": upgrade_status("BackingUp", "2.41.3", "2.42.0", None, "the pre-upgrade backup runs; DHIS2 is stopped")}),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.status(
                "hmis",
                json!({"phase": "Ready", "upgrade": null, "deployedVersion": "2.42.0",
                    "deployedImage": "dhis2/core:2.42.0", "version": "2.42.0",
                    "upgradeHistory": [
                        record("2.41.3", "2.42.0", "Succeeded", "2026-12-06T06:10:00Z", "DHIS2 runs 2.42.0 (was 2.41.3)"),
                        record("2.41.3", "2.42.0", "Refused", "2026-12-06T05:00:05Z", refused)]}),
            )
            .await;
        })
    };
    let out = c
        .ctl(&["upgrade", "hmis", "--to", "2.42.0", "--retry", "--wait"])
        .await;
    operator.await.expect("the operator's part");
    assert_code(&out, 0, "upgrade --retry --wait");
    let text = stdout(&out);
    assert!(
        text.contains("--retry: spec.version goes back to 2.41.3")
            && text.contains("cleared; spec.version: 2.42.0 again"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("upgrade 2.41.3 → 2.42.0 Succeeded: DHIS2 runs 2.42.0 (was 2.41.3)"),
        "{text}"
    );
    assert_eq!(c.get("hmis").await.spec.version, "2.42.0");

    // --wait exits 1 when the upgrade ends otherwise, with the operator's message.
    c.instance("sandbox", "2.41.3", "2.41.3", Value::Null).await;
    let operator = {
        let c = Cluster {
            client: c.client.clone(),
            ns: c.ns.clone(),
        };
        tokio::spawn(async move {
            wait_for(60, "spec.version 2.42.0", || async {
                (c.get("sandbox").await.spec.version == "2.42.0").then_some(())
            })
            .await;
            let why = "upgrade to 2.42.0 rolled back: DHIS2 2.42.0 did not report its version within spec.upgrade.timeoutSeconds";
            c.status(
                "sandbox",
                json!({"upgrade": upgrade_status("Failed", "2.41.3", "2.42.0", Some("RolledBack"), why),
                    "upgradeHistory": [record("2.41.3", "2.42.0", "RolledBack", "2026-12-06T07:00:00Z", why)]}),
            )
            .await;
        })
    };
    let out = c
        .ctl(&[
            "upgrade", "sandbox", "--to", "2.42.0", "--wait", "-o", "json",
        ])
        .await;
    operator.await.expect("the operator's part");
    assert_code(&out, 1, "a rolled back upgrade with --wait");
    let report = parse_json(&out);
    assert_eq!(
        report["outcome"]["outcome"],
        json!("RolledBack"),
        "{report}"
    );
    assert_eq!(
        report["changed"],
        json!(["spec.version: 2.42.0"]),
        "{report}"
    );
}

#[tokio::test]
async fn history_lists_the_upgrade_in_progress_and_the_records_and_status_summarises_them() {
    let c = Cluster::new("cli-upgrade-history").await;
    c.instance("hmis", "2.42.0", "2.42.0", Value::Null).await;
    let out = c.ctl(&["history", "hmis"]).await;
    assert_code(&out, 0, "history, none");
    assert!(
        stdout(&out).contains("No upgrades recorded for hmis"),
        "{}",
        stdout(&out)
    );

    let long = format!(
        "DHIS2 runs 2.42.0 (was 2.41.3); pre-upgrade backup {BACKUP_ID}; materialized views recreated by DHIS2"
    );
    c.status(
        "hmis",
        json!({"phase": "Upgrading",
            "upgrade": upgrade_status("Migrating", "2.42.0", "2.43.0", None, "DHIS2 2.43.0 is migrating the database: 3 min of at most 120 min"),
            "upgradeHistory": [
                record("2.41.3", "2.42.0", "Succeeded", "2026-12-06T05:42:10Z", &long),
                record("2.41.3", "2.42.0", "RolledBack", "2026-12-05T05:10:00Z", "rolled back")]}),
    )
    .await;
    let out = c.ctl(&["history", "hmis"]).await;
    assert_code(&out, 0, "history");
    let text = stdout(&out);
    assert!(
        text.starts_with("In progress: Migrating 2.42.0 → 2.43.0 (started 2026-12-06T05:00:00Z): DHIS2 2.43.0 is migrating"),
        "{text}"
    );
    let header = text
        .lines()
        .find(|l| l.starts_with("FROM"))
        .unwrap_or_else(|| panic!("{text}"));
    for column in [
        "TO",
        "STARTED",
        "DURATION",
        "OUTCOME",
        "BACKUP",
        "APPROVED BY",
        "MESSAGE",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("2.41.3")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].contains("Succeeded")
            && rows[0].contains("42m 10s")
            && rows[0].contains(BACKUP_ID)
            && rows[0].contains("Dr Sok Chenda"),
        "{}",
        rows[0]
    );
    assert!(
        rows[0].contains('…') && !rows[0].contains("recreated by DHIS2"),
        "{}",
        rows[0]
    );
    assert!(rows[1].contains("RolledBack"), "{}", rows[1]);
    let out = c.ctl(&["history", "hmis", "-o", "wide"]).await;
    assert!(stdout(&out).contains(&long), "{}", stdout(&out));

    let out = c.ctl(&["history", "hmis", "-o", "json"]).await;
    assert_code(&out, 0, "history -o json");
    let history = parse_json(&out);
    assert_eq!(history["upgrade"]["phase"], json!("Migrating"));
    assert_eq!(history["upgradeHistory"][0]["message"], json!(long));
    assert_eq!(history["upgradeHistory"][1]["outcome"], json!("RolledBack"));

    let out = c.ctl(&["status", "hmis"]).await;
    assert_code(&out, 0, "status");
    let text = stdout(&out);
    assert!(
        text.contains("Upgrade:      Migrating 2.42.0 → 2.43.0")
            && text.contains(&format!("Last upgrade: 2.41.3 → 2.42.0 Succeeded at 2026-12-06T05:42:10Z (pre-upgrade backup {BACKUP_ID})")),
        "{text}"
    );
}

#[tokio::test]
async fn usage_errors_exit_2_naming_the_flag_before_reading_the_cluster() {
    // A namespace that does not exist: a usage error is found before the cluster is asked.
    let ns = "no-such-namespace-cli-upgrade";
    for (args, needle) in [
        (
            vec!["upgrade", "hmis", "--to", "latest"],
            "--to: 'latest' is not a DHIS2 version",
        ),
        (vec!["upgrade", "hmis", "--to", ""], "--to"),
        (vec!["upgrade", "hmis"], "--to <VERSION>"),
        (
            vec!["upgrade", "hmis", "--to", "2.42", "--timeout", "5m"],
            "--wait",
        ),
        (
            vec![
                "upgrade",
                "hmis",
                "--to",
                "2.42",
                "--wait",
                "--timeout",
                "soon",
            ],
            "--timeout",
        ),
        (
            vec!["upgrade", "hmis", "--to", "2.42", "--dry-run", "--wait"],
            "--dry-run",
        ),
        (
            vec!["upgrade", "hmis", "--to", "2.42", "--approve", " "],
            "--approve",
        ),
        (
            vec![
                "upgrade",
                "hmis",
                "--to",
                "2.42",
                "--database-url",
                "mysql://x",
            ],
            "--database-url",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["-n", ns]);
        let out = dhis2ctl(&args).await;
        assert_code(&out, 2, &format!("{args:?}"));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    // `upgrade check` keeps its own flags.
    let out = dhis2ctl(&["upgrade", "check", "--to", "2.43"]).await;
    assert_code(&out, 2, "upgrade check without --database-url");
    assert!(stderr(&out).contains("--database-url"), "{}", stderr(&out));

    let c = Cluster::new("cli-upgrade-unknown").await;
    for args in [
        vec!["upgrade", "nosuch", "--to", "2.42"],
        vec!["history", "nosuch"],
    ] {
        let out = c.ctl(&args).await;
        assert_code(&out, 1, &format!("{args:?}"));
        assert!(
            stderr(&out).contains(&format!(
                "Dhis2Instance nosuch not found in namespace {}",
                c.ns
            )),
            "{}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn refresh_restores_productions_latest_backup_over_staging_and_never_over_production() {
    let c = Cluster::new("cli-refresh").await;
    c.instance("hmis", "2.42.0", "2.42.0", Value::Null).await;
    create::<Dhis2Instance>(
        &c.client,
        &c.ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
            "metadata": {"name": "staging"},
            "spec": {"version": "2.43.0", "environment": "staging", "replicas": 1}}),
    )
    .await;
    let restores = || Api::<Dhis2Restore>::namespaced(c.client.clone(), &c.ns);

    // Production is never the one overwritten; nothing is created.
    let out = c.ctl(&["refresh", "hmis", "--from", "staging"]).await;
    assert_code(&out, 2, "refreshing production");
    let err = stderr(&out);
    assert!(
        err.contains("production instance and is never refreshed") && err.contains("--approved-by"),
        "{err}"
    );
    let out = c.ctl(&["refresh", "staging-2", "--from", "hmis"]).await;
    assert_code(&out, 2, "refreshing an instance that does not exist");
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(
        restores()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Staging: a Dhis2Restore of production's latest backup over it, with consent.
    let out = c
        .ctl(&["refresh", "staging", "--from", "hmis", "-o", "json"])
        .await;
    assert_code(&out, 0, "refreshing staging");
    let made = restores().list(&Default::default()).await.unwrap().items;
    assert_eq!(made.len(), 1);
    let spec = &made[0].spec;
    assert_eq!(spec.source.instance, "hmis");
    assert_eq!(spec.source.backup_id.as_deref(), Some("latest"));
    assert_eq!(spec.target.instance, "staging");
    assert!(spec.target.new_instance.is_none());
    assert_eq!(spec.confirm_overwrite.as_deref(), Some("staging"));
    assert!(spec.regenerate_analytics);
    assert!(stdout(&out).contains(&made[0].metadata.name.clone().unwrap()));
}

/// The shipped examples keep staging in namespace hmis-staging and production in hmis: refresh
/// reads production's repository there, and says which Secrets staging's namespace still needs.
#[tokio::test]
async fn refresh_reads_production_in_its_own_namespace_with_the_secrets_copied() {
    let production = Cluster::new("cli-refresh-prod").await;
    production
        .instance("hmis", "2.42.0", "2.42.0", Value::Null)
        .await;
    let staging = Cluster::new("cli-refresh-stg").await;
    create::<Dhis2Instance>(
        &staging.client,
        &staging.ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
            "metadata": {"name": "hmis-staging"},
            "spec": {"version": "2.43.0", "environment": "staging", "replicas": 1}}),
    )
    .await;
    let restores = || Api::<Dhis2Restore>::namespaced(staging.client.clone(), &staging.ns);
    let refresh_args = [
        "refresh",
        "hmis-staging",
        "--from",
        "hmis",
        "--from-namespace",
        production.ns.as_str(),
    ];
    let refresh = || staging.ctl(&refresh_args);

    // Production's repository is read with its Secret's name: it must exist here too.
    let out = refresh().await;
    assert_code(
        &out,
        2,
        "the repository's Secret is missing in staging's namespace",
    );
    let err = stderr(&out);
    assert!(
        err.contains("backup-s3 is not in") && err.contains("kubectl -n"),
        "{err}"
    );
    assert!(
        restores()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    create::<k8s_openapi::api::core::v1::Secret>(
        &staging.client,
        &staging.ns,
        json!({"metadata": {"name": "backup-s3"},
            "stringData": {"accessKey": "a", "secretKey": "b"}}),
    )
    .await;
    let out = refresh().await;
    assert_code(&out, 0, "refreshing staging from production's namespace");
    let made = restores().list(&Default::default()).await.unwrap().items;
    assert_eq!(made.len(), 1);
    let spec = &made[0].spec;
    assert_eq!(spec.source.instance, "hmis");
    assert_eq!(spec.source.backup_id.as_deref(), Some("latest"));
    assert_eq!(
        serde_json::to_value(&spec.source.repository).unwrap(),
        s3_repository(BUCKET),
        "production's repository"
    );
    assert_eq!(spec.target.instance, "hmis-staging");
    assert_eq!(spec.confirm_overwrite.as_deref(), Some("hmis-staging"));
}
