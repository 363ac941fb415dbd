//! What a cnpg cluster takes from the instances using it (pure): three PostgreSQL instances for
//! production, their backup repository for the WAL archive. Recorded in
//! `status.cnpg.inherited`, so a cluster no instance uses any more (the one a point-in-time
//! restore moved its instance away from) keeps its replicas, archive and base backups.

use kube::ResourceExt;

use crate::crd::dhis2_database::CnpgInherited;
use crate::crd::dhis2_instance::{Dhis2Instance, Environment};

/// The settings from `users` (the instances using the database) when there are any, else those
/// recorded when there were.
pub fn inherited_settings(
    users: &[Dhis2Instance],
    recorded: Option<&CnpgInherited>,
) -> CnpgInherited {
    if users.is_empty() {
        return recorded.cloned().unwrap_or_default();
    }
    let from = users.iter().find_map(|i| {
        i.spec
            .backup
            .as_ref()
            .and_then(|b| b.repository.clone())
            .map(|r| {
                (
                    r,
                    format!("spec.backup.repository of Dhis2Instance {}", i.name_any()),
                )
            })
    });
    let (repository, repository_from) = from.unzip();
    CnpgInherited {
        production: users
            .iter()
            .any(|i| i.spec.environment == Environment::Production),
        repository,
        repository_from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, yaml: &str) -> Dhis2Instance {
        Dhis2Instance::new(name, serde_saphyr::from_str(yaml).unwrap())
    }

    #[test]
    fn a_cluster_keeps_what_it_took_from_its_instance_once_no_instance_uses_it() {
        let hmis = instance(
            "hmis",
            "version: 2.42.0\nenvironment: production\nbackup: {repository: {s3: {bucket: moh, endpoint: 'http://s3', credentialsSecretRef: s3}}}\n",
        );
        let taken = inherited_settings(std::slice::from_ref(&hmis), None);
        assert!(taken.production);
        assert_eq!(
            taken.repository_from.as_deref(),
            Some("spec.backup.repository of Dhis2Instance hmis")
        );
        assert_eq!(
            taken
                .repository
                .as_ref()
                .and_then(|r| r.s3.as_ref())
                .map(|s| s.bucket.as_str()),
            Some("moh")
        );
        // The instance moved to the recovered cluster: this one stays as it was.
        assert_eq!(inherited_settings(&[], Some(&taken)), taken);
        // Never used: nothing inherited.
        assert_eq!(inherited_settings(&[], None), CnpgInherited::default());
        // An instance using it decides again (a staging instance without a repository).
        let staging = instance("staging", "version: 2.42.0\nenvironment: staging\n");
        assert_eq!(
            inherited_settings(&[staging], Some(&taken)),
            CnpgInherited::default()
        );
    }
}
