//! `dhis2ctl`'s cluster verbs as an administrator uses them: `backup create`, `backup list
//! INSTANCE`, `drill INSTANCE`, `restore … --from … --to …` and `status`, run as the real binary
//! with the harness's admin kubeconfig against the real operator (under its namespaced Role),
//! the real apiserver and job controller. The engine's Jobs are run by the Job harness against
//! the test PostgreSQL and SeaweedFS; DHIS2's pods are played by FakeKubelet, DHIS2 by FakeDhis2.

mod support;

use std::ops::Deref;
use std::process::Output;
use std::time::Duration;

use dhis2_operator::crd::Dhis2Backup;
use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use serde_json::json;
use support::fixtures::{Instance, up};
use support::kube_env::{FakeDhis2, client, namespace, wait_for};
use support::world::World;
use support::{count, dhis2ctl, dhis2ctl_with_env, json as parse_json, stderr, stdout};

/// One namespace with the operator, both kubelets, and `hmis`: a production instance on an
/// external database (seeded, DHIS2-shaped) whose repository is a fresh bucket.
struct Cli {
    world: World,
    _dhis2: FakeDhis2,
    source_db: String,
}

impl Deref for Cli {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

async fn world(prefix: &str) -> Cli {
    let world = World::start(prefix).await;
    let (source_db, _) = world.env.seeded_database("cli_src").await;
    world.external_database("hmis-db", &source_db).await;
    let dhis2 = FakeDhis2::start(up()).await;
    world
        .create_instance(
            Instance::new("hmis")
                .served_by(&dhis2.url)
                .database("hmis-db")
                .repository(world.bucket()),
        )
        .await;
    Cli {
        world,
        _dhis2: dhis2,
        source_db,
    }
}

impl Cli {
    /// `dhis2ctl ARGS -n NS`; a command still running after 4 minutes fails the test (a `--wait`
    /// must end). `dhis2ctl` itself checks that no password or S3 key is printed.
    async fn ctl(&self, args: &[&str]) -> Output {
        let mut args = args.to_vec();
        args.extend(["-n", self.ns.as_str()]);
        tokio::time::timeout(Duration::from_secs(240), dhis2ctl(&args))
            .await
            .unwrap_or_else(|_| panic!("dhis2ctl {args:?} still running after 4 minutes"))
    }

    /// `status hmis` once it shows `needle` (the operator summarises on the instance shortly
    /// after a backup or drill finishes).
    async fn status_showing(&self, needle: &str) -> String {
        wait_for(60, &format!("`status hmis` to show {needle}"), || async {
            let out = self.ctl(&["status", "hmis"]).await;
            assert_ok(&out, "status hmis");
            let text = stdout(&out);
            text.contains(needle).then_some(text)
        })
        .await
    }
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} exited {}:\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// The one line of stdout starting with `prefix`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line '{prefix}' in:\n{text}"))
}

#[tokio::test]
async fn an_unknown_instance_is_named_with_where_to_look() {
    let client = client().await;
    let ns = namespace(&client, "cli-unknown").await;
    for args in [
        vec!["backup", "create", "nosuch", "--wait"],
        vec!["drill", "nosuch", "--wait"],
        vec![
            "restore", "latest", "--from", "nosuch", "--to", "copy", "--wait",
        ],
        vec!["status", "nosuch"],
    ] {
        let mut args = args.clone();
        args.extend(["-n", ns.as_str()]);
        let out = dhis2ctl(&args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("Dhis2Instance nosuch not found in namespace {ns}"))
                && err.contains("`dhis2ctl get instances -A`"),
            "{args:?}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_drills_and_restores_are_asked_for_and_followed_from_the_command_line() {
    let w = world("cli-verbs").await;

    let out = w.ctl(&["backup", "list", "hmis"]).await;
    assert_ok(&out, "backup list");
    assert!(
        stdout(&out).contains("no Dhis2Backups of hmis"),
        "{}",
        stdout(&out)
    );
    assert!(
        w.status_showing("Last backup:  none")
            .await
            .contains("Next backup:  not scheduled")
    );

    // backup create --wait: exits 0 once Completed, with the id and the size.
    let out = w.ctl(&["backup", "create", "hmis", "--wait"]).await;
    assert_ok(&out, "backup create --wait");
    let backups = w.api::<Dhis2Backup>();
    let all = backups.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 1, "one Dhis2Backup");
    let name = all[0].metadata.name.clone().unwrap();
    let status = all[0].status.clone().unwrap();
    let id = status.backup_id.clone().unwrap();
    let size = status.size.clone().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains(&format!("backup {name} completed: id {id}")) && text.contains(&size),
        "{text}"
    );

    // backup list INSTANCE shows it, in a table and as JSON.
    let out = w.ctl(&["backup", "list", "hmis"]).await;
    assert_ok(&out, "backup list");
    let row = line(&stdout(&out), &name).to_string();
    assert!(
        row.contains("Completed") && row.contains(&id) && row.contains(&size),
        "{row}"
    );
    let out = w.ctl(&["backup", "list", "hmis", "-o", "json"]).await;
    assert_ok(&out, "backup list -o json");
    let listed = parse_json(&out);
    let listed = listed.as_array().expect("a JSON array");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"]["backupId"], json!(id));
    assert_eq!(listed[0]["spec"]["instanceRef"], json!("hmis"));

    // status shows the last backup.
    let text = w.status_showing(&id).await;
    assert!(line(&text, "Last backup:").contains(&size), "{text}");

    // drill --wait: exits 0 with PASSED, RTO and RPO; status then shows the drill.
    let out = w.ctl(&["drill", "hmis", "--wait"]).await;
    assert_ok(&out, "drill --wait");
    let text = stdout(&out);
    assert!(
        text.contains(&format!("of backup {id}: PASSED — RTO ")) && text.contains(", RPO "),
        "{text}"
    );
    let text = w.status_showing("RTO").await;
    assert!(!line(&text, "Last drill:").contains("none"), "{text}");

    // Over an existing instance without --confirm-overwrite: refused at once, nothing created,
    // DHIS2 of hmis never stopped.
    w.ready("hmis").await;
    let out = w
        .ctl(&[
            "restore", "latest", "--from", "hmis", "--to", "hmis", "--wait",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Dhis2Instance hmis exists and would be overwritten")
            && err.contains("--confirm-overwrite hmis"),
        "{err}"
    );
    let restores = w.restores();
    assert!(
        restores
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // A production instance also needs an approver.
    let out = w
        .ctl(&[
            "restore",
            "latest",
            "--from",
            "hmis",
            "--to",
            "hmis",
            "--confirm-overwrite",
            "hmis",
            "--wait",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("--approved-by"), "{}", stderr(&out));
    assert!(
        restores
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(w.deployment_replicas("hmis").await, Some(1));

    // restore latest into a new instance, on a database of its own: completes, --wait exits 0.
    let (copy_db, _) = w.env.create_database("cli_copy").await;
    w.external_database("copy-db", &copy_db).await;
    let copy_dhis2 = FakeDhis2::start(up()).await;
    let instances = w.instances();
    let restore = w.ctl(&[
        "restore",
        "latest",
        "--from",
        "hmis",
        "--to",
        "hmis-copy",
        "--database",
        "copy-db",
        "--wait",
    ]);
    let reach_copy = async {
        // This cluster's operator reaches DHIS2 through the override (no cluster network here).
        wait_for(60, "hmis-copy to be created", || async {
            instances.get("hmis-copy").await.ok()
        })
        .await;
        w.reach_dhis2_at("hmis-copy", &copy_dhis2.url).await;
    };
    let (out, ()) = tokio::join!(restore, reach_copy);
    assert_ok(&out, "restore --to hmis-copy --wait");
    let text = stdout(&out);
    assert!(text.contains("into hmis-copy: Completed"), "{text}");
    assert!(
        text.contains(&format!("backup {id} restored into hmis-copy")),
        "{text}"
    );
    let copy = instances.get("hmis-copy").await.unwrap();
    assert_eq!(copy.spec.database_ref.as_deref(), Some("copy-db"));
    assert_eq!(
        count(&w.env, &copy_db, "datavalue").await,
        count(&w.env, &w.source_db, "datavalue").await
    );

    // A failing backup: --wait exits 1 with the reason, and the password is never printed.
    w.set_pg_password("hmis-db", "not-the-password").await;
    let first = w.ctl(&["backup", "create", "hmis", "--wait"]).await;
    assert_eq!(first.status.code(), Some(1), "{}", stdout(&first));
    let text = stdout(&first);
    assert!(
        line(&text, "backup hmis-backup-").contains("failed: "),
        "{text}"
    );
    assert!(text.contains("password authentication failed"), "{text}");
    let out = w
        .ctl(&["backup", "create", "hmis", "--wait", "-o", "json"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let failed = parse_json(&out);
    assert_eq!(failed["status"]["phase"], json!("Failed"), "{failed}");
    for out in [&first, &out] {
        let all = format!("{}{}", stdout(out), stderr(out));
        assert!(!all.contains("not-the-password"), "{all}");
    }
    // The Jobs never carried a secret either.
    let jobs = w.list::<Job>().await;
    let jobs = serde_json::to_string(&jobs).unwrap();
    for secret in w.env.secrets() {
        assert!(!jobs.contains(&secret));
    }
}

/// `--kubeconfig FILE` on a cluster verb: the file named is the one used, whatever KUBECONFIG
/// says, and a file that cannot be read is named with the flag.
#[tokio::test]
async fn kubeconfig_names_the_cluster_to_use() {
    let client = client().await;
    let ns = namespace(&client, "cli-kubeconfig").await;
    let real = std::env::var("KUBECONFIG").expect("KUBECONFIG of the test cluster");
    // No kubeconfig where dhis2ctl would look by itself (nor a ~/.kube/config).
    let elsewhere = [
        ("KUBECONFIG", "/nonexistent/kubeconfig"),
        ("HOME", "/nonexistent"),
    ];
    let lost = dhis2ctl_with_env(&["get", "instances", "-n", &ns], &elsewhere).await;
    assert_ne!(lost.status.code(), Some(0), "{}", stderr(&lost));
    let found = dhis2ctl_with_env(
        &["get", "instances", "-n", &ns, "--kubeconfig", &real],
        &elsewhere,
    )
    .await;
    assert_ok(&found, "get instances --kubeconfig");
    let bad = dhis2ctl(&[
        "status",
        "hmis",
        "-n",
        &ns,
        "--kubeconfig",
        "/nonexistent/config",
    ])
    .await;
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("--kubeconfig /nonexistent/config"),
        "{}",
        stderr(&bad)
    );
}
