//! Server-side apply of owned children, with the one field manager, refusing to take over
//! objects that are not ours; and pruning of owned children that are no longer wanted.
//!
//! A child is ours by identity, not by label: its controller owner reference carries the
//! parent's UID. Labels can be copied by anyone; a UID cannot. The one exception is data the
//! operator deliberately leaves unowned under `deletionPolicy: Retain` (the database credentials,
//! the file store claim): those carry the annotation [`RETAINED_FOR_ANNOTATION`] naming the parent
//! by kind and name, so a re-created parent of that name takes its data back.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::operator::error::{Error, Result};
use crate::operator::kit::labels::{FIELD_MANAGER, RETAINED_FOR_ANNOTATION};

/// The parent a child must belong to: its UID, and `<Kind>/<name>` for retained children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub uid: String,
    pub kind_and_name: String,
}

impl Parent {
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Self {
        Self {
            uid: obj.meta().uid.clone().unwrap_or_default(),
            kind_and_name: format!("{}/{}", K::kind(&()), obj.name_any()),
        }
    }
}

/// Whose an existing object is (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Controlled by the parent's UID, or retained for it.
    Ours,
    /// Anyone else's: made by hand, by another tool, or by another parent.
    Foreign,
}

pub fn ownership(existing: &ObjectMeta, parent: &Parent) -> Ownership {
    let controller = existing
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    match controller {
        Some(r) if !parent.uid.is_empty() && r.uid == parent.uid => Ownership::Ours,
        Some(_) => Ownership::Foreign,
        None => {
            let retained = existing
                .annotations
                .as_ref()
                .and_then(|a| a.get(RETAINED_FOR_ANNOTATION));
            if retained == Some(&parent.kind_and_name) {
                Ownership::Ours
            } else {
                Ownership::Foreign
            }
        }
    }
}

/// Applies `desired` unless an object of that name exists that is not ours.
pub async fn apply_owned<K>(
    api: &Api<K>,
    kind: &'static str,
    desired: &K,
    parent: &Parent,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    K::DynamicType: Default,
{
    let name = desired.name_any();
    if let Some(existing) = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading {kind} {name}"), e))?
        && ownership(existing.meta(), parent) == Ownership::Foreign
    {
        return Err(Error::Conflict {
            kind: kind.to_string(),
            name,
        });
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await
    .map_err(|e| Error::kube(format!("applying {kind} {name}"), e))
}

/// Deletes the parent's objects of one kind whose names are not in `keep`. Objects that match
/// the selector but belong to someone else are left alone.
pub async fn prune_owned<K>(
    api: &Api<K>,
    kind: &str,
    selector: &str,
    keep: &[String],
    parent: &Parent,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::kube(format!("listing {kind}s"), e))?;
    for obj in list {
        let name = obj.name_any();
        if !keep.contains(&name) && ownership(obj.meta(), parent) == Ownership::Ours {
            tracing::info!(%name, kind, "pruning object no longer wanted");
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(|e| Error::kube(format!("deleting {kind} {name}"), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn parent() -> Parent {
        Parent {
            uid: "uid-1".into(),
            kind_and_name: "Dhis2Database/hmis".into(),
        }
    }

    fn owned_by(uid: &str, controller: bool) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "dhis2operator.io/v1alpha1".into(),
                kind: "Dhis2Database".into(),
                name: "hmis".into(),
                uid: uid.into(),
                controller: Some(controller),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn the_controller_uid_decides_not_the_labels() {
        assert_eq!(
            ownership(&owned_by("uid-1", true), &parent()),
            Ownership::Ours
        );
        let mut other = owned_by("uid-2", true);
        other.labels = Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "dhis2-operator".to_string(),
        )]));
        assert_eq!(ownership(&other, &parent()), Ownership::Foreign);
        // A non-controller reference with our UID does not make it ours either.
        assert_eq!(
            ownership(&owned_by("uid-1", false), &parent()),
            Ownership::Foreign
        );
        assert_eq!(
            ownership(&ObjectMeta::default(), &parent()),
            Ownership::Foreign
        );
    }

    #[test]
    fn retained_data_goes_back_to_a_parent_of_that_kind_and_name_only() {
        let retained = |for_: &str| ObjectMeta {
            annotations: Some(BTreeMap::from([(
                RETAINED_FOR_ANNOTATION.to_string(),
                for_.to_string(),
            )])),
            ..Default::default()
        };
        assert_eq!(
            ownership(&retained("Dhis2Database/hmis"), &parent()),
            Ownership::Ours
        );
        assert_eq!(
            ownership(&retained("Dhis2Database/other"), &parent()),
            Ownership::Foreign
        );
        assert_eq!(
            ownership(&retained("Dhis2Instance/hmis"), &parent()),
            Ownership::Foreign
        );
        // Owned by someone else wins over the annotation.
        let mut both = owned_by("uid-9", true);
        both.annotations = retained("Dhis2Database/hmis").annotations;
        assert_eq!(ownership(&both, &parent()), Ownership::Foreign);
    }
}
