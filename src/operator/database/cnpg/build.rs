//! The CloudNativePG objects a `provider: cnpg` `Dhis2Database` needs (pure): the `Cluster`
//! (PostGIS, DHIS2's extensions at bootstrap, PostgreSQL tuned as for `managed`), and when it is
//! archived, the Barman Cloud plugin's `ObjectStore` and a `ScheduledBackup` of base backups.
//! Built from CloudNativePG's own API types (src/cnpg, generated from its CRDs).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cnpg::generated::cluster::{
    ClusterBackup, ClusterBackupBarmanObjectStore, ClusterBootstrap, ClusterBootstrapInitdb,
    ClusterBootstrapRecovery, ClusterBootstrapRecoveryRecoveryTarget, ClusterExternalClusters,
    ClusterExternalClustersPlugin, ClusterPlugins, ClusterPostgresql, ClusterResources,
    ClusterSpec, ClusterStorage,
};
use crate::cnpg::generated::object_store::{
    ObjectStoreConfiguration, ObjectStoreConfigurationData,
    ObjectStoreConfigurationDataCompression, ObjectStoreConfigurationS3Credentials,
    ObjectStoreConfigurationS3CredentialsAccessKeyId,
    ObjectStoreConfigurationS3CredentialsSecretAccessKey, ObjectStoreConfigurationWal,
    ObjectStoreConfigurationWalCompression, ObjectStoreSpec,
};
use crate::cnpg::generated::scheduled_backup::{
    ScheduledBackupBackupOwnerReference, ScheduledBackupCluster, ScheduledBackupMethod,
    ScheduledBackupPluginConfiguration, ScheduledBackupSpec,
};
use crate::cnpg::{Cluster, ObjectStore, ScheduledBackup};
use crate::crd::common::DeletionPolicy;
use crate::crd::dhis2_database::{DEFAULT_CNPG_POSTGIS_IMAGE, Dhis2Database};

use crate::operator::database::build::{
    DATABASE_NAME, DATABASE_USER, DEFAULT_STORAGE, owner_reference,
    postgres_resources_and_parameters,
};
use crate::operator::database::cnpg::archive::{Archive, ArchiveMethod, BARMAN_CLOUD_PLUGIN};
use crate::operator::kit::labels::{child_meta, labels};

/// `app.kubernetes.io/name` of the CloudNativePG objects.
pub const CNPG_APP: &str = "cnpg";
/// The extensions DHIS2 creates at start-up and refuses to start without; created by the
/// superuser at bootstrap, because DHIS2's own role may not create them.
pub const DHIS2_EXTENSIONS: [&str; 3] = ["postgis", "pg_trgm", "btree_gin"];
/// The name under which a recovering cluster knows the cluster it replays.
pub const RECOVERY_SOURCE: &str = "origin";

/// PostgreSQL instances of a cnpg database when `spec.cnpg.instances` is silent: a primary and two
/// replicas for production, a primary alone otherwise.
pub fn default_instances(production: bool) -> i32 {
    if production { 3 } else { 1 }
}

/// The `ObjectStore` of a database's archive.
pub fn object_store_name(database: &str) -> String {
    format!("{database}-archive")
}

/// The `ObjectStore` through which a recovering database reads its source's archive.
pub fn recovery_object_store_name(database: &str) -> String {
    format!("{database}-recovery-source")
}

pub fn scheduled_backup_name(database: &str) -> String {
    format!("{database}-base-backup")
}

/// CloudNativePG's Secret with the application role's credentials (`username`, `password`,
/// `host` = the `-rw` Service, `port`, `dbname`).
pub fn app_secret_name(cluster: &str) -> String {
    format!("{cluster}-app")
}

/// CloudNativePG's Secret with the `postgres` superuser's credentials (with
/// `enableSuperuserAccess`, turned on only while a restore needs it): only our restore Jobs use
/// it, because an atomic restore creates and renames databases and creates PostGIS, which
/// DHIS2's own role may not.
pub fn superuser_secret_name(cluster: &str) -> String {
    format!("{cluster}-superuser")
}

/// The Service that always leads to the primary.
pub fn read_write_service_name(cluster: &str) -> String {
    format!("{cluster}-rw")
}

/// The cluster to replay when a database is made by point-in-time recovery.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryPlan<'a> {
    /// The source database's cluster (its name is Barman's server name in the archive).
    pub source_cluster: &'a str,
    pub source_archive: &'a Archive,
    /// RFC 3339; `None`: replay to the end of the archive.
    pub target_time: Option<&'a str>,
}

/// What the Cluster is made of, decided by the controller.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPlan<'a> {
    pub instances: i32,
    /// `enableSuperuserAccess`: only while a restore needs it (`cnpg_superuser`).
    pub superuser_access: bool,
    pub archive: Option<&'a Archive>,
    pub recovery: Option<RecoveryPlan<'a>>,
}

pub struct CnpgChildren {
    pub cluster: Cluster,
    /// When archived through the plugin.
    pub object_store: Option<ObjectStore>,
    /// When recovering through the plugin: the source's archive.
    pub recovery_object_store: Option<ObjectStore>,
    /// When archived (either way).
    pub scheduled_backup: Option<ScheduledBackup>,
}

/// Between CloudNativePG's several generated copies of one schema (the object store appears in
/// the `ObjectStore`, in `Cluster.spec.backup` and in `Cluster.spec.externalClusters`).
fn same_shape<A: Serialize, B: DeserializeOwned>(value: &A) -> B {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .expect("CloudNativePG's copies of the Barman object store schema are identical")
}

/// The Barman object store configuration of an archive (S3 keys by reference to the
/// repository's Secret, never by value).
pub fn object_store_configuration(archive: &Archive) -> ObjectStoreConfiguration {
    let secret = &archive.s3.credentials_secret_ref;
    ObjectStoreConfiguration {
        destination_path: archive.destination_path.clone(),
        endpoint_url: archive.s3.endpoint.clone(),
        s3_credentials: Some(ObjectStoreConfigurationS3Credentials {
            access_key_id: Some(ObjectStoreConfigurationS3CredentialsAccessKeyId {
                name: secret.clone(),
                key: "accessKey".into(),
            }),
            secret_access_key: Some(ObjectStoreConfigurationS3CredentialsSecretAccessKey {
                name: secret.clone(),
                key: "secretKey".into(),
            }),
            ..Default::default()
        }),
        wal: Some(ObjectStoreConfigurationWal {
            compression: Some(ObjectStoreConfigurationWalCompression::Gzip),
            max_parallel: Some(2),
            ..Default::default()
        }),
        data: Some(ObjectStoreConfigurationData {
            compression: Some(ObjectStoreConfigurationDataCompression::Gzip),
            jobs: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn build_cnpg_children(db: &Dhis2Database, plan: &ClusterPlan) -> CnpgChildren {
    let name = db.metadata.name.clone().unwrap_or_default();
    let namespace = db.metadata.namespace.clone();
    let lbl = labels(CNPG_APP, &name, "database");
    // With Retain the cluster (and so its volumes, which CloudNativePG owns through it) outlives
    // the resource; its archive settings stay with it.
    let owner = (db.spec.deletion_policy == DeletionPolicy::Delete)
        .then(|| owner_reference(db))
        .flatten();
    let meta = |object_name: String| {
        child_meta(
            object_name,
            namespace.clone(),
            &lbl,
            owner.clone(),
            &format!("Dhis2Database/{name}"),
        )
    };
    let (resources, parameters) = postgres_resources_and_parameters(db);
    let as_int_or_string =
        |m: Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.map(|m| {
                m.into_iter()
                    .map(|(k, q)| (k, IntOrString::String(q.0)))
                    .collect()
            })
        };
    let bootstrap = match &plan.recovery {
        None => ClusterBootstrap {
            initdb: Some(ClusterBootstrapInitdb {
                database: Some(DATABASE_NAME.into()),
                owner: Some(DATABASE_USER.into()),
                post_init_application_sql: Some(
                    DHIS2_EXTENSIONS
                        .iter()
                        .map(|e| format!("CREATE EXTENSION IF NOT EXISTS {e};"))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        },
        Some(recovery) => ClusterBootstrap {
            recovery: Some(ClusterBootstrapRecovery {
                source: Some(RECOVERY_SOURCE.into()),
                database: Some(DATABASE_NAME.into()),
                owner: Some(DATABASE_USER.into()),
                recovery_target: recovery.target_time.map(|t| {
                    ClusterBootstrapRecoveryRecoveryTarget {
                        target_time: Some(t.to_string()),
                        ..Default::default()
                    }
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    let external_clusters = plan.recovery.as_ref().map(|recovery| {
        let source = recovery.source_cluster;
        vec![match recovery.source_archive.method {
            ArchiveMethod::Plugin => ClusterExternalClusters {
                name: RECOVERY_SOURCE.into(),
                plugin: Some(ClusterExternalClustersPlugin {
                    name: BARMAN_CLOUD_PLUGIN.into(),
                    parameters: Some(BTreeMap::from([
                        (
                            "barmanObjectName".to_string(),
                            recovery_object_store_name(&name),
                        ),
                        ("serverName".to_string(), source.to_string()),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ArchiveMethod::BarmanObjectStore => {
                let mut store = object_store_configuration(recovery.source_archive);
                store.server_name = Some(source.to_string());
                ClusterExternalClusters {
                    name: RECOVERY_SOURCE.into(),
                    barman_object_store: Some(same_shape(&store)),
                    ..Default::default()
                }
            }
        }]
    });
    let (plugins, backup) = match plan.archive {
        Some(a) if a.method == ArchiveMethod::Plugin => (
            Some(vec![ClusterPlugins {
                name: BARMAN_CLOUD_PLUGIN.into(),
                is_wal_archiver: Some(true),
                parameters: Some(BTreeMap::from([(
                    "barmanObjectName".to_string(),
                    object_store_name(&name),
                )])),
                ..Default::default()
            }]),
            None,
        ),
        Some(a) => (
            None,
            Some(ClusterBackup {
                barman_object_store: Some(same_shape::<_, ClusterBackupBarmanObjectStore>(
                    &object_store_configuration(a),
                )),
                retention_policy: Some(a.retention.clone()),
                ..Default::default()
            }),
        ),
        None => (None, None),
    };
    let storage = db.spec.storage.as_ref();
    let cluster = Cluster {
        metadata: meta(name.clone()),
        spec: ClusterSpec {
            instances: i64::from(plan.instances),
            image_name: Some(
                db.spec
                    .image
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CNPG_POSTGIS_IMAGE.to_string()),
            ),
            postgresql: Some(ClusterPostgresql {
                parameters: Some(parameters),
                ..Default::default()
            }),
            bootstrap: Some(bootstrap),
            // For our restore Jobs alone, while one runs (see superuser_secret_name); DHIS2
            // uses the app role.
            enable_superuser_access: Some(plan.superuser_access),
            external_clusters,
            storage: Some(ClusterStorage {
                size: Some(
                    storage
                        .map(|s| s.size.clone())
                        .unwrap_or_else(|| DEFAULT_STORAGE.to_string()),
                ),
                storage_class: storage.and_then(|s| s.storage_class_name.clone()),
                ..Default::default()
            }),
            resources: Some(ClusterResources {
                requests: as_int_or_string(resources.requests),
                limits: as_int_or_string(resources.limits),
                ..Default::default()
            }),
            plugins,
            backup,
            ..Default::default()
        },
        status: None,
    };
    let object_store = plan
        .archive
        .filter(|a| a.method == ArchiveMethod::Plugin)
        .map(|a| ObjectStore {
            metadata: meta(object_store_name(&name)),
            spec: ObjectStoreSpec {
                configuration: object_store_configuration(a),
                retention_policy: Some(a.retention.clone()),
                ..Default::default()
            },
            status: None,
        });
    let recovery_object_store = plan
        .recovery
        .as_ref()
        .filter(|r| r.source_archive.method == ArchiveMethod::Plugin)
        .map(|r| ObjectStore {
            metadata: meta(recovery_object_store_name(&name)),
            spec: ObjectStoreSpec {
                configuration: object_store_configuration(r.source_archive),
                ..Default::default()
            },
            status: None,
        });
    let scheduled_backup = plan.archive.map(|a| ScheduledBackup {
        metadata: meta(scheduled_backup_name(&name)),
        spec: ScheduledBackupSpec {
            schedule: a.schedule.clone(),
            cluster: ScheduledBackupCluster { name: name.clone() },
            // The first base backup at once: WAL alone recovers nothing.
            immediate: Some(true),
            backup_owner_reference: Some(ScheduledBackupBackupOwnerReference::r#_Self),
            method: Some(match a.method {
                ArchiveMethod::Plugin => ScheduledBackupMethod::Plugin,
                ArchiveMethod::BarmanObjectStore => ScheduledBackupMethod::BarmanObjectStore,
            }),
            plugin_configuration: (a.method == ArchiveMethod::Plugin).then(|| {
                ScheduledBackupPluginConfiguration {
                    name: BARMAN_CLOUD_PLUGIN.into(),
                    ..Default::default()
                }
            }),
            ..Default::default()
        },
        status: None,
    });
    CnpgChildren {
        cluster,
        object_store,
        recovery_object_store,
        scheduled_backup,
    }
}
