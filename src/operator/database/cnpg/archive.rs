//! Where a cnpg database's WAL archive and base backups go (pure): which repository, under which
//! path, by which of CloudNativePG's two Barman Cloud mechanisms, on which schedule, kept how long.
//!
//! The Barman Cloud plugin's `ObjectStore` is used whenever the plugin is installed: CloudNativePG
//! deprecated its built-in `spec.backup.barmanObjectStore` in 1.26 in favour of the plugin and will
//! remove it. Clusters on a CloudNativePG without the plugin get the built-in one, so a ministry
//! that has not installed the plugin still has point-in-time recovery.

use crate::crd::backup_common::{RepositorySpec, S3RepositorySpec};
use crate::crd::dhis2_database::CnpgBackupSpec;

/// The Barman Cloud plugin's name, as its `ObjectStore` and CloudNativePG know it.
pub const BARMAN_CLOUD_PLUGIN: &str = "barman-cloud.cloudnative-pg.io";
/// Under the repository's prefix; instance names cannot start with `_`, so never an instance's.
pub const ARCHIVE_DIRECTORY: &str = "_cnpg";
pub const DEFAULT_BASE_BACKUP_SCHEDULE: &str = "0 0 1 * * *";
pub const DEFAULT_RETENTION: &str = "30d";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveMethod {
    /// The Barman Cloud plugin (`barmancloud.cnpg.io/v1` `ObjectStore`).
    Plugin,
    /// CloudNativePG's built-in `spec.backup.barmanObjectStore` (deprecated since 1.26).
    BarmanObjectStore,
}

impl ArchiveMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveMethod::Plugin => "plugin",
            ArchiveMethod::BarmanObjectStore => "barmanObjectStore",
        }
    }
}

/// The archive of one cnpg database: an S3 location and how Barman writes to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Archive {
    pub method: ArchiveMethod,
    /// `s3://bucket/prefix/_cnpg`; Barman adds `/<cluster>/wals` and `/<cluster>/base`.
    pub destination_path: String,
    pub s3: S3RepositorySpec,
    /// CloudNativePG's six-field cron (seconds first), UTC.
    pub schedule: String,
    pub retention: String,
}

/// Why a database is not archived; said in `status` and (when it is a mistake) as `Degraded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoArchive {
    /// `spec.cnpg.backup.enabled: false`.
    Disabled,
    /// No repository anywhere: not an error, but no point-in-time recovery either.
    NoRepository,
    /// A repository that cannot hold it (a volume, or client-side encryption): a spec problem.
    Unusable { field: String, message: String },
}

/// `s3://bucket/prefix/_cnpg` for a repository.
pub fn archive_destination(s3: &S3RepositorySpec) -> String {
    match s3.prefix.as_deref().map(|p| p.trim_matches('/')) {
        Some(p) if !p.is_empty() => format!("s3://{}/{p}/{ARCHIVE_DIRECTORY}", s3.bucket),
        _ => format!("s3://{}/{ARCHIVE_DIRECTORY}", s3.bucket),
    }
}

/// CloudNativePG's schedule (six fields, seconds first) from ours: five fields get `0` seconds.
pub fn cnpg_schedule(schedule: &str) -> Result<String, String> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    match fields.len() {
        5 => Ok(format!("0 {}", fields.join(" "))),
        6 => Ok(fields.join(" ")),
        n => Err(format!(
            "'{schedule}' has {n} fields: write five (`0 1 * * *`) or CloudNativePG's six with seconds (`0 0 1 * * *`)"
        )),
    }
}

/// The archive of a database: `spec.cnpg.backup.repository`, else `fallback` (the repository of
/// the Dhis2Instance that uses the database, with the field it came from, for messages).
/// `plugin_installed`: the `ObjectStore` API is served.
pub fn resolve_archive(
    backup: Option<&CnpgBackupSpec>,
    fallback: Option<(&RepositorySpec, &str)>,
    plugin_installed: bool,
) -> Result<Archive, NoArchive> {
    if backup.and_then(|b| b.enabled) == Some(false) {
        return Err(NoArchive::Disabled);
    }
    let (repository, field) = match (backup.and_then(|b| b.repository.as_ref()), fallback) {
        (Some(r), _) => (r, "spec.cnpg.backup.repository".to_string()),
        (None, Some((r, field))) => (r, field.to_string()),
        (None, None) => return Err(NoArchive::NoRepository),
    };
    let Some(s3) = &repository.s3 else {
        return Err(NoArchive::Unusable {
            message: format!(
                "{field} is a volume: CloudNativePG archives WAL to object storage only; set spec.cnpg.backup.repository to an S3 repository"
            ),
            field,
        });
    };
    if repository.encryption.is_some() {
        return Err(NoArchive::Unusable {
            message: format!(
                "{field} encrypts backups with age, which Barman Cloud cannot do: the WAL archive would hold health data unencrypted; set spec.cnpg.backup.repository to an S3 repository without spec encryption (use the store's server-side encryption), or spec.cnpg.backup.enabled: false"
            ),
            field,
        });
    }
    let schedule = match backup.and_then(|b| b.schedule.as_deref()) {
        Some(s) => cnpg_schedule(s).map_err(|why| NoArchive::Unusable {
            field: "spec.cnpg.backup.schedule".into(),
            message: format!("spec.cnpg.backup.schedule {why}"),
        })?,
        None => DEFAULT_BASE_BACKUP_SCHEDULE.to_string(),
    };
    Ok(Archive {
        method: if plugin_installed {
            ArchiveMethod::Plugin
        } else {
            ArchiveMethod::BarmanObjectStore
        },
        destination_path: archive_destination(s3),
        s3: s3.clone(),
        schedule,
        retention: backup
            .and_then(|b| b.retention.clone())
            .unwrap_or_else(|| DEFAULT_RETENTION.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(yaml: &str) -> RepositorySpec {
        serde_saphyr::from_str(yaml).expect("fixture")
    }

    const HMIS: &str = "spec.backup.repository of Dhis2Instance hmis";
    const S3: &str = "s3: {bucket: moh-backups, prefix: hmis/production, endpoint: 'https://s3.moh.gov.kh', credentialsSecretRef: backup-s3}\n";

    #[test]
    fn the_archive_sits_beside_the_logical_backups_in_the_instances_repository() {
        let r = repo(S3);
        let a = resolve_archive(None, Some((&r, HMIS)), true).unwrap();
        assert_eq!(a.method, ArchiveMethod::Plugin);
        assert_eq!(a.destination_path, "s3://moh-backups/hmis/production/_cnpg");
        assert_eq!(a.schedule, "0 0 1 * * *");
        assert_eq!(a.retention, "30d");
        let a = resolve_archive(None, Some((&r, HMIS)), false).unwrap();
        assert_eq!(a.method, ArchiveMethod::BarmanObjectStore);
        let bare = repo("s3: {bucket: b, credentialsSecretRef: c}\n");
        assert_eq!(
            resolve_archive(None, Some((&bare, HMIS)), true)
                .unwrap()
                .destination_path,
            "s3://b/_cnpg"
        );
    }

    #[test]
    fn the_databases_own_repository_and_schedule_win() {
        let own: CnpgBackupSpec = serde_saphyr::from_str(
            "repository: {s3: {bucket: wal, credentialsSecretRef: c}}\nschedule: '30 2 * * *'\nretention: 4w\n",
        )
        .unwrap();
        let r = repo(S3);
        let a = resolve_archive(Some(&own), Some((&r, HMIS)), true).unwrap();
        assert_eq!(a.destination_path, "s3://wal/_cnpg");
        assert_eq!(a.schedule, "0 30 2 * * *");
        assert_eq!(a.retention, "4w");
    }

    #[test]
    fn no_repository_disabled_volume_and_encrypted_repositories_are_not_archived() {
        assert_eq!(
            resolve_archive(None, None, true),
            Err(NoArchive::NoRepository)
        );
        let off: CnpgBackupSpec = serde_saphyr::from_str("enabled: false\n").unwrap();
        let r = repo(S3);
        assert_eq!(
            resolve_archive(Some(&off), Some((&r, HMIS)), true),
            Err(NoArchive::Disabled)
        );
        let volume = repo("volume: {claimName: nfs}\n");
        let Err(NoArchive::Unusable { field, message }) =
            resolve_archive(None, Some((&volume, HMIS)), true)
        else {
            panic!("a volume cannot hold the archive");
        };
        assert_eq!(field, "spec.backup.repository of Dhis2Instance hmis");
        assert!(message.contains("object storage only"), "{message}");
        let encrypted = repo(&format!("{S3}encryption: {{recipients: [age1xyz]}}\n"));
        let Err(NoArchive::Unusable { message, .. }) =
            resolve_archive(None, Some((&encrypted, HMIS)), true)
        else {
            panic!("an age-encrypted repository must not receive plain WAL");
        };
        assert!(message.contains("unencrypted"), "{message}");
        assert!(message.contains("spec.cnpg.backup.repository"), "{message}");
    }

    #[test]
    fn schedules_get_seconds_and_bad_ones_name_the_field() {
        assert_eq!(cnpg_schedule("0 1 * * *").unwrap(), "0 0 1 * * *");
        assert_eq!(cnpg_schedule("0 0 1 * * *").unwrap(), "0 0 1 * * *");
        let own: CnpgBackupSpec = serde_saphyr::from_str("schedule: 'nightly'\n").unwrap();
        let r = repo(S3);
        let Err(NoArchive::Unusable { field, message }) =
            resolve_archive(Some(&own), Some((&r, HMIS)), true)
        else {
            panic!("a one-field schedule is refused");
        };
        assert_eq!(field, "spec.cnpg.backup.schedule");
        assert!(message.contains("five"), "{message}");
    }
}
