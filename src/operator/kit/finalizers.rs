//! The one way the operator adds and removes its finalizer: the whole list written over the
//! version read, so another controller's finalizer is never dropped and a concurrent change is
//! read again (false) instead of overwritten.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::operator::error::{Error, Result};
use crate::operator::kit::labels::FINALIZER;

pub fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds the finalizer; false when the object changed since it was read (read it again).
pub async fn add_finalizer<K>(api: &Api<K>, obj: &K) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if has_finalizer(obj) {
        return Ok(true);
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    write_finalizers(api, obj, finalizers).await
}

/// Removes the finalizer; false when the object changed since it was read.
pub async fn remove_finalizer<K>(api: &Api<K>, obj: &K) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if !has_finalizer(obj) {
        return Ok(true);
    }
    let finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    write_finalizers(api, obj, finalizers).await
}

async fn write_finalizers<K>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    let patch = json!({"metadata": {
        "resourceVersion": obj.resource_version(),
        "finalizers": finalizers
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        // Gone already: nothing holds it.
        Err(kube::Error::Api(e)) if e.code == 404 && obj.meta().deletion_timestamp.is_some() => {
            Ok(true)
        }
        Err(e) => Err(Error::kube(
            format!("updating the finalizers of {} {name}", K::kind(&())),
            e,
        )),
    }
}
