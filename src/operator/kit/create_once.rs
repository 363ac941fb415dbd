//! The one way the operator creates what it must create exactly once (a Job, a scheduled backup,
//! a drill's pods, a restore's new instance): names are deterministic, so an object that exists
//! already was made by an earlier reconcile whose next step did not happen (a restart, a lost
//! status write) and is left as it is. Created, not applied: pods and Jobs are not patched, and
//! the operator's Role does not allow it.

use std::fmt::Debug;

use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::operator::error::{Error, Result};
use crate::operator::kit::apply::{Ownership, Parent, ownership};

/// Creates `obj`; true when it was created now. With `owner`, an existing object of that name
/// must be the owner's: someone else's is a [`Error::Conflict`], never adopted.
pub async fn create_once<K>(api: &Api<K>, obj: &K, owner: Option<&Parent>) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let kind = K::kind(&());
    let name = obj.name_any();
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let Some(owner) = owner else {
                return Ok(false);
            };
            let existing = api
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube(format!("reading {kind} {name}"), e))?;
            match existing {
                Some(o) if ownership(o.meta(), owner) == Ownership::Foreign => {
                    Err(Error::Conflict {
                        kind: kind.to_string(),
                        name,
                    })
                }
                _ => Ok(false),
            }
        }
        Err(e) => Err(Error::kube(format!("creating {kind} {name}"), e)),
    }
}
