//! `Dhis2Database` with `provider: cnpg`: the operator makes a CloudNativePG `Cluster` (and the
//! Barman Cloud plugin's `ObjectStore` and a `ScheduledBackup` for WAL archiving and base
//! backups), reports CloudNativePG's health, runs our logical backups and drills against it, and
//! recovers it to a point in time. CloudNativePG's real CRDs (v1.30.0, plugin v0.14.0) on the real
//! kube-apiserver validate every object the operator makes; `support::cnpg::FakeCnpg` plays
//! CloudNativePG's controller against the local PostgreSQL (see there what it does and does not).

mod support;

use std::ops::{Deref, DerefMut};

use dhis2_operator::cnpg::{Cluster, ObjectStore, ScheduledBackup};
use dhis2_operator::crd::backup_common::{RepositorySpec, RunPhase};
use dhis2_operator::crd::{Dhis2Backup, Dhis2Database, Dhis2Drill, Dhis2Instance, Dhis2Restore};
use dhis2_operator::operator::database::cnpg::archive::resolve_archive;
use dhis2_operator::operator::database::cnpg::build::{ClusterPlan, build_cnpg_children};
use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::cluster_objects::{S3_SERVICE, s3_repository};
use support::cnpg::{FakeCnpg, HEALTHY, install_crds, set_status, uninstall_crds};
use support::count;
use support::fixtures::{Instance, up};
use support::job_kubelet::RunState;
use support::kube_env::*;
use support::world::World;

/// CloudNativePG's CRDs are cluster-wide: the test that removes them runs alone.
static CNPG_CRDS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A `World` with FakeCnpg playing CloudNativePG's controller in it, and one FakeDhis2 for
/// every instance.
struct Cnpg {
    world: World,
    cnpg: FakeCnpg,
    dhis2: FakeDhis2,
}

impl Deref for Cnpg {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl DerefMut for Cnpg {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

async fn world(prefix: &str) -> Cnpg {
    let world = World::start(prefix).await;
    let cnpg = FakeCnpg::start(
        world.env.clone(),
        world.client.clone(),
        &world.ns,
        world.jobs.host_mapper(),
    );
    let dhis2 = FakeDhis2::start(up()).await;
    Cnpg { world, cnpg, dhis2 }
}

impl Cnpg {
    async fn database(&self, name: &str, cnpg: serde_json::Value) {
        self.create::<Dhis2Database>(json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Database",
            "metadata": {"name": name},
            "spec": {"provider": "cnpg", "storage": {"size": "20Gi"},
                "resources": {"limits": {"memory": "8Gi"}}, "cnpg": cnpg}
        }))
        .await;
    }

    async fn instance(&self, name: &str, environment: &str, database: &str) {
        self.create_instance(
            Instance::new(name)
                .served_by(&self.dhis2.url)
                .environment(environment)
                .database(database)
                .repository(self.bucket()),
        )
        .await;
    }

    async fn cluster(&self, name: &str) -> Cluster {
        let api = self.api::<Cluster>();
        wait_for(60, &format!("Cluster {name}"), || async {
            api.get_opt(name).await.ok().flatten()
        })
        .await
    }

    /// Waits until the database's condition `type_` has `status` (and `reason`, if given).
    async fn database_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> (Dhis2Database, Condition) {
        let api = self.api::<Dhis2Database>();
        wait_for(
            90,
            &format!("Dhis2Database {name} {type_}={status} {reason:?}"),
            || async {
                let db = api.get(name).await.ok()?;
                let c = db
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .find(|c| c.type_ == type_ && c.status == status)?
                    .clone();
                reason.is_none_or(|r| c.reason == r).then_some((db, c))
            },
        )
        .await
    }

    async fn instance_ready(&self, name: &str) -> Dhis2Instance {
        let api = self.api::<Dhis2Instance>();
        wait_for(90, &format!("{name} Ready"), || async {
            let i = api.get(name).await.ok()?;
            let ready = i
                .status
                .as_ref()?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(i)
        })
        .await
    }

    async fn dhis_conf(&self, instance: &str) -> String {
        let secret = self
            .api::<Secret>()
            .get(&format!("{instance}-dhis-conf"))
            .await
            .unwrap();
        let data = secret.data.unwrap();
        String::from_utf8(data["dhis.conf"].0.clone()).unwrap()
    }
}

/// Every value the operator sent is in what the server stored: CloudNativePG's schema pruned
/// nothing (a 1.20 server drops unknown fields silently instead of refusing them).
fn assert_stored(sent: &serde_json::Value, stored: &serde_json::Value, path: &str) {
    match (sent, stored) {
        (serde_json::Value::Object(s), serde_json::Value::Object(t)) => {
            for (k, v) in s {
                let at = format!("{path}.{k}");
                let Some(w) = t.get(k) else {
                    panic!("{at} was sent but not stored (pruned by the schema?)");
                };
                assert_stored(v, w, &at);
            }
        }
        (serde_json::Value::Array(s), serde_json::Value::Array(t)) => {
            assert_eq!(s.len(), t.len(), "{path}");
            for (i, (v, w)) in s.iter().zip(t).enumerate() {
                assert_stored(v, w, &format!("{path}[{i}]"));
            }
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

fn spec_of<K: serde::Serialize>(object: &K) -> serde_json::Value {
    serde_json::to_value(object).unwrap()["spec"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_instance_runs_on_a_three_instance_cnpg_cluster_archiving_wal_to_its_repository()
 {
    let _crds = CNPG_CRDS.read().await;
    install_crds(true);
    let w = world("cnpg-ha").await;
    w.database("hmis-db", json!({})).await;
    w.instance("hmis", "production", "hmis-db").await;

    // The Cluster: three instances for production, PostGIS, DHIS2's extensions at bootstrap,
    // PostgreSQL tuned as for `managed`, WAL archived through the Barman Cloud plugin.
    let cluster = wait_for(60, "a Cluster of three", || async {
        let c = w.api::<Cluster>().get_opt("hmis-db").await.ok().flatten()?;
        (c.spec.instances == 3).then_some(c)
    })
    .await;
    let spec = spec_of(&cluster);
    assert_eq!(spec["imageName"], "ghcr.io/cloudnative-pg/postgis:16-3.4");
    assert_eq!(spec["storage"]["size"], "20Gi");
    let initdb = &spec["bootstrap"]["initdb"];
    assert_eq!(
        (initdb["database"].as_str(), initdb["owner"].as_str()),
        (Some("dhis2"), Some("dhis"))
    );
    assert_eq!(
        initdb["postInitApplicationSQL"],
        json!([
            "CREATE EXTENSION IF NOT EXISTS postgis;",
            "CREATE EXTENSION IF NOT EXISTS pg_trgm;",
            "CREATE EXTENSION IF NOT EXISTS btree_gin;"
        ])
    );
    let parameters = &spec["postgresql"]["parameters"];
    assert_eq!(parameters["max_connections"], "200");
    assert_eq!(
        parameters["shared_buffers"], "2048MB",
        "a quarter of the 8Gi limit"
    );
    assert_eq!(parameters["jit"], "off");
    let plugin = &spec["plugins"][0];
    assert_eq!(plugin["name"], "barman-cloud.cloudnative-pg.io");
    assert_eq!(plugin["isWALArchiver"], true);
    assert_eq!(
        plugin["parameters"],
        json!({"barmanObjectName": "hmis-db-archive"})
    );
    assert!(
        spec["backup"].get("barmanObjectStore").is_none(),
        "no built-in barmanObjectStore beside the plugin"
    );

    // The archive: the instance's repository, under <prefix>/_cnpg, keys by reference.
    let store = wait_for(30, "the ObjectStore", || async {
        w.api::<ObjectStore>()
            .get_opt("hmis-db-archive")
            .await
            .ok()
            .flatten()
    })
    .await;
    let store_spec = spec_of(&store);
    let configuration = &store_spec["configuration"];
    assert_eq!(
        configuration["destinationPath"],
        format!("s3://{}/dhis2/_cnpg", w.bucket())
    );
    assert_eq!(
        configuration["endpointURL"],
        format!("http://{S3_SERVICE}:8333")
    );
    assert_eq!(
        configuration["s3Credentials"],
        json!({"accessKeyId": {"name": "backup-s3", "key": "accessKey"},
            "secretAccessKey": {"name": "backup-s3", "key": "secretKey"}})
    );
    assert_eq!(store_spec["retentionPolicy"], "30d");
    let scheduled = wait_for(30, "the ScheduledBackup", || async {
        w.api::<ScheduledBackup>()
            .get_opt("hmis-db-base-backup")
            .await
            .ok()
            .flatten()
    })
    .await;
    let scheduled_spec = spec_of(&scheduled);
    assert_eq!(scheduled_spec["schedule"], "0 0 1 * * *");
    assert_eq!(scheduled_spec["cluster"]["name"], "hmis-db");
    assert_eq!(scheduled_spec["method"], "plugin");
    assert_eq!(
        scheduled_spec["pluginConfiguration"]["name"],
        "barman-cloud.cloudnative-pg.io"
    );
    assert_eq!(
        scheduled_spec["immediate"], true,
        "the first base backup at once"
    );
    assert_eq!(scheduled_spec["backupOwnerReference"], "self");

    // What the operator builds is what CloudNativePG's schema stored, field for field.
    let db = w.api::<Dhis2Database>().get("hmis-db").await.unwrap();
    let repository: RepositorySpec = serde_json::from_value(s3_repository(w.bucket())).unwrap();
    let archive = resolve_archive(None, Some((&repository, "the instance's")), true).unwrap();
    let built = build_cnpg_children(
        &db,
        &ClusterPlan {
            instances: 3,
            superuser_access: false,
            archive: Some(&archive),
            recovery: None,
        },
    );
    assert_stored(
        &spec_of(&built.cluster),
        &spec_of(&w.cluster("hmis-db").await),
        "Cluster.spec",
    );
    assert_stored(
        &spec_of(&built.object_store.unwrap()),
        &store_spec,
        "ObjectStore.spec",
    );
    assert_stored(
        &spec_of(&built.scheduled_backup.unwrap()),
        &scheduled_spec,
        "ScheduledBackup.spec",
    );

    // CloudNativePG reports the cluster healthy: the database is Ready, with its account.
    let (db, ready) = w.database_condition("hmis-db", "Ready", "True", None).await;
    assert!(
        ready
            .message
            .contains("3/3 instances ready, primary hmis-db-1"),
        "{}",
        ready.message
    );
    let status = db.status.unwrap();
    let cnpg = status.cnpg.unwrap();
    assert_eq!(cnpg.ready_instances, Some(3));
    assert_eq!(cnpg.current_primary.as_deref(), Some("hmis-db-1"));
    assert_eq!(cnpg.phase.as_deref(), Some(HEALTHY));
    assert_eq!(cnpg.wal_archiving.as_deref(), Some("plugin"));
    assert_eq!(
        cnpg.archive.as_deref(),
        Some(format!("s3://{}/dhis2/_cnpg/hmis-db", w.bucket()).as_str())
    );
    assert_eq!(status.credentials_secret.as_deref(), Some("hmis-db-app"));
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("hmis-db-rw.{}.svc:5432", w.ns).as_str())
    );

    // DHIS2 connects to the -rw Service with CloudNativePG's application role.
    let i = w.instance_ready("hmis").await;
    let conditions = i.status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "DatabaseReady" && c.status == "True")
    );
    let fake = w.cnpg.cluster("hmis-db").unwrap();
    let conf = w.dhis_conf("hmis").await;
    assert!(
        conf.contains(&format!(
            "connection.url = jdbc:postgresql://hmis-db-rw:5432/{}\n",
            fake.database
        )),
        "{conf}"
    );
    assert!(
        conf.contains(&format!("connection.username = {}\n", fake.role)),
        "{conf}"
    );

    // A failover: CloudNativePG moves the primary; DHIS2's database is not ready meanwhile.
    set_status(
        &w.client,
        &w.ns,
        "hmis-db",
        json!({"phase": "Failing over", "targetPrimary": "hmis-db-2", "readyInstances": 2}),
    )
    .await;
    let (_, c) = w
        .database_condition("hmis-db", "Ready", "False", Some("CnpgSwitchingPrimary"))
        .await;
    assert!(
        c.message.contains("from hmis-db-1 to hmis-db-2"),
        "{}",
        c.message
    );
    wait_for(60, "the instance to see its database not ready", || async {
        let i = w.api::<Dhis2Instance>().get("hmis").await.ok()?;
        i.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "DatabaseReady" && c.status == "False")
            .then_some(())
    })
    .await;
    // The new primary serves; one replica is still missing: Ready, and Degraded says so.
    set_status(
        &w.client,
        &w.ns,
        "hmis-db",
        json!({"phase": HEALTHY, "currentPrimary": "hmis-db-2", "readyInstances": 2}),
    )
    .await;
    let (db, degraded) = w
        .database_condition("hmis-db", "Degraded", "True", Some("CnpgInstancesNotReady"))
        .await;
    assert!(
        degraded.message.contains("only 2/3 instances ready"),
        "{}",
        degraded.message
    );
    assert!(
        db.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    w.instance_ready("hmis").await;

    // No secret in status or events.
    let db = w.api::<Dhis2Database>().get("hmis-db").await.unwrap();
    let events = w.api::<Event>().list(&ListParams::default()).await.unwrap();
    let text = format!(
        "{}{}",
        serde_json::to_string(&db.status).unwrap(),
        serde_json::to_string(&events.items).unwrap()
    );
    assert!(!text.contains(&fake.password) && !text.contains(&w.env.secret_key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_backups_and_drills_work_against_a_cnpg_database_as_against_any_other() {
    let _crds = CNPG_CRDS.read().await;
    install_crds(true);
    let mut w = world("cnpg-logical").await;
    w.cnpg.seed("moh-db");
    w.database("moh-db", json!({})).await;
    w.instance("hmis", "staging", "moh-db").await;
    assert_eq!(
        w.cluster("moh-db").await.spec.instances,
        1,
        "one instance for staging"
    );
    w.instance_ready("hmis").await;
    let fake = w.cnpg.cluster("moh-db").unwrap();
    let rows = count(&w.env, &fake.database, "datavalue").await;
    assert!(rows > 0);

    w.create::<Dhis2Backup>(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
        "metadata": {"name": "hmis-now"}, "spec": {"instanceRef": "hmis"}
    }))
    .await;
    let backup = wait_for(120, "the backup to finish", || async {
        let b = w.api::<Dhis2Backup>().get("hmis-now").await.ok()?;
        b.status.as_ref()?.phase.filter(|p| p.is_finished())?;
        Some(b)
    })
    .await;
    let status = backup.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Completed), "{status:?}");
    let id = status.backup_id.unwrap();
    let repo = w.repo();
    assert_eq!(
        support::listed_backup_ids(&repo, Some("hmis")).await,
        vec![id.clone()]
    );
    // The Job logged in as CloudNativePG's application role, through the -rw Service.
    let run = &w.jobs.runs()[0];
    assert!(!run.output.contains(&fake.password));
    let job = serde_json::to_string(
        &w.api::<k8s_openapi::api::batch::v1::Job>()
            .get("hmis-now-backup")
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        job.contains("moh-db-rw") && job.contains("moh-db-app"),
        "{job}"
    );
    assert!(!job.contains(&fake.password));

    w.create::<Dhis2Drill>(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Drill",
        "metadata": {"name": "weekly"}, "spec": {"instanceRef": "hmis"}
    }))
    .await;
    let drill = wait_for(240, "the drill to finish", || async {
        let d = w.api::<Dhis2Drill>().get("weekly").await.ok()?;
        d.status.as_ref()?.phase.filter(|p| p.is_finished())?;
        Some(d)
    })
    .await;
    let s = drill.status.unwrap();
    assert_eq!(s.phase, Some(RunPhase::Completed), "{s:?}");
    assert_eq!(s.passed, Some(true), "{s:?}");
    assert_eq!(s.backup_id.as_deref(), Some(id.as_str()));

    // No superuser on the cluster while nothing needs it: whoever may create a Dhis2Backup or
    // a Dhis2Drill gets no way to run SQL as superuser.
    let (clusters, secrets): (Api<Cluster>, Api<Secret>) = (w.api(), w.api());
    let superuser_off = || async {
        let cluster = clusters.get("moh-db").await.ok()?;
        let secret = secrets.get_opt("moh-db-superuser").await.ok()?;
        (cluster.spec.enable_superuser_access == Some(false) && secret.is_none()).then_some(())
    };
    assert!(superuser_off().await.is_some(), "superuser access off");
    assert!(w.cnpg.superuser_log.lock().unwrap().is_empty());

    // A restore over the instance: the Job logs in as CloudNativePG's superuser (the app role
    // may not create or rename databases), turned on for it alone, and DHIS2's role still owns
    // everything after.
    let admin = w.env.client(&fake.database).await;
    admin
        .batch_execute("DELETE FROM datavalue WHERE ctid IN (SELECT ctid FROM datavalue LIMIT 5)")
        .await
        .unwrap();
    drop(admin);
    // The operator is killed while the restore holds the superuser on, and restarted: it still
    // turns it off after the restore, once, as it would have.
    w.jobs.pause();
    let ns = w.ns.clone();
    let (jobs, operator) = (&w.world.jobs, &mut w.world.operator);
    let restore_args = [
        "restore",
        "hmis-now",
        "--from",
        "hmis",
        "--to",
        "hmis",
        "--confirm-overwrite",
        "hmis",
        "--wait",
        "-n",
        &ns,
    ];
    let restore = support::dhis2ctl(&restore_args);
    let restart_mid_restore = async {
        wait_for(120, "the restore Job held, superuser access on", || async {
            let on = clusters
                .get("moh-db")
                .await
                .ok()?
                .spec
                .enable_superuser_access;
            let held = jobs.runs().into_iter().any(|r| {
                r.args.iter().any(|a| a == "restore")
                    && !r.args.iter().any(|a| a == "--resolve-only")
                    && r.state == RunState::Held
            });
            (on == Some(true) && held).then_some(())
        })
        .await;
        operator.kill().await;
        jobs.resume();
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        operator.restart();
    };
    let (out, ()) = tokio::join!(restore, restart_mid_restore);
    support::assert_success(&out, "restore over the cnpg database");
    assert_eq!(count(&w.env, &fake.database, "datavalue").await, rows);
    let admin = w.env.client("postgres").await;
    let owners = admin
        .query_one(
            "SELECT (SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1)",
            &[&fake.database],
        )
        .await
        .unwrap();
    assert_eq!(owners.get::<_, String>(0), fake.role);
    let db = w.env.client(&fake.database).await;
    let table_owner: String = db
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'datavalue'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(table_owner, fake.role);
    let restore_job = w
        .jobs
        .runs()
        .into_iter()
        .find(|r| r.args.iter().any(|a| a == "restore"))
        .expect("a restore Job ran");
    assert!(!restore_job.output.contains(&fake.password));
    wait_for(
        60,
        "superuser access turned off after the restore",
        superuser_off,
    )
    .await;
    assert_eq!(
        *w.cnpg.superuser_log.lock().unwrap(),
        vec![("moh-db".to_string(), true), ("moh-db".to_string(), false)],
        "on for the restore, then off"
    );
    let db = w.api::<Dhis2Database>().get("moh-db").await.unwrap();
    assert_eq!(db.status.unwrap().cnpg.unwrap().superuser_for, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_in_time_restore_recovers_a_new_cluster_to_the_moment_and_moves_the_instance_to_it()
{
    let _crds = CNPG_CRDS.read().await;
    install_crds(true);
    let w = world("cnpg-pitr").await;
    w.cnpg.seed("hmis-db");
    w.database("hmis-db", json!({"backup": {"retention": "60d"}}))
        .await;
    w.instance("hmis", "production", "hmis-db").await;
    w.instance_ready("hmis").await;
    let source = w.cnpg.cluster("hmis-db").unwrap();
    let rows = count(&w.env, &source.database, "datavalue").await;

    // The CLI refuses a time it cannot read, naming the flag, and creates nothing.
    let out = support::dhis2ctl(&[
        "restore",
        "--from",
        "hmis",
        "--to",
        "hmis",
        "--point-in-time",
        "10:13 yesterday",
        "--confirm-overwrite",
        "hmis",
        "--approved-by",
        "Dr. Sok",
        "-n",
        &w.ns,
    ])
    .await;
    support::assert_clear_failure(
        &out,
        "--point-in-time '10:13 yesterday' is not an RFC 3339 time",
    );
    assert!(
        w.api::<Dhis2Restore>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Data was entered wrongly at 10:14 (Phnom Penh); the ministry wants it as at 10:13.
    let moment = (chrono::Utc::now() - chrono::Duration::minutes(10))
        .with_timezone(&chrono::FixedOffset::east_opt(7 * 3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    w.create::<Dhis2Restore>(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Restore",
        "metadata": {"name": "hmis-1013"},
        "spec": {"source": {"instance": "hmis"}, "target": {"instance": "hmis"},
            "confirmOverwrite": "hmis", "approvedBy": "Dr. Sok Chea, HMIS director",
            "pointInTime": moment}
    }))
    .await;

    // A new cluster, bootstrapped from the source's archive up to the moment.
    let cluster = w.cluster("hmis-1013-db").await;
    let spec = spec_of(&cluster);
    assert_eq!(
        spec["bootstrap"]["recovery"],
        json!({"source": "origin", "database": "dhis2", "owner": "dhis",
            "recoveryTarget": {"targetTime": moment}})
    );
    assert!(spec["bootstrap"].get("initdb").is_none());
    let origin = &spec["externalClusters"][0];
    assert_eq!(origin["name"], "origin");
    assert_eq!(origin["plugin"]["name"], "barman-cloud.cloudnative-pg.io");
    assert_eq!(
        origin["plugin"]["parameters"],
        json!({"barmanObjectName": "hmis-1013-db-recovery-source", "serverName": "hmis-db"})
    );
    assert_eq!(spec["externalClusters"].as_array().unwrap().len(), 1);
    assert_eq!(spec["instances"], 3, "production, like the source");
    let source_store = w
        .api::<ObjectStore>()
        .get("hmis-1013-db-recovery-source")
        .await
        .unwrap();
    assert_eq!(
        spec_of(&source_store)["configuration"]["destinationPath"],
        format!("s3://{}/dhis2/_cnpg", w.bucket())
    );
    assert!(
        spec_of(&source_store).get("retentionPolicy").is_none(),
        "never prunes the source's archive"
    );
    // The recovered cluster archives too, under its own name.
    assert_eq!(
        spec["plugins"][0]["parameters"]["barmanObjectName"],
        "hmis-1013-db-archive"
    );
    let new_db = w.api::<Dhis2Database>().get("hmis-1013-db").await.unwrap();
    assert_eq!(
        serde_json::to_value(new_db.spec.deletion_policy).unwrap(),
        "Retain"
    );

    let restore = wait_for(180, "the restore to complete", || async {
        let r = w.api::<Dhis2Restore>().get("hmis-1013").await.ok()?;
        let phase = r.status.as_ref()?.phase?.as_str();
        assert_ne!(phase, "Failed", "{:?}", r.status);
        (phase == "Completed").then_some(r)
    })
    .await;
    let status = restore.status.unwrap();
    assert_eq!(status.recovery_database.as_deref(), Some("hmis-1013-db"));
    assert_eq!(status.replaced_database.as_deref(), Some("hmis-db"));
    assert_eq!(status.analytics_regeneration.as_deref(), Some("requested"));
    assert!(
        status
            .message
            .unwrap()
            .contains(&format!("the database as it was at {moment}"))
    );
    assert_eq!(
        status.job_name, None,
        "no engine Job: CloudNativePG recovers"
    );

    // DHIS2 now runs on the recovered database; the old cluster is kept as it was.
    let i = w.instance_ready("hmis").await;
    assert_eq!(i.spec.database_ref.as_deref(), Some("hmis-1013-db"));
    assert!(
        i.annotations()
            .get("dhis2operator.io/restore-in-progress")
            .is_none()
    );
    let recovered = w.cnpg.cluster("hmis-1013-db").unwrap();
    assert!(w.dhis_conf("hmis").await.contains(&format!(
        "jdbc:postgresql://hmis-1013-db-rw:5432/{}",
        recovered.database
    )));
    assert_eq!(count(&w.env, &recovered.database, "datavalue").await, rows);
    // Kept as it was although no instance uses it any more: its replicas, its archive and its
    // base backups (the database is reconciled every 15 s; watch it for three rounds).
    let kept = |c: &Cluster| {
        let spec = spec_of(c);
        spec["instances"] == 3
            && spec["plugins"][0]["parameters"]["barmanObjectName"] == "hmis-db-archive"
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(50);
    while tokio::time::Instant::now() < deadline {
        let old = w.api::<Cluster>().get("hmis-db").await.unwrap();
        assert!(kept(&old), "{:?}", spec_of(&old));
        assert!(
            w.api::<ObjectStore>()
                .get_opt("hmis-db-archive")
                .await
                .unwrap()
                .is_some(),
            "the old cluster's archive"
        );
        assert!(
            w.api::<ScheduledBackup>()
                .get_opt("hmis-db-base-backup")
                .await
                .unwrap()
                .is_some(),
            "the old cluster's base backups"
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let old = w.api::<Dhis2Database>().get("hmis-db").await.unwrap();
    let inherited = old.status.unwrap().cnpg.unwrap().inherited.unwrap();
    assert!(inherited.production);
    assert!(!w.dhis2.analytics_requests.lock().unwrap().is_empty());
    assert!(w.operator.kubeconfig.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cnpg_the_database_is_degraded_saying_how_to_install_it_and_is_made_once_it_is() {
    let _crds = CNPG_CRDS.write().await;
    uninstall_crds();
    let mut w = world("cnpg-absent").await;
    w.database("hmis-db", json!({})).await;
    w.instance("hmis", "staging", "hmis-db").await;
    let (_, degraded) = w
        .database_condition("hmis-db", "Degraded", "True", Some("CnpgNotInstalled"))
        .await;
    assert!(
        degraded.message.contains("install CloudNativePG"),
        "{}",
        degraded.message
    );
    assert!(
        degraded.message.contains("or use provider: managed"),
        "{}",
        degraded.message
    );
    let events: Vec<String> = w.events("CnpgNotInstalled").await;
    assert_eq!(events.len(), 1, "one Event, not one per look: {events:?}");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(w.operator.is_running(), "no crash, no crash loop");

    // CloudNativePG without the Barman Cloud plugin: its built-in barmanObjectStore archives.
    install_crds(false);
    let cluster = wait_for(60, "a Cluster once CloudNativePG is installed", || async {
        w.api::<Cluster>().get_opt("hmis-db").await.ok().flatten()
    })
    .await;
    let spec = spec_of(&cluster);
    assert!(spec.get("plugins").is_none());
    let store = &spec["backup"]["barmanObjectStore"];
    assert_eq!(
        store["destinationPath"],
        format!("s3://{}/dhis2/_cnpg", w.bucket())
    );
    assert_eq!(
        store["s3Credentials"]["secretAccessKey"],
        json!({"name": "backup-s3", "key": "secretKey"})
    );
    assert_eq!(spec["backup"]["retentionPolicy"], "30d");
    // The ScheduledBackup is applied right after the Cluster: wait for it, don't race it.
    let scheduled_backups = w.api::<ScheduledBackup>();
    let scheduled = wait_for(60, "the ScheduledBackup of hmis-db", || async {
        scheduled_backups.get("hmis-db-base-backup").await.ok()
    })
    .await;
    assert_eq!(spec_of(&scheduled)["method"], "barmanObjectStore");
    let (db, _) = w.database_condition("hmis-db", "Ready", "True", None).await;
    assert_eq!(
        db.status.unwrap().cnpg.unwrap().wal_archiving.as_deref(),
        Some("barmanObjectStore")
    );
    w.database_condition("hmis-db", "Degraded", "False", None)
        .await;

    // The plugin installed: the cluster moves to it.
    install_crds(true);
    let cluster = wait_for(60, "the Cluster to archive through the plugin", || async {
        let c = w.api::<Cluster>().get("hmis-db").await.ok()?;
        c.spec.plugins.is_some().then_some(c)
    })
    .await;
    assert!(
        cluster
            .spec
            .backup
            .as_ref()
            .and_then(|b| b.barman_object_store.as_ref())
            .is_none(),
        "{:?}",
        cluster.spec.backup
    );
    w.api::<ObjectStore>().get("hmis-db-archive").await.unwrap();
    let scheduled = w
        .api::<ScheduledBackup>()
        .get("hmis-db-base-backup")
        .await
        .unwrap();
    assert_eq!(spec_of(&scheduled)["method"], "plugin");
    assert!(w.operator.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhis2ctl_recovers_a_moment_into_a_new_instance_and_leaves_the_source_alone() {
    let _crds = CNPG_CRDS.read().await;
    install_crds(true);
    let w = world("cnpg-pitr-new").await;
    w.cnpg.seed("hmis-db");
    w.database("hmis-db", json!({})).await;
    w.instance("hmis", "staging", "hmis-db").await;
    w.instance_ready("hmis").await;
    let moment = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let out = support::dhis2ctl(&[
        "restore",
        "--from",
        "hmis",
        "--to",
        "hmis-copy",
        "--point-in-time",
        &moment,
        "-n",
        &w.ns,
    ])
    .await;
    support::assert_success(&out, "dhis2ctl restore --point-in-time into a new instance");
    let restore = wait_for(30, "the Dhis2Restore the CLI made", || async {
        let list = w
            .api::<Dhis2Restore>()
            .list(&ListParams::default())
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    let name = restore.name_any();
    assert!(
        name.starts_with("hmis-copy-pitr-") && name.len() <= 57,
        "{name}"
    );
    // The new instance is born on the recovered database (this operator reaches its DHIS2
    // through the override: no cluster network here).
    let copy = wait_for(60, "the new instance", || async {
        w.api::<Dhis2Instance>()
            .get_opt("hmis-copy")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(copy.spec.database_ref, Some(format!("{name}-db")));
    w.reach_dhis2_at("hmis-copy", &w.dhis2.url).await;
    let cluster = w.cluster(&format!("{name}-db")).await;
    assert_eq!(
        spec_of(&cluster)["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"],
        chrono::DateTime::parse_from_rfc3339(&moment)
            .unwrap()
            .to_rfc3339()
    );
    assert_eq!(cluster.spec.instances, 1, "staging, like the source");
    let done = wait_for(180, "the restore to complete", || async {
        let r = w.api::<Dhis2Restore>().get(&name).await.ok()?;
        let phase = r.status.as_ref()?.phase?.as_str();
        assert_ne!(phase, "Failed", "{:?}", r.status);
        (phase == "Completed").then_some(r)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.target_created, Some(true));
    assert_eq!(status.replaced_database, None, "nothing was replaced");
    w.instance_ready("hmis-copy").await;
    // The source runs on, on its own database.
    let source = w.instance_ready("hmis").await;
    assert_eq!(source.spec.database_ref.as_deref(), Some("hmis-db"));
    let recovered = w.cnpg.cluster(&format!("{name}-db")).unwrap();
    let original = w.cnpg.cluster("hmis-db").unwrap();
    assert_eq!(
        count(&w.env, &recovered.database, "datavalue").await,
        count(&w.env, &original.database, "datavalue").await
    );
}
