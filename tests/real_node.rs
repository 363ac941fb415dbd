//! Journeys on the real one-node cluster (`scripts/testenv/up.sh --with-node`): the operator
//! installed from `manifests/install.yaml` runs as a pod under its own ServiceAccount and RBAC,
//! leader elected; PostgreSQL runs in a StatefulSet on a real PersistentVolumeClaim; DHIS2 (the
//! stand-in image: it reads dhis.conf, migrates with Flyway semantics, serves /api/system/*) runs
//! in real pods behind its Service; every backup, restore and drill is a Job in the project's
//! image, writing to the test S3 server. Nothing is reached through an endpoint override.
//!
//! Its own harness (libtest-mimic): the operator is installed once before the journeys and
//! removed after them, so it never acts in the namespaces of the test binaries that follow.

mod support;

use dhis2_operator::crd::backup_common::RunPhase;
use dhis2_operator::crd::{Dhis2Backup, Dhis2Instance};
use kube::Client;
use kube::api::{Api, ListParams};
use libtest_mimic::{Arguments, Failed, Trial};
use support::cluster_objects::{S3_CREDENTIALS, s3_credentials};
use support::kube_env::{client, wait_for};
use support::real_node::{
    Node, dump_namespace, http_get, install_operator, journey_namespace, kubectl_apply, node, psql,
    service_url, uninstall_operator,
};
use support::{Env, env, listed_backup_ids};

fn main() {
    let args = Arguments::from_args();
    let journeys: Vec<(&str, Journey)> = vec![
        (
            "instance_from_install_yaml_is_backed_up_nightly_and_drilled",
            |n| Box::pin(instance_is_backed_up_nightly_and_drilled(n)),
        ),
        (
            "upgrade_succeeds_and_a_failed_migration_is_rolled_back",
            |n| Box::pin(upgrade_succeeds_and_a_failed_migration_is_rolled_back(n)),
        ),
        ("read_only_copy_serves_while_the_upgrade_succeeds", |n| {
            Box::pin(read_only_copy_serves_while_the_upgrade_succeeds(n))
        }),
        ("the_runbook_with_latest_brings_the_rows_back", |n| {
            Box::pin(the_runbook_with_latest_brings_the_rows_back(n))
        }),
        (
            "operator_and_kubelet_restarts_mid_backup_and_mid_upgrade",
            |n| Box::pin(operator_and_kubelet_restarts_mid_backup_and_mid_upgrade(n)),
        ),
        (
            "the_chart_installs_with_helm_and_its_helm_test_passes",
            |n| Box::pin(the_chart_installs_with_helm_and_its_helm_test_passes(n)),
        ),
    ];
    let listing = args.list;
    let trials: Vec<Trial> = journeys
        .into_iter()
        .map(|(name, journey)| Trial::test(name, move || run(journey)))
        .collect();
    if !listing {
        install_operator(&node());
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if !listing {
        uninstall_operator();
    }
    conclusion.exit();
}

type JourneyFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
type Journey = fn(Node) -> JourneyFuture;

fn run(journey: Journey) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(journey(node()));
    }));
    result.map_err(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "journey panicked".into());
        Failed::from(text)
    })
}

/// One journey's namespace: the S3 Secret, a bucket, the DHIS2 admin login; dumped to the log
/// when the journey fails.
struct World {
    node: Node,
    env: Env,
    client: Client,
    ns: String,
    bucket: String,
}

impl World {
    async fn new(node: Node, prefix: &str) -> Self {
        let env = env();
        let client = client().await;
        let ns = journey_namespace(&client, &node, prefix).await;
        s3_credentials(&env, &client, &ns).await;
        let (bucket, _) = env.create_bucket(prefix).await;
        // A fresh DHIS2's own login: the stand-in checks it against its userinfo table.
        kubectl_apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: dhis2-admin, namespace: {ns}}}\nstringData: {{username: admin, password: district}}\n"
        ));
        Self {
            node,
            env,
            client,
            ns,
            bucket,
        }
    }

    /// A managed Dhis2Database `<name>-db` and a Dhis2Instance `name` of `version` with a volume
    /// file store, sized for a 2-core test node.
    fn create_instance(&self, name: &str, version: &str, upgrade: &str) {
        let Self { node, ns, .. } = self;
        kubectl_apply(&format!(
            r#"apiVersion: dhis2operator.io/v1alpha1
kind: Dhis2Database
metadata: {{name: {name}-db, namespace: {ns}}}
spec:
  image: {pg}
  storage: {{size: 1Gi}}
  resources: {{requests: {{cpu: 50m, memory: 128Mi}}, limits: {{memory: 1Gi}}}}
---
apiVersion: dhis2operator.io/v1alpha1
kind: Dhis2Instance
metadata: {{name: {name}, namespace: {ns}}}
spec:
  version: "{version}"
  image: {image}
  environment: production
  databaseRef: {name}-db
  adminSecretRef: dhis2-admin
  fileStore: {{volume: {{size: 1Gi}}}}
  resources: {{requests: {{cpu: 50m, memory: 128Mi}}, limits: {{memory: 512Mi}}}}
  backup:
    repository:
      s3: {{bucket: {bucket}, prefix: dhis2, endpoint: "{s3}", pathStyle: true, credentialsSecretRef: {S3_CREDENTIALS}}}
{upgrade}"#,
            pg = node.postgres_image,
            image = node.dhis2(version),
            bucket = self.bucket,
            s3 = node.s3_in_cluster,
        ));
    }

    /// Waits until the instance is Ready on `version`, as the operator saw it through the Service.
    async fn wait_ready(&self, name: &str, version: &str, secs: u64) -> Dhis2Instance {
        let api = Api::<Dhis2Instance>::namespaced(self.client.clone(), &self.ns);
        wait_for(secs, &format!("{name} Ready on {version}"), || async {
            let i = api.get(name).await.ok()?;
            let s = i.status.as_ref()?;
            (s.phase.as_deref() == Some("Ready") && s.version.as_deref() == Some(version))
                .then_some(i)
        })
        .await
    }

    fn db_pod(&self, instance: &str) -> String {
        format!("{instance}-db-0")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_namespace(&self.ns);
        } else {
            let _ = support::real_node::kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
        }
    }
}

/// The next minute boundary at least 20 s away, as `M H` in Asia/Phnom_Penh, and that instant.
fn next_minute_in_phnom_penh() -> (String, chrono::DateTime<chrono::Utc>) {
    use chrono::{Timelike, Utc};
    let tz: chrono_tz::Tz = "Asia/Phnom_Penh".parse().unwrap();
    let at = (Utc::now() + chrono::Duration::seconds(80))
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    let local = at.with_timezone(&tz);
    (format!("{} {}", local.minute(), local.hour()), at)
}

/// The first journey of a Ministry: the operator from install.yaml, a managed database on a real
/// volume, DHIS2 Ready through its Service, a nightly backup that really fires (at the next
/// minute, Cambodia time) as a Job in the project's image and lands in S3, and a drill that
/// restores it.
async fn instance_is_backed_up_nightly_and_drilled(node: Node) {
    let w = World::new(node, "rn-nightly").await;
    w.create_instance("hmis", "2.41.3", "");
    let ready = w.wait_ready("hmis", "2.41.3", 240).await;
    let endpoint = ready.status.as_ref().and_then(|s| s.endpoint.clone());
    assert_eq!(
        endpoint.as_deref(),
        Some(format!("http://hmis.{}.svc", w.ns).as_str()),
        "the operator reaches DHIS2 through its Service"
    );

    // DHIS2 answers through its Service, as users reach it; the database is the real pod's.
    let url = service_url(&w.ns, "hmis");
    let (code, body) = http_get(&w.node, &format!("{url}/api/system/ping"), None);
    assert_eq!((code, body.trim()), (200, "pong"));
    let (code, info) = http_get(
        &w.node,
        &format!("{url}/api/system/info"),
        Some(("admin", "district")),
    );
    assert_eq!(code, 200, "{info}");
    assert!(info.contains("\"2.41.3\""), "{info}");
    insert_khmer_row(&w, "hmis", 990_001);
    let bound = support::real_node::kubectl_ok(&[
        "get",
        "pvc",
        "-n",
        &w.ns,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.phase} {end}",
    ]);
    assert!(
        bound.contains("data-hmis-db-0=Bound") && bound.contains("Bound"),
        "{bound}"
    );

    // The nightly schedule, at the next minute in Phnom Penh.
    let (minute_hour, fires_at) = next_minute_in_phnom_penh();
    kubectl_apply(&format!(
        r#"apiVersion: dhis2operator.io/v1alpha1
kind: Dhis2BackupSchedule
metadata: {{name: hmis-nightly, namespace: {ns}}}
spec:
  instanceRef: hmis
  schedule: "{minute_hour} * * *"
  timeZone: Asia/Phnom_Penh
  retention: {{keepDaily: 7, keepWeekly: 4, keepMonthly: 12}}
"#,
        ns = w.ns
    ));
    let backups = Api::<Dhis2Backup>::namespaced(w.client.clone(), &w.ns);
    let wait = (fires_at - chrono::Utc::now()).num_seconds().max(0) as u64 + 300;
    let backup = wait_for(wait, "the scheduled backup to complete", || async {
        let list = backups.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|b| b.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Completed))
    })
    .await;
    let status = backup.status.clone().unwrap();
    let id = status.backup_id.clone().expect("backup id");
    let repo = format!("s3://{}/dhis2", w.bucket);
    assert_eq!(
        listed_backup_ids(&repo, Some("hmis")).await,
        vec![id.clone()],
        "the backup is in S3, complete"
    );
    let started = backup
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap();
    assert!(
        started >= fires_at.timestamp() - 1,
        "fired by the schedule at {fires_at}, not before ({started})"
    );
    let jobs = support::real_node::kubectl_ok(&[
        "get",
        "jobs",
        "-n",
        &w.ns,
        "-o",
        "jsonpath={range .items[*]}{.spec.template.spec.containers[0].image}{\"\\n\"}{end}",
    ]);
    assert!(
        jobs.lines().any(|image| image == w.node.operator_image),
        "the backup ran as a Job in the project's image: {jobs}"
    );

    // A drill restores it and finds the rows.
    let out = support::dhis2ctl(&["drill", "hmis", "-n", &w.ns, "--wait"]).await;
    support::assert_success(&out, "dhis2ctl drill --wait");
    // The instance's status summarises its drills on its next reconcile.
    let api = Api::<Dhis2Instance>::namespaced(w.client.clone(), &w.ns);
    wait_for(
        60,
        "the instance's status to show the drill passed",
        || async {
            let b = api.get("hmis").await.ok()?.status?.backup?;
            (b.last_drill_result.as_deref() == Some("Passed")).then_some(())
        },
    )
    .await;
}

/// Rows that must survive every upgrade, rollback and restore: Khmer organisation units (a
/// name the stand-in's own seed does not use).
const KHMER_NAME: &str = "មន្ទីរពេទ្យបង្អែកខេត្តកំពត";

fn khmer_rows(w: &World, instance: &str) -> String {
    psql(
        &w.ns,
        &w.db_pod(instance),
        &format!("select count(*) from organisationunit where name = '{KHMER_NAME}'"),
    )
}

fn insert_khmer_row(w: &World, instance: &str, id: i64) {
    psql(
        &w.ns,
        &w.db_pod(instance),
        &format!(
            "insert into organisationunit (organisationunitid, uid, name, shortname, created, \
             lastupdated, openingdate) \
             values ({id}, 'Kh{id:09}', '{KHMER_NAME}', '{KHMER_NAME}', now(), now(), now())"
        ),
    );
}

/// The release lines the database's Flyway history has reached (`2.41`, `2.42`, …).
fn schema_lines(w: &World, instance: &str) -> Vec<String> {
    psql(
        &w.ns,
        &w.db_pod(instance),
        "select distinct split_part(version, '.', 1) || '.' || split_part(version, '.', 2) \
         from flyway_schema_history where success order by 1",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// `dhis2ctl upgrade hmis --to VERSION --image … --wait` as an administrator runs it, in the
/// background: the journey watches the cluster meanwhile.
fn start_upgrade(w: &World, version: &str) -> tokio::task::JoinHandle<std::process::Output> {
    let ns = w.ns.clone();
    let image = w.node.dhis2(version);
    let version = version.to_string();
    tokio::spawn(async move {
        support::dhis2ctl(&[
            "upgrade",
            "hmis",
            "--to",
            &version,
            "--image",
            &image,
            "-n",
            &ns,
            "--wait",
            "--timeout",
            "20m",
        ])
        .await
    })
}

async fn upgrade(w: &World, version: &str) -> std::process::Output {
    start_upgrade(w, version).await.unwrap()
}

/// A production upgrade on real pods: the pre-upgrade backup Job mounts the file store while
/// DHIS2 is scaled to 0, Flyway migrates, the operator sees the new version through the
/// Service. Then a version whose migration fails is rolled back by restoring the pre-upgrade
/// backup, and the previous version serves the rows of before.
async fn upgrade_succeeds_and_a_failed_migration_is_rolled_back(node: Node) {
    let w = World::new(node, "rn-upgrade").await;
    w.create_instance("hmis", "2.41.3", "  upgrade: {timeoutSeconds: 300}\n");
    w.wait_ready("hmis", "2.41.3", 240).await;
    insert_khmer_row(&w, "hmis", 990_001);

    let out = upgrade(&w, "2.42.1").await;
    support::assert_success(&out, "dhis2ctl upgrade hmis --to 2.42.1 --wait");
    let i = w.wait_ready("hmis", "2.42.1", 60).await;
    let record = i.status.as_ref().unwrap().upgrade_history.first().cloned();
    assert_eq!(
        record.as_ref().map(|r| format!("{:?}", r.outcome)),
        Some("Succeeded".into()),
        "{record:?}"
    );
    assert_eq!(schema_lines(&w, "hmis"), ["2.41", "2.42"]);
    assert_eq!(khmer_rows(&w, "hmis"), "1");
    insert_khmer_row(&w, "hmis", 990_002);

    // 2.43.0 fails its migration: never ready; after spec.upgrade.timeoutSeconds the
    // pre-upgrade backup is restored and 2.42.1 runs again on the rows of before.
    let out = upgrade(&w, "2.43.0").await;
    assert!(
        !out.status.success(),
        "a rolled-back upgrade exits non-zero: {}",
        support::stdout(&out)
    );
    let i = w.wait_ready("hmis", "2.42.1", 300).await;
    let record = i.status.as_ref().unwrap().upgrade_history.first().cloned();
    assert_eq!(
        record.as_ref().map(|r| format!("{:?}", r.outcome)),
        Some("RolledBack".into()),
        "{record:?}"
    );
    assert_eq!(schema_lines(&w, "hmis"), ["2.41", "2.42"]);
    assert_eq!(
        khmer_rows(&w, "hmis"),
        "2",
        "the rows of before the upgrade"
    );
    let url = service_url(&w.ns, "hmis");
    let (code, info) = http_get(
        &w.node,
        &format!("{url}/api/system/info"),
        Some(("admin", "district")),
    );
    assert_eq!(code, 200, "{info}");
    assert!(info.contains("\"2.42.1\""), "{info}");
}

/// `readOnlyDuringUpgrade`: while 2.42.1 migrates (slowly), users reach a read-only copy of
/// 2.41.3 through the instance's Service; the upgrade still succeeds, judged on the new
/// version's own pods, and the Service comes back to them.
async fn read_only_copy_serves_while_the_upgrade_succeeds(node: Node) {
    let w = World::new(node, "rn-readonly").await;
    w.create_instance(
        "hmis",
        "2.41.3",
        "  upgrade: {timeoutSeconds: 600, readOnlyDuringUpgrade: true}\n  dhisConf: {standin.migration.seconds: \"60\"}\n",
    );
    w.wait_ready("hmis", "2.41.3", 240).await;
    insert_khmer_row(&w, "hmis", 990_001);

    let upgrading = start_upgrade(&w, "2.42.1");
    // While it migrates, the Service answers from the read-only copy: the old version, read-only.
    let url = service_url(&w.ns, "hmis");
    let api = Api::<Dhis2Instance>::namespaced(w.client.clone(), &w.ns);
    wait_for(300, "the read-only copy to serve", || async {
        let i = api.get("hmis").await.ok()?;
        let copy = i.status.as_ref()?.read_only_copy.as_ref()?;
        copy.serving.then_some(())
    })
    .await;
    // The Service's endpoints follow its new selector within a second or two (kube-proxy).
    let info = support::real_node::wait_blocking(30, "the read-only copy to answer", || {
        let (code, info) = http_get(
            &w.node,
            &format!("{url}/api/system/info"),
            Some(("admin", "district")),
        );
        (code == 200).then_some(info)
    });
    let info: serde_json::Value = serde_json::from_str(&info).expect("/api/system/info JSON");
    assert_eq!(
        (info["version"].as_str(), info["readOnlyMode"].as_bool()),
        (Some("2.41.3"), Some(true)),
        "users see the read-only 2.41.3: {info}"
    );

    let out = upgrading.await.unwrap();
    support::assert_success(
        &out,
        "dhis2ctl upgrade hmis --to 2.42.1 --wait (read-only copy)",
    );
    let i = w.wait_ready("hmis", "2.42.1", 120).await;
    assert_eq!(
        i.status
            .as_ref()
            .and_then(|s| s.upgrade_history.first())
            .map(|r| format!("{:?}", r.outcome)),
        Some("Succeeded".into())
    );
    wait_for(120, "the read-only copy to be removed", || async {
        let i = api.get("hmis").await.ok()?;
        i.status.as_ref()?.read_only_copy.is_none().then_some(())
    })
    .await;
    support::real_node::wait_blocking(30, "the Service back on DHIS2 2.42.1", || {
        let (code, info) = http_get(
            &w.node,
            &format!("{url}/api/system/info"),
            Some(("admin", "district")),
        );
        (code == 200 && info.contains("\"2.42.1\"")).then_some(())
    });
    assert_eq!(khmer_rows(&w, "hmis"), "1");
}

/// docs/disaster-recovery.md run as written on real pods, with `BACKUP=latest`: data deleted
/// after the nightly backup comes back, although step 2 backs up the damaged data first. Before
/// the runbook, a restore over the instance without consent is refused and changes nothing.
async fn the_runbook_with_latest_brings_the_rows_back(node: Node) {
    let w = World::new(node, "rn-runbook").await;
    w.create_instance("hmis", "2.42.1", "");
    w.wait_ready("hmis", "2.42.1", 240).await;
    insert_khmer_row(&w, "hmis", 990_001);
    let out = support::dhis2ctl(&["backup", "create", "hmis", "-n", &w.ns, "--wait"]).await;
    support::assert_success(&out, "the nightly backup");
    psql(
        &w.ns,
        &w.db_pod("hmis"),
        &format!("delete from organisationunit where name = '{KHMER_NAME}'"),
    );
    assert_eq!(khmer_rows(&w, "hmis"), "0", "the damage");

    let out = support::dhis2ctl(&[
        "restore", "latest", "--from", "hmis", "--to", "hmis", "-n", &w.ns,
    ])
    .await;
    assert!(
        !out.status.success(),
        "a restore over hmis without --confirm-overwrite is refused: {}",
        support::stdout(&out)
    );
    assert_eq!(khmer_rows(&w, "hmis"), "0", "nothing was changed");

    let vars = std::collections::BTreeMap::from([
        ("NS", w.ns.clone()),
        ("INSTANCE", "hmis".to_string()),
        ("YOUR_NAME", "Sokha Chan".to_string()),
        ("BACKUP", "latest".to_string()),
    ]);
    let ran = support::runbook::follow("In the cluster", &vars, &w.env).await;
    assert_eq!(ran, 5, "the cluster runbook's commands");
    assert_eq!(khmer_rows(&w, "hmis"), "1", "the rows of before the damage");
    w.wait_ready("hmis", "2.42.1", 120).await;
}

/// The operator's leader pod deleted while a backup's Job runs and while an upgrade migrates,
/// and the kubelet restarted mid-upgrade: each still ends right (one complete backup; the
/// upgrade succeeds on the new version).
async fn operator_and_kubelet_restarts_mid_backup_and_mid_upgrade(node: Node) {
    let w = World::new(node, "rn-restarts").await;
    w.create_instance(
        "hmis",
        "2.41.3",
        "  upgrade: {timeoutSeconds: 600}\n  dhisConf: {standin.migration.seconds: \"45\"}\n",
    );
    w.wait_ready("hmis", "2.41.3", 240).await;
    insert_khmer_row(&w, "hmis", 990_001);

    // Mid-backup: the leader goes while the Job runs.
    let out = support::dhis2ctl(&["backup", "create", "hmis", "-n", &w.ns]).await;
    support::assert_success(&out, "dhis2ctl backup create");
    let backups = Api::<Dhis2Backup>::namespaced(w.client.clone(), &w.ns);
    wait_for(120, "the backup to run", || async {
        let list = backups.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|b| b.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Running))
            .then_some(())
    })
    .await;
    support::real_node::delete_leader_pod();
    let backup = wait_for(
        300,
        "the backup to complete after the leader went",
        || async {
            let list = backups.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|b| {
                b.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(RunPhase::is_finished)
            })
        },
    )
    .await;
    let status = backup.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Completed), "{status:?}");
    let repo = format!("s3://{}/dhis2", w.bucket);
    assert_eq!(
        listed_backup_ids(&repo, Some("hmis")).await,
        vec![status.backup_id.clone().unwrap()],
        "exactly one complete backup"
    );

    // Mid-upgrade: the leader goes, then the kubelet restarts, while 2.42.1 migrates.
    let upgrading = start_upgrade(&w, "2.42.1");
    let api = Api::<Dhis2Instance>::namespaced(w.client.clone(), &w.ns);
    wait_for(300, "the upgrade to migrate", || async {
        let i = api.get("hmis").await.ok()?;
        let phase = i.status.as_ref()?.upgrade.as_ref()?.phase;
        (format!("{phase:?}") == "Migrating").then_some(())
    })
    .await;
    support::real_node::delete_leader_pod();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    support::real_node::restart_kubelet();
    let out = upgrading.await.unwrap();
    support::assert_success(&out, "dhis2ctl upgrade --wait across restarts");
    w.wait_ready("hmis", "2.42.1", 120).await;
    assert_eq!(schema_lines(&w, "hmis"), ["2.41", "2.42"]);
    assert_eq!(khmer_rows(&w, "hmis"), "1");
}

/// `helm install` of the chart (Helm's own SDK, scripts/helm.py) in namespaced mode, then
/// `helm test`: its pod, of the operator's image, reaches /healthz and /metrics through the
/// metrics Service by its DNS name, as Prometheus would.
async fn the_chart_installs_with_helm_and_its_helm_test_passes(node: Node) {
    let client = client().await;
    let release_ns = journey_namespace(&client, &node, "helm").await;
    let watched = journey_namespace(&client, &node, "helm-watched").await;
    let helm = |args: &[&str]| {
        let out = std::process::Command::new("python3")
            .arg("scripts/helm.py")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run scripts/helm.py");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "helm {}: {text}", args.join(" "));
        text
    };
    // The CRDs are the install.yaml operator's (cluster-wide); this release manages one empty
    // namespace, so it never meets the other journeys' objects.
    let values = serde_json::json!({
        "replicaCount": 1,
        "leaderElection": {"enabled": false},
        "rbac": {"mode": "namespaced", "namespaces": [watched]},
        "crds": {"create": false},
        "userRoles": {"create": false},
    })
    .to_string();
    helm(&[
        "install",
        "helm-journey",
        "charts/dhis2-operator",
        "-n",
        &release_ns,
        "--values",
        &values,
    ]);
    support::real_node::kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        &release_ns,
        "deployment/helm-journey-dhis2-operator",
        "--timeout=180s",
    ]);
    let tested = helm(&[
        "test",
        "helm-journey",
        "-n",
        &release_ns,
        "--timeout",
        "120",
    ]);
    assert!(
        tested.contains("GET /metrics: HTTP/1.0 200 OK") && tested.contains("tests passed"),
        "{tested}"
    );
    helm(&["uninstall", "helm-journey", "-n", &release_ns]);
}
