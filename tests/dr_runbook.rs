//! docs/disaster-recovery.md, run as written: every command of its `sh` blocks, in order,
//! through bash with the variables its `export` lines name (set here to this test's namespace,
//! databases and bucket), on the real DHIS2 2.42 database, after the damage an officer would
//! face: data values deleted after the nightly backup (and, on the plain server, a file store
//! file). Each command must succeed and, at the end, the data is back. In the cluster the real
//! operator (under its namespaced Role) does the work against the real apiserver; its Jobs are
//! run by the Job harness; DHIS2 is the fake.

mod support;

use std::collections::BTreeMap;

use dhis2_operator::crd::Dhis2Backup;
use support::fixtures::Instance;
use support::kube_env::{Dhis2State, FakeDhis2};
use support::runbook::{blocks, follow, run};
use support::world::World;
use support::{Env, count};

async fn delete_recent_data_values(env: &Env, db: &str) -> i64 {
    let client = env.client(db).await;
    let deleted = client
        .execute(
            "DELETE FROM datavalue WHERE ctid IN (SELECT ctid FROM datavalue LIMIT 500)",
            &[],
        )
        .await
        .expect("damage the data");
    assert!(deleted > 0);
    deleted as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_runbook_brings_lost_data_back() {
    let w = World::start("dr-runbook").await;
    let (env, ns) = (&w.env, &w.ns);
    let (db, _) = env.real_dhis2_database("dr_cluster").await;
    w.external_database("hmis-db", &db).await;
    let dhis2 = FakeDhis2::start(Dhis2State::Up {
        version: "2.42.1".into(),
        revision: "r".into(),
    })
    .await;
    w.create_instance(
        Instance::new("hmis")
            .served_by(&dhis2.url)
            .version("2.42.1")
            .database("hmis-db")
            .repository(w.bucket()),
    )
    .await;
    w.ready("hmis").await;

    // Last night's backup, then the damage.
    let mut vars = BTreeMap::from([
        ("NS", ns.clone()),
        ("INSTANCE", "hmis".to_string()),
        ("YOUR_NAME", "Sokha Chan".to_string()),
    ]);
    run(
        "dhis2ctl backup create \"$INSTANCE\" -n \"$NS\" --wait",
        &vars,
        env,
    )
    .await;
    let nightly = w
        .list::<Dhis2Backup>()
        .await
        .into_iter()
        .find_map(|b| b.status?.backup_id)
        .expect("the nightly backup's id");
    let before = count(env, &db, "datavalue").await;
    let deleted = delete_recent_data_values(env, &db).await;
    assert_eq!(count(env, &db, "datavalue").await, before - deleted);

    // The officer follows the runbook with `BACKUP=latest` (step 3: the damage is newer than
    // the nightly backup): the backup step 2 takes of the damaged data must not be the one
    // restored.
    assert!(!nightly.is_empty());
    vars.insert("BACKUP", "latest".to_string());
    let ran = follow("In the cluster", &vars, env).await;
    assert_eq!(ran, 5, "the cluster runbook's commands");
    assert_eq!(
        count(env, &db, "datavalue").await,
        before,
        "the data values deleted after the backup are back"
    );
    let hmis = w.instances().get("hmis").await.unwrap();
    assert_eq!(hmis.status.unwrap().phase.as_deref(), Some("Ready"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plain_server_runbook_brings_lost_data_and_files_back() {
    let env = support::env();
    let (db, url) = env.real_dhis2_database("dr_plain").await;
    let (_scratch, scratch_url) = env.create_database("dr_plain_scratch").await;
    let (_, repo) = env.create_bucket("dr-plain").await;
    let files = tempfile::tempdir().unwrap();
    let report = files.path().join("fileResources/report.pdf");
    std::fs::create_dir_all(report.parent().unwrap()).unwrap();
    std::fs::write(&report, "ការរាយការណ៍ប្រចាំខែ").unwrap();
    let vars = BTreeMap::from([
        ("REPO", repo),
        ("INSTANCE", "hmis".to_string()),
        ("DATABASE_URL", url),
        ("FILES_DIR", files.path().display().to_string()),
        ("SCRATCH_DATABASE_URL", scratch_url),
    ]);
    // Last night's backup (the systemd timer's), then the damage.
    let out = run(
        "dhis2ctl backup run --database-url \"$DATABASE_URL\" --repo \"$REPO\" --instance \"$INSTANCE\" --files-dir \"$FILES_DIR\" -o json",
        &vars,
        &env,
    )
    .await;
    let nightly: serde_json::Value = serde_json::from_str(&out).expect("backup run -o json");
    let nightly = nightly["id"].as_str().expect("the backup's id").to_string();
    let before = count(&env, &db, "datavalue").await;
    delete_recent_data_values(&env, &db).await;
    std::fs::remove_file(&report).unwrap();

    let mut vars = vars;
    assert!(!nightly.is_empty());
    vars.insert("BACKUP", "latest".to_string());
    let ran = follow("On a plain server", &vars, &env).await;
    assert_eq!(ran, 6, "the plain-server runbook's commands");
    assert_eq!(count(&env, &db, "datavalue").await, before);
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "ការរាយការណ៍ប្រចាំខែ"
    );
}

#[test]
fn the_runbook_names_only_commands_that_exist() {
    // Every command is dhis2ctl or psql: tools the officer has (the test runs them all).
    for heading in ["In the cluster", "On a plain server"] {
        for block in blocks(heading) {
            for command in block.commands {
                assert!(
                    command.starts_with("dhis2ctl ") || command.starts_with("psql "),
                    "{command}"
                );
            }
        }
    }
}
