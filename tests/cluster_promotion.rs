//! `Dhis2Promotion` end to end: staging has proven 2.43.0; production (the real DHIS2 2.42
//! database, DHIS2 played by MigratingDhis2) gets it only when every gate passes, one after the
//! other here, and then really upgrades (verified pre-upgrade backup, migration).

mod support;

use std::ops::Deref;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use dhis2_operator::crd::dhis2_promotion::Dhis2PromotionStatus;
use dhis2_operator::crd::{Dhis2Drill, Dhis2Instance, Dhis2Promotion};
use support::cluster_objects::create;
use support::fixtures::Instance;
use support::kube_env::*;
use support::migrating_dhis2::{MigratingDhis2, Migration, marker_table};
use support::world::World;

/// Staging (2.43.0, its DHIS2 a FakeDhis2) and production `hmis` (2.42.4 on a copy of the real
/// 2.42 database, DHIS2 played by MigratingDhis2), the operator's clock in a file.
struct Promotion {
    world: World,
    _staging_dhis2: FakeDhis2,
    production_dhis2: MigratingDhis2,
    db: String,
}

impl Deref for Promotion {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Promotion {
    fn promotions(&self) -> Api<Dhis2Promotion> {
        self.api()
    }
    /// The promotion's status once `check` holds.
    async fn promotion_until(
        &self,
        what: &str,
        check: impl Fn(&Dhis2PromotionStatus) -> bool,
    ) -> Dhis2PromotionStatus {
        let api = self.promotions();
        wait_for(120, what, || async {
            let s = api.get("staging-to-hmis").await.ok()?.status?;
            check(&s).then_some(s)
        })
        .await
    }

    /// Blocked by exactly the gates named.
    async fn blocked_by(&self, gates: &[&str]) -> Dhis2PromotionStatus {
        let want: Vec<String> = gates.iter().map(|g| g.to_string()).collect();
        self.promotion_until(&format!("blocked by {gates:?}"), |s| {
            let failing: Vec<String> = s
                .gates
                .iter()
                .filter(|g| !g.passed)
                .map(|g| g.name.clone())
                .collect();
            s.phase.as_deref() == Some("Blocked") && failing == want
        })
        .await
    }
}

async fn world() -> Promotion {
    let world = World::builder("promo")
        .clock(TestClock::starting_now())
        .start()
        .await;
    let env = &world.env;
    let (db, url) = env.real_dhis2_database("promo").await;
    let (staging_db, _) = env.create_database("promo_stg").await;
    world.external_database("hmis-db", &db).await;
    world.external_database("staging-db", &staging_db).await;
    let staging_dhis2 = FakeDhis2::start(Dhis2State::Up {
        version: "2.43.0".into(),
        revision: "b2c3d4e".into(),
    })
    .await;
    let production_dhis2 = MigratingDhis2::start(
        world.client.clone(),
        &world.ns,
        "hmis",
        &url,
        Migration::Quick,
    )
    .await;
    for (name, version, environment, database, endpoint) in [
        (
            "staging",
            "2.43.0",
            "staging",
            "staging-db",
            staging_dhis2.url.clone(),
        ),
        (
            "hmis",
            "2.42.4",
            "production",
            "hmis-db",
            production_dhis2.url.clone(),
        ),
    ] {
        world
            .create_instance(
                Instance::new(name)
                    .served_by(&endpoint)
                    .version(version)
                    .environment(environment)
                    .database(database)
                    .repository(world.bucket()),
            )
            .await;
    }
    Promotion {
        world,
        _staging_dhis2: staging_dhis2,
        production_dhis2,
        db,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_waits_for_every_gate_then_upgrades_production() {
    let w = world().await;
    // A usage error changes nothing and names the flag.
    let out = support::dhis2ctl(&[
        "promote",
        "staging",
        "--to",
        "hmis",
        "--min-soak",
        "soon",
        "-n",
        &w.ns,
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", support::stderr(&out));
    assert!(support::stderr(&out).contains("--min-soak: 'soon' is not a duration"));
    let instances = w.instances();
    wait_for(90, "staging and production Ready", || async {
        for name in ["staging", "hmis"] {
            let s = instances.get(name).await.ok()?.status?;
            (s.phase.as_deref() == Some("Ready")).then_some(())?;
        }
        Some(())
    })
    .await;
    let out = support::dhis2ctl(&[
        "promote",
        "staging",
        "--to",
        "hmis",
        "--min-soak",
        "1h",
        "-n",
        &w.ns,
    ])
    .await;
    support::assert_success(&out, "dhis2ctl promote");
    let text = support::stdout(&out);
    assert!(
        text.contains("Dhis2Promotion staging-to-hmis: Blocked 2.43.0"),
        "{text}"
    );
    assert!(
        text.contains("Approved") && text.contains("waiting"),
        "{text}"
    );
    let s = w
        .blocked_by(&[
            "Soaked",
            "StagingDrillPassed",
            "ProductionBackupFresh",
            "Approved",
        ])
        .await;
    assert_eq!(s.version.as_deref(), Some("2.43.0"), "staging's version");
    let soak = s.gates.iter().find(|g| g.name == "Soaked").unwrap();
    assert!(
        soak.message.starts_with("staging has run 2.43.0 for"),
        "{}",
        soak.message
    );

    // Staging's restore drill passed (drills themselves are exercised in cluster_drill.rs; here
    // the finished drill is recorded as the drill controller records it).
    let drills = w.api::<Dhis2Drill>();
    w.create::<Dhis2Drill>(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Drill",
        "metadata": {"name": "staging-drill"}, "spec": {"instanceRef": "staging"}
    }))
    .await;
    let finished = rfc3339(chrono::Utc::now() + chrono::Duration::seconds(5));
    drills
        .patch_status(
            "staging-drill",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Completed", "passed": true,
                "completedAt": finished, "rtoSeconds": 42.0, "rpoSeconds": 600}})),
        )
        .await
        .unwrap();
    w.blocked_by(&["Soaked", "ProductionBackupFresh", "Approved"])
        .await;

    // A real backup of production, made by the operator's Job.
    w.create::<dhis2_operator::crd::Dhis2Backup>(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
        "metadata": {"name": "hmis-nightly"}, "spec": {"instanceRef": "hmis"}
    }))
    .await;
    w.blocked_by(&["Soaked", "Approved"]).await;

    // Two hours later staging has soaked; production's backup is still fresh.
    w.clock().advance(2 * 3600);
    w.blocked_by(&["Approved"]).await;

    let out = support::dhis2ctl(&[
        "promote",
        "staging",
        "--to",
        "hmis",
        "--min-soak",
        "1h",
        "--approve",
        "Dr. Sok Dara",
        "-n",
        &w.ns,
    ])
    .await;
    support::assert_success(&out, "dhis2ctl promote --approve");
    let done = w
        .promotion_until("the promotion to end", |s| {
            matches!(s.phase.as_deref(), Some("Succeeded") | Some("Failed"))
        })
        .await;
    assert_eq!(done.phase.as_deref(), Some("Succeeded"), "{done:?}");
    assert!(
        done.backup_id.is_some(),
        "production's pre-upgrade backup: {done:?}"
    );

    let hmis = w.instances();
    let production = hmis.get("hmis").await.unwrap();
    assert_eq!(production.spec.version, "2.43.0");
    let record = &production.status.unwrap().upgrade_history[0];
    assert_eq!(
        record.approved_by.as_deref(),
        Some("Dr. Sok Dara (Dhis2Promotion staging-to-hmis)")
    );
    // Production really migrated.
    let migrated: bool = w
        .env
        .client(&w.db)
        .await
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("public.{}", marker_table(43))],
        )
        .await
        .unwrap()
        .get(0);
    assert!(migrated);
    assert!(w.production_dhis2.version_conflicts().is_empty());
    let _ = w
        .env
        .client("postgres")
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", w.db))
        .await;
}

/// The shipped examples keep staging (`hmis-staging`) and production (`hmis`) in namespaces of
/// their own: a promotion in production's namespace reads staging in its own
/// (`spec.fromNamespace`, `dhis2ctl promote --from-namespace`), once the operator may read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_reads_staging_in_its_own_namespace_once_the_operator_may() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let client = client().await;
    let ns = namespace(&client, "promo-xns").await;
    let staging_ns = namespace(&client, "promo-xns-stg").await;
    let _operator = Operator::start(&client, &ns).await;
    for (namespace, name, version, environment) in [
        (&staging_ns, "hmis-staging", "2.43.0", "staging"),
        (&ns, "hmis", "2.42.4", "production"),
    ] {
        create::<Dhis2Instance>(
            &client,
            namespace,
            Instance::new(name)
                .version(version)
                .environment(environment)
                .json(),
        )
        .await;
    }
    // Staging as its own operator reports it: Ready on 2.43.0.
    Api::<Dhis2Instance>::namespaced(client.clone(), &staging_ns)
        .patch_status(
            "hmis-staging",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready", "version": "2.43.0",
                "deployedVersion": "2.43.0",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                    "message": "DHIS2 answers", "lastTransitionTime": "2026-12-01T00:00:00Z"}]}})),
        )
        .await
        .unwrap();
    let out = support::dhis2ctl(&[
        "promote",
        "hmis-staging",
        "--from-namespace",
        &staging_ns,
        "--to",
        "hmis",
        "--version",
        "2.43.0",
        "--min-soak",
        "1h",
        "-n",
        &ns,
    ])
    .await;
    support::assert_success(&out, "dhis2ctl promote --from-namespace");
    let promotions: Api<Dhis2Promotion> = Api::namespaced(client.clone(), &ns);
    let staging_gate = |want: &'static str, passed: bool| {
        let promotions = promotions.clone();
        async move {
            wait_for(60, want, || async {
                let s = promotions.get("hmis-staging-to-hmis").await.ok()?.status?;
                let g = s.gates.iter().find(|g| g.name == "StagingReady")?;
                (g.passed == passed && g.message.contains(want)).then(|| g.message.clone())
            })
            .await
        }
    };
    // The operator, installed for its own namespace, may not read staging's: it says so.
    let message = staging_gate(
        "may not read Dhis2Instance hmis-staging in namespace",
        false,
    )
    .await;
    assert!(message.contains(&staging_ns), "{message}");
    // Granted read access there, it judges staging.
    create::<Role>(
        &client,
        &staging_ns,
        json!({"metadata": {"name": "dhis2-operator-promotion-reader"},
            "rules": [{"apiGroups": ["dhis2operator.io"], "resources": ["dhis2instances"],
                "verbs": ["get"]}]}),
    )
    .await;
    create::<RoleBinding>(
        &client,
        &staging_ns,
        json!({"metadata": {"name": "dhis2-operator-promotion-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                "name": "dhis2-operator-promotion-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT,
                "namespace": ns}]}),
    )
    .await;
    staging_gate("hmis-staging is Ready on 2.43.0", true).await;
}
