//! Server-side apply of owned children, with the one field manager, refusing to take over
//! objects somebody else made; and pruning of owned children that are no longer wanted.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Error, Result};
use super::labels::{FIELD_MANAGER, MANAGED_BY};

/// True when an existing object carries our managed-by label (pure).
pub fn is_ours(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str)
        == Some(MANAGED_BY)
}

/// Applies `desired` unless an object of that name exists that we do not manage.
pub async fn apply_owned<K>(api: &Api<K>, kind: &'static str, desired: &K) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    K::DynamicType: Default,
{
    let name = desired.name_any();
    if let Some(existing) = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading {kind} {name}"), e))?
        && !is_ours(existing.labels())
    {
        return Err(Error::Conflict { kind, name });
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await
    .map_err(|e| Error::kube(format!("applying {kind} {name}"), e))
}

/// Deletes our objects of one kind for `instance` whose names are not in `keep`.
pub async fn prune_owned<K>(api: &Api<K>, kind: &str, selector: &str, keep: &[String]) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::kube(format!("listing {kind}s"), e))?;
    for obj in list {
        let name = obj.name_any();
        if !keep.contains(&name) && is_ours(obj.labels()) {
            tracing::info!(%name, kind, "pruning object no longer wanted");
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(|e| Error::kube(format!("deleting {kind} {name}"), e))?;
        }
    }
    Ok(())
}
