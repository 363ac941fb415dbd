//! `Dhis2Restore` end to end: the real apiserver and job controller, the operator under its
//! namespaced Role, the engine's restore Job run by the Job harness against the real PostgreSQL
//! and SeaweedFS, DHIS2 pods played by FakeKubelet and DHIS2 itself by FakeDhis2. The backups
//! are made by the engine directly (`dhis2ctl backup run`), as an administrator would.

mod support;

use std::ops::{Deref, DerefMut};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use dhis2_operator::crd::{Dhis2Instance, Dhis2Restore};
use support::cluster_objects::create;
use support::fixtures::{Instance, up};
use support::job_kubelet::RunState;
use support::kube_env::*;
use support::world::World;
use support::{assert_success, backup_run, count, databases_like, json};

const RESTORE_IN_PROGRESS: &str = "dhis2operator.io/restore-in-progress";

/// One namespace with the operator, both kubelets, a backed-up source instance `hmis` (its
/// database seeded, its file store holding one document) and its DHIS2.
struct Restore {
    world: World,
    _source_dhis2: FakeDhis2,
    source_db: String,
    backup_id: String,
}

impl Deref for Restore {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl DerefMut for Restore {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

/// A `Dhis2Instance` on an external database, probed at `dhis2` (the endpoint override).
async fn instance(w: &World, name: &str, environment: &str, database: &str, dhis2: &FakeDhis2) {
    w.create_instance(
        Instance::new(name)
            .served_by(&dhis2.url)
            .environment(environment)
            .database(database)
            .repository(w.bucket()),
    )
    .await;
}

async fn world(prefix: &str) -> Restore {
    let world = World::start(prefix).await;
    let env = &world.env;
    let (source_db, source_url) = env.seeded_database("rs_src").await;
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("documents")).unwrap();
    std::fs::write(
        files.path().join("documents/malaria-report.pdf"),
        "the 2026 malaria report",
    )
    .unwrap();
    let out = backup_run(
        &source_url,
        &world.repo(),
        "hmis",
        &["--files-dir", files.path().to_str().unwrap(), "-o", "json"],
    )
    .await;
    assert_success(&out, "backup run");
    let backup_id = json(&out)["id"].as_str().unwrap().to_string();

    let source_dhis2 = FakeDhis2::start(up()).await;
    world.external_database("hmis-db", &source_db).await;
    instance(&world, "hmis", "production", "hmis-db", &source_dhis2).await;
    Restore {
        world,
        _source_dhis2: source_dhis2,
        source_db,
        backup_id,
    }
}

impl Restore {
    async fn restore(&self, name: &str, spec: serde_json::Value) {
        self.create::<Dhis2Restore>(json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Restore",
            "metadata": {"name": name}, "spec": spec
        }))
        .await;
    }

    async fn patch_restore(&self, name: &str, spec: serde_json::Value) {
        self.restores()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .expect("patch restore");
    }

    /// Waits for the restore's phase; its status then.
    async fn phase(&self, name: &str, want: &str, secs: u64) -> Dhis2Restore {
        let restores = self.restores();
        wait_for(
            secs,
            &format!("Dhis2Restore {name} to be {want}"),
            || async {
                let r = restores.get(name).await.ok()?;
                let phase = r.status.as_ref()?.phase?.as_str();
                if phase != want && (phase == "Completed" || phase == "Failed") {
                    panic!(
                        "Dhis2Restore {name} ended {phase}, not {want}: {:?}",
                        r.status
                    );
                }
                (phase == want).then_some(r)
            },
        )
        .await
    }

    /// Waits until the restore's status message contains `needle`.
    async fn message(&self, name: &str, needle: &str) -> Dhis2Restore {
        let restores = self.restores();
        wait_for(60, &format!("a message with '{needle}'"), || async {
            let r = restores.get(name).await.ok()?;
            r.status
                .as_ref()?
                .message
                .as_deref()?
                .contains(needle)
                .then_some(r.clone())
        })
        .await
    }

    async fn dhis2_pods(&self, name: &str) -> usize {
        self.api::<Pod>()
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/name=dhis2,app.kubernetes.io/instance={name},app.kubernetes.io/component=dhis2"
            )))
            .await
            .unwrap()
            .items
            .len()
    }

    /// DHIS2 runs its replicas again and they are ready.
    async fn running_again(&self, name: &str, replicas: i32) {
        let deployments = self.api::<Deployment>();
        wait_for(
            60,
            &format!("{name} running {replicas} replica(s)"),
            || async {
                let d = deployments.get(name).await.ok()?;
                (d.spec.replicas == Some(replicas)
                    && d.status?.ready_replicas.unwrap_or(0) >= replicas)
                    .then_some(())
            },
        )
        .await;
    }

    /// The engine's restores (not the Jobs that only find which backup `latest` is).
    fn restore_runs(&self) -> Vec<support::job_kubelet::JobRun> {
        self.jobs
            .runs()
            .into_iter()
            .filter(|r| !r.args.iter().any(|a| a == "--resolve-only"))
            .collect()
    }

    async fn event(&self, reason: &str, needle: &str) -> String {
        wait_for(30, &format!("a {reason} event with '{needle}'"), || async {
            self.events(reason)
                .await
                .into_iter()
                .find(|m| m.contains(needle))
        })
        .await
    }

    async fn jobs(&self) -> Vec<Job> {
        self.list().await
    }

    /// Tables in `db`'s public schema.
    async fn tables(&self, db: &str) -> Vec<String> {
        self.env
            .client(db)
            .await
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

/// An existing instance `name` whose database holds one table, `before_restore`.
async fn existing_target(w: &World, name: &str, environment: &str) -> (String, FakeDhis2) {
    let (db, _) = w.env.create_database(&format!("rs_{name}")).await;
    w.env
        .client(&db)
        .await
        .batch_execute(
            "CREATE TABLE before_restore (note text); INSERT INTO before_restore VALUES ('kept')",
        )
        .await
        .unwrap();
    let dhis2 = FakeDhis2::start(up()).await;
    w.external_database(&format!("{name}-db"), &db).await;
    instance(w, name, environment, &format!("{name}-db"), &dhis2).await;
    w.ready(name).await;
    (db, dhis2)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_is_restored_into_a_new_instance_made_from_the_sources_spec() {
    let w = world("rs-new").await;
    let (copy_db, _) = w.env.create_database("rs_copy").await;
    w.external_database("copy-db", &copy_db).await;
    let copy_dhis2 = FakeDhis2::start(up()).await;
    w.restore(
        "refresh-copy",
        json!({"source": {"instance": "hmis"},
            "target": {"instance": "hmis-copy",
                "newInstance": {"databaseRef": "copy-db", "environment": "staging"}}}),
    )
    .await;

    // The new instance is born stopped: DHIS2 never starts on its empty database.
    let created = wait_for(60, "hmis-copy to be created", || async {
        w.instances().get("hmis-copy").await.ok()
    })
    .await;
    assert_eq!(
        created
            .annotations()
            .get(RESTORE_IN_PROGRESS)
            .map(String::as_str),
        Some("refresh-copy")
    );
    assert_eq!(created.spec.database_ref.as_deref(), Some("copy-db"));
    assert_eq!(created.spec.hostname, None);
    assert_eq!(
        serde_json::to_value(created.spec.environment).unwrap(),
        "staging"
    );
    let source = w.instances().get("hmis").await.unwrap();
    assert_eq!(created.spec.backup, source.spec.backup);
    assert_eq!(
        created.spec.admin_secret_ref.as_deref(),
        Some("dhis2-admin")
    );
    // This cluster's operator reaches DHIS2 through the override (no cluster network here).
    w.reach_dhis2_at("hmis-copy", &copy_dhis2.url).await;
    wait_for(60, "the Deployment of hmis-copy at 0 replicas", || async {
        (w.deployment_replicas("hmis-copy").await == Some(0)).then_some(())
    })
    .await;

    let done = w.phase("refresh-copy", "Completed", 180).await;
    let status = done.status.unwrap();
    assert_eq!(status.backup_id.as_deref(), Some(w.backup_id.as_str()));
    assert_eq!(status.repository.as_deref(), Some(w.repo().as_str()));
    assert_eq!(status.target_created, Some(true));
    assert_eq!(status.previous_replicas, Some(1));
    // The target database existed, empty: the engine kept it aside all the same.
    let replaced = status.replaced_database.clone().expect("replacedDatabase");
    assert!(w.tables(&replaced).await.is_empty(), "{replaced} was empty");
    assert_eq!(status.analytics_regeneration.as_deref(), Some("requested"));
    assert!(status.duration_seconds.unwrap() > 0.0);
    assert!(status.started_at.is_some() && status.completed_at.is_some());
    assert_eq!(status.failure_reason, None);

    // The new instance's database holds the backup's rows, its file store the backup's files.
    assert_eq!(
        count(&w.env, &copy_db, "datavalue").await,
        count(&w.env, &w.source_db, "datavalue").await
    );
    assert_eq!(count(&w.env, &copy_db, "organisationunit").await, {
        count(&w.env, &w.source_db, "organisationunit").await
    });
    let restored = w.jobs.claim_dir("hmis-copy-files");
    assert_eq!(
        std::fs::read_to_string(restored.join("documents/malaria-report.pdf")).unwrap(),
        "the 2026 malaria report"
    );

    // DHIS2 runs again and was asked, with the admin account, to regenerate analytics.
    let copy = w.instances().get("hmis-copy").await.unwrap();
    assert!(!copy.annotations().contains_key(RESTORE_IN_PROGRESS));
    w.running_again("hmis-copy", 1).await;
    assert_eq!(
        *copy_dhis2.analytics_requests.lock().unwrap(),
        vec![Some(ADMIN.0.to_string())]
    );
    let note = w.event("AnalyticsRequested", "inMemoryAnalyticsJob").await;
    assert!(note.contains("ANALYTICS_TABLE"), "{note}");

    // The engine ran once: a new target is never forced, the replaced database never dropped.
    let runs = w.restore_runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].state, RunState::Exited(0), "{}", runs[0].output);
    assert!(!runs[0].args.contains(&"--force".to_string()));
    assert!(!runs[0].args.contains(&"--drop-replaced".to_string()));
    // The restore is done once: it leaves the instance it created behind, and no finalizer.
    // (The finalizer goes in the reconcile after the one that wrote Completed.)
    let restores = w.restores();
    wait_for(30, "the finished restore's finalizer to go", || async {
        let r = restores.get("refresh-copy").await.ok()?;
        r.metadata
            .finalizers
            .unwrap_or_default()
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn overwriting_needs_confirmation_and_for_production_an_approver() {
    let w = world("rs-over").await;
    let (national_db, national_dhis2) = existing_target(&w, "national", "production").await;
    w.restore(
        "rollback",
        json!({"source": {"instance": "hmis"}, "target": {"instance": "national"}}),
    )
    .await;

    // Refused without confirmOverwrite: status and Event say what to set.
    let refused = w
        .message("rollback", "set spec.confirmOverwrite: national")
        .await;
    assert_eq!(
        refused.status.unwrap().phase.map(|p| p.as_str()),
        Some("Pending")
    );
    w.event(
        "OverwriteNotConfirmed",
        "set spec.confirmOverwrite: national",
    )
    .await;

    // Confirmed, but national is production: an approver is needed too.
    w.patch_restore("rollback", json!({"confirmOverwrite": "national"}))
        .await;
    w.message("rollback", "spec.approvedBy").await;
    w.event("ApprovalRequired", "spec.approvedBy").await;
    // Nothing was touched meanwhile: no Job, DHIS2 running, the database as it was.
    assert!(w.jobs().await.is_empty());
    assert_eq!(w.deployment_replicas("national").await, Some(1));
    assert_eq!(w.tables(&national_db).await, vec!["before_restore"]);

    // Approved: DHIS2 is stopped for the whole of the engine's run.
    w.jobs.pause();
    w.patch_restore("rollback", json!({"approvedBy": "Dr. Sok Chea"}))
        .await;
    let held = wait_for(120, "the restore command to be held", || async {
        w.jobs
            .runs()
            .into_iter()
            .find(|r| r.state == RunState::Held)
    })
    .await;
    assert!(
        held.args.contains(&"--force".to_string()),
        "{:?}",
        held.args
    );
    assert!(!held.args.contains(&"--drop-replaced".to_string()));
    assert_eq!(w.deployment_replicas("national").await, Some(0));
    assert_eq!(
        w.dhis2_pods("national").await,
        0,
        "no DHIS2 pod while restoring"
    );
    let restoring = w.restores().get("rollback").await.unwrap().status.unwrap();
    assert_eq!(restoring.phase.map(|p| p.as_str()), Some("Restoring"));
    assert_eq!(restoring.previous_replicas, Some(1));
    assert_eq!(restoring.target_created, Some(false));
    w.event("Started", "approved by Dr. Sok Chea").await;
    w.jobs.resume();

    let done = w.phase("rollback", "Completed", 180).await;
    let status = done.status.unwrap();
    // The database as it was is kept beside the restored one.
    let replaced = status.replaced_database.expect("replacedDatabase");
    assert!(
        replaced.starts_with(&format!("{national_db}__replaced_")),
        "{replaced}"
    );
    assert_eq!(
        databases_like(&w.env, &replaced).await,
        vec![replaced.clone()]
    );
    assert_eq!(w.tables(&replaced).await, vec!["before_restore"]);
    assert_eq!(
        count(&w.env, &national_db, "datavalue").await,
        count(&w.env, &w.source_db, "datavalue").await
    );
    assert!(
        !w.tables(&national_db)
            .await
            .contains(&"before_restore".to_string())
    );
    // DHIS2 is back at its replicas, and asked to regenerate analytics.
    w.running_again("national", 1).await;
    let national = w.instances().get("national").await.unwrap();
    assert!(!national.annotations().contains_key(RESTORE_IN_PROGRESS));
    assert_eq!(national_dhis2.analytics_requests.lock().unwrap().len(), 1);
    assert_eq!(status.analytics_regeneration.as_deref(), Some("requested"));
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_are_not_requested_when_declined() {
    let w = world("rs-noan").await;
    let (staging_db, staging_dhis2) = existing_target(&w, "staging", "staging").await;
    w.restore(
        "refresh-staging",
        json!({"source": {"instance": "hmis", "backupId": w.backup_id},
            "target": {"instance": "staging"}, "confirmOverwrite": "staging",
            "regenerateAnalytics": false, "includeFileStore": false}),
    )
    .await;
    let done = w.phase("refresh-staging", "Completed", 180).await;
    let status = done.status.unwrap();
    assert_eq!(status.backup_id.as_deref(), Some(w.backup_id.as_str()));
    assert!(
        status
            .analytics_regeneration
            .as_deref()
            .unwrap()
            .starts_with("not requested"),
        "{status:?}"
    );
    assert_eq!(
        count(&w.env, &staging_db, "datavalue").await,
        count(&w.env, &w.source_db, "datavalue").await
    );
    w.running_again("staging", 1).await;
    assert!(staging_dhis2.analytics_requests.lock().unwrap().is_empty());
    let runs = w.jobs.runs();
    assert!(!runs[0].args.contains(&"--files-dir".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_restore_leaves_the_target_as_it_was_and_starts_dhis2_again() {
    let w = world("rs-fail").await;
    let (staging_db, staging_dhis2) = existing_target(&w, "staging", "staging").await;
    w.restore(
        "wrong-id",
        json!({"source": {"instance": "hmis", "backupId": "20990101T000000Z-deadbeef"},
            "target": {"instance": "staging"}, "confirmOverwrite": "staging"}),
    )
    .await;
    let failed = w.phase("wrong-id", "Failed", 180).await;
    let status = failed.status.unwrap();
    let reason = status.failure_reason.unwrap();
    assert!(reason.contains("20990101T000000Z-deadbeef"), "{reason}");
    assert_eq!(reason.lines().count(), 1, "{reason}");
    w.event("Failed", "20990101T000000Z-deadbeef").await;
    assert_eq!(w.tables(&staging_db).await, vec!["before_restore"]);
    assert!(
        databases_like(&w.env, &format!("{staging_db}__%"))
            .await
            .is_empty()
    );
    // DHIS2 starts again; no analytics for a restore that did not happen.
    w.running_again("staging", 1).await;
    let staging = w.instances().get("staging").await.unwrap();
    assert!(!staging.annotations().contains_key(RESTORE_IN_PROGRESS));
    assert!(staging_dhis2.analytics_requests.lock().unwrap().is_empty());
    // A finished restore never runs again, even when its spec changes: the operator sees the
    // change (observedGeneration) and leaves it.
    w.patch_restore("wrong-id", json!({"source": {"backupId": w.backup_id}}))
        .await;
    let generation = w
        .restores()
        .get("wrong-id")
        .await
        .unwrap()
        .metadata
        .generation;
    wait_for(30, "the changed spec to be observed", || async {
        let r = w.restores().get("wrong-id").await.ok()?;
        (r.status?.observed_generation == generation).then_some(())
    })
    .await;
    assert_eq!(w.jobs.runs().len(), 1);
    assert!(w.jobs().await.len() <= 1);
    assert_eq!(
        w.restores()
            .get("wrong-id")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .map(|p| p.as_str()),
        Some("Failed")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_restore_into_a_new_instance_leaves_it_stopped() {
    let w = world("rs-newfail").await;
    let (db, _) = w.env.create_database("rs_newfail").await;
    w.external_database("broken-db", &db).await;
    w.restore(
        "wrong-id",
        json!({"source": {"instance": "hmis", "backupId": "20990101T000000Z-deadbeef"},
            "target": {"instance": "hmis-broken", "newInstance": {"databaseRef": "broken-db"}}}),
    )
    .await;
    w.phase("wrong-id", "Failed", 180).await;
    // Its database holds nothing restored: DHIS2 must not start on it (a fresh, empty DHIS2
    // with the default admin account), now or after the restore lets go of it.
    let stopped = wait_for(60, "hmis-broken to be released, stopped", || async {
        let i = w.instances().get("hmis-broken").await.ok()?;
        (!i.annotations().contains_key(RESTORE_IN_PROGRESS)).then_some(i)
    })
    .await;
    assert_eq!(stopped.spec.replicas, 0);
    let note = w.event("CreatedInstanceStopped", "hmis-broken").await;
    assert!(note.contains("spec.replicas: 0"), "{note}");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(w.deployment_replicas("hmis-broken").await.unwrap_or(0), 0);
    assert_eq!(w.dhis2_pods("hmis-broken").await, 0);
}

/// Waits until the harness holds the restore command (paused), DHIS2 stopped meanwhile.
async fn held_with_dhis2_stopped(w: &Restore, target: &str) {
    wait_for(120, "the restore command to be held", || async {
        w.jobs
            .runs()
            .into_iter()
            .find(|r| r.state == RunState::Held)
    })
    .await;
    assert_eq!(w.deployment_replicas(target).await, Some(0));
    assert_eq!(w.dhis2_pods(target).await, 0);
}

/// `refresh-staging` (hmis's latest backup over `staging`, confirmed) created while the harness
/// is paused: returns once its restore command is held, DHIS2 of staging stopped meanwhile.
async fn refresh_staging_held(w: &Restore) {
    w.jobs.pause();
    w.restore(
        "refresh-staging",
        json!({"source": {"instance": "hmis"}, "target": {"instance": "staging"},
            "confirmOverwrite": "staging"}),
    )
    .await;
    held_with_dhis2_stopped(w, "staging").await;
}

/// The operator is killed while the restore command is held, then the command runs to its end
/// (successfully) with nobody watching; the operator is left stopped.
async fn restore_runs_while_the_operator_is_away(w: &mut Restore) {
    w.operator.kill().await;
    w.jobs.resume();
    let run = wait_for(120, "the restore command to finish", || async {
        w.restore_runs()
            .into_iter()
            .find(|r| matches!(r.state, RunState::Exited(_)))
    })
    .await;
    assert_eq!(run.state, RunState::Exited(0), "{}", run.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_killed_mid_restore_finishes_it_once_after_its_restart() {
    let mut w = world("rs-kill").await;
    let (staging_db, staging_dhis2) = existing_target(&w, "staging", "staging").await;
    refresh_staging_held(&w).await;
    // The operator dies; the engine runs to its end meanwhile.
    restore_runs_while_the_operator_is_away(&mut w).await;
    w.operator.restart();
    let done = w.phase("refresh-staging", "Completed", 180).await;
    assert!(done.status.unwrap().replaced_database.is_some());
    assert_eq!(w.restore_runs().len(), 1, "the engine ran once");
    assert_eq!(
        count(&w.env, &staging_db, "datavalue").await,
        count(&w.env, &w.source_db, "datavalue").await
    );
    w.running_again("staging", 1).await;
    assert_eq!(staging_dhis2.analytics_requests.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_job_deleted_after_the_swap_is_reported_as_swapped_never_as_left_as_it_was() {
    let mut w = world("rs-gone").await;
    let (staging_db, _staging_dhis2) = existing_target(&w, "staging", "staging").await;
    refresh_staging_held(&w).await;
    // While the operator is away the engine swaps the restored database in, and someone
    // deletes the Job outright: no report (termination message) survives to say so.
    restore_runs_while_the_operator_is_away(&mut w).await;
    let jobs = w.api::<Job>();
    jobs.delete("refresh-staging-restore", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(60, "the Job to be gone", || async {
        jobs.get_opt("refresh-staging-restore")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    w.operator.restart();
    let failed = w.phase("refresh-staging", "Failed", 180).await;
    let status = failed.status.unwrap();
    let message = status.message.clone().unwrap_or_default();
    assert!(!message.contains("left as it was"), "{message}");
    assert!(message.contains("swapped"), "{message}");
    assert_eq!(status.database_swapped, Some(true), "{status:?}");
    assert_eq!(status.file_store_restored, None, "unknown: {status:?}");
    let replaced = status.replaced_database.clone().unwrap_or_default();
    assert!(
        replaced.starts_with(&format!("{staging_db}__replaced_")),
        "{status:?}"
    );
    // What status says is what the server holds: the restored data in, the old kept aside.
    assert_eq!(
        count(&w.env, &staging_db, "datavalue").await,
        count(&w.env, &w.source_db, "datavalue").await
    );
    assert_eq!(w.tables(&replaced).await, vec!["before_restore"]);
    w.event("FailedAfterSwap", &replaced).await;
    w.running_again("staging", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_restore_mid_run_stops_its_job_and_starts_dhis2_again() {
    let w = world("rs-del").await;
    let (staging_db, staging_dhis2) = existing_target(&w, "staging", "staging").await;
    refresh_staging_held(&w).await;
    w.restores()
        .delete("refresh-staging", &Default::default())
        .await
        .unwrap();
    wait_for(60, "the restore to be gone", || async {
        w.restores()
            .get_opt("refresh-staging")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // Its Job went first (the command never ran), then DHIS2 started again on its database.
    assert!(w.jobs().await.is_empty());
    // The harness notices the pod's deletion at its next poll, which may come after the
    // restore is gone: wait for it rather than race it.
    wait_for(10, "the held command to be killed with its pod", || async {
        let runs = w.restore_runs();
        (runs.len() == 1 && runs[0].state == RunState::Killed).then_some(())
    })
    .await;
    w.running_again("staging", 1).await;
    let staging = w.instances().get("staging").await.unwrap();
    assert!(!staging.annotations().contains_key(RESTORE_IN_PROGRESS));
    assert_eq!(w.tables(&staging_db).await, vec!["before_restore"]);
    assert!(staging_dhis2.analytics_requests.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_changed_mid_restore_is_refused_and_the_restore_carries_on_with_its_target() {
    let w = world("rs-edit").await;
    let (staging_db, staging_dhis2) = existing_target(&w, "staging", "staging").await;
    let (national_db, national_dhis2) = existing_target(&w, "national", "staging").await;
    refresh_staging_held(&w).await;
    // Someone re-points the running restore at another instance, consent and all.
    w.patch_restore(
        "refresh-staging",
        json!({"target": {"instance": "national"}, "confirmOverwrite": "national"}),
    )
    .await;
    let refused = wait_for(30, "the change to be refused in status", || async {
        let r = w.restores().get("refresh-staging").await.ok()?;
        let status = r.status?;
        (status.observed_generation == r.metadata.generation)
            .then_some(())
            .and(
                status
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "SpecChangeRefused" && c.status == "True"),
            )
    })
    .await;
    assert!(
        refused
            .message
            .contains("spec.target.instance (staging → national)"),
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains("create a new Dhis2Restore"),
        "{}",
        refused.message
    );
    w.event("SpecChangeRefused", "spec.target.instance").await;
    w.jobs.resume();

    let done = w.phase("refresh-staging", "Completed", 180).await;
    let status = done.status.unwrap();
    assert_eq!(
        status.started_with.as_ref().unwrap().target.instance,
        "staging"
    );
    // The target it started with was restored and is released: DHIS2 runs again.
    assert_eq!(
        count(&w.env, &staging_db, "datavalue").await,
        count(&w.env, &w.source_db, "datavalue").await
    );
    w.running_again("staging", 1).await;
    let staging = w.instances().get("staging").await.unwrap();
    assert!(!staging.annotations().contains_key(RESTORE_IN_PROGRESS));
    assert_eq!(staging_dhis2.analytics_requests.lock().unwrap().len(), 1);
    // The instance named afterwards was never touched.
    assert_eq!(w.tables(&national_db).await, vec!["before_restore"]);
    assert_eq!(w.deployment_replicas("national").await, Some(1));
    let national = w.instances().get("national").await.unwrap();
    assert!(!national.annotations().contains_key(RESTORE_IN_PROGRESS));
    assert!(national_dhis2.analytics_requests.lock().unwrap().is_empty());
    assert_eq!(w.restore_runs().len(), 1);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(ready.status, "True", "{ready:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_is_resolved_before_dhis2_stops_and_a_newer_backup_changes_nothing() {
    let w = world("rs-latest").await;
    let (staging_db, _staging_dhis2) = existing_target(&w, "staging", "staging").await;
    w.jobs.pause();
    w.restore(
        "refresh-staging",
        json!({"source": {"instance": "hmis", "backupId": "latest"},
            "target": {"instance": "staging"}, "confirmOverwrite": "staging"}),
    )
    .await;
    // The first status that leaves Pending (DHIS2 is stopped only from then on) names the
    // backup itself, not `latest`.
    let restores = w.restores();
    let started = wait_for(120, "the restore to leave Pending", || async {
        let status = restores.get("refresh-staging").await.ok()?.status?;
        (status.phase?.as_str() != "Pending").then_some(status)
    })
    .await;
    assert_eq!(
        started.backup_id.as_deref(),
        Some(w.backup_id.as_str()),
        "{started:?}"
    );
    held_with_dhis2_stopped(&w, "staging").await;
    // A newer backup of hmis completes while DHIS2 of staging is stopping.
    let out = backup_run(
        &w.env.url_for(&w.source_db),
        &w.repo(),
        "hmis",
        &["-o", "json"],
    )
    .await;
    assert_success(&out, "a newer backup");
    let newer = json(&out)["id"].as_str().unwrap().to_string();
    assert_ne!(newer, w.backup_id);
    w.jobs.resume();
    let done = w.phase("refresh-staging", "Completed", 180).await;
    assert_eq!(
        done.status.unwrap().backup_id.as_deref(),
        Some(w.backup_id.as_str())
    );
    let runs = w.restore_runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].args.contains(&w.backup_id), "{:?}", runs[0].args);
    assert!(!runs[0].args.contains(&"latest".to_string()));
    assert_eq!(
        count(&w.env, &staging_db, "datavalue").await,
        count(&w.env, &w.source_db, "datavalue").await
    );
}

/// Each restore keeps what the instance held as `<database>__replaced_<time>` and nothing
/// dropped them: a few refreshes filled the database volume. The operator drops those older
/// than `spec.keepReplacedDatabasesDays` (default 7) and keeps the recent ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_databases_are_dropped_once_older_than_the_days_kept() {
    let env = support::env();
    let client = client().await;
    let ns = namespace(&client, "rs-replaced").await;
    let _operator = Operator::start(&client, &ns).await;
    let (db, _) = env.create_database("rs_replaced").await;
    support::cluster_objects::external_database(&env, &client, &ns, "hmis-db", &db).await;
    let recent = chrono::Utc::now() - chrono::Duration::days(2);
    let old = format!("{db}__replaced_20260101t000000z");
    let kept = format!("{db}__replaced_{}", recent.format("%Y%m%dt%H%M%Sz"));
    let other = format!("{db}x__replaced_20260101t000000z");
    let admin = env.client("postgres").await;
    for name in [&old, &kept, &other] {
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
    }
    create::<Dhis2Instance>(
        &client,
        &ns,
        Instance::new("hmis")
            .version("2.42.4")
            .environment("staging")
            .database("hmis-db")
            .json(),
    )
    .await;
    let exists = |name: String| {
        let admin = &admin;
        async move {
            admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some()
        }
    };
    wait_for(90, "the expired replaced database dropped", || async {
        (!exists(old.clone()).await).then_some(())
    })
    .await;
    assert!(exists(kept.clone()).await, "two days old: kept");
    assert!(exists(other.clone()).await, "another database's: untouched");
    let events = event_messages(&client, &ns, "ReplacedDatabaseDropped").await;
    assert!(events.iter().any(|e| e.contains(&old)), "{events:?}");
    for name in [&kept, &other] {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
            .await;
    }
}
