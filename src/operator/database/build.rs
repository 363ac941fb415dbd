//! The objects a managed `Dhis2Database` needs (pure): a credentials Secret, a Service and a
//! StatefulSet running PostGIS with PostgreSQL tuned the way the DHIS2 sysadmin guide recommends.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::crd::common::{DeletionPolicy, Resources, VolumeSpec};
use crate::crd::dhis2_database::{DEFAULT_POSTGIS_IMAGE, DatabaseProvider, Dhis2Database};

use crate::operator::kit::labels::{child_meta, labels, selector};
use crate::operator::kit::quantity::{memory_bytes, postgres_mb};
use crate::rules::names::{credentials_secret_name, database_service_name};

pub const APP: &str = "postgresql";
pub const DATABASE_NAME: &str = "dhis2";
pub const DATABASE_USER: &str = "dhis";
pub const DEFAULT_STORAGE: &str = "100Gi";
pub const DEFAULT_MEMORY: &str = "4Gi";

pub struct DatabaseChildren {
    pub secret: Secret,
    pub service: Service,
    pub statefulset: StatefulSet,
}

pub fn owner_reference(db: &Dhis2Database) -> Option<OwnerReference> {
    db.controller_owner_ref(&())
}

/// Settings from the DHIS2 sysadmin guide, sized from the memory limit. `synchronous_commit`
/// stays on (the guide turns it off for speed; losing acknowledged health data is not a trade we
/// make by default — set it in spec.parameters to choose otherwise).
pub fn tuned_parameters(
    memory_limit: u64,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut p = BTreeMap::from([
        ("max_connections".to_string(), "200".to_string()),
        ("shared_buffers".to_string(), postgres_mb(memory_limit / 4)),
        (
            "effective_cache_size".to_string(),
            postgres_mb(memory_limit / 4 * 3),
        ),
        (
            "maintenance_work_mem".to_string(),
            postgres_mb((memory_limit / 16).min(1024 * 1024 * 1024)),
        ),
        ("work_mem".to_string(), "24MB".to_string()),
        (
            "checkpoint_completion_target".to_string(),
            "0.8".to_string(),
        ),
        ("random_page_cost".to_string(), "1.1".to_string()),
        ("max_locks_per_transaction".to_string(), "96".to_string()),
        ("jit".to_string(), "off".to_string()),
    ]);
    for (k, v) in overrides {
        p.insert(k.clone(), v.clone());
    }
    p
}

/// PostgreSQL's container resources (the operator's defaults where the spec is silent) and its
/// settings, sized from the memory limit: the same for `managed` and `cnpg`.
pub fn postgres_resources_and_parameters(
    db: &Dhis2Database,
) -> (ResourceRequirements, BTreeMap<String, String>) {
    let resources = resource_requirements(
        db.spec.resources.as_ref(),
        "1",
        DEFAULT_MEMORY,
        DEFAULT_MEMORY,
    );
    let memory_limit = resources
        .limits
        .as_ref()
        .and_then(|l| l.get("memory"))
        .and_then(|q| memory_bytes(&q.0))
        .unwrap_or(4 * 1024 * 1024 * 1024);
    let parameters = tuned_parameters(memory_limit, &db.spec.parameters);
    (resources, parameters)
}

fn quantity_map(cpu: Option<&str>, memory: Option<&str>) -> Option<BTreeMap<String, Quantity>> {
    let mut m = BTreeMap::new();
    if let Some(c) = cpu {
        m.insert("cpu".to_string(), Quantity(c.to_string()));
    }
    if let Some(mem) = memory {
        m.insert("memory".to_string(), Quantity(mem.to_string()));
    }
    (!m.is_empty()).then_some(m)
}

/// Container resources with the operator's defaults where the spec is silent.
pub fn resource_requirements(
    spec: Option<&Resources>,
    cpu: &str,
    memory: &str,
    limit_memory: &str,
) -> ResourceRequirements {
    let req = spec.and_then(|r| r.requests.as_ref());
    let lim = spec.and_then(|r| r.limits.as_ref());
    ResourceRequirements {
        requests: quantity_map(
            Some(req.and_then(|r| r.cpu.as_deref()).unwrap_or(cpu)),
            Some(req.and_then(|r| r.memory.as_deref()).unwrap_or(memory)),
        ),
        limits: quantity_map(
            lim.and_then(|l| l.cpu.as_deref()),
            Some(
                lim.and_then(|l| l.memory.as_deref())
                    .unwrap_or(limit_memory),
            ),
        ),
        ..Default::default()
    }
}

/// The size of the volume a database the operator runs keeps its data on (a managed or cnpg
/// database: `spec.storage.size`, else the default); `None` for an external one.
pub fn data_volume_bytes(db: &Dhis2Database) -> Option<u64> {
    if db.spec.provider == DatabaseProvider::External {
        return None;
    }
    let size = db
        .spec
        .storage
        .as_ref()
        .map_or(DEFAULT_STORAGE, |s| s.size.as_str());
    memory_bytes(size)
}

/// A ReadWriteOnce claim of the requested size and class, or `default_size` in the default class.
pub fn volume_claim_spec(
    volume: Option<&VolumeSpec>,
    default_size: &str,
) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        storage_class_name: volume.and_then(|v| v.storage_class_name.clone()),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_string(),
                Quantity(volume.map_or_else(|| default_size.to_string(), |v| v.size.clone())),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn build_database_children(db: &Dhis2Database, password: &str) -> DatabaseChildren {
    let name = db.metadata.name.clone().unwrap_or_default();
    let namespace = db.metadata.namespace.clone();
    let owner = owner_reference(db);
    let lbl = labels(APP, &name, "database");
    let meta = |object_name: String, owned: bool| {
        child_meta(
            object_name,
            namespace.clone(),
            &lbl,
            owned.then(|| owner.clone()).flatten(),
            &format!("Dhis2Database/{name}"),
        )
    };
    // With Retain the Secret outlives the resource, like the data volume it unlocks.
    let secret_owned = db.spec.deletion_policy == DeletionPolicy::Delete;
    let secret_name = credentials_secret_name(&name);
    let service_name = database_service_name(&name);
    let host = format!(
        "{service_name}.{}.svc",
        namespace.as_deref().unwrap_or("default")
    );
    let secret = Secret {
        metadata: meta(secret_name.clone(), secret_owned),
        string_data: Some(BTreeMap::from([
            ("host".to_string(), host),
            ("port".to_string(), "5432".to_string()),
            ("database".to_string(), DATABASE_NAME.to_string()),
            ("username".to_string(), DATABASE_USER.to_string()),
            ("password".to_string(), password.to_string()),
        ])),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    };
    let service = Service {
        metadata: meta(service_name.clone(), true),
        spec: Some(ServiceSpec {
            selector: Some(selector(APP, &name)),
            ports: Some(vec![ServicePort {
                name: Some("postgresql".into()),
                port: 5432,
                // Server-side apply keys ports by port and protocol: name both.
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(5432)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (resources, parameters) = postgres_resources_and_parameters(db);
    let args: Vec<String> = parameters
        .into_iter()
        .flat_map(|(k, v)| ["-c".to_string(), format!("{k}={v}")])
        .collect();
    let probe = |period: i32, failures: i32| Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "pg_isready -h 127.0.0.1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"".into(),
            ]),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Default::default()
    };
    let storage = db.spec.storage.as_ref();
    let statefulset = StatefulSet {
        metadata: meta(name.clone(), true),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(service_name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector(APP, &name)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(lbl.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    termination_grace_period_seconds: Some(120),
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(999),
                        ..Default::default()
                    }),
                    containers: vec![Container {
                        name: "postgresql".into(),
                        image: Some(
                            db.spec
                                .image
                                .clone()
                                .unwrap_or_else(|| DEFAULT_POSTGIS_IMAGE.to_string()),
                        ),
                        args: Some(args),
                        env: Some(vec![
                            secret_env("POSTGRES_USER", &secret_name, "username"),
                            secret_env("POSTGRES_PASSWORD", &secret_name, "password"),
                            secret_env("POSTGRES_DB", &secret_name, "database"),
                            EnvVar {
                                name: "PGDATA".into(),
                                value: Some("/var/lib/postgresql/data/pgdata".into()),
                                ..Default::default()
                            },
                        ]),
                        ports: Some(vec![ContainerPort {
                            name: Some("postgresql".into()),
                            container_port: 5432,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }]),
                        readiness_probe: Some(probe(10, 3)),
                        liveness_probe: Some(probe(30, 6)),
                        resources: Some(resources),
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
                    }],
                    volumes: Some(vec![Volume {
                        name: "shm".into(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            medium: Some("Memory".into()),
                            size_limit: Some(Quantity("1Gi".into())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            // Claims from templates are never garbage-collected with the StatefulSet: the data
            // volume survives unless deletionPolicy is Delete.
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(lbl.clone()),
                    ..Default::default()
                },
                spec: Some(volume_claim_spec(storage, DEFAULT_STORAGE)),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    DatabaseChildren {
        secret,
        service,
        statefulset,
    }
}
