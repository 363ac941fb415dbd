//! The Job of a restore (pure): `dhis2ctl backup restore` into the target's database, as its
//! own database user, with the file store claim mounted when the restore fills it. `--force`
//! only over an existing target whose name was confirmed; never `--drop-replaced`: the database
//! as it was stays beside the restored one.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use sha2::{Digest, Sha256};

use crate::backup::room_check::SpaceCheck;

use crate::operator::database::connection_settings::DatabaseConnection;
use crate::operator::jobs::engine_job::{
    EngineInputs, EngineJob, build_engine_job, database_inputs, repository_inputs,
};
use crate::operator::kit::labels::labels;
use crate::operator::restore::plan::ResolvedSource;
use crate::rules::names::{ENGINE_APP, INSTANCE_LABEL};

/// Where DHIS2 keeps its files; the restore writes them to the same path.
pub const FILES_MOUNT: &str = "/opt/dhis2/files";

/// Everything the restore Job is made of (no `Debug`: it holds the database connection).
#[derive(Clone)]
pub struct RestoreJobPlan<'a> {
    pub restore_name: &'a str,
    pub namespace: &'a str,
    pub owner: Option<OwnerReference>,
    pub target: &'a str,
    pub source: &'a ResolvedSource,
    pub database: &'a DatabaseConnection,
    /// The Secret holding the database password (key `password`).
    pub password_secret: &'a str,
    /// The role DHIS2 connects as, which owns everything restored (the login in `database` may
    /// be another: CloudNativePG's superuser).
    pub restored_owner: &'a str,
    /// An existing, confirmed target: its database and files are replaced (and kept aside).
    pub overwrite: bool,
    /// The file store claim to restore into.
    pub file_store_claim: Option<String>,
    pub deadline_seconds: i64,
    pub image: &'a str,
    /// How the engine checks the database server has room for the restored database.
    pub space: SpaceCheck,
}

/// `<restore>-restore`, shortened with a hash when the name would pass 63 characters (the
/// job controller puts the Job's name in a label on its pods).
pub fn restore_job_name(restore_name: &str) -> String {
    let name = format!("{restore_name}-restore");
    if name.len() <= 63 {
        return name;
    }
    let hash = hex::encode(Sha256::digest(restore_name.as_bytes()));
    let head: String = restore_name.chars().take(45).collect();
    format!("{}-{}-restore", head.trim_end_matches('-'), &hash[..8])
}

/// `<restore>-find-<hash>`: the Job that finds which backup `latest` is, one per source (a
/// source edited while Pending gets its own Job, never the answer for another).
pub fn resolve_job_name(restore_name: &str, source: &ResolvedSource) -> String {
    let key = format!(
        "{}\n{}\n{}",
        source.instance,
        source.backup_id,
        crate::operator::restore::plan::repository_location(&source.repository)
    );
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let head: String = restore_name.chars().take(45).collect();
    format!("{}-find-{}", head.trim_end_matches('-'), &hash[..8])
}

/// The Job that only finds the backup `source.backup_id` names (`backup restore
/// --resolve-only`): it reads the repository, touches no database, needs DHIS2 running or not.
pub fn build_resolve_job(
    restore_name: &str,
    namespace: &str,
    owner: Option<OwnerReference>,
    target: &str,
    source: &ResolvedSource,
    image: &str,
) -> Option<Job> {
    let args = [
        "backup",
        "restore",
        "--instance",
        &source.instance,
        &source.backup_id,
        "--resolve-only",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut job_labels: BTreeMap<String, String> = labels(ENGINE_APP, target, "restore");
    job_labels.insert(INSTANCE_LABEL.into(), target.into());
    Some(build_engine_job(&EngineJob {
        name: resolve_job_name(restore_name, source),
        namespace: namespace.into(),
        owner,
        labels: job_labels,
        args,
        inputs: repository_inputs(&source.repository, true)?,
        deadline_seconds: 600,
        affinity: None,
        image: image.into(),
    }))
}

pub fn build_restore_job(plan: &RestoreJobPlan) -> Option<Job> {
    let source = plan.source;
    let mut args: Vec<String> = [
        "backup",
        "restore",
        "--instance",
        &source.instance,
        &source.backup_id,
        "--owner",
        plan.restored_owner,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if plan.overwrite {
        args.push("--force".into());
    }
    match plan.space {
        SpaceCheck::Skip => args.push("--skip-space-check".into()),
        SpaceCheck::Volume { capacity_bytes } => {
            args.extend(["--database-volume-bytes".into(), capacity_bytes.to_string()])
        }
        SpaceCheck::Measure => {}
    }
    let mut inputs = repository_inputs(&source.repository, true)?.merge(database_inputs(
        "DHIS2_RESTORE_DATABASE_URL",
        &plan.database.host,
        &plan.database.port,
        &plan.database.database,
        &plan.database.username,
        plan.password_secret,
    ));
    if let Some(claim) = &plan.file_store_claim {
        args.extend([
            "--files-dir".into(),
            FILES_MOUNT.into(),
            "--skip-missing-file-store".into(),
        ]);
        inputs = inputs.merge(EngineInputs {
            volumes: vec![Volume {
                name: "files".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(false),
                }),
                ..Default::default()
            }],
            mounts: vec![VolumeMount {
                name: "files".into(),
                mount_path: FILES_MOUNT.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    let mut job_labels: BTreeMap<String, String> = labels(ENGINE_APP, plan.target, "restore");
    job_labels.insert(INSTANCE_LABEL.into(), plan.target.into());
    Some(build_engine_job(&EngineJob {
        name: restore_job_name(plan.restore_name),
        namespace: plan.namespace.into(),
        owner: plan.owner.clone(),
        labels: job_labels,
        args,
        inputs,
        deadline_seconds: plan.deadline_seconds,
        // DHIS2 is stopped: nothing else uses the file store volume.
        affinity: None,
        image: plan.image.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::backup_common::{RepositorySpec, S3RepositorySpec};

    fn source() -> ResolvedSource {
        ResolvedSource {
            instance: "hmis".into(),
            backup_id: "latest".into(),
            repository: RepositorySpec {
                s3: Some(S3RepositorySpec {
                    bucket: "moh-backups".into(),
                    prefix: Some("hmis".into()),
                    endpoint: Some("http://seaweedfs:8333".into()),
                    region: None,
                    path_style: None,
                    credentials_secret_ref: "backup-s3".into(),
                    object_lock: None,
                }),
                volume: None,
                encryption: None,
            },
        }
    }

    /// Logged in as a superuser (as on CloudNativePG); DHIS2's role `dhis` owns what is restored.
    fn database() -> DatabaseConnection {
        DatabaseConnection {
            host: "staging-pg.moh.svc".into(),
            port: "5432".into(),
            database: "dhis2".into(),
            username: "postgres".into(),
            password: "s3cret-password".into(),
        }
    }

    fn job(overwrite: bool, claim: Option<&str>) -> Job {
        job_checking(overwrite, claim, SpaceCheck::Measure)
    }

    fn job_checking(overwrite: bool, claim: Option<&str>, space: SpaceCheck) -> Job {
        let (source, database) = (source(), database());
        build_restore_job(&RestoreJobPlan {
            restore_name: "refresh-staging",
            namespace: "moh",
            owner: None,
            target: "staging",
            source: &source,
            database: &database,
            password_secret: "staging-pg",
            restored_owner: "dhis",
            overwrite,
            file_store_claim: claim.map(str::to_string),
            deadline_seconds: 3600,
            image: "dhis2-operator:0.1.0",
            space,
        })
        .unwrap()
    }

    fn args(job: &Job) -> Vec<String> {
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
    fn force_only_over_a_confirmed_target_and_the_old_database_is_kept() {
        let new = args(&job(false, None));
        assert!(new.starts_with(&[
            "backup".into(),
            "restore".into(),
            "--instance".into(),
            "hmis".into(),
            "latest".into(),
            "--owner".into(),
            "dhis".into()
        ]));
        assert!(!new.contains(&"--force".to_string()));
        let overwrite = args(&job(true, None));
        assert!(overwrite.contains(&"--force".to_string()));
        for a in [new, overwrite] {
            assert!(!a.contains(&"--drop-replaced".to_string()));
            assert!(!a.contains(&"--files-dir".to_string()));
        }
    }

    #[test]
    fn the_engine_checks_room_on_the_volume_the_operator_knows_unless_told_not_to() {
        let volume = args(&job_checking(
            true,
            None,
            SpaceCheck::Volume {
                capacity_bytes: 107_374_182_400,
            },
        ));
        let at = volume
            .iter()
            .position(|a| a == "--database-volume-bytes")
            .unwrap();
        assert_eq!(volume[at + 1], "107374182400");
        let skipped = args(&job_checking(true, None, SpaceCheck::Skip));
        assert!(skipped.contains(&"--skip-space-check".to_string()));
        let external = args(&job(true, None));
        assert!(
            !external
                .iter()
                .any(|a| a.contains("space") || a.contains("volume-bytes"))
        );
    }

    #[test]
    fn the_target_database_and_password_come_by_reference() {
        let job = job(true, None);
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.contains("s3cret-password"));
        let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
        let env = container.env.as_ref().unwrap();
        let url = env
            .iter()
            .find(|e| e.name == "DHIS2_RESTORE_DATABASE_URL")
            .unwrap();
        assert_eq!(
            url.value.as_deref(),
            Some("postgresql://postgres@staging-pg.moh.svc:5432/dhis2")
        );
        let password = env.iter().find(|e| e.name == "PGPASSWORD").unwrap();
        let from = password
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref();
        assert_eq!(from.unwrap().name, "staging-pg");
        assert!(
            env.iter().all(|e| e.name != "DHIS2_DATABASE_URL"),
            "the backup source variable is never set for a restore"
        );
    }

    #[test]
    fn the_file_store_claim_is_mounted_writable_where_dhis2_keeps_files() {
        let job = job(false, Some("staging-files"));
        let a = args(&job);
        let at = a.iter().position(|x| x == "--files-dir").unwrap();
        assert_eq!(a[at + 1], FILES_MOUNT);
        assert!(a.contains(&"--skip-missing-file-store".to_string()));
        let pod = job.spec.unwrap().template.spec.unwrap();
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "files");
        let claim = volume.unwrap().persistent_volume_claim.unwrap();
        assert_eq!(claim.claim_name, "staging-files");
        assert_eq!(claim.read_only, Some(false));
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "files")
            .cloned()
            .unwrap();
        assert_eq!(mount.mount_path, FILES_MOUNT);
        assert_ne!(mount.read_only, Some(true));
    }

    #[test]
    fn the_engines_pods_are_never_taken_for_dhis2() {
        let job = job(false, None);
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], ENGINE_APP);
        assert_ne!(labels["app.kubernetes.io/name"], "dhis2");
        assert_eq!(labels["app.kubernetes.io/component"], "restore");
        assert_eq!(labels[INSTANCE_LABEL], "staging");
    }

    #[test]
    fn job_names_fit_in_a_label() {
        assert_eq!(restore_job_name("refresh"), "refresh-restore");
        let long = "a".repeat(80);
        let name = restore_job_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert_ne!(name, restore_job_name(&"a".repeat(81)));
    }
}
