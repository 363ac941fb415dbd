//! Point-in-time recovery by a `Dhis2Restore` (pure): whether the moment asked for can be
//! reached, and the new cnpg `Dhis2Database` that CloudNativePG bootstraps from the source's WAL
//! archive up to that moment. Nothing is overwritten: the target instance is pointed at the new
//! database and the one it used before is kept as it was.

use chrono::{DateTime, FixedOffset, Utc};

use crate::crd::backup_common::RepositorySpec;
use crate::crd::common::DeletionPolicy;
use crate::crd::dhis2_database::{
    CnpgBackupSpec, CnpgRecoverySpec, CnpgSpec, DatabaseProvider, Dhis2Database, Dhis2DatabaseSpec,
};
use crate::crd::dhis2_instance::{Dhis2Instance, Environment};
use crate::crd::dhis2_restore::Dhis2RestoreSpec;

use crate::operator::database::cnpg::archive::{NoArchive, resolve_archive};
use crate::operator::database::cnpg::build::default_instances;
use crate::rules::moment::parse_moment;
use crate::rules::names::{MAX_RECOVERY_RESTORE_NAME, recovery_database_name};

/// The moment to recover to and the repository holding the source's archive, or why not (one
/// line naming the field and the fix).
#[derive(Debug, Clone, PartialEq)]
pub struct PointInTime {
    pub target_time: DateTime<FixedOffset>,
    /// The source database's archive repository (S3, no client-side encryption).
    pub repository: RepositorySpec,
}

pub fn check_point_in_time(
    restore_name: &str,
    spec: &Dhis2RestoreSpec,
    source_instance: Option<&Dhis2Instance>,
    source_database: Option<&Dhis2Database>,
    now: DateTime<Utc>,
) -> Result<PointInTime, String> {
    let Some(time) = spec.point_in_time.as_deref() else {
        return Err("spec.pointInTime is not set".into());
    };
    let target_time = parse_moment(time).map_err(|why| format!("spec.pointInTime {why}"))?;
    if restore_name.len() > MAX_RECOVERY_RESTORE_NAME {
        return Err(format!(
            "metadata.name '{restore_name}' is {} characters: a point-in-time restore names its new database <name>-db, whose CloudNativePG Services must be DNS labels; use at most {MAX_RECOVERY_RESTORE_NAME}",
            restore_name.len()
        ));
    }
    if spec.source.backup_ref.is_some() || spec.source.backup_id.is_some() {
        return Err(
            "spec.pointInTime replays the WAL archive, it restores no backup: remove spec.source.backupRef/backupId, or remove spec.pointInTime to restore that backup".into(),
        );
    }
    if target_time.with_timezone(&Utc) > now {
        return Err(format!(
            "spec.pointInTime {time} is in the future (now {}): choose a moment in the past",
            now.to_rfc3339()
        ));
    }
    let src = &spec.source.instance;
    let Some(instance) = source_instance else {
        return Err(format!(
            "Dhis2Instance {src} (spec.source.instance) does not exist: point-in-time recovery needs it to find its database"
        ));
    };
    let database = source_database
        .ok_or_else(|| format!("the Dhis2Database of Dhis2Instance {src} does not exist"))?;
    let db_name = database.metadata.name.as_deref().unwrap_or_default();
    if database.spec.provider != DatabaseProvider::Cnpg {
        return Err(format!(
            "point-in-time recovery needs a database with provider: cnpg and WAL archiving, but Dhis2Database {db_name} of {src} is provider: {}: restore a logical backup instead (remove spec.pointInTime)",
            database.spec.provider.as_str()
        ));
    }
    let field = format!("spec.backup.repository of Dhis2Instance {src}");
    let instance_repository = instance
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.repository.as_ref())
        .map(|r| (r, field.as_str()));
    let backup = database.spec.cnpg.as_ref().and_then(|c| c.backup.as_ref());
    let archive = resolve_archive(backup, instance_repository, true).map_err(|no| match no {
        NoArchive::Disabled => format!(
            "Dhis2Database {db_name} has WAL archiving turned off (spec.cnpg.backup.enabled: false): there is no archive to recover from; restore a logical backup instead"
        ),
        NoArchive::NoRepository => format!(
            "Dhis2Database {db_name} has no WAL archive (no backup repository): there is nothing to recover from; restore a logical backup instead"
        ),
        NoArchive::Unusable { message, .. } => message,
    })?;
    let status = database.status.as_ref().and_then(|s| s.cnpg.as_ref());
    if let Some(first) = status
        .and_then(|s| s.first_recoverability_point.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        && target_time < first
    {
        return Err(format!(
            "spec.pointInTime {time} is before the first recoverability point of Dhis2Database {db_name} ({}): choose a later moment, or restore a logical backup",
            first.to_rfc3339()
        ));
    }
    Ok(PointInTime {
        target_time,
        repository: RepositorySpec {
            s3: Some(archive.s3),
            ..Default::default()
        },
    })
}

/// The new database: like the source (image, storage, resources, parameters, instances,
/// schedule, retention), bootstrapped by CloudNativePG from the source's archive up to the
/// moment, archiving to the same repository under its own name. Kept when deleted (Retain): it
/// holds the recovered health data. `source_environment`: the source instance's, which sets the
/// instance count when the source's is not written down (the new database has no instance yet
/// to take it from).
pub fn recovery_database(
    restore_name: &str,
    namespace: &str,
    source: &Dhis2Database,
    source_environment: Environment,
    point: &PointInTime,
) -> Dhis2Database {
    let source_name = source.metadata.name.clone().unwrap_or_default();
    let source_cnpg = source.spec.cnpg.clone().unwrap_or_default();
    let source_backup = source_cnpg.backup.clone().unwrap_or_default();
    let mut db = Dhis2Database::new(
        &recovery_database_name(restore_name),
        Dhis2DatabaseSpec {
            provider: DatabaseProvider::Cnpg,
            image: source.spec.image.clone(),
            storage: source.spec.storage.clone(),
            resources: source.spec.resources.clone(),
            parameters: source.spec.parameters.clone(),
            external_secret_ref: None,
            cnpg: Some(CnpgSpec {
                instances: source_cnpg.instances.or(Some(default_instances(
                    source_environment == Environment::Production,
                ))),
                backup: Some(CnpgBackupSpec {
                    enabled: None,
                    repository: Some(point.repository.clone()),
                    schedule: source_backup.schedule,
                    retention: source_backup.retention,
                }),
                recovery: Some(CnpgRecoverySpec {
                    source: source_name,
                    repository: Some(point.repository.clone()),
                    target_time: Some(point.target_time.to_rfc3339()),
                }),
            }),
            deletion_policy: DeletionPolicy::Retain,
        },
    );
    db.metadata.namespace = Some(namespace.to_string());
    db.metadata.labels = Some(
        [(
            crate::rules::names::INSTANCE_LABEL.to_string(),
            restore_name.to_string(),
        )]
        .into(),
    );
    db
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::dhis2_database::{CnpgStatus, Dhis2DatabaseStatus};
    use crate::crd::dhis2_restore::Dhis2Restore;

    fn spec(yaml: &str) -> Dhis2RestoreSpec {
        Dhis2Restore::new("r", serde_saphyr::from_str(yaml).expect("fixture")).spec
    }

    fn hmis() -> Dhis2Instance {
        let mut i = Dhis2Instance::new(
            "hmis",
            serde_saphyr::from_str(
                "version: '2.41.3'\nenvironment: production\ndatabaseRef: hmis-db\nbackup: {repository: {s3: {bucket: moh, prefix: hmis, credentialsSecretRef: s3}}}\n",
            )
            .unwrap(),
        );
        i.metadata.namespace = Some("moh".into());
        i
    }

    fn cnpg_db(yaml: &str) -> Dhis2Database {
        let mut db = Dhis2Database::new("hmis-db", serde_saphyr::from_str(yaml).unwrap());
        db.metadata.namespace = Some("moh".into());
        db
    }

    fn now() -> DateTime<Utc> {
        "2026-12-07T05:00:00Z".parse().unwrap()
    }

    const PITR: &str = "source: {instance: hmis}\ntarget: {instance: hmis-1013}\npointInTime: '2026-12-07T10:13:00+07:00'\n";

    #[test]
    fn a_cnpg_source_with_an_archive_gives_a_recovery_database_with_the_target_time() {
        let db = cnpg_db(
            "provider: cnpg\nstorage: {size: 200Gi}\ncnpg: {instances: 3, backup: {retention: 60d}}\n",
        );
        let point =
            check_point_in_time("hmis-1013", &spec(PITR), Some(&hmis()), Some(&db), now()).unwrap();
        assert_eq!(point.target_time.to_rfc3339(), "2026-12-07T10:13:00+07:00");
        let new = recovery_database("hmis-1013", "moh", &db, Environment::Staging, &point);
        assert_eq!(new.metadata.name.as_deref(), Some("hmis-1013-db"));
        assert_eq!(new.spec.provider, DatabaseProvider::Cnpg);
        assert_eq!(new.spec.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(new.spec.storage, db.spec.storage);
        let cnpg = new.spec.cnpg.unwrap();
        assert_eq!(cnpg.instances, Some(3));
        let recovery = cnpg.recovery.unwrap();
        assert_eq!(recovery.source, "hmis-db");
        assert_eq!(
            recovery.target_time.as_deref(),
            Some("2026-12-07T10:13:00+07:00")
        );
        let repo = recovery.repository.unwrap();
        assert_eq!(repo.s3.as_ref().unwrap().bucket, "moh");
        let backup = cnpg.backup.unwrap();
        assert_eq!(backup.retention.as_deref(), Some("60d"));
        assert_eq!(backup.repository, Some(repo));

        // Without a count written down: as the source's environment would have it.
        let no_count = cnpg_db("provider: cnpg\n");
        let instances = |environment| {
            recovery_database("r", "moh", &no_count, environment, &point)
                .spec
                .cnpg
                .unwrap()
                .instances
        };
        assert_eq!(instances(Environment::Production), Some(3));
        assert_eq!(instances(Environment::Staging), Some(1));
    }

    #[test]
    fn refusals_name_the_field_and_the_way_out() {
        let db = cnpg_db("provider: cnpg\n");
        let refuse = |yaml: &str, db: &Dhis2Database| {
            check_point_in_time("r", &spec(yaml), Some(&hmis()), Some(db), now()).unwrap_err()
        };
        let why = refuse(
            "source: {instance: hmis}\ntarget: {instance: x}\npointInTime: 'yesterday 10:13'\n",
            &db,
        );
        assert!(
            why.contains("spec.pointInTime 'yesterday 10:13' is not an RFC 3339"),
            "{why}"
        );
        let why = refuse(
            "source: {instance: hmis}\ntarget: {instance: x}\npointInTime: '2027-01-01T00:00:00Z'\n",
            &db,
        );
        assert!(why.contains("in the future"), "{why}");
        let why = refuse(
            "source: {instance: hmis, backupId: latest}\ntarget: {instance: x}\npointInTime: '2026-12-07T01:00:00Z'\n",
            &db,
        );
        assert!(
            why.contains("remove spec.source.backupRef/backupId"),
            "{why}"
        );
        let why = refuse(PITR, &cnpg_db("provider: managed\n"));
        assert!(why.contains("provider: managed"), "{why}");
        assert!(why.contains("restore a logical backup"), "{why}");
        let why = refuse(
            PITR,
            &cnpg_db("provider: cnpg\ncnpg: {backup: {enabled: false}}\n"),
        );
        assert!(why.contains("WAL archiving turned off"), "{why}");

        let mut early = db.clone();
        early.status = Some(Dhis2DatabaseStatus {
            cnpg: Some(CnpgStatus {
                cluster: "hmis-db".into(),
                first_recoverability_point: Some("2026-12-07T04:00:00Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let why = refuse(PITR, &early);
        assert!(
            why.contains("before the first recoverability point"),
            "{why}"
        );
    }
}
