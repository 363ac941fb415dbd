//! Upgrading DHIS2 through `Dhis2Instance.spec.version`, end to end: the real apiserver and
//! controllers, the operator under its namespaced Role, the pre-upgrade backup and the rollback
//! restore run by the Job harness against the real PostgreSQL (the real DHIS2 2.42 database) and
//! SeaweedFS. DHIS2 is played by MigratingDhis2: it runs the version of the pod's image and
//! really migrates the database (Flyway rows and a marker table, in one transaction).

mod support;

use std::ops::{Deref, DerefMut};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use serde_json::json;

use dhis2_operator::crd::dhis2_restore::RestorePhase;
use dhis2_operator::crd::upgrade::{UpgradeOutcome, UpgradePhase};
use dhis2_operator::crd::{Dhis2Backup, Dhis2Instance, Dhis2Restore};
use support::cluster_objects::s3_repository;
use support::fixtures::Instance;
use support::kube_env::*;
use support::migrating_dhis2::{MigratingDhis2, Migration, marker_table};
use support::world::World;

/// One namespace with the operator (its clock in a file), both kubelets, and `hmis` running
/// DHIS2 2.42.4 on a copy of the real 2.42 database.
struct Upgrade {
    world: World,
    dhis2: MigratingDhis2,
    db: String,
}

impl Deref for Upgrade {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl DerefMut for Upgrade {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

async fn world(prefix: &str, migration: Migration) -> Upgrade {
    world_with(prefix, migration, json!({"timeoutSeconds": 600})).await
}

async fn world_with(prefix: &str, migration: Migration, upgrade: serde_json::Value) -> Upgrade {
    let world = World::builder(prefix)
        .clock(TestClock::starting_now())
        .start()
        .await;
    let (db, url) = world.env.real_dhis2_database("upg").await;
    world.external_database("hmis-db", &db).await;
    let dhis2 =
        MigratingDhis2::start(world.client.clone(), &world.ns, "hmis", &url, migration).await;
    world
        .create_instance(
            Instance::new("hmis")
                .served_by(&dhis2.url)
                .version("2.42.4")
                .database("hmis-db")
                .repository(world.bucket())
                .spec("upgrade", upgrade),
        )
        .await;
    let w = Upgrade { world, dhis2, db };
    w.runs("2.42.4").await;
    w
}

impl Upgrade {
    async fn set_version(&self, version: &str) {
        self.instances()
            .patch(
                "hmis",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"version": version}})),
            )
            .await
            .unwrap();
    }

    /// Ready, reporting `version`, with no upgrade in progress.
    async fn runs(&self, version: &str) -> Dhis2Instance {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            let i = self.instances().get("hmis").await.unwrap();
            let s = i.status.clone().unwrap_or_default();
            if s.phase.as_deref() == Some("Ready")
                && s.version.as_deref() == Some(version)
                && s.deployed_version.as_deref() == Some(version)
            {
                return i;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "hmis not Ready on {version} after 180 s: {}\nDHIS2: {:?}",
                    serde_json::to_string_pretty(&s).unwrap(),
                    self.dhis2.observed()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }

    async fn upgrade_phase(&self, phase: UpgradePhase, secs: u64) -> Dhis2Instance {
        let instances = self.instances();
        wait_for(secs, &format!("upgrade phase {phase:?}"), || async {
            let i = instances.get("hmis").await.ok()?;
            (i.status.as_ref()?.upgrade.as_ref()?.phase == phase).then_some(i)
        })
        .await
    }

    async fn deployment(&self) -> (String, i32) {
        let d = self.api::<Deployment>().get("hmis").await.unwrap();
        let image = d.spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap();
        (image, d.spec.replicas.unwrap_or(1))
    }

    async fn backups(&self) -> Vec<Dhis2Backup> {
        self.list().await
    }

    async fn query_one(&self, sql: &str) -> Option<String> {
        self.env
            .client(&self.db)
            .await
            .query_opt(sql, &[])
            .await
            .unwrap()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
    }

    async fn schema_version(&self) -> String {
        self.query_one(
            "SELECT version FROM flyway_schema_history WHERE success AND version IS NOT NULL
             ORDER BY string_to_array(version, '.')::int[] DESC LIMIT 1",
        )
        .await
        .unwrap()
    }

    async fn has_table(&self, table: &str) -> bool {
        self.env
            .client(&self.db)
            .await
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("public.{table}")],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn execute(&self, sql: &str) {
        self.env
            .client(&self.db)
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn drop_database(&self) {
        let db = self.db.clone();
        let admin = self.env.client("postgres").await;
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await;
    }
}

/// What a national HMIS holds before its upgrade: Khmer names, a materialized SQL view.
async fn write_before_upgrade(w: &Upgrade) {
    w.execute(
        "CREATE TABLE written_before_upgrade (note text);
         INSERT INTO written_before_upgrade VALUES ('របាយការណ៍ខែវិច្ឆិកា');
         CREATE MATERIALIZED VIEW _view_orgunit_names AS SELECT uid, name FROM organisationunit;",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_stops_dhis2_backs_up_migrates_and_runs_the_new_version() {
    let w = world("upg-ok", Migration::Quick).await;
    write_before_upgrade(&w).await;
    w.set_version("2.43.0").await;
    let i = w.runs("2.43.0").await;
    let status = i.status.unwrap();
    assert_eq!(status.upgrade, None, "{:?}", status.upgrade);
    let done = &status.upgrade_history[0];
    assert_eq!(done.outcome, UpgradeOutcome::Succeeded);
    assert_eq!(
        (done.from_version.as_str(), done.to_version.as_str()),
        ("2.42.4", "2.43.0")
    );
    let backup_id = done.backup_id.clone().expect("the pre-upgrade backup's id");

    // One pre-upgrade backup, completed, of the database as it was before the migration.
    let backups = w.backups().await;
    assert_eq!(backups.len(), 1);
    let backup = backups[0].status.clone().unwrap();
    assert_eq!(backup.backup_id.as_deref(), Some(backup_id.as_str()));
    assert_eq!(
        backup.verified,
        Some(true),
        "re-read in full before the migration"
    );
    assert!(
        backup.dhis2_version.unwrap().starts_with("2.42."),
        "backed up before the migration"
    );

    // The migration ran once, on the database DHIS2 2.42.4 had stopped using.
    assert!(w.has_table(&marker_table(43)).await);
    assert!(w.schema_version().await.starts_with("2.43."));
    assert!(
        w.dhis2.version_conflicts().is_empty(),
        "{:?}",
        w.dhis2.observed()
    );
    assert_eq!(w.dhis2.served_versions(), vec!["2.42.4", "2.43.0"]);
    // Materialized SQL views dropped as DHIS2's upgrade guide asks; the data kept.
    assert!(!w.has_table("_view_orgunit_names").await);
    assert_eq!(
        w.query_one("SELECT note FROM written_before_upgrade")
            .await
            .as_deref(),
        Some("របាយការណ៍ខែវិច្ឆិកា")
    );
    assert_eq!(w.deployment().await, ("dhis2/core:2.43.0".to_string(), 1));
    assert_eq!(w.events("UpgradeSucceeded").await.len(), 1);
    assert!(w.list::<Dhis2Restore>().await.is_empty());
    w.drop_database().await;
}

/// `hmis` with data written before, asked for 2.43.0, whose migration has begun and never ends.
async fn stuck_migrating(prefix: &str) -> (Upgrade, Dhis2Instance) {
    let w = world(prefix, Migration::Never).await;
    write_before_upgrade(&w).await;
    w.set_version("2.43.0").await;
    let i = w.upgrade_phase(UpgradePhase::Migrating, 180).await;
    w.migration_started().await;
    (w, i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_never_finishes_is_rolled_back_by_restoring_the_backup() {
    let (w, _) = stuck_migrating("upg-rb").await;
    // Within the timeout it waits; past it, it rolls back.
    w.clock().advance(300);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        w.instances()
            .get("hmis")
            .await
            .unwrap()
            .status
            .unwrap()
            .upgrade
            .unwrap()
            .phase,
        UpgradePhase::Migrating
    );
    w.clock().advance(301);
    let i = w.upgrade_phase(UpgradePhase::Failed, 240).await;
    let upgrade = i.status.clone().unwrap().upgrade.unwrap();
    assert_eq!(
        upgrade.outcome,
        Some(UpgradeOutcome::RolledBack),
        "{upgrade:?}"
    );
    let message = upgrade.message.unwrap();
    assert!(message.contains("did not report its version"), "{message}");
    w.runs("2.42.4").await;

    // The row written before the upgrade is there; the migration's changes are gone.
    assert_eq!(
        w.query_one("SELECT note FROM written_before_upgrade")
            .await
            .as_deref(),
        Some("របាយការណ៍ខែវិច្ឆិកា")
    );
    assert!(!w.has_table(&marker_table(43)).await);
    assert!(w.schema_version().await.starts_with("2.42."));
    assert_eq!(w.deployment().await, ("dhis2/core:2.42.4".to_string(), 1));
    assert!(
        w.dhis2.version_conflicts().is_empty(),
        "{:?}",
        w.dhis2.observed()
    );
    assert_eq!(w.backups().await.len(), 1, "one backup");
    assert_eq!(w.list::<Dhis2Restore>().await.len(), 1, "one restore");
    let history = i.status.unwrap().upgrade_history;
    assert_eq!(history[0].outcome, UpgradeOutcome::RolledBack);
    assert_eq!(w.events("UpgradeRollingBack").await.len(), 1);
    assert_eq!(w.events("UpgradeFailed").await.len(), 1);

    // It stays failed (no second attempt) until spec.version changes; back to 2.42.4 clears it.
    w.set_version("2.42.4").await;
    wait_for(60, "the failed upgrade cleared", || async {
        let i = w.instances().get("hmis").await.ok()?;
        i.status?.upgrade.is_none().then_some(())
    })
    .await;
    assert_eq!(w.list::<Dhis2Restore>().await.len(), 1);
    w.drop_database().await;
}

/// The instance's Service selects the pods of `instance` (and only those).
async fn service_sends_users_to(w: &World, instance: &str) {
    let service = w.api::<Service>().get("hmis").await.unwrap();
    let selector = service.spec.unwrap().selector.unwrap();
    assert_eq!(
        selector
            .get("app.kubernetes.io/instance")
            .map(String::as_str),
        Some(instance),
        "{selector:?}"
    );
    let labels = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = w
        .api::<Pod>()
        .list(&ListParams::default().labels(&labels))
        .await
        .unwrap();
    assert!(!pods.items.is_empty(), "no pod behind the Service");
    for pod in pods {
        assert_eq!(
            pod.labels()
                .get("app.kubernetes.io/instance")
                .map(String::as_str),
            Some(instance),
            "{}",
            pod.name_any()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_new_version_migrates_a_read_only_copy_serves_users_until_the_upgrade_ends() {
    let w = world_with(
        "upg-ro",
        Migration::Never,
        json!({"timeoutSeconds": 600, "readOnlyDuringUpgrade": true}),
    )
    .await;
    write_before_upgrade(&w).await;
    let copy_db = format!("{}_readonly", &w.db[..w.db.len().min(24)]);
    let copy_dhis2 = MigratingDhis2::start(
        w.client.clone(),
        &w.ns,
        "hmis-readonly",
        &w.env.url_for(&copy_db),
        Migration::Quick,
    )
    .await;
    w.set_version("2.43.0").await;
    w.upgrade_phase(UpgradePhase::Migrating, 180).await;
    // The copy is probed where its fake DHIS2 listens (as the instance is).
    let copy = wait_for(60, "the read-only copy", || async {
        w.instances().get_opt("hmis-readonly").await.ok()?
    })
    .await;
    assert_eq!(copy.spec.version, "2.42.4", "the previous version");
    w.reach_dhis2_at("hmis-readonly", &copy_dhis2.url).await;
    let i = wait_for(240, "users sent to the read-only copy", || async {
        let i = w.instances().get("hmis").await.ok()?;
        let s = i.status.clone()?;
        s.read_only_copy.as_ref().filter(|c| c.serving)?;
        Some(i)
    })
    .await;
    let status = i.status.unwrap();
    assert_eq!(status.upgrade.unwrap().phase, UpgradePhase::Migrating);
    service_sends_users_to(&w, "hmis-readonly").await;
    // The copy: DHIS2 2.42.4, read-only, on what was written before the upgrade.
    let conf = w
        .api::<Secret>()
        .get("hmis-readonly-dhis-conf")
        .await
        .unwrap();
    let conf = String::from_utf8(conf.data.unwrap()["dhis.conf"].0.clone()).unwrap();
    assert!(conf.contains("system.read_only_mode = on"), "{conf}");
    assert_eq!(copy_dhis2.served_versions(), vec!["2.42.4"]);
    let note: String = w
        .env
        .client(&copy_db)
        .await
        .query_one("SELECT note FROM written_before_upgrade", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "របាយការណ៍ខែវិច្ឆិកា");
    let backup = &w.backups().await[0];
    assert!(backup.spec.include_analytics, "dashboards need analytics");

    // The migration never finishes: rolled back; the copy serves until the instance is back.
    w.clock().advance(601);
    w.upgrade_phase(UpgradePhase::Failed, 240).await;
    wait_for(120, "the read-only copy removed", || async {
        let i = w.instances().get("hmis").await.ok()?;
        let gone = w.instances().get_opt("hmis-readonly").await.ok()?.is_none();
        (i.status?.read_only_copy.is_none() && gone).then_some(())
    })
    .await;
    w.runs("2.42.4").await;
    service_sends_users_to(&w, "hmis").await;
    let left: i64 = w
        .env
        .client("postgres")
        .await
        .query_one(
            "SELECT count(*) FROM pg_database WHERE starts_with(datname, $1)",
            &[&copy_db],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the copy's databases are dropped");
    assert!(
        w.dhis2.version_conflicts().is_empty() && copy_dhis2.version_conflicts().is_empty(),
        "{:?} {:?}",
        w.dhis2.observed(),
        copy_dhis2.observed()
    );
    w.drop_database().await;
}

/// A database account without CREATEDB (as CloudNativePG's application role, or a ministry's
/// least-privilege account) cannot hold a read-only copy: the copy is reported with the fix and
/// the upgrade goes on to the new version without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_copy_that_cannot_be_made_is_reported_and_the_upgrade_goes_on() {
    let w = world_with(
        "upg-ro-nocreatedb",
        Migration::Slow(std::time::Duration::from_secs(20)),
        json!({"timeoutSeconds": 600, "readOnlyDuringUpgrade": true}),
    )
    .await;
    let role = format!("{}_app", w.db);
    w.env
        .client("postgres")
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'app-password' NOCREATEDB NOSUPERUSER IN ROLE pg_read_all_data"
        ))
        .await
        .unwrap();
    w.api::<Secret>()
        .patch(
            "hmis-db-pg",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"username": role, "password": "app-password"}})),
        )
        .await
        .unwrap();
    let secret = w.api::<Secret>();
    wait_for(
        60,
        "dhis.conf to use the account without CREATEDB",
        || async {
            let conf = secret.get("hmis-dhis-conf").await.ok()?;
            let conf = String::from_utf8(conf.data?.get("dhis.conf")?.0.clone()).ok()?;
            conf.contains(&role).then_some(())
        },
    )
    .await;
    w.set_version("2.43.0").await;
    let i = wait_for(240, "the copy reported as not made", || async {
        let i = w.instances().get("hmis").await.ok()?;
        let copy = i.status.as_ref()?.read_only_copy.clone()?;
        copy.failure.is_some().then_some(i)
    })
    .await;
    let status = i.status.unwrap();
    let copy = status.read_only_copy.unwrap();
    let failure = copy.failure.unwrap();
    assert!(
        failure.contains(&format!("ALTER ROLE {role} CREATEDB")),
        "{failure}"
    );
    assert!(!copy.serving);
    assert!(!failure.contains("app-password"), "{failure}");
    assert!(
        w.instances()
            .get_opt("hmis-readonly")
            .await
            .unwrap()
            .is_none(),
        "no copy half made"
    );
    let i = w.runs("2.43.0").await;
    let status = i.status.unwrap();
    assert_eq!(
        status.upgrade_history[0].outcome,
        UpgradeOutcome::Succeeded,
        "{:?}",
        status.upgrade_history
    );
    assert_eq!(status.read_only_copy, None, "nothing left of the copy");
    assert_eq!(w.events("ReadOnlyCopyFailed").await.len(), 1);
    service_sends_users_to(&w, "hmis").await;
    w.drop_database().await;
    let _ = w
        .env
        .client("postgres")
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_and_a_blocked_preflight_check_are_refused_and_dhis2_keeps_running() {
    let w = world("upg-no", Migration::Quick).await;
    w.set_version("2.41.9").await;
    let i = w.upgrade_phase(UpgradePhase::Refused, 60).await;
    let message = i.status.unwrap().upgrade.unwrap().message.unwrap();
    assert!(message.contains("cannot be downgraded"), "{message}");
    assert!(message.contains("set spec.version: 2.42.4"), "{message}");
    assert_eq!(w.deployment().await, ("dhis2/core:2.42.4".to_string(), 1));

    // Duplicate default category option combos: 2.43's migration would fail on them.
    w.set_version("2.42.4").await;
    wait_for(60, "the refusal cleared", || async {
        let i = w.instances().get("hmis").await.ok()?;
        i.status?.upgrade.is_none().then_some(())
    })
    .await;
    w.execute(
        "UPDATE categoryoptioncombo SET uid = 'UpgDefault1' WHERE uid = 'HllvX50cXC0';
         INSERT INTO categoryoptioncombo (categoryoptioncomboid, uid, name, created, lastupdated)
         SELECT max(categoryoptioncomboid) + 1, 'UpgDefault2', 'default', now(), now()
         FROM categoryoptioncombo;",
    )
    .await;
    w.set_version("2.43.0").await;
    let i = w.upgrade_phase(UpgradePhase::Refused, 60).await;
    let status = i.status.unwrap();
    let message = status.upgrade.unwrap().message.unwrap();
    assert!(
        message.contains("default category option combo"),
        "{message}"
    );
    assert!(message.contains("UpgDefault2"), "{message}");
    assert_eq!(status.upgrade_history.len(), 2);
    assert!(
        status
            .upgrade_history
            .iter()
            .all(|r| r.outcome == UpgradeOutcome::Refused)
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True", "DHIS2 2.42.4 keeps serving");
    assert_eq!(w.deployment().await, ("dhis2/core:2.42.4".to_string(), 1));
    assert!(w.backups().await.is_empty());
    assert!(!w.has_table(&marker_table(43)).await);
    // Both refusals are Events (the recorder folds the second into the first's series).
    assert!(!w.events("UpgradeRefused").await.is_empty());
    w.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_at_every_step_of_an_upgrade_resumes_it_with_one_backup() {
    let mut w = world(
        "upg-kill",
        Migration::Slow(std::time::Duration::from_secs(4)),
    )
    .await;
    // Every status write is a watch event: polling could miss a phase the operator left quickly.
    let instances = w.instances();
    let mut events = instances
        .watch(&WatchParams::default().fields("metadata.name=hmis"), "0")
        .await
        .unwrap()
        .boxed();
    w.set_version("2.43.0").await;
    let mut seen = vec![];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("the upgrade did not finish; phases seen: {seen:?}"))
            .expect("the watch ended")
            .unwrap();
        let i = match event {
            WatchEvent::Added(i) | WatchEvent::Modified(i) => i,
            WatchEvent::Bookmark(_) => continue,
            other => panic!("unexpected watch event {other:?}"),
        };
        let s = i.status.clone().unwrap_or_default();
        let phase = s.upgrade.as_ref().map(|u| u.phase);
        if phase.is_none() && s.deployed_version.as_deref() == Some("2.43.0") {
            break;
        }
        if let Some(p) = phase
            && !seen.contains(&p)
        {
            seen.push(p);
            w.operator.kill().await;
            w.operator.restart();
        }
        assert!(seen.len() < 8, "{seen:?}");
    }
    for step in [
        UpgradePhase::Stopping,
        UpgradePhase::BackingUp,
        UpgradePhase::Migrating,
    ] {
        assert!(seen.contains(&step), "killed in {step:?}: {seen:?}");
    }
    w.runs("2.43.0").await;
    assert_eq!(w.backups().await.len(), 1, "one backup");
    assert!(w.list::<Dhis2Restore>().await.is_empty());
    assert!(w.dhis2.version_conflicts().is_empty());
    let history = w
        .instances()
        .get("hmis")
        .await
        .unwrap()
        .status
        .unwrap()
        .upgrade_history;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, UpgradeOutcome::Succeeded);
    w.drop_database().await;
}

impl Upgrade {
    /// Waits until the new version has begun migrating the database.
    async fn migration_started(&self) {
        wait_for(60, "the migration to start", || async {
            self.dhis2
                .observed()
                .iter()
                .any(|o| format!("{o:?}").starts_with("MigrationStarted"))
                .then_some(())
        })
        .await;
    }

    /// Sets one key of a Secret of the namespace.
    async fn set_secret(&self, name: &str, key: &str, value: &str) {
        self.api::<Secret>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {key: value}})),
            )
            .await
            .unwrap();
    }

    async fn patch_spec(&self, spec: serde_json::Value) {
        self.instances()
            .patch(
                "hmis",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// Refused for `to` with a message naming all of `why`, DHIS2 untouched; then cleared.
    async fn refused_before_dhis2_stops(&self, to: &str, why: &[&str]) {
        self.set_version(to).await;
        let i = self.upgrade_phase(UpgradePhase::Refused, 90).await;
        let message = i.status.unwrap().upgrade.unwrap().message.unwrap();
        for part in why {
            assert!(message.contains(part), "{part:?} not in: {message}");
        }
        assert!(message.contains("nothing was changed"), "{message}");
        assert_eq!(
            self.deployment().await,
            ("dhis2/core:2.42.4".to_string(), 1)
        );
        assert!(self.backups().await.is_empty(), "DHIS2 was never stopped");
        self.set_version("2.42.4").await;
        wait_for(60, "the refusal cleared", || async {
            let i = self.instances().get("hmis").await.ok()?;
            i.status?.upgrade.is_none().then_some(())
        })
        .await;
    }
}

/// An upgrade whose success the operator could not see (DHIS2 reports its version only to an
/// authenticated /api/system/info) would end in a rollback that discards what users wrote to the
/// new version; one whose backup the cluster could not decrypt would wait forever in RollingBack.
/// Both are refused while DHIS2 still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_the_operator_could_not_confirm_or_roll_back_is_refused_before_dhis2_stops() {
    let w = world("upg-safe", Migration::Quick).await;
    w.set_secret("dhis2-admin", "password", "not-the-password")
        .await;
    w.refused_before_dhis2_stops(
        "2.43.0",
        &["refused the account in Secret dhis2-admin", "HTTP 401"],
    )
    .await;
    let (user, password) = ADMIN;
    w.set_secret("dhis2-admin", "password", password).await;
    assert_eq!(user, "operator");

    // Encrypted to a public key only: no restore Job could read the pre-upgrade backup back.
    let mut repository = s3_repository("unused");
    repository["encryption"] = json!({"recipients": [
        "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]});
    w.patch_spec(json!({"backup": {"repository": repository.clone()}}))
        .await;
    w.refused_before_dhis2_stops(
        "2.43.0",
        &["could not roll this upgrade back", "identitySecretRef"],
    )
    .await;
    // Named but not in the cluster ("create it when you need it"): still no way back.
    repository["encryption"]["identitySecretRef"] = json!("backup-identity");
    w.patch_spec(json!({"backup": {"repository": repository}}))
        .await;
    w.refused_before_dhis2_stops(
        "2.43.0",
        &[
            "Secret backup-identity",
            "could not decrypt the pre-upgrade backup",
        ],
    )
    .await;
    w.drop_database().await;
}

/// After the upgrade and its rollback both failed, the database may be half-migrated: setting
/// spec.version back must not start the old DHIS2 on it, and the documented way out (a restore
/// of the pre-upgrade backup over the instance) must get DHIS2 running again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_rollback_dhis2_stays_stopped_until_a_restore_brings_it_back() {
    let (w, i) = stuck_migrating("upg-rbf").await;
    let backup = i.status.unwrap().upgrade.unwrap().backup_name.unwrap();
    // The rollback's restore cannot read the repository: it fails.
    w.set_secret("backup-s3", "secretKey", "wrong-secret-key")
        .await;
    w.clock().advance(601);
    let i = w.upgrade_phase(UpgradePhase::Failed, 300).await;
    let upgrade = i.status.unwrap().upgrade.unwrap();
    assert_eq!(
        upgrade.outcome,
        Some(UpgradeOutcome::RollbackFailed),
        "{upgrade:?}"
    );
    assert_eq!(w.deployment().await.1, 0);

    // spec.version back to the old version: DHIS2 stays stopped, and says why.
    w.set_version("2.42.4").await;
    wait_for(60, "the refusal to start DHIS2 explained", || async {
        let i = w.instances().get("hmis").await.ok()?;
        let u = i.status?.upgrade?;
        u.message?
            .contains("stays stopped whatever spec.version says")
            .then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(w.deployment().await, ("dhis2/core:2.42.4".to_string(), 0));

    // The way out: restore the pre-upgrade backup over the instance.
    w.set_secret("backup-s3", "secretKey", &w.env.secret_key)
        .await;
    w.create::<Dhis2Restore>(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Restore",
        "metadata": {"name": "after-failed-rollback"},
        "spec": {"source": {"instance": "hmis", "backupRef": backup},
            "target": {"instance": "hmis"}, "confirmOverwrite": "hmis",
            "approvedBy": "Dr Sok Chenda", "regenerateAnalytics": false}
    }))
    .await;
    let restores = w.restores();
    wait_for(300, "the restore to complete", || async {
        let r = restores.get("after-failed-rollback").await.ok()?;
        (r.status?.phase? == RestorePhase::Completed).then_some(())
    })
    .await;
    let i = w.runs("2.42.4").await;
    let upgrade = i.status.unwrap().upgrade;
    assert!(upgrade.is_none(), "cleared once recovered: {upgrade:?}");
    assert_eq!(w.events("UpgradeRecovered").await.len(), 1);
    assert_eq!(
        w.query_one("SELECT note FROM written_before_upgrade")
            .await
            .as_deref(),
        Some("របាយការណ៍ខែវិច្ឆិកា")
    );
    assert!(!w.has_table(&marker_table(43)).await);
    assert_eq!(w.deployment().await, ("dhis2/core:2.42.4".to_string(), 1));
    w.drop_database().await;
}
