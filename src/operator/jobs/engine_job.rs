//! The Jobs that run the backup engine (`dhis2ctl backup run`, `backup restore`, `drill`) from the
//! operator's own image: one image, one engine, like CloudNativePG. Pure builders: credentials
//! reach the container as env from Secrets (never on the command line, never in the Job's
//! text), the outcome comes back as the container's termination message (see `job_report`).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, EnvVarSource, KeyToPath, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::crd::backup_common::{EncryptionSpec, ObjectLockMode, RepositorySpec};

/// Where the kubelet picks up the termination message (the Kubernetes default path).
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// The engine's container name in every Job.
pub const ENGINE_CONTAINER: &str = "engine";
/// A volume repository is mounted here.
pub const REPOSITORY_MOUNT: &str = "/var/lib/dhis2-backups";
/// The uid DHIS2's image runs as: the file store belongs to it.
pub const DHIS2_UID: i64 = 65534;

/// What the engine needs to reach a backup repository.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineInputs {
    pub env: Vec<EnvVar>,
    pub args: Vec<String>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
}

impl EngineInputs {
    pub fn merge(mut self, other: EngineInputs) -> Self {
        self.env.extend(other.env);
        self.args.extend(other.args);
        self.volumes.extend(other.volumes);
        self.mounts.extend(other.mounts);
        self
    }
}

pub fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// The repository as the engine's env and flags: `s3://bucket/prefix` with the S3 keys from the
/// credentials Secret, or a directory on a mounted claim. `None` when the spec names neither.
///
/// `read_only` Jobs (restores, drills) read backups: they get the decryption key, if any. The
/// others (backups) write them: they get the recipients or passphrase to encrypt to and the
/// Object Lock period — and never the private key, so a backup Job cannot read old backups.
pub fn repository_inputs(repository: &RepositorySpec, read_only: bool) -> Option<EngineInputs> {
    let location = location_inputs(repository, read_only)?;
    let mut inputs = location.merge(encryption_inputs(repository.encryption.as_ref(), read_only));
    if let Some(lock) = repository
        .s3
        .as_ref()
        .and_then(|s3| s3.object_lock.as_ref())
        && !read_only
    {
        inputs.env.extend([
            plain_env("DHIS2_BACKUP_LOCK_DAYS", lock.days.to_string()),
            plain_env(
                "DHIS2_BACKUP_LOCK_MODE",
                match lock.mode {
                    ObjectLockMode::Governance => "governance",
                    ObjectLockMode::Compliance => "compliance",
                },
            ),
        ]);
    }
    Some(inputs)
}

/// Where the identity Secret is mounted in restore and drill Jobs.
pub const IDENTITY_DIR: &str = "/etc/dhis2-backup-identity";
/// The key of the identity Secret (and the file name under `IDENTITY_DIR`).
pub const IDENTITY_KEY: &str = "identity";
/// The key of the passphrase Secret.
pub const PASSPHRASE_KEY: &str = "passphrase";

/// The engine's encryption settings: recipients or the passphrase for backups; the identity file
/// or the passphrase for restores and drills. Secrets only as env from the Secret or a mounted
/// file.
fn encryption_inputs(encryption: Option<&EncryptionSpec>, read_only: bool) -> EngineInputs {
    let Some(encryption) = encryption else {
        return EngineInputs::default();
    };
    let mut inputs = EngineInputs::default();
    if let Some(secret) = &encryption.passphrase_secret_ref {
        inputs.env.push(secret_env(
            "DHIS2_BACKUP_PASSPHRASE",
            secret,
            PASSPHRASE_KEY,
        ));
        return inputs;
    }
    if !read_only {
        if !encryption.recipients.is_empty() {
            inputs.env.push(plain_env(
                "DHIS2_BACKUP_RECIPIENTS",
                encryption.recipients.join(","),
            ));
        }
        return inputs;
    }
    if let Some(secret) = &encryption.identity_secret_ref {
        inputs = inputs.merge(secret_file_inputs(
            "backup-identity",
            secret,
            IDENTITY_KEY,
            IDENTITY_DIR,
            0o440,
        ));
        inputs.env.push(plain_env(
            "DHIS2_BACKUP_IDENTITY_FILE",
            format!("{IDENTITY_DIR}/{IDENTITY_KEY}"),
        ));
    }
    inputs
}

/// One key of a Secret as the file `dir/key`, read-only, with `mode`: a required Secret volume
/// and its mount.
pub fn secret_file_inputs(
    volume: &str,
    secret: &str,
    key: &str,
    dir: &str,
    mode: i32,
) -> EngineInputs {
    EngineInputs {
        volumes: vec![Volume {
            name: volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                items: Some(vec![KeyToPath {
                    key: key.into(),
                    path: key.into(),
                    ..Default::default()
                }]),
                default_mode: Some(mode),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }],
        mounts: vec![VolumeMount {
            name: volume.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The repository's location: an S3 bucket and its credentials, or a mounted claim.
fn location_inputs(repository: &RepositorySpec, read_only: bool) -> Option<EngineInputs> {
    if let Some(s3) = &repository.s3 {
        let prefix = s3
            .prefix
            .as_deref()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty());
        let location = match prefix {
            Some(p) => format!("s3://{}/{p}", s3.bucket),
            None => format!("s3://{}", s3.bucket),
        };
        let mut inputs = EngineInputs {
            env: vec![
                plain_env("DHIS2_BACKUP_REPO", location),
                secret_env("AWS_ACCESS_KEY_ID", &s3.credentials_secret_ref, "accessKey"),
                secret_env(
                    "AWS_SECRET_ACCESS_KEY",
                    &s3.credentials_secret_ref,
                    "secretKey",
                ),
            ],
            ..Default::default()
        };
        if let Some(endpoint) = &s3.endpoint {
            inputs
                .env
                .push(plain_env("DHIS2_S3_ENDPOINT", endpoint.clone()));
        }
        if let Some(region) = &s3.region {
            inputs
                .env
                .push(plain_env("DHIS2_S3_REGION", region.clone()));
        }
        if let Some(path_style) = s3.path_style {
            inputs
                .args
                .extend(["--s3-path-style".to_string(), path_style.to_string()]);
        }
        return Some(inputs);
    }
    let volume = repository.volume.as_ref()?;
    let dir = match volume.path.as_deref().map(|p| p.trim_matches('/')) {
        Some(p) if !p.is_empty() => format!("{REPOSITORY_MOUNT}/{p}"),
        _ => REPOSITORY_MOUNT.to_string(),
    };
    Some(EngineInputs {
        env: vec![plain_env("DHIS2_BACKUP_REPO", dir)],
        args: vec![],
        volumes: vec![Volume {
            name: "repository".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: volume.claim_name.clone(),
                read_only: Some(read_only),
            }),
            ..Default::default()
        }],
        mounts: vec![VolumeMount {
            name: "repository".into(),
            mount_path: REPOSITORY_MOUNT.into(),
            read_only: Some(read_only),
            ..Default::default()
        }],
    })
}

/// A database the engine connects to: the URL without the password (`url_env` names the
/// variable, e.g. `DHIS2_DATABASE_URL` or `DHIS2_RESTORE_DATABASE_URL`), the password as
/// PGPASSWORD from its Secret.
pub fn database_inputs(
    url_env: &str,
    host: &str,
    port: &str,
    database: &str,
    username: &str,
    password_secret: &str,
) -> EngineInputs {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    EngineInputs {
        env: vec![
            plain_env(
                url_env,
                format!(
                    "postgresql://{}@{host}:{port}/{}",
                    enc(username),
                    enc(database)
                ),
            ),
            secret_env("PGPASSWORD", password_secret, "password"),
        ],
        ..Default::default()
    }
}

/// Everything that makes one engine Job.
#[derive(Debug, Clone)]
pub struct EngineJob {
    pub name: String,
    pub namespace: String,
    pub owner: Option<OwnerReference>,
    pub labels: BTreeMap<String, String>,
    /// The engine's arguments after `dhis2ctl` (e.g. `backup run --instance hmis`).
    pub args: Vec<String>,
    pub inputs: EngineInputs,
    /// The Job is stopped (and fails) after this long.
    pub deadline_seconds: i64,
    pub affinity: Option<Affinity>,
    pub image: String,
}

/// A Job that runs the engine once: no retries (a failure is reported and the next backup runs
/// on time), no API token, unprivileged, report in the termination message.
pub fn build_engine_job(job: &EngineJob) -> Job {
    let mut args = job.args.clone();
    args.extend(job.inputs.args.iter().cloned());
    args.extend([
        "--report-file".to_string(),
        TERMINATION_LOG.to_string(),
        "--log-format".to_string(),
        "json".to_string(),
    ]);
    let quantity = |s: &str| Quantity(s.to_string());
    // The root filesystem is read-only; the PostgreSQL tools may still want a /tmp.
    let mut volumes = job.inputs.volumes.clone();
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    });
    let mut mounts = job.inputs.mounts.clone();
    mounts.push(VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    });
    let container = Container {
        name: ENGINE_CONTAINER.into(),
        image: Some(job.image.clone()),
        command: Some(vec!["dhis2ctl".into()]),
        args: Some(args),
        env: Some(job.inputs.env.clone()),
        volume_mounts: Some(mounts),
        termination_message_path: Some(TERMINATION_LOG.into()),
        // A crash before the report is written still leaves the log's tail as the reason.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), quantity("250m")),
                ("memory".to_string(), quantity("256Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), quantity("1Gi"))])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job.name.clone()),
            namespace: Some(job.namespace.clone()),
            labels: Some(job.labels.clone()),
            owner_references: job.owner.clone().map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(job.deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job.labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    affinity: job.affinity.clone(),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(DHIS2_UID),
                        run_as_group: Some(DHIS2_UID),
                        fs_group: Some(DHIS2_UID),
                        run_as_non_root: Some(true),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::backup_common::{ObjectLockSpec, S3RepositorySpec, VolumeRepositorySpec};

    fn job(inputs: EngineInputs) -> Job {
        build_engine_job(&EngineJob {
            name: "hmis-backup-1".into(),
            namespace: "dhis2".into(),
            owner: None,
            labels: BTreeMap::new(),
            args: vec!["backup".into(), "run".into()],
            inputs,
            deadline_seconds: 3600,
            affinity: None,
            image: "dhis2-operator:0.1.0".into(),
        })
    }

    #[test]
    fn secrets_reach_the_engine_only_by_reference() {
        let repo = RepositorySpec {
            s3: Some(S3RepositorySpec {
                bucket: "moh-backups".into(),
                prefix: Some("/hmis/".into()),
                endpoint: Some("http://minio:9000".into()),
                region: None,
                path_style: Some(true),
                credentials_secret_ref: "backup-s3".into(),
                object_lock: None,
            }),
            volume: None,
            encryption: None,
        };
        let inputs = repository_inputs(&repo, false)
            .unwrap()
            .merge(database_inputs(
                "DHIS2_DATABASE_URL",
                "hmis-db-postgresql",
                "5432",
                "dhis2",
                "dhis",
                "hmis-db-credentials",
            ));
        let job = job(inputs);
        let text = serde_json::to_string(&job).unwrap();
        let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
        let env = container.env.as_ref().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(
            get("DHIS2_BACKUP_REPO").value.as_deref(),
            Some("s3://moh-backups/hmis")
        );
        assert_eq!(
            get("DHIS2_DATABASE_URL").value.as_deref(),
            Some("postgresql://dhis@hmis-db-postgresql:5432/dhis2")
        );
        for secret in ["PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            assert!(get(secret).value.is_none(), "{secret} inline");
            assert!(
                get(secret).value_from.is_some(),
                "{secret} not from a Secret"
            );
        }
        let args = container.args.as_ref().unwrap();
        assert!(args.ends_with(&[
            "--s3-path-style".into(),
            "true".into(),
            "--report-file".into(),
            TERMINATION_LOG.into(),
            "--log-format".into(),
            "json".into()
        ]));
        assert!(!text.contains("password\":\""));
    }

    fn names(inputs: &EngineInputs) -> Vec<&str> {
        inputs.env.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn backups_get_the_public_keys_and_the_lock_and_only_reads_get_the_private_key() {
        let repo = RepositorySpec {
            s3: Some(S3RepositorySpec {
                bucket: "moh-backups".into(),
                credentials_secret_ref: "backup-s3".into(),
                object_lock: Some(ObjectLockSpec {
                    days: 30,
                    mode: ObjectLockMode::Compliance,
                }),
                ..Default::default()
            }),
            volume: None,
            encryption: Some(EncryptionSpec {
                recipients: vec!["age1aaa".into(), "age1bbb".into()],
                identity_secret_ref: Some("backup-identity".into()),
                passphrase_secret_ref: None,
            }),
        };
        let backup = repository_inputs(&repo, false).unwrap();
        let value = |inputs: &EngineInputs, n: &str| {
            inputs
                .env
                .iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            value(&backup, "DHIS2_BACKUP_RECIPIENTS").as_deref(),
            Some("age1aaa,age1bbb")
        );
        assert_eq!(
            value(&backup, "DHIS2_BACKUP_LOCK_DAYS").as_deref(),
            Some("30")
        );
        assert_eq!(
            value(&backup, "DHIS2_BACKUP_LOCK_MODE").as_deref(),
            Some("compliance")
        );
        assert!(!names(&backup).contains(&"DHIS2_BACKUP_IDENTITY_FILE"));
        assert!(
            backup.volumes.iter().all(|v| v.secret.is_none()),
            "{backup:?}"
        );

        let read = repository_inputs(&repo, true).unwrap();
        for absent in [
            "DHIS2_BACKUP_RECIPIENTS",
            "DHIS2_BACKUP_LOCK_DAYS",
            "DHIS2_BACKUP_LOCK_MODE",
        ] {
            assert!(!names(&read).contains(&absent), "{absent} in {read:?}");
        }
        assert_eq!(
            value(&read, "DHIS2_BACKUP_IDENTITY_FILE").as_deref(),
            Some("/etc/dhis2-backup-identity/identity")
        );
        let volume = read.volumes.iter().find(|v| v.secret.is_some()).unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("backup-identity"));
        assert_eq!(secret.default_mode, Some(0o440));
        let mount = read.mounts.iter().find(|m| m.name == volume.name).unwrap();
        assert_eq!(mount.mount_path, IDENTITY_DIR);
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn a_passphrase_comes_from_its_secret_for_backups_and_reads_alike() {
        let repo = RepositorySpec {
            volume: Some(VolumeRepositorySpec {
                claim_name: "nfs-backups".into(),
                path: None,
            }),
            encryption: Some(EncryptionSpec {
                passphrase_secret_ref: Some("backup-passphrase".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        for read_only in [false, true] {
            let inputs = repository_inputs(&repo, read_only).unwrap();
            let env = inputs
                .env
                .iter()
                .find(|e| e.name == "DHIS2_BACKUP_PASSPHRASE")
                .unwrap();
            assert_eq!(env.value, None);
            let from = env
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!(
                (from.name.as_str(), from.key.as_str()),
                ("backup-passphrase", PASSPHRASE_KEY)
            );
        }
    }

    #[test]
    fn a_volume_repository_is_mounted_and_named_by_path() {
        let repo = RepositorySpec {
            s3: None,
            volume: Some(VolumeRepositorySpec {
                claim_name: "nfs-backups".into(),
                path: Some("hmis".into()),
            }),
            encryption: None,
        };
        let inputs = repository_inputs(&repo, true).unwrap();
        assert_eq!(
            inputs.env[0].value.as_deref(),
            Some("/var/lib/dhis2-backups/hmis")
        );
        assert_eq!(inputs.mounts[0].read_only, Some(true));
        assert!(repository_inputs(&RepositorySpec::default(), true).is_none());
    }

    #[test]
    fn the_job_never_retries_has_a_deadline_and_no_api_token() {
        let spec = job(EngineInputs::default()).spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(DHIS2_UID));
    }
}
