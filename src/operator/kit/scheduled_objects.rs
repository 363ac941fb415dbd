//! I/O shared by the schedule controllers: list the objects a parent's schedule made, delete
//! those beyond the history limit.

use std::fmt::Debug;

use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams};
use serde::de::DeserializeOwned;

use crate::operator::error::{Error, Result};
use crate::operator::kit::apply::{Ownership, Parent, ownership};

/// The objects matching `selector` that `parent` controls.
pub async fn list_owned<K>(
    api: &Api<K>,
    kind: &str,
    selector: &str,
    parent: &Parent,
) -> Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::kube(format!("listing {kind}s"), e))?;
    Ok(list
        .into_iter()
        .filter(|o| ownership(o.meta(), parent) == Ownership::Ours)
        .collect())
}

/// Deletes the named objects; one already gone is fine.
pub async fn delete_all<K>(api: &Api<K>, kind: &str, names: &[String]) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    for name in names {
        tracing::info!(kind, %name, "deleting beyond the history limit");
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("deleting {kind} {name}"), e)),
        }
    }
    Ok(())
}
