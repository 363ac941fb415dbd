//! Which repository a backup goes to, and the repository as people read it (no credentials).

use crate::crd::backup_common::RepositorySpec;
use crate::crd::dhis2_backup::Dhis2BackupSpec;
use crate::crd::dhis2_instance::Dhis2InstanceSpec;
use crate::rules::repository_protection::{RepositoryUse, check_protection};

/// The repository the backup goes to: its own `spec.repository`, else the instance's
/// `spec.backup.repository`; or why there is none.
pub fn backup_repository<'a>(
    backup: &'a Dhis2BackupSpec,
    instance: &'a Dhis2InstanceSpec,
) -> Result<&'a RepositorySpec, String> {
    let (repository, field) = match &backup.repository {
        Some(r) => (r, "the Dhis2Backup's spec.repository"),
        None => match instance.backup.as_ref().and_then(|b| b.repository.as_ref()) {
            Some(r) => (r, "the Dhis2Instance's spec.backup.repository"),
            None => {
                return Err(format!(
                    "no backup repository: set spec.repository on the Dhis2Backup or spec.backup.repository on Dhis2Instance {}",
                    backup.instance_ref
                ));
            }
        },
    };
    match (&repository.s3, &repository.volume) {
        (Some(_), Some(_)) => Err(format!("{field} names both s3 and volume; keep one")),
        (None, None) => Err(format!("{field} names neither s3 nor volume")),
        _ => {
            check_protection(repository, field, RepositoryUse::Backup)?;
            Ok(repository)
        }
    }
}

/// The repository as people read it (no credentials): `s3://bucket/prefix`, or the claim and
/// directory of a volume repository.
pub fn describe_repository(repository: &RepositorySpec) -> String {
    if let Some(s3) = &repository.s3 {
        return match s3.prefix.as_deref().map(|p| p.trim_matches('/')) {
            Some(p) if !p.is_empty() => format!("s3://{}/{p}", s3.bucket),
            _ => format!("s3://{}", s3.bucket),
        };
    }
    match &repository.volume {
        Some(v) => match v.path.as_deref().map(|p| p.trim_matches('/')) {
            Some(p) if !p.is_empty() => format!("volume {}:/{p}", v.claim_name),
            _ => format!("volume {}:/", v.claim_name),
        },
        None => String::new(),
    }
}
