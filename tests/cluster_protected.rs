//! Protected repositories in the cluster (issue 8): an instance whose `spec.backup.repository`
//! encrypts to an age public key. The backup Job gets the public key only; a drill Job gets the
//! private key from its Secret and restores; without that Secret the drill is refused with the
//! fix. An Object Lock asked of a bucket without object lock fails the backup, saying how to
//! enable it. Real apiserver and job controller, real engine in the Jobs (JobKubelet harness),
//! real PostgreSQL and SeaweedFS.

mod support;

use dhis2_operator::crd::backup_common::RunPhase;
use dhis2_operator::crd::{Dhis2Backup, Dhis2Drill, Dhis2Instance};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::age_keys::age_keygen;
use support::cluster_objects::{
    S3_SERVICE, create, external_database, s3_credentials, s3_repository,
};
use support::job_kubelet::{JobKubelet, RunState};
use support::kube_env::{Operator, client, namespace, wait_for};

async fn finished_backup(api: &Api<Dhis2Backup>, name: &str) -> Dhis2Backup {
    wait_for(120, &format!("Dhis2Backup {name} to finish"), || async {
        let b = api.get(name).await.ok()?;
        b.status
            .as_ref()?
            .phase
            .is_some_and(RunPhase::is_finished)
            .then_some(b)
    })
    .await
}

async fn finished_drill(api: &Api<Dhis2Drill>, name: &str) -> Dhis2Drill {
    wait_for(
        240,
        &format!("drill {name} to finish and clean up"),
        || async {
            let d = api.get(name).await.ok()?;
            let s = d.status.as_ref()?;
            (s.phase.is_some_and(RunPhase::is_finished) && s.cleaned_up == Some(true)).then_some(d)
        },
    )
    .await
}

/// The env var names of `job`'s engine container.
async fn job_env(jobs: &Api<Job>, job: &str) -> Vec<String> {
    let job = jobs.get(job).await.unwrap();
    job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

#[tokio::test]
async fn encrypted_cluster_backups_need_the_private_key_only_to_restore() {
    let env = support::env();
    let client = client().await;
    let ns = namespace(&client, "cprot").await;
    let _operator = Operator::start(&client, &ns).await;
    let kubelet = JobKubelet::start(client.clone(), &ns);
    kubelet.map_host(S3_SERVICE, env.s3_endpoint.trim_start_matches("http://"));
    let (database, _) = env.seeded_database("cprot").await;
    external_database(&env, &client, &ns, "moh", &database).await;
    let (bucket, _repo) = env.create_bucket("cprot").await;
    s3_credentials(&env, &client, &ns).await;
    let keys = tempfile::tempdir().unwrap();
    let (identity_file, public_key) = age_keygen(keys.path(), "moh-backup.key");
    let identity = std::fs::read_to_string(&identity_file).unwrap();
    create::<Secret>(
        &client,
        &ns,
        json!({"metadata": {"name": "backup-identity"}, "stringData": {"identity": identity}}),
    )
    .await;
    let mut repository = s3_repository(&bucket);
    repository["encryption"] =
        json!({"recipients": [public_key], "identitySecretRef": "backup-identity"});
    create::<Dhis2Instance>(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
            "metadata": {"name": "hmis"}, "spec": {"version": "2.41.3", "environment": "production",
            "databaseRef": "moh", "backup": {"repository": repository}}}),
    )
    .await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    wait_for(60, "the instance's dhis.conf Secret", || async {
        secrets.get_opt("hmis-dhis-conf").await.ok().flatten()
    })
    .await;

    // The backup: encrypted in the Job, to the public key; the Job never sees the private key.
    let backups = Api::<Dhis2Backup>::namespaced(client.clone(), &ns);
    create::<Dhis2Backup>(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
            "metadata": {"name": "nightly"}, "spec": {"instanceRef": "hmis"}}),
    )
    .await;
    let backup = finished_backup(&backups, "nightly").await;
    let status = backup.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Completed), "{status:?}");
    assert_eq!(status.encrypted, Some(true), "{status:?}");
    let id = status.backup_id.unwrap();
    let stored: Vec<String> = env
        .s3_keys(&bucket)
        .await
        .into_iter()
        .filter(|k| k.contains(&id) && !k.ends_with(".json"))
        .collect();
    assert!(stored.len() >= 3, "{stored:?}");
    assert!(stored.iter().all(|k| k.ends_with(".age")), "{stored:?}");
    let jobs = Api::<Job>::namespaced(client.clone(), &ns);
    let env_names = job_env(&jobs, "nightly-backup").await;
    assert!(env_names.contains(&"DHIS2_BACKUP_RECIPIENTS".to_string()));
    assert!(!env_names.contains(&"DHIS2_BACKUP_IDENTITY_FILE".to_string()));
    let job = serde_json::to_string(&jobs.get("nightly-backup").await.unwrap()).unwrap();
    assert!(
        !job.contains("AGE-SECRET-KEY"),
        "the private key in the Job"
    );

    // A drill decrypts with the identity from its Secret, and passes.
    let drills = Api::<Dhis2Drill>::namespaced(client.clone(), &ns);
    create::<Dhis2Drill>(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Drill",
            "metadata": {"name": "weekly"}, "spec": {"instanceRef": "hmis"}}),
    )
    .await;
    let drill = finished_drill(&drills, "weekly").await.status.unwrap();
    let run = kubelet
        .runs()
        .into_iter()
        .find(|r| r.job == "weekly-drill")
        .unwrap();
    assert_eq!(run.state, RunState::Exited(0), "{}", run.output);
    assert_eq!(drill.phase, Some(RunPhase::Completed), "{drill:?}");
    assert_eq!(drill.passed, Some(true), "{drill:?}");
    assert_eq!(drill.backup_id.as_deref(), Some(id.as_str()));

    // Without the private key, a drill is refused before anything starts, naming the fix.
    Api::<Dhis2Instance>::namespaced(client.clone(), &ns)
        .patch(
            "hmis",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"backup": {"repository": {"encryption":
                {"identitySecretRef": null}}}}})),
        )
        .await
        .unwrap();
    create::<Dhis2Drill>(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Drill",
            "metadata": {"name": "no-key"}, "spec": {"instanceRef": "hmis"}}),
    )
    .await;
    let refused = finished_drill(&drills, "no-key").await.status.unwrap();
    assert_eq!(refused.phase, Some(RunPhase::Failed), "{refused:?}");
    let why = refused.failures.join(" ");
    assert!(why.contains("identitySecretRef"), "{refused:?}");
    assert!(
        !kubelet.runs().iter().any(|r| r.job == "no-key-drill"),
        "a Job ran without the key"
    );

    // A Dhis2Backup may not send the data elsewhere, not even to the same bucket unencrypted:
    // only an instance's repository is accepted (the operator runs without
    // --allow-any-repository), and no Job runs.
    let before = env.s3_keys(&bucket).await;
    create::<Dhis2Backup>(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
            "metadata": {"name": "elsewhere"},
            "spec": {"instanceRef": "hmis", "repository": s3_repository(&bucket)}}),
    )
    .await;
    let refused = finished_backup(&backups, "elsewhere").await.status.unwrap();
    assert_eq!(refused.phase, Some(RunPhase::Failed), "{refused:?}");
    let reason = refused.failure_reason.unwrap_or_default();
    assert!(
        reason.contains("is not the backup repository of an instance of this namespace")
            && reason.contains("--allow-any-repository"),
        "{reason}"
    );
    assert!(!kubelet.runs().iter().any(|r| r.job == "elsewhere-backup"));
    assert_eq!(env.s3_keys(&bucket).await, before);

    // An Object Lock on a bucket without object lock: the backup fails before writing, saying
    // how to enable it; nothing of it is left in the bucket.
    Api::<Dhis2Instance>::namespaced(client.clone(), &ns)
        .patch(
            "hmis",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"backup": {"repository": {"s3":
                {"objectLock": {"days": 30}}}}}})),
        )
        .await
        .unwrap();
    create::<Dhis2Backup>(
        &client,
        &ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Backup",
            "metadata": {"name": "locked"}, "spec": {"instanceRef": "hmis"}}),
    )
    .await;
    let failed = finished_backup(&backups, "locked").await.status.unwrap();
    assert_eq!(failed.phase, Some(RunPhase::Failed), "{failed:?}");
    let reason = failed.failure_reason.unwrap_or_default();
    assert!(
        reason.contains(&bucket) && reason.to_lowercase().contains("object lock"),
        "{reason}"
    );
    let env_names = job_env(&jobs, "locked-backup").await;
    assert!(env_names.contains(&"DHIS2_BACKUP_LOCK_DAYS".to_string()));
    assert_eq!(env.s3_keys(&bucket).await, before);
}
