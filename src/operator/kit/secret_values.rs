//! Reads one key of a Secret the user names (an admin account, an encryption key), for the
//! shells that need the value or only that it is there.

use k8s_openapi::api::core::v1::Secret;

use crate::operator::context::Context;
use crate::operator::error::{Error, Result};

/// The key's value as text; `None` when the Secret or the key is missing.
pub async fn secret_value(
    ctx: &Context,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    let secret = ctx
        .api::<Secret>(ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {name}"), e))?;
    Ok(secret.and_then(|s| {
        s.data
            .and_then(|d| d.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok()))
    }))
}
