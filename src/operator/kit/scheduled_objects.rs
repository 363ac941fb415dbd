//! I/O shared by the schedule controllers: create an object once per fire time, list the
//! objects a parent's schedule made, delete those beyond the history limit.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::operator::error::{Error, Result};
use crate::operator::kit::apply::{Ownership, Parent, ownership};

/// Creates `obj`. One that exists already (a restarted operator, a lost status write) was made
/// for this fire time: nothing to do, provided it is ours. True when it was created now.
pub async fn create_once<K>(
    api: &Api<K>,
    kind: &'static str,
    obj: &K,
    parent: &Parent,
) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.name_any();
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api
                .get(&name)
                .await
                .map_err(|e| Error::kube(format!("reading {kind} {name}"), e))?;
            match ownership(existing.meta(), parent) {
                Ownership::Ours => Ok(false),
                Ownership::Foreign => Err(Error::Conflict { kind, name }),
            }
        }
        Err(e) => Err(Error::kube(format!("creating {kind} {name}"), e)),
    }
}

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
