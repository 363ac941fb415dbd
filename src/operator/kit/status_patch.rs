//! The one way the operator writes a status: a JSON merge patch of the status subresource. A
//! merge patch keeps what it does not name, so a field that has ended (an upgrade done, a next
//! run no longer planned) is named in `cleared` and written as null.

use std::fmt::Debug;

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::operator::error::{Error, Result};

/// `{"status": status}`, with each of `cleared` that `status` leaves out set to null (pure).
pub fn status_patch<S: Serialize>(status: &S, cleared: &[&str]) -> serde_json::Value {
    let mut status = serde_json::to_value(status).unwrap_or_default();
    if let Some(fields) = status.as_object_mut() {
        for field in cleared {
            fields
                .entry(field.to_string())
                .or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": status })
}

/// Writes `status` as the status of object `name`; an error names the kind and the object.
pub async fn patch_status<K, S>(
    api: &Api<K>,
    name: &str,
    status: &S,
    cleared: &[&str],
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(status_patch(status, cleared)),
    )
    .await
    .map_err(|e| Error::kube(format!("writing the status of {} {name}", K::kind(&())), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_field_is_written_as_null_and_a_present_one_is_kept() {
        let status = serde_json::json!({"phase": "Ready", "upgrade": {"phase": "Migrating"}});
        assert_eq!(
            status_patch(&status, &["upgrade", "readOnlyCopy"]),
            serde_json::json!({"status": {
                "phase": "Ready",
                "upgrade": {"phase": "Migrating"},
                "readOnlyCopy": null,
            }})
        );
    }
}
