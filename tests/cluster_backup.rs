//! `Dhis2Backup` end to end: the real operator (under its namespaced Role), the real apiserver and
//! job controller, the real engine in the Job (run by the JobKubelet harness), a DHIS2-shaped
//! database on the test PostgreSQL behind an external `Dhis2Database`, and a fresh bucket on the
//! test SeaweedFS as the instance's repository.

mod support;

use dhis2_operator::crd::Dhis2Backup;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::Env;
use support::cluster_objects::{
    S3_SERVICE, external_database, s3_credentials, s3_repository, set_external_database_password,
};
use support::job_kubelet::{JobKubelet, RunState};
use support::kube_env::{Operator, client, namespace, wait_for};

/// One namespace with the operator, the harness, an instance `hmis` on an external database
/// (a seeded DHIS2-shaped database) and an S3 repository in a fresh bucket.
struct Cluster {
    env: Env,
    client: Client,
    ns: String,
    operator: Operator,
    kubelet: JobKubelet,
    bucket: String,
    repo: String,
    pg_password: String,
}

impl Cluster {
    async fn start(prefix: &str) -> Self {
        let env = support::env();
        let client = client().await;
        let ns = namespace(&client, prefix).await;
        let operator = Operator::start(&client, &ns).await;
        let kubelet = JobKubelet::start(client.clone(), &ns);
        kubelet.map_host(S3_SERVICE, env.s3_endpoint.trim_start_matches("http://"));
        let (database, _) = env.seeded_database("cb").await;
        external_database(&env, &client, &ns, "moh", &database).await;
        let (bucket, repo) = env.create_bucket("cb").await;
        s3_credentials(&env, &client, &ns).await;
        create(
            &client,
            &ns,
            json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
                "metadata": {"name": "hmis"}, "spec": {"version": "2.41.3", "environment": "production",
                "databaseRef": "moh", "backup": {"repository": s3_repository(&bucket)}}}),
        )
        .await;
        // The instance's dhis.conf appears once its database is found ready.
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        wait_for(60, "the instance's dhis.conf Secret", || async {
            secrets.get_opt("hmis-dhis-conf").await.ok().flatten()
        })
        .await;
        let pg_password = env.secrets()[1].clone();
        Self {
            env,
            client,
            ns,
            operator,
            kubelet,
            bucket,
            repo,
            pg_password,
        }
    }

    fn backups(&self) -> Api<Dhis2Backup> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn backup(&self, name: &str, spec: serde_json::Value) {
        create(
            &self.client,
            &self.ns,
            json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
                "metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }

    async fn wait_phase(&self, name: &str, phase: &str) -> Dhis2Backup {
        let backups = self.backups();
        wait_for(
            120,
            &format!("Dhis2Backup {name} to be {phase}"),
            || async {
                let b = backups.get(name).await.ok()?;
                let now = serde_json::to_value(b.status.as_ref()?.phase?).ok()?;
                (now == json!(phase)).then_some(b)
            },
        )
        .await
    }

    /// What `dhis2ctl backup list` finds for the instance in the repository.
    async fn listed(&self) -> Vec<String> {
        support::listed_backup_ids(&self.repo, Some("hmis")).await
    }

    async fn jobs(&self) -> Vec<Job> {
        Api::<Job>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().labels("dhis2operator.io/instance=hmis"))
            .await
            .unwrap()
            .items
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    async fn set_pg_password(&self, password: &str) {
        set_external_database_password(&self.client, &self.ns, "moh", password).await;
    }

    /// Waits until the harness holds (paused) or runs the command of `job`.
    async fn wait_run(&self, job: &str, state: RunState) {
        wait_for(60, &format!("{job} to be {state:?}"), || async {
            self.kubelet
                .runs()
                .iter()
                .any(|r| r.job == job && r.state == state)
                .then_some(())
        })
        .await
    }
}

/// Creates any object with kubectl semantics (`create`), from its JSON.
async fn create(client: &Client, ns: &str, object: serde_json::Value) {
    let kind = object["kind"].as_str().unwrap().to_string();
    let resource = kube::discovery::ApiResource::erase::<Dhis2Backup>(&());
    let plural = match kind.as_str() {
        "Dhis2Backup" => "dhis2backups",
        "Dhis2Instance" => "dhis2instances",
        "Dhis2Database" => "dhis2databases",
        other => panic!("unexpected kind {other}"),
    };
    let resource = kube::discovery::ApiResource {
        kind: kind.clone(),
        plural: plural.into(),
        ..resource
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
}

#[tokio::test]
async fn an_on_demand_backup_lands_in_the_repository_and_its_status_says_so() {
    let c = Cluster::start("cb-demand").await;
    std::fs::write(c.kubelet.claim_dir("hmis-files").join("logo.png"), b"PNG").unwrap();
    c.backup("hmis-manual", json!({"instanceRef": "hmis"}))
        .await;
    let done = c.wait_phase("hmis-manual", "Completed").await;
    let status = done.status.unwrap();
    let id = status.backup_id.clone().expect("backupId");
    assert_eq!(c.listed().await, vec![id.clone()]);
    let keys = c.env.s3_keys(&c.bucket).await;
    for object in ["filestore.tar.zst", "dhis.conf.zst"] {
        assert!(
            keys.iter().any(|k| k.contains(&id) && k.ends_with(object)),
            "{object} not in {keys:?}"
        );
    }
    assert_eq!(
        status.repository.as_deref(),
        Some(c.repo.as_str()),
        "{status:?}"
    );
    assert_eq!(status.job_name.as_deref(), Some("hmis-manual-backup"));
    assert!(status.size_bytes.unwrap() > 0);
    let size = status.size.clone().unwrap();
    assert!(status.duration_seconds.is_some());
    assert!(status.started_at.is_some() && status.completed_at.is_some());
    assert!(status.postgres_version.unwrap().starts_with("15"));
    assert_eq!(status.failure_reason, None);
    assert_eq!(
        status.verified, None,
        "spec.verify not set: nothing claimed"
    );

    // kubectl shows what an officer needs.
    let out = std::process::Command::new("kubectl")
        .args(["get", "d2backup", "-n", &c.ns])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    for column in ["INSTANCE", "PHASE", "SIZE", "AGE"] {
        assert!(header.contains(column), "{table}");
    }
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("hmis-manual")
            && row.contains(" hmis ")
            && row.contains("Completed")
            && row.contains(&size),
        "{table}"
    );

    // The engine ran once, with the file store and dhis.conf; no secret in the Job.
    let runs = c.kubelet.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].state, RunState::Exited(0), "{}", runs[0].output);
    assert!(runs[0].args.contains(&"--files-dir".to_string()));
    let jobs = c.jobs().await;
    let text = serde_json::to_string(&jobs).unwrap();
    assert!(!text.contains(&c.pg_password) && !text.contains(&c.env.secret_key));

    assert_eq!(
        c.events("BackupCompleted").await.len(),
        2,
        "on the backup and the instance"
    );
    // The instance summarises its newest successful backup.
    let instances = Api::<dhis2_operator::crd::Dhis2Instance>::namespaced(c.client.clone(), &c.ns);
    wait_for(60, "the instance's last backup", || async {
        let last = instances
            .get("hmis")
            .await
            .ok()?
            .status?
            .backup?
            .last_backup_id?;
        (last == id).then_some(())
    })
    .await;
}

#[tokio::test]
async fn wrong_database_credentials_fail_the_backup_and_the_next_one_still_runs() {
    let c = Cluster::start("cb-creds").await;
    c.set_pg_password("not-the-password").await;
    c.backup("hmis-a", json!({"instanceRef": "hmis"})).await;
    let failed = c.wait_phase("hmis-a", "Failed").await;
    let reason = failed.status.unwrap().failure_reason.unwrap();
    assert!(
        reason.contains("password authentication failed"),
        "{reason}"
    );
    assert!(!reason.contains("not-the-password"), "{reason}");
    assert!(
        c.listed().await.is_empty(),
        "a failed backup is never listed"
    );
    let warnings = c.events("BackupFailed").await;
    assert_eq!(warnings.len(), 2, "on the backup and the instance");
    assert!(
        warnings
            .iter()
            .all(|e| e.type_.as_deref() == Some("Warning"))
    );

    c.set_pg_password(&c.pg_password.clone()).await;
    c.backup("hmis-b", json!({"instanceRef": "hmis", "verify": true}))
        .await;
    let done = c.wait_phase("hmis-b", "Completed").await;
    let status = done.status.unwrap();
    assert_eq!(c.listed().await, vec![status.backup_id.unwrap()]);
    // spec.verify: the engine re-read the backup, and its report says so.
    assert_eq!(status.verified, Some(true), "{:?}", status.conditions);
    let run = c
        .kubelet
        .runs()
        .into_iter()
        .find(|r| r.job == "hmis-b-backup");
    assert!(run.unwrap().args.contains(&"--verify".to_string()));
    // The failed backup stays failed: its Job is not made again.
    let a = c.backups().get("hmis-a").await.unwrap();
    assert_eq!(
        a.status.unwrap().failure_reason.as_deref(),
        Some(reason.as_str())
    );
    assert_eq!(
        c.kubelet
            .runs()
            .iter()
            .filter(|r| r.job == "hmis-a-backup")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_deleted_job_fails_its_backup_and_never_blocks_the_next() {
    let c = Cluster::start("cb-deleted").await;
    c.kubelet.pause();
    c.backup("hmis-first", json!({"instanceRef": "hmis"})).await;
    c.wait_phase("hmis-first", "Running").await;
    c.wait_run("hmis-first-backup", RunState::Held).await;

    // One backup of an instance at a time: the second waits, and says why.
    c.backup("hmis-second", json!({"instanceRef": "hmis"}))
        .await;
    let backups = c.backups();
    let waiting = wait_for(30, "hmis-second to wait for hmis-first", || async {
        let b = backups.get("hmis-second").await.ok()?;
        let s = b.status?;
        let message = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")?
            .message
            .clone();
        message.contains("hmis-first").then_some(message)
    })
    .await;
    assert!(
        waiting.contains("one backup of an instance at a time"),
        "{waiting}"
    );
    assert!(
        c.kubelet
            .runs()
            .iter()
            .all(|r| r.job != "hmis-second-backup"),
        "the second backup's Job was made while the first ran"
    );

    Api::<Job>::namespaced(c.client.clone(), &c.ns)
        .delete("hmis-first-backup", &DeleteParams::background())
        .await
        .unwrap();
    let failed = c.wait_phase("hmis-first", "Failed").await;
    let reason = failed.status.unwrap().failure_reason.unwrap();
    assert!(
        reason.contains("the Job hmis-first-backup was deleted"),
        "{reason}"
    );
    c.wait_run("hmis-first-backup", RunState::Killed).await;

    c.wait_run("hmis-second-backup", RunState::Held).await;
    c.kubelet.resume();
    let done = c.wait_phase("hmis-second", "Completed").await;
    assert_eq!(
        c.listed().await,
        vec![done.status.unwrap().backup_id.unwrap()]
    );
    let jobs: Vec<String> = c.jobs().await.iter().map(|j| j.name_any()).collect();
    assert_eq!(
        jobs,
        vec!["hmis-second-backup"],
        "the deleted Job is not made again"
    );
}

#[tokio::test]
async fn the_operator_killed_during_a_backup_converges_to_exactly_one_backup() {
    let mut c = Cluster::start("cb-kill").await;
    c.kubelet.pause();
    c.backup("hmis-nightly", json!({"instanceRef": "hmis"}))
        .await;
    c.wait_phase("hmis-nightly", "Running").await;
    c.wait_run("hmis-nightly-backup", RunState::Held).await;
    c.operator.kill().await;
    // The engine runs and finishes while no operator is there.
    c.kubelet.resume();
    let jobs = Api::<Job>::namespaced(c.client.clone(), &c.ns);
    wait_for(120, "the Job to complete without the operator", || async {
        let job = jobs.get("hmis-nightly-backup").await.ok()?;
        job.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(())
    })
    .await;
    c.operator.restart();
    let done = c.wait_phase("hmis-nightly", "Completed").await;
    let id = done.status.unwrap().backup_id.unwrap();
    assert_eq!(c.listed().await, vec![id]);
    assert_eq!(c.jobs().await.len(), 1);
    assert_eq!(c.kubelet.runs().len(), 1, "{:?}", c.kubelet.runs());
}

#[tokio::test]
async fn a_backup_without_any_repository_fails_naming_both_places() {
    let client = client().await;
    let ns = namespace(&client, "cb-norepo").await;
    let _operator = Operator::start(&client, &ns).await;
    create(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
            "metadata": {"name": "hmis"}, "spec": {"version": "2.41.3", "environment": "staging"}}),
    )
    .await;
    create(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
            "metadata": {"name": "hmis-now"}, "spec": {"instanceRef": "hmis"}}),
    )
    .await;
    let backups = Api::<Dhis2Backup>::namespaced(client.clone(), &ns);
    let reason = wait_for(60, "the backup to fail", || async {
        backups.get("hmis-now").await.ok()?.status?.failure_reason
    })
    .await;
    assert!(
        reason.contains("spec.repository") && reason.contains("spec.backup.repository"),
        "{reason}"
    );
    let jobs = Api::<Job>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(jobs.items.is_empty());
}
