//! Which repositories a `Dhis2Backup` or `Dhis2Restore` may name (pure): only one of its own
//! namespace's instances' `spec.backup.repository`, exactly (bucket, prefix, keys, encryption
//! and lock alike), unless the operator was started with `--allow-any-repository`. Whoever may
//! create a backup could otherwise send the health data to a bucket of their choosing, and
//! whoever may create a restore could load a dump of their choosing (run by a superuser on
//! CloudNativePG) into the database; both are for the namespace's instance editors to decide.

use kube::ResourceExt;
use kube::api::ListParams;

use crate::crd::backup_common::RepositorySpec;
use crate::crd::dhis2_instance::Dhis2Instance;

use crate::operator::context::Context;
use crate::operator::error::{Error, Result};
use crate::operator::restore::plan::repository_location;

/// The operator flag that lifts the rule.
pub const ALLOW_ANY_REPOSITORY_FLAG: &str = "--allow-any-repository";

/// The instances of `ns`, whose repositories a backup or restore there may name.
pub async fn namespace_instances(ctx: &Context, ns: &str) -> Result<Vec<Dhis2Instance>> {
    Ok(ctx
        .api::<Dhis2Instance>(ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(format!("listing the Dhis2Instances of {ns}"), e))?
        .items)
}

/// `Ok` when `repository` (named by `field`) is the repository of one of `instances` (those of
/// the resource's namespace) or any is allowed; else why not, with the fix.
pub fn check_repository_scope(
    repository: &RepositorySpec,
    field: &str,
    instances: &[Dhis2Instance],
    allow_any: bool,
) -> std::result::Result<(), String> {
    let of_an_instance = instances
        .iter()
        .any(|i| i.spec.backup.as_ref().and_then(|b| b.repository.as_ref()) == Some(repository));
    if allow_any || of_an_instance {
        return Ok(());
    }
    let mut names: Vec<String> = instances
        .iter()
        .filter(|i| {
            i.spec
                .backup
                .as_ref()
                .is_some_and(|b| b.repository.is_some())
        })
        .map(|i| i.name_any())
        .collect();
    names.sort();
    let known = if names.is_empty() {
        "no instance of this namespace names one".to_string()
    } else {
        format!("those of {}", names.join(", "))
    };
    Err(format!(
        "{field} ({}) is not the backup repository of an instance of this namespace ({known}): remove it to use the instance's, or set it as an instance's spec.backup.repository; an operator started with {ALLOW_ANY_REPOSITORY_FLAG} accepts any",
        repository_location(repository)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository(bucket: &str) -> RepositorySpec {
        serde_json::from_value(serde_json::json!({
            "s3": {"bucket": bucket, "prefix": "dhis2", "endpoint": "http://s3", "credentialsSecretRef": "s3"}
        }))
        .unwrap()
    }

    fn instance(name: &str, bucket: &str) -> Dhis2Instance {
        let mut i = Dhis2Instance::new(
            name,
            serde_saphyr::from_str("version: 2.42.0\nenvironment: production\n").unwrap(),
        );
        i.spec.backup = Some(
            serde_json::from_value(serde_json::json!({"repository": repository(bucket)})).unwrap(),
        );
        i
    }

    #[test]
    fn only_a_repository_of_the_namespaces_instances_is_accepted_unless_the_operator_allows_any() {
        let instances = [instance("hmis", "moh"), instance("tracker", "moh-tracker")];
        let field = "spec.repository";
        assert_eq!(
            check_repository_scope(&repository("moh"), field, &instances, false),
            Ok(())
        );
        assert_eq!(
            check_repository_scope(&repository("moh-tracker"), field, &instances, false),
            Ok(())
        );
        let why =
            check_repository_scope(&repository("elsewhere"), field, &instances, false).unwrap_err();
        assert!(
            why.starts_with("spec.repository (s3://elsewhere/dhis2)"),
            "{why}"
        );
        assert!(
            why.contains("hmis, tracker") && why.contains("--allow-any-repository"),
            "{why}"
        );
        // Another prefix of the same bucket is another repository.
        let mut unencrypted = repository("moh");
        unencrypted.s3.as_mut().unwrap().prefix = Some("other".into());
        assert!(check_repository_scope(&unencrypted, field, &instances, false).is_err());
        assert_eq!(
            check_repository_scope(&repository("elsewhere"), field, &instances, true),
            Ok(())
        );
        assert!(
            check_repository_scope(&repository("moh"), field, &[], false)
                .unwrap_err()
                .contains("no instance of this namespace names one")
        );
    }
}
