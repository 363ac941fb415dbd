//! The Job of one `Dhis2Backup` (pure): `dhis2ctl backup run` for the instance, with the
//! repository and the database from their Secrets (by reference only), the file store volume
//! read-only beside DHIS2's pods, and dhis.conf (it holds `encryption.password`) from the
//! instance's Secret.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Affinity, PersistentVolumeClaimVolumeSource, PodAffinity, PodAffinityTerm, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::backup_common::{RepositorySpec, RetentionSpec};
use crate::crd::dhis2_backup::{BackupPurpose, Dhis2Backup, Dhis2BackupSpec};
use crate::crd::dhis2_instance::{Dhis2Instance, Dhis2InstanceSpec};

use crate::operator::database::connection::DatabaseSecret;
use crate::operator::instance::build::{DHIS_CONF_MODE, dhis2_pod_labels};
use crate::operator::jobs::engine_job::{
    EngineInputs, EngineJob, build_engine_job, database_inputs, repository_inputs,
    secret_file_inputs,
};
use crate::operator::kit::labels::labels;
use crate::rules::names::{
    ENGINE_APP, INSTANCE_LABEL, SCHEDULE_LABEL, dhis_conf_secret_name, file_store_claim_name,
};

/// Where the Job sees DHIS2's file store (the path DHIS2 itself uses).
pub const FILES_MOUNT: &str = "/opt/dhis2/files";
/// Where the Job sees the instance's dhis.conf.
pub const DHIS_CONF_DIR: &str = "/etc/dhis2";
pub const DHIS_CONF_KEY: &str = "dhis.conf";
pub const COMPONENT: &str = "backup";

/// The Job's name: `<backup>-backup`, or for a long name its first characters and a hash of
/// all of it (a Job's name is also its pods' `job-name` label: at most 63 characters).
pub fn backup_job_name(backup: &str) -> String {
    const MAX: usize = 63;
    let plain = format!("{backup}-{COMPONENT}");
    if plain.len() <= MAX {
        return plain;
    }
    let hash = hex::encode(Sha256::digest(backup.as_bytes()));
    let suffix = format!("-{}-{COMPONENT}", &hash[..8]);
    let mut head = backup[..MAX - suffix.len()].to_string();
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}{suffix}")
}

/// Whether the Job mounts the file store: asked for, and DHIS2 keeps its files on the volume
/// (an S3 file store is not a volume the Job could read).
pub fn backs_up_file_store(backup: &Dhis2BackupSpec, instance: &Dhis2InstanceSpec) -> bool {
    backup.include_file_store
        && instance
            .file_store
            .as_ref()
            .and_then(|f| f.s3.as_ref())
            .is_none()
}

/// `--keep-* N` and `--time-zone TZ` for retention after the backup.
pub fn retention_args(retention: &RetentionSpec, time_zone: Option<&str>) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, value) in [
        ("--keep-last", retention.keep_last),
        ("--keep-daily", retention.keep_daily),
        ("--keep-weekly", retention.keep_weekly),
        ("--keep-monthly", retention.keep_monthly),
    ] {
        if let Some(n) = value {
            args.extend([flag.to_string(), n.to_string()]);
        }
    }
    if let Some(tz) = time_zone {
        args.extend(["--time-zone".to_string(), tz.to_string()]);
    }
    args
}

/// Everything the backup's Job is made from.
pub struct BackupJobPlan<'a> {
    pub backup: &'a Dhis2Backup,
    pub instance: &'a Dhis2Instance,
    pub repository: &'a RepositorySpec,
    pub database: &'a DatabaseSecret,
    pub image: &'a str,
    /// DHIS2 pods of the instance that exist now (any phase but finished): the Job must share
    /// their node to mount the ReadWriteOnce file store, and may go anywhere when there are
    /// none (an upgrade or a restore has scaled DHIS2 to 0, or `replicas: 0`).
    pub dhis2_pods: usize,
}

pub fn build_backup_job(plan: &BackupJobPlan) -> Job {
    let backup = &plan.backup.spec;
    let instance_name = plan.instance.name_any();
    let instance = &plan.instance.spec;
    let file_store = backs_up_file_store(backup, instance);

    let mut args: Vec<String> = ["backup", "run", "--instance", &instance_name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if backup.include_analytics {
        args.push("--include-analytics".into());
    }
    if file_store {
        args.extend(["--files-dir".into(), FILES_MOUNT.into()]);
    }
    args.extend([
        "--dhis-conf".into(),
        format!("{DHIS_CONF_DIR}/{DHIS_CONF_KEY}"),
    ]);
    if let Some(retention) = &backup.retention {
        args.extend(retention_args(
            retention,
            backup.retention_time_zone.as_deref(),
        ));
    }
    if backup.verify {
        args.push("--verify".into());
    }
    match backup.purpose {
        BackupPurpose::Routine => {}
        BackupPurpose::BeforeRestore => args.push("--before-restore".into()),
        BackupPurpose::PreUpgrade => args.push("--pre-upgrade".into()),
    }

    let connection = &plan.database.connection;
    let mut inputs = repository_inputs(plan.repository, false)
        .unwrap_or_default()
        .merge(database_inputs(
            "DHIS2_DATABASE_URL",
            &connection.host,
            &connection.port,
            &connection.database,
            &connection.username,
            &plan.database.secret_name,
        ));
    inputs = inputs.merge(secret_file_inputs(
        "dhis-conf",
        &dhis_conf_secret_name(&instance_name),
        DHIS_CONF_KEY,
        DHIS_CONF_DIR,
        DHIS_CONF_MODE,
    ));
    let mut affinity = None;
    if file_store {
        inputs = inputs.merge(EngineInputs {
            volumes: vec![Volume {
                name: "files".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: file_store_claim_name(&instance_name),
                    read_only: Some(true),
                }),
                ..Default::default()
            }],
            mounts: vec![VolumeMount {
                name: "files".into(),
                mount_path: FILES_MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            }],
            ..Default::default()
        });
        // The claim is ReadWriteOnce: only a pod on the node where DHIS2 has it mounted can
        // mount it too. With no DHIS2 pod (stopped for an upgrade or a restore) any node will
        // do: a required affinity to pods that do not exist would never be scheduled.
        if plan.dhis2_pods > 0 {
            affinity = Some(beside_dhis2(&instance_name));
        }
    }

    let mut job_labels = labels(ENGINE_APP, &instance_name, COMPONENT);
    job_labels.insert(INSTANCE_LABEL.into(), instance_name.clone());
    if let Some(schedule) = plan.backup.labels().get(SCHEDULE_LABEL) {
        job_labels.insert(SCHEDULE_LABEL.into(), schedule.clone());
    }
    build_engine_job(&EngineJob {
        name: backup_job_name(&plan.backup.name_any()),
        namespace: plan.backup.namespace().unwrap_or_default(),
        owner: plan.backup.controller_owner_ref(&()),
        labels: job_labels,
        args,
        inputs,
        deadline_seconds: backup.deadline_seconds,
        affinity,
        image: plan.image.to_string(),
    })
}

/// Required affinity to the instance's DHIS2 pods, on the same node.
fn beside_dhis2(instance: &str) -> Affinity {
    let match_labels = dhis2_pod_labels(instance);
    Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(match_labels),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::database::connection_settings::DatabaseConnection;
    use crate::operator::instance::build::APP;
    use crate::operator::kit::labels::selector;
    use crate::rules::repository::{backup_repository, describe_repository};
    use serde_json::json;

    fn instance(extra: serde_json::Value) -> Dhis2Instance {
        let mut spec = json!({"version": "2.41.3", "environment": "production",
            "backup": {"repository": {"s3": {"bucket": "moh-backups", "prefix": "hmis",
                "endpoint": "http://minio:9000", "credentialsSecretRef": "backup-s3"}}}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(json!({"apiVersion": "dhis2operator.io/v1alpha1",
            "kind": "Dhis2Instance", "metadata": {"name": "hmis", "namespace": "dhis2"},
            "spec": spec}))
        .unwrap()
    }

    fn backup(spec: serde_json::Value) -> Dhis2Backup {
        serde_json::from_value(json!({"apiVersion": "dhis2operator.io/v1alpha1",
            "kind": "Dhis2Backup", "metadata": {"name": "hmis-manual", "namespace": "dhis2",
            "uid": "1234", "labels": {"dhis2operator.io/schedule": "nightly"}}, "spec": spec}))
        .unwrap()
    }

    fn database() -> DatabaseSecret {
        DatabaseSecret {
            secret_name: "moh-pg".into(),
            connection: DatabaseConnection {
                host: "pg.moh.local".into(),
                port: "5432".into(),
                database: "dhis2".into(),
                username: "dhis".into(),
                password: "s3cret-pw".into(),
            },
        }
    }

    /// The Job while one DHIS2 pod runs.
    fn job(backup: &Dhis2Backup, instance: &Dhis2Instance) -> Job {
        job_with_dhis2_pods(backup, instance, 1)
    }

    fn job_with_dhis2_pods(backup: &Dhis2Backup, instance: &Dhis2Instance, pods: usize) -> Job {
        let repository = backup_repository(&backup.spec, &instance.spec).unwrap();
        build_backup_job(&BackupJobPlan {
            backup,
            instance,
            repository,
            database: &database(),
            image: "dhis2-operator:0.1.0",
            dhis2_pods: pods,
        })
    }

    fn args_of(job: &Job) -> Vec<String> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap()
    }

    #[test]
    fn the_job_backs_up_the_instance_with_its_file_store_beside_dhis2() {
        let instance = instance(json!({}));
        let backup = backup(json!({"instanceRef": "hmis", "includeAnalytics": true}));
        let job = job(&backup, &instance);
        assert_eq!(job.metadata.name.as_deref(), Some("hmis-manual-backup"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Dhis2Backup", Some(true))
        );
        let job_labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(job_labels[INSTANCE_LABEL], "hmis");
        assert_eq!(job_labels[SCHEDULE_LABEL], "nightly");
        assert_eq!(job_labels["app.kubernetes.io/component"], "backup");
        // DHIS2's Service and Deployment select by these: the engine's pod must never match.
        let dhis2 = selector(APP, "hmis");
        let pod_labels = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert!(
            !dhis2.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "the backup pod would receive DHIS2's traffic: {pod_labels:?}"
        );
        assert_eq!(
            job.spec.as_ref().unwrap().active_deadline_seconds,
            Some(crate::crd::backup_common::DEFAULT_DEADLINE_SECONDS)
        );
        let args = args_of(&job);
        assert_eq!(
            args[..10],
            [
                "backup",
                "run",
                "--instance",
                "hmis",
                "--include-analytics",
                "--files-dir",
                FILES_MOUNT,
                "--dhis-conf",
                "/etc/dhis2/dhis.conf",
                "--report-file"
            ]
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let files = mounts.iter().find(|m| m.name == "files").unwrap();
        assert_eq!(
            (files.mount_path.as_str(), files.read_only),
            (FILES_MOUNT, Some(true))
        );
        let volumes = pod.volumes.unwrap();
        let claim = volumes
            .iter()
            .find_map(|v| v.persistent_volume_claim.clone())
            .unwrap();
        assert_eq!(claim.claim_name, "hmis-files");
        let term = &pod
            .affinity
            .unwrap()
            .pod_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()[0];
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let selected = term.label_selector.clone().unwrap().match_labels.unwrap();
        assert_eq!(selected["app.kubernetes.io/instance"], "hmis");
        assert_eq!(selected["app.kubernetes.io/component"], "dhis2");
        let conf = volumes.iter().find_map(|v| v.secret.clone()).unwrap();
        assert_eq!(conf.secret_name.as_deref(), Some("hmis-dhis-conf"));
    }

    #[test]
    fn secrets_stay_in_their_secrets() {
        let instance = instance(json!({}));
        let job = job(&backup(json!({"instanceRef": "hmis"})), &instance);
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.contains("s3cret-pw"));
        let env = job.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(
            get("DHIS2_DATABASE_URL").value.as_deref(),
            Some("postgresql://dhis@pg.moh.local:5432/dhis2")
        );
        let password = get("PGPASSWORD")
            .value_from
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(
            (password.name.as_str(), password.key.as_str()),
            ("moh-pg", "password")
        );
        assert_eq!(
            get("DHIS2_BACKUP_REPO").value.as_deref(),
            Some("s3://moh-backups/hmis")
        );
    }

    #[test]
    fn no_file_store_without_a_volume_or_when_left_out_and_no_affinity_when_dhis2_is_stopped() {
        let s3_files = instance(json!({"fileStore": {"s3": {"bucket": "files",
            "credentialsSecretRef": "files-s3"}}}));
        let backup_all = backup(json!({"instanceRef": "hmis"}));
        assert!(!args_of(&job(&backup_all, &s3_files)).contains(&"--files-dir".to_string()));
        let left_out = backup(json!({"instanceRef": "hmis", "includeFileStore": false}));
        let plain = instance(json!({}));
        let job_without = job(&left_out, &plain);
        assert!(!args_of(&job_without).contains(&"--files-dir".to_string()));
        assert!(
            job_without
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .affinity
                .is_none(),
            "no affinity without the volume"
        );
        // An upgrade (or a restore) has scaled DHIS2 to 0 while spec.replicas stays 1: the
        // pre-upgrade backup must still be schedulable, so no affinity to pods that are gone.
        let stopped_for_upgrade = instance(json!({"replicas": 1}));
        let job_stopped = job_with_dhis2_pods(&backup_all, &stopped_for_upgrade, 0);
        assert!(args_of(&job_stopped).contains(&"--files-dir".to_string()));
        assert!(
            job_stopped
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .affinity
                .is_none(),
            "a required affinity to DHIS2 pods that do not exist is never scheduled"
        );
    }

    #[test]
    fn retention_is_passed_to_the_engine() {
        let instance = instance(json!({}));
        let backup = backup(json!({"instanceRef": "hmis",
            "retention": {"keepLast": 3, "keepDaily": 7, "keepMonthly": 12},
            "retentionTimeZone": "Asia/Phnom_Penh"}));
        let args = args_of(&job(&backup, &instance));
        let joined = args.join(" ");
        assert!(
            joined.contains(
                "--keep-last 3 --keep-daily 7 --keep-monthly 12 --time-zone Asia/Phnom_Penh"
            ),
            "{joined}"
        );
        assert!(!joined.contains("--keep-weekly"));
    }

    #[test]
    fn spec_verify_makes_the_engine_re_read_the_backup() {
        let instance = instance(json!({}));
        let plain = backup(json!({"instanceRef": "hmis"}));
        assert!(!plain.spec.verify, "off by default");
        assert!(!args_of(&job(&plain, &instance)).contains(&"--verify".to_string()));
        let verified = backup(json!({"instanceRef": "hmis", "verify": true}));
        let args = args_of(&job(&verified, &instance));
        assert_eq!(args[..2], ["backup", "run"]);
        assert!(args.contains(&"--verify".to_string()), "{args:?}");
    }

    #[test]
    fn the_repository_comes_from_the_backup_else_the_instance() {
        let with_default = instance(json!({}));
        let own = backup(
            json!({"instanceRef": "hmis", "repository": {"volume": {"claimName": "nfs", "path": "/hmis/"}}}),
        );
        let repository = backup_repository(&own.spec, &with_default.spec).unwrap();
        assert_eq!(describe_repository(repository), "volume nfs:/hmis");
        let plain = backup(json!({"instanceRef": "hmis"}));
        let repository = backup_repository(&plain.spec, &with_default.spec).unwrap();
        assert_eq!(describe_repository(repository), "s3://moh-backups/hmis");

        let without = instance(json!({"backup": {}}));
        let why = backup_repository(&plain.spec, &without.spec).unwrap_err();
        assert!(
            why.contains("spec.repository") && why.contains("spec.backup.repository"),
            "{why}"
        );
        let empty = backup(json!({"instanceRef": "hmis", "repository": {}}));
        let why = backup_repository(&empty.spec, &with_default.spec).unwrap_err();
        assert!(why.contains("neither s3 nor volume"), "{why}");
    }

    #[test]
    fn job_names_are_deterministic_and_short_enough() {
        assert_eq!(
            backup_job_name("hmis-20261125-0200"),
            "hmis-20261125-0200-backup"
        );
        let long = "a".repeat(60) + ".b-c";
        let name = backup_job_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert_eq!(name, backup_job_name(&long));
        assert_ne!(name, backup_job_name(&("a".repeat(60) + ".b-d")));
        assert!(name.ends_with("-backup"));
    }
}
