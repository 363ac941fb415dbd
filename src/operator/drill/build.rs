//! The objects a `Dhis2Drill` creates (pure): a throw-away PostGIS server (a Secret with its
//! generated password, a Pod on an emptyDir volume, a Service in front of it) and the Job that
//! runs `dhis2ctl drill` against it. Never the production server: the drill restores into a
//! server of its own, made for it and deleted after it.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, ExecAction, Pod, PodSecurityContext, PodSpec,
    Probe, ResourceRequirements, Secret, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::backup_common::RepositorySpec;
use crate::crd::dhis2_drill::{DEFAULT_DRILL_POSTGIS_IMAGE, Dhis2Drill};

use crate::operator::jobs::engine_job::{
    EngineInputs, EngineJob, build_engine_job, plain_env, repository_inputs, secret_env,
};
use crate::operator::kit::labels::{child_meta, labels};
use crate::rules::names::INSTANCE_LABEL;

/// `app.kubernetes.io/name` of a drill's objects: not `dhis2` or `postgresql`, so the
/// instance's and the database's Services never select the throw-away server.
pub const APP: &str = "dhis2-drill";
pub const SERVER_COMPONENT: &str = "drill-database";
pub const JOB_COMPONENT: &str = "drill";
/// Which drill an object belongs to (the drill's name, shortened to a label value).
pub const DRILL_LABEL: &str = "dhis2operator.io/drill";
pub const SERVER_CONTAINER: &str = "postgis";
/// The superuser of the throw-away server; the password is generated per drill.
pub const SERVER_USER: &str = "postgres";
/// The database the drill enters by (`--scratch-database-url`); the engine restores beside it
/// into `postgres__drill_<id>` and drops that again. It must be empty.
pub const SCRATCH_DATABASE: &str = "postgres";
/// The postgis image loads its extensions into `POSTGRES_DB` (and `template_postgis`). Naming
/// another database keeps `postgres` empty, as the engine's scratch database must be.
pub const IMAGE_EXTENSIONS_DATABASE: &str = "postgis";
pub const PASSWORD_KEY: &str = "password";
const PORT: i32 = 5432;

/// The deterministic names of a drill's objects: the same after an operator restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillNames {
    /// The throw-away server's Pod and Service.
    pub server: String,
    pub secret: String,
    pub job: String,
    /// The value of [`DRILL_LABEL`].
    pub label: String,
}

pub fn drill_names(drill: &str) -> DrillNames {
    DrillNames {
        server: dns_label(drill, Some("drill-db")),
        secret: dns_label(drill, Some("drill-db-credentials")),
        job: dns_label(drill, Some("drill")),
        label: dns_label(drill, None),
    }
}

/// `<drill>-<suffix>` as a DNS-1035 label (what a Service name must be; Job names become pod
/// labels, so they must fit one too): at most 63 characters, starting with a letter, no dots.
/// A name that had to be changed carries a hash of the drill's name, so two drills never share
/// their objects.
fn dns_label(drill: &str, suffix: Option<&str>) -> String {
    let wanted = match suffix {
        Some(s) => format!("{drill}-{s}"),
        None => drill.to_string(),
    };
    let valid = wanted.len() <= 63
        && wanted.starts_with(|c: char| c.is_ascii_lowercase())
        && wanted
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        return wanted;
    }
    let hash = &hex::encode(Sha256::digest(drill.as_bytes()))[..8];
    let tail = match suffix {
        Some(s) => format!("-{hash}-{s}"),
        None => format!("-{hash}"),
    };
    let clean: String = drill
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .collect();
    let clean = clean.trim_start_matches(|c: char| !c.is_ascii_lowercase());
    let room = 63usize.saturating_sub(tail.len() + 2);
    let head: String = clean.chars().take(room).collect();
    let head = head.trim_end_matches('-');
    format!("d-{head}{tail}").replace("--", "-")
}

/// The URL the engine enters the throw-away server by: no password (that comes as PGPASSWORD
/// from the drill's Secret).
pub fn scratch_database_url(names: &DrillNames) -> String {
    format!(
        "postgresql://{SERVER_USER}@{}:{PORT}/{SCRATCH_DATABASE}",
        names.server
    )
}

fn object_labels(
    drill: &Dhis2Drill,
    names: &DrillNames,
    component: &str,
) -> BTreeMap<String, String> {
    let mut l = labels(APP, &drill.spec.instance_ref, component);
    l.insert(INSTANCE_LABEL.into(), drill.spec.instance_ref.clone());
    l.insert(DRILL_LABEL.into(), names.label.clone());
    l
}

/// Selects the drill's server pod, and nothing else.
pub fn server_selector(names: &DrillNames) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/component".to_string(),
            SERVER_COMPONENT.to_string(),
        ),
        (DRILL_LABEL.to_string(), names.label.clone()),
    ])
}

fn meta(
    drill: &Dhis2Drill,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    child_meta(
        name.to_string(),
        drill.namespace(),
        labels,
        drill.controller_owner_ref(&()),
        &format!("Dhis2Drill/{}", drill.name_any()),
    )
}

/// The throw-away server's superuser password, owned by the drill.
pub fn build_server_secret(drill: &Dhis2Drill, names: &DrillNames, password: &str) -> Secret {
    Secret {
        metadata: meta(
            drill,
            &names.secret,
            &object_labels(drill, names, SERVER_COMPONENT),
        ),
        string_data: Some(BTreeMap::from([(
            PASSWORD_KEY.to_string(),
            password.to_string(),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The throw-away PostGIS server: one pod, its data on an emptyDir (gone with the pod), ready
/// when it answers on TCP (the image's init scripts run a socket-only server first). Its image:
/// the drill's `postgisImage`, else the image of the instance's own managed database (the
/// PostgreSQL a real restore meets, and one the cluster can pull: a mirror, an air-gapped
/// site), else the default.
pub fn build_server_pod(
    drill: &Dhis2Drill,
    names: &DrillNames,
    instance_database_image: Option<&str>,
) -> Pod {
    let quantity = |s: &str| Quantity(s.to_string());
    let image = drill
        .spec
        .postgis_image
        .clone()
        .or_else(|| instance_database_image.map(str::to_string))
        .unwrap_or_else(|| DEFAULT_DRILL_POSTGIS_IMAGE.to_string());
    let container = Container {
        name: SERVER_CONTAINER.into(),
        image: Some(image),
        env: Some(vec![
            secret_env("POSTGRES_PASSWORD", &names.secret, PASSWORD_KEY),
            plain_env("POSTGRES_USER", SERVER_USER),
            plain_env("POSTGRES_DB", IMAGE_EXTENSIONS_DATABASE),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("postgresql".into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "pg_isready".into(),
                    "-h".into(),
                    "127.0.0.1".into(),
                    "-U".into(),
                    SERVER_USER.into(),
                    "-d".into(),
                    SCRATCH_DATABASE.into(),
                ]),
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(5),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), quantity("500m")),
                ("memory".to_string(), quantity("1Gi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), quantity("4Gi"))])),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/var/lib/postgresql/data".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "shm".into(),
                mount_path: "/dev/shm".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    Pod {
        metadata: meta(
            drill,
            &names.server,
            &object_labels(drill, names, SERVER_COMPONENT),
        ),
        spec: Some(PodSpec {
            containers: vec![container],
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            // Nothing on it is worth a long shutdown.
            termination_grace_period_seconds: Some(10),
            security_context: Some(PodSecurityContext {
                fs_group: Some(999),
                ..Default::default()
            }),
            volumes: Some(vec![
                Volume {
                    name: "data".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                },
                Volume {
                    name: "shm".into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: Some("Memory".into()),
                        size_limit: Some(quantity("1Gi")),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn build_server_service(drill: &Dhis2Drill, names: &DrillNames) -> Service {
    Service {
        metadata: meta(
            drill,
            &names.server,
            &object_labels(drill, names, SERVER_COMPONENT),
        ),
        spec: Some(ServiceSpec {
            selector: Some(server_selector(names)),
            ports: Some(vec![ServicePort {
                name: Some("postgresql".into()),
                port: PORT,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(PORT)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The Job running `dhis2ctl drill` against the throw-away server, reading the repository
/// read-only. `None` when the repository names neither S3 nor a volume.
pub fn build_drill_job(
    drill: &Dhis2Drill,
    names: &DrillNames,
    repository: &RepositorySpec,
    image: &str,
) -> Option<Job> {
    let inputs = repository_inputs(repository, true)?.merge(EngineInputs {
        env: vec![secret_env("PGPASSWORD", &names.secret, PASSWORD_KEY)],
        ..Default::default()
    });
    let backup = drill.spec.backup_id.as_deref().unwrap_or("latest");
    Some(build_engine_job(&EngineJob {
        name: names.job.clone(),
        namespace: drill.namespace().unwrap_or_default(),
        owner: drill.controller_owner_ref(&()),
        labels: object_labels(drill, names, JOB_COMPONENT),
        args: [
            "drill",
            "--instance",
            &drill.spec.instance_ref,
            "--backup",
            backup,
            "--scratch-database-url",
            &scratch_database_url(names),
        ]
        .map(String::from)
        .to_vec(),
        inputs,
        deadline_seconds: drill.spec.deadline_seconds,
        affinity: None,
        image: image.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::backup_common::S3RepositorySpec;
    use crate::crd::dhis2_drill::Dhis2DrillSpec;

    fn drill(name: &str) -> Dhis2Drill {
        let mut d = Dhis2Drill::new(
            name,
            Dhis2DrillSpec {
                instance_ref: "hmis".into(),
                backup_id: None,
                repository: None,
                postgis_image: None,
                deadline_seconds: 3600,
            },
        );
        d.metadata.namespace = Some("moh".into());
        d.metadata.uid = Some("uid-7".into());
        d
    }

    fn repo() -> RepositorySpec {
        RepositorySpec {
            s3: Some(S3RepositorySpec {
                bucket: "moh-backups".into(),
                prefix: None,
                endpoint: Some("http://minio:9000".into()),
                region: None,
                path_style: Some(true),
                credentials_secret_ref: "backup-s3".into(),
                object_lock: None,
            }),
            volume: None,
            encryption: None,
        }
    }

    #[test]
    fn the_drill_server_runs_the_instances_database_image_unless_the_drill_names_one() {
        let names = drill_names("d1");
        let image = |d: &Dhis2Drill, database: Option<&str>| {
            build_server_pod(d, &names, database)
                .spec
                .unwrap()
                .containers[0]
                .image
                .clone()
                .unwrap()
        };
        let mirror = "registry.moh.gov.kh/postgis/postgis:16-3.4";
        // An air-gapped site's mirror (or the PostgreSQL production really runs) is used...
        assert_eq!(image(&drill("d1"), Some(mirror)), mirror);
        // ...unless the drill names its own, and the default only when neither is known.
        let mut own = drill("d1");
        own.spec.postgis_image = Some("postgis/postgis:17-3.5".into());
        assert_eq!(image(&own, Some(mirror)), "postgis/postgis:17-3.5");
        assert_eq!(image(&drill("d1"), None), DEFAULT_DRILL_POSTGIS_IMAGE);
    }

    #[test]
    fn names_are_deterministic_dns_labels_and_never_shared() {
        let n = drill_names("weekly");
        assert_eq!(n.server, "weekly-drill-db");
        assert_eq!(n.job, "weekly-drill");
        assert_eq!(n.secret, "weekly-drill-db-credentials");
        assert_eq!(drill_names("weekly"), n);
        let long = "hmis-production-weekly-restore-drill-20261129t030000-asia-phnom-penh";
        let dotted = "2026.11.29";
        for name in [long, dotted, "a.b", "a-b"] {
            let n = drill_names(name);
            for s in [&n.server, &n.job, &n.secret, &n.label] {
                assert!(s.len() <= 63, "{s}");
                assert!(s.starts_with(|c: char| c.is_ascii_lowercase()), "{s}");
                assert!(
                    s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                    "{s}"
                );
                assert!(!s.ends_with('-') && !s.contains("--"), "{s}");
            }
        }
        assert_ne!(drill_names("a.b").server, drill_names("a-b").server);
        let other_long = format!("{long}-2");
        assert_ne!(drill_names(long).job, drill_names(&other_long).job);
    }

    #[test]
    fn the_server_is_a_throw_away_postgis_owned_by_the_drill() {
        let d = drill("weekly");
        let n = drill_names("weekly");
        let pod = build_server_pod(&d, &n, None);
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Dhis2Drill", "uid-7")
        );
        assert_eq!(owner.controller, Some(true));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], "drill-database");
        assert_eq!(labels[INSTANCE_LABEL], "hmis");
        // The instance's Service selects name=dhis2, instance=hmis: never this pod.
        assert_ne!(labels["app.kubernetes.io/name"], "dhis2");
        let spec = pod.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some(DEFAULT_DRILL_POSTGIS_IMAGE));
        let env = c.env.as_ref().unwrap();
        let password = env.iter().find(|e| e.name == "POSTGRES_PASSWORD").unwrap();
        assert!(password.value.is_none());
        let key = password
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            (n.secret.as_str(), "password")
        );
        let db = env.iter().find(|e| e.name == "POSTGRES_DB").unwrap();
        assert_ne!(db.value.as_deref(), Some(SCRATCH_DATABASE));
        let probe = c.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap();
        assert_eq!(probe.command.as_ref().unwrap()[0], "pg_isready");
        let data = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "data")
            .unwrap();
        assert!(data.empty_dir.is_some() && data.persistent_volume_claim.is_none());

        let svc = build_server_service(&d, &n);
        assert_eq!(svc.metadata.name.as_deref(), Some("weekly-drill-db"));
        let selector = svc.spec.unwrap().selector.unwrap();
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));

        let mut custom = drill("weekly");
        custom.spec.postgis_image = Some("registry.moh.gov.kh/postgis:16".into());
        let pod = build_server_pod(&custom, &n, None);
        assert_eq!(
            pod.spec.unwrap().containers[0].image.as_deref(),
            Some("registry.moh.gov.kh/postgis:16")
        );
    }

    #[test]
    fn the_job_drills_into_the_throw_away_server_with_secrets_by_reference() {
        let mut d = drill("weekly");
        let n = drill_names("weekly");
        let job = build_drill_job(&d, &n, &repo(), "dhis2-operator:1").unwrap();
        let text = serde_json::to_string(&job).unwrap();
        let spec = job.spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        let c = &spec.template.spec.unwrap().containers[0];
        let args = c.args.as_ref().unwrap();
        assert_eq!(
            args[..7],
            [
                "drill",
                "--instance",
                "hmis",
                "--backup",
                "latest",
                "--scratch-database-url",
                "postgresql://postgres@weekly-drill-db:5432/postgres"
            ]
        );
        let env = c.env.as_ref().unwrap();
        let pg = env.iter().find(|e| e.name == "PGPASSWORD").unwrap();
        assert!(pg.value.is_none() && pg.value_from.is_some());
        assert!(env.iter().any(|e| e.name == "DHIS2_BACKUP_REPO"));
        assert!(!text.contains("\"password\":\""));
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], "drill");

        d.spec.backup_id = Some("20261125T020000Z-1a2b3c4d".into());
        let job = build_drill_job(&d, &n, &repo(), "i").unwrap();
        let args = job.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert_eq!(args[4], "20261125T020000Z-1a2b3c4d");
        assert!(build_drill_job(&d, &n, &RepositorySpec::default(), "i").is_none());
    }
}
