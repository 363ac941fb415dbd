//! The objects a `Dhis2Instance` needs (pure): the dhis.conf Secret, the file store volume claim,
//! the DHIS2 Deployment, its Service and Ingress, and — without `databaseRef` — a dedicated
//! `Dhis2Database` it owns.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::crd::common::DeletionPolicy;
use crate::crd::dhis2_database::{Dhis2Database, Dhis2DatabaseSpec};
use crate::crd::dhis2_instance::{Dhis2Instance, Dhis2InstanceSpec};
use crate::crd::upgrade::UpgradeSpec;

use crate::operator::database::build::{resource_requirements, volume_claim_spec};
use crate::operator::database::connection_settings::DatabaseConnection;
use crate::operator::instance::dhis_conf::{ClusterSecrets, render_dhis_conf};
use crate::operator::kit::labels::{child_meta, labels, selector};
use crate::operator::upgrade::plan::DeploymentPlan;
use crate::rules::names::{
    RESTORE_IN_PROGRESS_ANNOTATION, dedicated_database_name, dhis_conf_secret_name,
    file_store_claim_name,
};

pub const APP: &str = "dhis2";
pub const DEFAULT_FILE_STORE: &str = "10Gi";
/// The port Tomcat serves DHIS2 on in its container (named `http`).
pub const DHIS2_HTTP_PORT: i32 = 8080;
pub const CONFIG_HASH_ANNOTATION: &str = "dhis2operator.io/config-hash";
const JAVA_DEFAULTS: &str = "-XX:MaxRAMPercentage=75 -XX:+UseG1GC -Dfile.encoding=UTF-8";
/// The user and group the `dhis2/core` images run Tomcat as (`nobody`).
pub const DHIS2_UID: i64 = 65534;
/// dhis.conf holds the database password: owner and group (fsGroup, DHIS2's group) read it,
/// nobody else. Never world-readable.
pub const DHIS_CONF_MODE: i32 = 0o440;
/// Where DHIS2 and Tomcat must write when the root filesystem is read-only: Tomcat's temp
/// (uploads, `java.io.tmpdir`), work (compiled JSPs, sessions) and logs; `/tmp` for libraries
/// that ignore `java.io.tmpdir`; DHIS2's own logs under DHIS2_HOME. The web application itself is
/// unpacked in the image (DHIS2 builds it with Jib into webapps/ROOT), so webapps stays
/// read-only; dhis.conf comes from a Secret and the file store from its own volume.
pub const WRITABLE_DIRS: [(&str, &str); 5] = [
    ("tomcat-temp", "/usr/local/tomcat/temp"),
    ("tomcat-work", "/usr/local/tomcat/work"),
    ("tomcat-logs", "/usr/local/tomcat/logs"),
    ("tmp", "/tmp"),
    ("dhis2-logs", "/opt/dhis2/logs"),
];

const STARTUP_PROBE_PERIOD_SECONDS: i32 = 10;

/// Startup probe failures allowed: at least an hour, and at least `spec.upgrade.timeoutSeconds`
/// (default two hours), the time an upgrade gives Flyway before it rolls back.
fn startup_failure_threshold(spec: &Dhis2InstanceSpec) -> i32 {
    let upgrade_timeout = spec
        .upgrade
        .as_ref()
        .map(|u| u.timeout_seconds)
        .unwrap_or_else(|| UpgradeSpec::default().timeout_seconds);
    let period = i64::from(STARTUP_PROBE_PERIOD_SECONDS);
    let needed = (upgrade_timeout + period - 1) / period;
    i32::try_from(needed.max(360)).unwrap_or(i32::MAX)
}

pub struct InstanceChildren {
    pub dhis_conf_secret: Secret,
    pub file_store_claim: Option<PersistentVolumeClaim>,
    pub deployment: Deployment,
    pub service: Service,
    pub ingress: Option<Ingress>,
}

/// The labels that select an instance's DHIS2 pods (not its database's, nor its Jobs').
pub fn dhis2_pod_labels(instance: &str) -> BTreeMap<String, String> {
    let mut match_labels = selector(APP, instance);
    match_labels.insert("app.kubernetes.io/component".into(), "dhis2".into());
    match_labels
}

/// The same, as a label selector for a list call.
pub fn dhis2_pod_selector(instance: &str) -> String {
    dhis2_pod_labels(instance)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn owner(instance: &Dhis2Instance) -> Option<Vec<OwnerReference>> {
    instance.controller_owner_ref(&()).map(|o| vec![o])
}

/// DHIS2's replicas: as the upgrade plans them, none while a restore holds the instance (two
/// writers never).
pub fn running_replicas(instance: &Dhis2Instance, planned: i32) -> i32 {
    if held_by_restore(instance) {
        0
    } else {
        planned
    }
}

/// A restore holds the instance (its `restore-in-progress` annotation).
pub fn held_by_restore(instance: &Dhis2Instance) -> bool {
    instance
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(RESTORE_IN_PROGRESS_ANNOTATION))
}

/// The managed database an instance without `databaseRef` gets; it follows the instance's
/// deletion policy.
pub fn build_dedicated_database(instance: &Dhis2Instance) -> Dhis2Database {
    let name = instance.metadata.name.clone().unwrap_or_default();
    let mut db = Dhis2Database::new(
        &dedicated_database_name(&name),
        Dhis2DatabaseSpec {
            provider: Default::default(),
            image: None,
            storage: instance.spec.database_storage.clone(),
            resources: None,
            parameters: BTreeMap::new(),
            external_secret_ref: None,
            cnpg: None,
            deletion_policy: instance.spec.deletion_policy,
        },
    );
    db.metadata.namespace = instance.metadata.namespace.clone();
    db.metadata.labels = Some(labels(APP, &name, "database"));
    db.metadata.owner_references = owner(instance);
    db
}

pub fn build_instance_children(
    instance: &Dhis2Instance,
    db: &DatabaseConnection,
    secrets: &ClusterSecrets,
    plan: &DeploymentPlan,
    // The read-only copy the Service sends users to while an upgrade migrates the database.
    serving_copy: Option<&str>,
) -> InstanceChildren {
    let name = instance.metadata.name.clone().unwrap_or_default();
    let namespace = instance.metadata.namespace.clone();
    let lbl = labels(APP, &name, "dhis2");
    let meta = |object_name: String, owned: bool| {
        child_meta(
            object_name,
            namespace.clone(),
            &lbl,
            owned.then(|| instance.controller_owner_ref(&())).flatten(),
            &format!("Dhis2Instance/{name}"),
        )
    };
    let spec = &instance.spec;
    let conf = render_dhis_conf(spec, db, secrets);
    let conf_hash = hex::encode(Sha256::digest(conf.as_bytes()));
    let dhis_conf_secret = Secret {
        metadata: meta(dhis_conf_secret_name(&name), true),
        string_data: Some(BTreeMap::from([("dhis.conf".to_string(), conf)])),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let uses_s3 = spec
        .file_store
        .as_ref()
        .and_then(|f| f.s3.as_ref())
        .is_some();
    let file_store_claim = (!uses_s3).then(|| {
        let volume = spec.file_store.as_ref().and_then(|f| f.volume.as_ref());
        PersistentVolumeClaim {
            // Uploaded files are health data too: kept unless deletionPolicy is Delete.
            metadata: meta(
                file_store_claim_name(&name),
                spec.deletion_policy == DeletionPolicy::Delete,
            ),
            spec: Some(volume_claim_spec(volume, DEFAULT_FILE_STORE)),
            ..Default::default()
        }
    });

    let ping = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/api/system/ping".into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Default::default()
    };
    let java_opts = match &spec.jvm_options {
        Some(extra) => format!("{JAVA_DEFAULTS} {extra}"),
        None => JAVA_DEFAULTS.to_string(),
    };
    let mut mounts = vec![VolumeMount {
        name: "dhis-conf".into(),
        mount_path: "/opt/dhis2/dhis.conf".into(),
        sub_path: Some("dhis.conf".into()),
        read_only: Some(true),
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: "dhis-conf".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(dhis_conf_secret_name(&name)),
            default_mode: Some(DHIS_CONF_MODE),
            ..Default::default()
        }),
        ..Default::default()
    }];
    for (volume, path) in WRITABLE_DIRS {
        mounts.push(VolumeMount {
            name: volume.into(),
            mount_path: path.into(),
            ..Default::default()
        });
        volumes.push(Volume {
            name: volume.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    if !uses_s3 {
        mounts.push(VolumeMount {
            name: "files".into(),
            mount_path: "/opt/dhis2/files".into(),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "files".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: file_store_claim_name(&name),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    let deployment = Deployment {
        metadata: meta(name.clone(), true),
        spec: DeploymentSpec {
            replicas: Some(running_replicas(instance, plan.replicas)),
            // Two DHIS2 versions must never run against one database: never overlap pods.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(selector(APP, &name)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(lbl.clone()),
                    // A changed dhis.conf restarts DHIS2, which reads it only at startup.
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        conf_hash,
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    termination_grace_period_seconds: Some(60),
                    // DHIS2 runs as 65534; fsGroup makes the file store volume and dhis.conf
                    // (0440, group 65534) readable and writable by it.
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(DHIS2_UID),
                        run_as_group: Some(DHIS2_UID),
                        fs_group: Some(DHIS2_UID),
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![Container {
                        name: "dhis2".into(),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                add: None,
                            }),
                            ..Default::default()
                        }),
                        image: Some(plan.image.clone()),
                        env: Some(vec![
                            EnvVar {
                                name: "DHIS2_HOME".into(),
                                value: Some("/opt/dhis2".into()),
                                ..Default::default()
                            },
                            EnvVar {
                                name: "JAVA_OPTS".into(),
                                value: Some(java_opts),
                                ..Default::default()
                            },
                        ]),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: DHIS2_HTTP_PORT,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }]),
                        // Flyway migrates at startup, for long on big databases: the kubelet
                        // must not kill a migration the upgrade is still willing to wait for.
                        startup_probe: Some(ping(
                            STARTUP_PROBE_PERIOD_SECONDS,
                            startup_failure_threshold(spec),
                        )),
                        readiness_probe: Some(ping(10, 3)),
                        liveness_probe: Some(ping(20, 6)),
                        resources: Some(resource_requirements(
                            spec.resources.as_ref(),
                            "1",
                            "4Gi",
                            "6Gi",
                        )),
                        volume_mounts: Some(mounts),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let service = Service {
        metadata: meta(name.clone(), true),
        spec: Some(ServiceSpec {
            selector: Some(selector(APP, serving_copy.unwrap_or(&name))),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                // Server-side apply keys ports by port and protocol: name both.
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ingress = spec.hostname.as_ref().map(|host| {
        let ing = spec.ingress.clone().unwrap_or_default();
        let mut m = meta(name.clone(), true);
        if !ing.annotations.is_empty() {
            m.annotations = Some(ing.annotations.clone());
        }
        Ingress {
            metadata: m,
            spec: Some(K8sIngressSpec {
                ingress_class_name: ing.class_name.clone(),
                tls: ing.tls_secret_name.as_ref().map(|s| {
                    vec![IngressTLS {
                        hosts: Some(vec![host.clone()]),
                        secret_name: Some(s.clone()),
                    }]
                }),
                rules: Some(vec![IngressRule {
                    host: Some(host.clone()),
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![HTTPIngressPath {
                            path: Some("/".into()),
                            path_type: "Prefix".into(),
                            backend: IngressBackend {
                                service: Some(IngressServiceBackend {
                                    name: name.clone(),
                                    port: Some(ServiceBackendPort {
                                        name: Some("http".into()),
                                        number: None,
                                    }),
                                }),
                                resource: None,
                            },
                        }],
                    }),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    });
    InstanceChildren {
        dhis_conf_secret,
        file_store_claim,
        deployment,
        service,
        ingress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::deployed_version::dhis2_image;

    fn instance(yaml: &str) -> Dhis2Instance {
        let mut i = Dhis2Instance::new("hmis", serde_saphyr::from_str(yaml).expect("fixture"));
        i.metadata.namespace = Some("moh".into());
        i.metadata.uid = Some("uid-1".into());
        i
    }

    fn db() -> DatabaseConnection {
        DatabaseConnection {
            host: "hmis-db-postgresql.moh.svc".into(),
            port: "5432".into(),
            database: "dhis2".into(),
            username: "dhis".into(),
            password: "pw".into(),
        }
    }

    /// No upgrade: the spec's image and replicas.
    fn as_specified(i: &Dhis2Instance) -> DeploymentPlan {
        DeploymentPlan {
            image: dhis2_image(i),
            replicas: i.spec.replicas,
        }
    }

    #[test]
    fn the_deployment_runs_the_planned_image_and_replicas() {
        let i = instance("version: '2.43.1'\nenvironment: production\nreplicas: 3\n");
        let plan = DeploymentPlan {
            image: "dhis2/core:2.42.4".into(),
            replicas: 0,
        };
        let d =
            build_instance_children(&i, &db(), &ClusterSecrets::default(), &plan, None).deployment;
        assert_eq!(d.spec.replicas, Some(0));
        let pod = d.spec.template.spec.unwrap();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("dhis2/core:2.42.4")
        );
    }

    #[test]
    fn a_restore_in_progress_stops_dhis2_and_its_end_starts_it_again() {
        let mut i = instance("version: '2.41.3'\nenvironment: production\nreplicas: 1\n");
        let replicas = |i: &Dhis2Instance| {
            build_instance_children(i, &db(), &ClusterSecrets::default(), &as_specified(i), None)
                .deployment
                .spec
                .replicas
        };
        assert_eq!(replicas(&i), Some(1));
        i.metadata.annotations = Some(BTreeMap::from([(
            RESTORE_IN_PROGRESS_ANNOTATION.to_string(),
            "refresh-staging".to_string(),
        )]));
        assert_eq!(replicas(&i), Some(0));
    }

    #[test]
    fn the_startup_probe_waits_for_a_migration_as_long_as_the_upgrade_does() {
        let allowed = |yaml: &str| {
            let i = instance(yaml);
            let d = build_instance_children(
                &i,
                &db(),
                &ClusterSecrets::default(),
                &as_specified(&i),
                None,
            )
            .deployment;
            let probe = d.spec.template.spec.unwrap().containers[0]
                .startup_probe
                .clone()
                .unwrap();
            i64::from(probe.period_seconds.unwrap() * probe.failure_threshold.unwrap())
        };
        // The default upgrade timeout is two hours: a migration of 1 h 30 min is not killed.
        assert!(allowed("version: '2.41.3'\nenvironment: production\n") >= 7200);
        assert!(
            allowed(
                "version: '2.41.3'\nenvironment: production\nupgrade: {timeoutSeconds: 43200}\n"
            ) >= 43200
        );
        // A short upgrade timeout never makes an ordinary start riskier than an hour.
        assert!(
            allowed("version: '2.41.3'\nenvironment: production\nupgrade: {timeoutSeconds: 300}\n")
                >= 3600
        );
    }

    #[test]
    fn dhis2_runs_unprivileged_and_can_read_what_it_is_given() {
        let i = instance("version: '2.41.3'\nenvironment: production\n");
        let c = build_instance_children(
            &i,
            &db(),
            &ClusterSecrets::default(),
            &as_specified(&i),
            None,
        );
        let pod = c.deployment.spec.template.spec.unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_user, Some(65534));
        assert_eq!(psc.run_as_group, Some(65534));
        assert_eq!(psc.fs_group, Some(65534));
        assert_eq!(psc.run_as_non_root, Some(true));
        let container = &pod.containers[0];
        let sc = container.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let volumes = pod.volumes.unwrap();
        let conf = volumes.iter().find(|v| v.name == "dhis-conf").unwrap();
        let mode = conf.secret.as_ref().unwrap().default_mode.unwrap();
        assert_eq!(mode & 0o007, 0, "dhis.conf is not world-readable");
        assert_eq!(mode & 0o040, 0o040, "group 65534 (fsGroup) reads it");
        let mounts = container.volume_mounts.as_ref().unwrap();
        for path in [
            "/usr/local/tomcat/temp",
            "/usr/local/tomcat/work",
            "/usr/local/tomcat/logs",
            "/tmp",
            "/opt/dhis2/logs",
            "/opt/dhis2/files",
        ] {
            let m = mounts.iter().find(|m| m.mount_path == path);
            assert!(m.is_some(), "{path} is not writable");
            assert_ne!(m.unwrap().read_only, Some(true));
        }
    }
}
