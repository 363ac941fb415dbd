//! The migrating fake DHIS2 itself (tests/support/migrating_dhis2.rs) against the real apiserver
//! (its Deployment controller makes the pods, FakeKubelet runs them) and DHIS2's real 2.42
//! database on the real PostgreSQL: it serves the version the pods run and really migrates.

mod support;

use std::time::Duration;

use dhis2_operator::operator::instance::build::APP;
use dhis2_operator::operator::kit::labels::{labels, selector};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::Env;
use support::cluster_objects::create;
use support::kube_env::{ADMIN, FakeKubelet, client, namespace, wait_for};
use support::migrating_dhis2::{
    APPLICATION_NAME, Answer, MIGRATIONS_PER_LINE, MigratingDhis2, Migration, NodeState, Observed,
    image_version, marker_table,
};

const INSTANCE: &str = "hmis";
/// The real 2.42 database's schema: its last Flyway migration and how many it holds.
const REAL_SCHEMA: &str = "2.42.52";
const REAL_MIGRATIONS: i64 = 322;

struct Harness {
    env: Env,
    client: Client,
    ns: String,
    db: String,
    dhis2: Option<MigratingDhis2>,
    _kubelet: FakeKubelet,
    http: reqwest::Client,
}

async fn harness(prefix: &str, behaviour: Migration) -> Harness {
    let env = support::env();
    let client = client().await;
    let ns = namespace(&client, prefix).await;
    let (db, url) = env.real_dhis2_database(&prefix.replace('-', "_")).await;
    let kubelet = FakeKubelet::start(client.clone(), &ns);
    let dhis2 = MigratingDhis2::start(client.clone(), &ns, INSTANCE, &url, behaviour).await;
    Harness {
        env,
        client,
        ns,
        db,
        dhis2: Some(dhis2),
        _kubelet: kubelet,
        http: reqwest::Client::new(),
    }
}

impl Harness {
    fn dhis2(&self) -> &MigratingDhis2 {
        self.dhis2.as_ref().expect("the fake DHIS2")
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// DHIS2's Deployment, labelled as the operator labels it (`build_instance_children`).
    async fn deploy(&self, image: &str) {
        let labels = labels(APP, INSTANCE, "dhis2");
        create::<Deployment>(
            &self.client,
            &self.ns,
            json!({"metadata": {"name": INSTANCE, "labels": labels},
                "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                    "selector": {"matchLabels": selector(APP, INSTANCE)},
                    "template": {"metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "dhis2", "image": image}]}}}}),
        )
        .await;
    }

    async fn patch_deployment(&self, spec: serde_json::Value) {
        self.deployments()
            .patch(
                INSTANCE,
                &PatchParams::default(),
                &Patch::Strategic(json!({ "spec": spec })),
            )
            .await
            .expect("patch the Deployment");
    }

    async fn set_image(&self, image: &str) {
        self.patch_deployment(
            json!({"template": {"spec": {"containers": [{"name": "dhis2", "image": image}]}}}),
        )
        .await;
    }

    async fn scale(&self, replicas: i32) {
        self.patch_deployment(json!({ "replicas": replicas })).await;
    }

    /// The status of /api/system/ping; `None` when the connection is refused.
    async fn ping(&self) -> Option<u16> {
        match self
            .http
            .get(format!("{}/api/system/ping", self.dhis2().url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => Some(r.status().as_u16()),
            Err(e) if e.is_connect() => None,
            Err(e) => panic!("ping: {e}"),
        }
    }

    /// /api/system/info as the admin account (or anonymously): status and body; status 0 when
    /// the connection is refused.
    async fn info(&self, as_admin: bool) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .get(format!("{}/api/system/info", self.dhis2().url))
            .timeout(Duration::from_secs(5));
        if as_admin {
            request = request.basic_auth(ADMIN.0, Some(ADMIN.1));
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return (0, serde_json::Value::Null),
            Err(e) => panic!("GET /api/system/info: {e}"),
        };
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    async fn wait_serving(&self, version: &str, secs: u64) {
        wait_for(secs, &format!("DHIS2 {version} to serve"), || async {
            let (status, body) = self.info(true).await;
            (status == 200 && body["version"] == version).then_some(())
        })
        .await;
    }

    async fn wait_observed(&self, what: &str, matches: impl Fn(&Observed) -> bool) -> Observed {
        wait_for(30, what, || async {
            self.dhis2().observed().into_iter().find(|o| matches(o))
        })
        .await
    }

    /// Flyway rows of release line `2.<major>`: (installed_rank, version, success).
    async fn flyway_rows_of_line(&self, major: u32) -> Vec<(i32, String, bool)> {
        self.env
            .client(&self.db)
            .await
            .query(
                "SELECT installed_rank, version::text, success FROM flyway_schema_history
                 WHERE version LIKE $1 ORDER BY installed_rank",
                &[&format!("2.{major}.%")],
            )
            .await
            .expect("read flyway_schema_history")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    async fn flyway_count(&self) -> i64 {
        support::count(&self.env, &self.db, "flyway_schema_history").await
    }

    async fn table_exists(&self, table: &str) -> bool {
        self.env
            .client(&self.db)
            .await
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .expect("look for a table")
            .get(0)
    }

    /// The fake's sessions on the database (`pg_stat_activity`), with their state.
    async fn fake_sessions(&self) -> Vec<String> {
        self.env
            .client("postgres")
            .await
            .query(
                "SELECT coalesce(state, '') FROM pg_stat_activity
                 WHERE datname = $1 AND application_name LIKE $2",
                &[&self.db, &format!("{APPLICATION_NAME}%")],
            )
            .await
            .expect("read pg_stat_activity")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Every session on the database, whoever opened it.
    async fn all_sessions(&self) -> i64 {
        self.env
            .client("postgres")
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&self.db],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0)
    }

    async fn wait_no_sessions(&self) {
        wait_for(5, "no session left on the database", || async {
            (self.all_sessions().await == 0).then_some(())
        })
        .await;
    }

    /// Drops the fake, the namespace and the database.
    async fn finish(mut self) {
        drop(self.dhis2.take());
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
        self.env
            .client("postgres")
            .await
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))
            .await
            .expect("drop the test database");
    }
}

#[test]
fn image_versions_are_read_from_the_tag() {
    let version = |image: &str| image_version(image).map(|v| v.to_string());
    assert_eq!(version("dhis2/core:2.42.1").as_deref(), Some("2.42.1"));
    assert_eq!(
        version("registry.local:5000/dhis2/core:42.1.0").as_deref(),
        Some("42.1.0")
    );
    assert_eq!(
        version("dhis2/core:2.43.0@sha256:0123abcd").as_deref(),
        Some("2.43.0")
    );
    assert_eq!(version("registry.local:5000/dhis2/core"), None);
    assert_eq!(version("dhis2/core:latest"), None);
}

#[tokio::test]
async fn same_release_line_serves_and_writes_nothing() {
    let h = harness("md-same", Migration::Quick).await;
    assert_eq!(h.ping().await, None, "no pod runs yet: nothing listens");
    assert_eq!(h.dhis2().answer(), Answer::Down);

    h.deploy("dhis2/core:2.42.1").await;
    h.wait_serving("2.42.1", 30).await;
    assert_eq!(h.ping().await, Some(200));
    let (status, _) = h.info(false).await;
    assert_eq!(
        status, 401,
        "DHIS2 answers /api/system/info only to an authenticated user"
    );
    let (_, full) = h.info(true).await;
    assert!(full["revision"].as_str().is_some_and(|r| r.len() == 7));
    assert_eq!(full["readOnlyMode"], false);

    let analytics = h
        .http
        .post(format!("{}/api/resourceTables/analytics", h.dhis2().url))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("POST analytics");
    assert_eq!(analytics.status().as_u16(), 200);
    assert_eq!(
        h.dhis2().analytics_requests(),
        vec![Some(ADMIN.0.to_string())]
    );

    assert_eq!(h.flyway_count().await, REAL_MIGRATIONS);
    assert!(h.flyway_rows_of_line(43).await.is_empty());
    assert!(!h.table_exists(&marker_table(42)).await);
    assert!(
        h.fake_sessions().await.is_empty(),
        "no connection held while up"
    );
    assert!(
        !h.dhis2()
            .observed()
            .iter()
            .any(|o| matches!(o, Observed::MigrationStarted { .. })),
        "{:?}",
        h.dhis2().observed()
    );

    h.scale(0).await;
    wait_for(15, "DHIS2 down after scaling to 0", || async {
        h.ping().await.is_none().then_some(())
    })
    .await;
    assert_eq!(h.dhis2().served_versions(), vec!["2.42.1"]);
    h.finish().await;
}

#[tokio::test]
async fn newer_version_migrates_in_one_committed_transaction() {
    let h = harness("md-quick", Migration::Quick).await;
    h.deploy("dhis2/core:2.42.1").await;
    h.wait_serving("2.42.1", 30).await;

    h.set_image("dhis2/core:2.43.0").await;
    h.wait_serving("2.43.0", 30).await;

    let rows = h.flyway_rows_of_line(43).await;
    let expected: Vec<(i32, String, bool)> = (1..=MIGRATIONS_PER_LINE)
        .map(|step| {
            (
                REAL_MIGRATIONS as i32 + step as i32,
                format!("2.43.{step}"),
                true,
            )
        })
        .collect();
    assert_eq!(rows, expected, "installed_rank continues the real history");
    assert_eq!(
        support::count(&h.env, &h.db, &marker_table(43)).await,
        i64::from(MIGRATIONS_PER_LINE)
    );
    let observed = h.dhis2().observed();
    assert!(observed.contains(&Observed::MigrationStarted {
        pod: pod_of(&observed, "2.43.0"),
        from: REAL_SCHEMA.into(),
        to: "2.43.0".into(),
        behaviour: Migration::Quick,
    }));
    assert!(observed.iter().any(|o| matches!(o,
        Observed::MigrationCommitted { to, schema, .. } if to == "2.43.0" && schema == "2.43.5")));
    assert_eq!(h.dhis2().served_versions(), vec!["2.42.1", "2.43.0"]);
    assert!(h.dhis2().version_conflicts().is_empty());
    h.wait_no_sessions().await;
    h.finish().await;
}

/// The pod that started `version`.
fn pod_of(observed: &[Observed], version: &str) -> String {
    observed
        .iter()
        .find_map(|o| match o {
            Observed::PodStarted { pod, version: v } if v == version => Some(pod.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no pod started {version}: {observed:?}"))
}

#[tokio::test]
async fn slow_migration_is_unavailable_and_invisible_until_it_commits() {
    let h = harness("md-slow", Migration::Slow(Duration::from_secs(3))).await;
    h.deploy("dhis2/core:2.43.0").await;
    wait_for(30, "the migration transaction open", || async {
        h.fake_sessions()
            .await
            .iter()
            .any(|s| s == "idle in transaction")
            .then_some(())
    })
    .await;
    assert_eq!(h.ping().await, Some(503));
    assert_eq!(h.info(true).await.0, 503);
    assert!(h.dhis2().nodes().iter().any(|(_, s)| *s
        == NodeState::Migrating {
            to: "2.43.0".into()
        }));
    assert!(
        h.flyway_rows_of_line(43).await.is_empty(),
        "not committed yet"
    );
    assert!(!h.table_exists(&marker_table(43)).await);

    h.wait_serving("2.43.0", 30).await;
    assert_eq!(
        h.flyway_rows_of_line(43).await.len(),
        MIGRATIONS_PER_LINE as usize
    );
    assert!(h.table_exists(&marker_table(43)).await);
    h.finish().await;
}

#[tokio::test]
async fn never_finishing_migration_commits_nothing_and_dies_with_its_pod() {
    let h = harness("md-never", Migration::Never).await;
    h.deploy("dhis2/core:2.43.0").await;
    wait_for(30, "the migration transaction open", || async {
        h.fake_sessions()
            .await
            .iter()
            .any(|s| s == "idle in transaction")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.ping().await, Some(503));
    assert!(h.flyway_rows_of_line(43).await.is_empty());
    assert!(!h.table_exists(&marker_table(43)).await);

    h.scale(0).await;
    h.wait_observed(
        "the migration abandoned",
        |o| matches!(o, Observed::MigrationAbandoned { to, .. } if to == "2.43.0"),
    )
    .await;
    // A dead pod's connection is gone: the database can be renamed, as a restore does.
    h.wait_no_sessions().await;
    let admin = h.env.client("postgres").await;
    let renamed = format!("{}_renamed", h.db);
    admin
        .batch_execute(&format!("ALTER DATABASE {} RENAME TO {renamed}", h.db))
        .await
        .expect("rename the database once the pod is gone");
    admin
        .batch_execute(&format!("ALTER DATABASE {renamed} RENAME TO {}", h.db))
        .await
        .expect("rename it back");
    assert!(h.flyway_rows_of_line(43).await.is_empty(), "rolled back");
    assert!(!h.table_exists(&marker_table(43)).await);
    assert_eq!(h.flyway_count().await, REAL_MIGRATIONS);
    assert_eq!(h.ping().await, None, "no pod: nothing listens");
    assert!(h.dhis2().served_versions().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn failed_migration_rolls_back_and_stays_unavailable() {
    let h = harness("md-fail", Migration::FailHalfway).await;
    h.deploy("dhis2/core:2.43.0").await;
    let failed = h
        .wait_observed("the migration to fail", |o| {
            matches!(o, Observed::MigrationFailed { .. })
        })
        .await;
    let Observed::MigrationFailed { error, .. } = failed else {
        unreachable!()
    };
    assert!(error.contains("already exists"), "{error}");
    h.wait_no_sessions().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.ping().await,
        Some(503),
        "a failed Flyway migration: DHIS2 never starts"
    );
    assert_eq!(h.info(true).await.0, 503);
    assert!(h.flyway_rows_of_line(43).await.is_empty());
    assert!(!h.table_exists(&marker_table(43)).await);
    assert_eq!(h.flyway_count().await, REAL_MIGRATIONS);
    assert!(h.dhis2().served_versions().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn older_version_refuses_a_migrated_database() {
    let h = harness("md-older", Migration::Quick).await;
    h.deploy("dhis2/core:2.43.0").await;
    h.wait_serving("2.43.0", 30).await;

    h.set_image("dhis2/core:2.42.1").await;
    let refused = h
        .wait_observed("2.42.1 to refuse", |o| {
            matches!(o, Observed::Refused { .. })
        })
        .await;
    assert_eq!(
        refused,
        Observed::Refused {
            pod: pod_of(&h.dhis2().observed(), "2.42.1"),
            version: "2.42.1".into(),
            schema: "2.43.5".into(),
        }
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.ping().await, Some(503));
    assert_eq!(h.dhis2().version_conflicts(), vec![refused]);
    assert_eq!(h.dhis2().served_versions(), vec!["2.43.0"]);
    assert_eq!(
        h.flyway_rows_of_line(43).await.len(),
        MIGRATIONS_PER_LINE as usize,
        "the migrated schema stays"
    );
    h.wait_no_sessions().await;
    h.finish().await;
}
