//! The standard `app.kubernetes.io/*` labels, selectors and owner metadata of the objects the
//! operator creates, so what it owns can be found and pruned (the DHIS2-specific names are in
//! `rules::names`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

pub const MANAGED_BY: &str = "dhis2-operator";
/// The one server-side-apply field manager.
pub const FIELD_MANAGER: &str = "dhis2-operator";
pub const FINALIZER: &str = "dhis2operator.io/finalizer";
/// On a child kept without an owner (`deletionPolicy: Retain`): `<Kind>/<name>` of its parent.
pub const RETAINED_FOR_ANNOTATION: &str = "dhis2operator.io/retained-for";

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
