//! Names and labels of the objects the operator creates: deterministic, and carrying the
//! standard `app.kubernetes.io/*` labels so what the operator owns can be found and pruned.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::operator::kit::apply::RETAINED_FOR_ANNOTATION;

pub const MANAGED_BY: &str = "dhis2-operator";
/// The one server-side-apply field manager.
pub const FIELD_MANAGER: &str = "dhis2-operator";
pub const FINALIZER: &str = "dhis2operator.io/finalizer";
/// Lets an operator running outside the cluster (development, tests) reach DHIS2.
pub const ENDPOINT_OVERRIDE_ANNOTATION: &str = "dhis2operator.io/endpoint-override";
/// On a `Dhis2Instance` a restore holds: the `Dhis2Restore`'s name. DHIS2 runs no replica while
/// it is there (two writers never); the restore removes it when it is done.
pub const RESTORE_IN_PROGRESS_ANNOTATION: &str = "dhis2operator.io/restore-in-progress";
/// On a `Dhis2Instance` whose upgrade and rollback both failed: the failed upgrade's
/// `status.upgrade.startedAt`, set by whoever accepts that DHIS2 runs again on the database as
/// the failed migration left it (`dhis2ctl upgrade NAME --accept-migrated-database`).
pub const ACCEPT_MIGRATED_DATABASE_ANNOTATION: &str = "dhis2operator.io/accept-migrated-database";

pub fn labels(app: &str, instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), app.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
    ])
}

/// The subset of labels that selects pods (must never change over an object's life).
pub fn selector(app: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), app.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
    ])
}

/// The database's Service: suffixed so it never takes the name of an instance's Service.
pub fn database_service_name(database: &str) -> String {
    format!("{database}-postgresql")
}

pub fn credentials_secret_name(database: &str) -> String {
    format!("{database}-credentials")
}

pub fn dhis_conf_secret_name(instance: &str) -> String {
    format!("{instance}-dhis-conf")
}

pub fn file_store_claim_name(instance: &str) -> String {
    format!("{instance}-files")
}

pub fn dedicated_database_name(instance: &str) -> String {
    format!("{instance}-db")
}

/// The volume claim a StatefulSet creates from its `data` template for pod 0.
pub fn database_data_claim_name(database: &str) -> String {
    format!("data-{database}-0")
}

/// Metadata of a child object: its name, the parent's namespace and labels, and the parent as
/// controlling owner when the child should be garbage-collected with it. A child kept without an
/// owner (`deletionPolicy: Retain`) names its parent (`<Kind>/<name>`) in an annotation instead,
/// so only a parent of that kind and name takes it back.
pub fn child_meta(
    name: String,
    namespace: Option<String>,
    labels: &BTreeMap<String, String>,
    owner: Option<OwnerReference>,
    parent_kind_and_name: &str,
) -> ObjectMeta {
    let annotations = owner.is_none().then(|| {
        BTreeMap::from([(
            RETAINED_FOR_ANNOTATION.to_string(),
            parent_kind_and_name.to_string(),
        )])
    });
    ObjectMeta {
        name: Some(name),
        namespace,
        labels: Some(labels.clone()),
        annotations,
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    }
}

/// The `app.kubernetes.io/name` of the engine's Jobs (backup, restore): never `dhis2`, so neither
/// DHIS2's Deployment nor its Service ever selects the engine's pods.
pub const ENGINE_APP: &str = "dhis2ctl";

/// On every object about an instance (backups, restores, drills): the instance's name.
pub const INSTANCE_LABEL: &str = "dhis2operator.io/instance";
/// On objects a schedule created: the `Dhis2BackupSchedule`'s name, or `drill` for an
/// instance's drill schedule.
pub const SCHEDULE_LABEL: &str = "dhis2operator.io/schedule";
