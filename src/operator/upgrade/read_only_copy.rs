//! The read-only copy that serves users while an upgrade migrates the database
//! (`spec.upgrade.readOnlyDuringUpgrade`), pure: when it is wanted, what to do next, and the
//! objects it is made of.
//!
//! The copy is a `Dhis2Instance` of its own running the *previous* version with
//! `system.read_only_mode = on`, on a database of its own on the instance's database server,
//! filled by a `Dhis2Restore` of the pre-upgrade backup. While it is ready the instance's
//! Service sends users to it; when the upgrade ends (succeeded or rolled back) the Service
//! points back at the instance first, and only then is the copy removed and its database dropped.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};

use crate::crd::backup_common::default_deadline_seconds;
use crate::crd::common::DeletionPolicy;
use crate::crd::dhis2_database::{DatabaseProvider, Dhis2Database, Dhis2DatabaseSpec};
use crate::crd::dhis2_instance::{Dhis2Instance, ReadOnlyCopyStatus};
use crate::crd::dhis2_restore::{Dhis2Restore, Dhis2RestoreSpec, RestoreSource, RestoreTarget};
use crate::crd::upgrade::{UpgradePhase, UpgradeSpec, UpgradeStatus};

use crate::crd::dhis2_restore::RestorePhase;
use crate::operator::database::connection_settings::DatabaseConnection;
use crate::operator::instance::build::APP;
use crate::operator::kit::labels::{child_meta, labels};
use crate::rules::names::RESTORE_IN_PROGRESS_ANNOTATION;

/// The dhis.conf key that makes DHIS2 refuse every write.
pub const READ_ONLY_MODE_KEY: &str = "system.read_only_mode";

/// The copy's names: the `Dhis2Instance` (also its `Dhis2Restore`, `Dhis2Database` and
/// connection Secret) and its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyNames {
    pub instance: String,
    pub database: String,
}

impl CopyNames {
    /// `<instance>-readonly` and `<database>_readonly`, short enough that the engine's
    /// `<database>__replaced_<time>` keeps the whole name (63 bytes at most).
    pub fn of(instance: &str, database: &str) -> Self {
        let instance = &instance[..instance.len().min(40)];
        let database = &database[..floor_char_boundary(database, 24)];
        Self {
            instance: format!("{}-readonly", instance.trim_end_matches('-')),
            database: format!("{database}_readonly"),
        }
    }

    pub fn secret(&self) -> String {
        format!("{}-database", self.instance)
    }

    /// Whether a database on the server belongs to the copy: its own, or one the restore
    /// replaced (`<database>__replaced_<time>`).
    pub fn owns_database(&self, name: &str) -> bool {
        name == self.database
            || name
                .strip_prefix(&self.database)
                .is_some_and(|rest| rest.starts_with("__replaced_"))
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Whether the upgrade wants a copy now: asked for, the pre-upgrade backup made, the database
/// no longer the previous version's to serve (from the moment DHIS2 stays stopped for the
/// migration until the upgrade has ended).
pub fn copy_wanted(settings: &UpgradeSpec, upgrade: Option<&UpgradeStatus>) -> bool {
    settings.read_only_during_upgrade
        && upgrade.is_some_and(|u| {
            u.backup_id.is_some()
                && matches!(
                    u.phase,
                    UpgradePhase::Preparing | UpgradePhase::Migrating | UpgradePhase::RollingBack
                )
        })
}

/// The copy as the cluster shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopySeen {
    pub instance_exists: bool,
    /// Its DHIS2 answers and all its replicas are ready (the copy's `Ready` condition).
    pub ready: bool,
    /// The restore filling it (`None`: it does not exist).
    pub restore: Option<(RestorePhase, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyAction {
    /// Create the copy's empty database, its connection, the copy (held: DHIS2 does not start
    /// on the empty database) and the restore of the pre-upgrade backup into it.
    Create,
    /// Delete the copy, its restore, its `Dhis2Database` and connection Secret. The Service
    /// already points at the instance.
    Remove,
    /// Drop the copy's databases; the copy is gone.
    DropDatabases,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    pub action: Option<CopyAction>,
    /// `status.readOnlyCopy` afterwards (`None`: no copy left).
    pub status: Option<ReadOnlyCopyStatus>,
}

impl CopyPlan {
    /// Whether the instance's Service sends users to the copy.
    pub fn serving(&self) -> Option<&str> {
        self.status
            .as_ref()
            .filter(|s| s.serving)
            .map(|s| s.instance.as_str())
    }
}

/// Why no copy can be made on the instance's database server, with the fix, or `None`.
/// CloudNativePG's application role (the instance's account) may not create databases, and the
/// operator does not use the cluster's superuser for a copy.
pub fn copy_impossible(provider: DatabaseProvider, database: &str) -> Option<String> {
    (provider == DatabaseProvider::Cnpg).then(|| {
        format!(
            "spec.upgrade.readOnlyDuringUpgrade is not supported on a cnpg database ({database}): CloudNativePG's application role may not create the copy's database; set it to false (users wait for the new version during the migration)"
        )
    })
}

/// The status of a copy that could not be made: the upgrade goes on without it.
pub fn copy_failed(names: &CopyNames, why: &str) -> ReadOnlyCopyStatus {
    ReadOnlyCopyStatus {
        instance: names.instance.clone(),
        database: names.database.clone(),
        serving: false,
        message: Some(
            "no read-only copy: the upgrade goes on without it and DHIS2 is unavailable until it ends"
                .into(),
        ),
        failure: Some(why.to_string()),
    }
}

/// Why `CREATE DATABASE` of the copy failed and what to do: a missing `CREATEDB` is named with
/// the statement that grants it.
pub fn create_database_failure(
    database: &str,
    username: &str,
    error: &str,
    insufficient_privilege: bool,
) -> String {
    if insufficient_privilege {
        format!(
            "the database account {username} may not create the copy's database {database} ({error}): grant it CREATEDB (ALTER ROLE {username} CREATEDB), or set spec.upgrade.readOnlyDuringUpgrade: false"
        )
    } else {
        format!("creating the copy's database {database}: {error}")
    }
}

/// The statements that drop a database its sessions may still use: `WITH (FORCE)` from
/// PostgreSQL 13, before it the sessions are ended first (`server_version_num`, e.g. 120015).
pub fn drop_database_statements(database: &str, server_version_num: u32) -> Vec<String> {
    let name = crate::postgres::quote_ident(database);
    if server_version_num >= 130000 {
        vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")]
    } else {
        vec![
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
                format_args!("'{}'", database.replace('\'', "''"))
            ),
            format!("DROP DATABASE IF EXISTS {name}"),
        ]
    }
}

/// The copy's next step. `wanted` is `copy_wanted` with the copy's names; `recorded` what the
/// status holds; `impossible` why no copy can be made on this server (`copy_impossible`).
/// Users are sent to the copy only while it is ready, and back to the instance (recorded, so
/// applied) before anything of the copy is deleted. A copy that failed is not tried again in
/// the same upgrade: it never holds the upgrade up.
pub fn plan_copy(
    wanted: Option<&CopyNames>,
    recorded: Option<&ReadOnlyCopyStatus>,
    seen: &CopySeen,
    from_version: &str,
    impossible: Option<&str>,
) -> CopyPlan {
    let Some(names) = wanted else {
        return match recorded {
            None => CopyPlan {
                action: None,
                status: None,
            },
            Some(r) if r.serving => CopyPlan {
                action: None,
                status: Some(ReadOnlyCopyStatus {
                    serving: false,
                    message: Some("users are sent back to the instance".into()),
                    ..r.clone()
                }),
            },
            Some(r) if seen.instance_exists || seen.restore.is_some() => CopyPlan {
                action: Some(CopyAction::Remove),
                status: Some(ReadOnlyCopyStatus {
                    serving: false,
                    message: Some("removing the read-only copy".into()),
                    ..r.clone()
                }),
            },
            Some(_) => CopyPlan {
                action: Some(CopyAction::DropDatabases),
                status: None,
            },
        };
    };
    if let Some(why) = impossible {
        return CopyPlan {
            action: None,
            status: Some(copy_failed(names, why)),
        };
    }
    if let Some(failed) = recorded.filter(|r| r.failure.is_some() && r.instance == names.instance) {
        return CopyPlan {
            action: None,
            status: Some(ReadOnlyCopyStatus {
                serving: false,
                ..failed.clone()
            }),
        };
    }
    let status = |serving: bool, message: String| ReadOnlyCopyStatus {
        instance: names.instance.clone(),
        database: names.database.clone(),
        serving,
        message: Some(message),
        failure: None,
    };
    let Some((phase, why)) = seen.restore.as_ref().filter(|_| seen.instance_exists) else {
        return CopyPlan {
            action: Some(CopyAction::Create),
            status: Some(status(
                false,
                format!(
                    "restoring the pre-upgrade backup into {} (DHIS2 {from_version}, read-only)",
                    names.instance
                ),
            )),
        };
    };
    let (serving, message) = match phase {
        RestorePhase::Failed => {
            return CopyPlan {
                action: None,
                status: Some(copy_failed(
                    names,
                    &format!(
                        "the read-only copy could not be restored: {} (see Dhis2Restore {})",
                        why.as_deref().unwrap_or("no reason given"),
                        names.instance
                    ),
                )),
            };
        }
        _ if seen.ready => (
            true,
            format!("serving users read-only (DHIS2 {from_version}) while the database migrates"),
        ),
        RestorePhase::Completed | RestorePhase::Starting => (
            false,
            format!("DHIS2 {from_version} starting read-only on the copy"),
        ),
        _ => (
            false,
            format!(
                "restoring the pre-upgrade backup into {} (DHIS2 {from_version}, read-only)",
                names.instance
            ),
        ),
    };
    CopyPlan {
        action: None,
        status: Some(status(serving, message)),
    }
}

fn meta_for(source: &Dhis2Instance, name: &str) -> kube::api::ObjectMeta {
    let source_name = source.name_any();
    child_meta(
        name.to_string(),
        source.namespace(),
        &labels(APP, &source_name, "read-only-copy"),
        source.controller_owner_ref(&()),
        &format!("Dhis2Instance/{source_name}"),
    )
}

/// The copy's connection: the instance's server and account, the copy's database.
pub fn copy_connection_secret(
    source: &Dhis2Instance,
    names: &CopyNames,
    connection: &DatabaseConnection,
) -> Secret {
    let value = |v: &str| ByteString(v.as_bytes().to_vec());
    Secret {
        metadata: meta_for(source, &names.secret()),
        data: Some(BTreeMap::from([
            ("host".to_string(), value(&connection.host)),
            ("port".to_string(), value(&connection.port)),
            ("database".to_string(), value(&names.database)),
            ("username".to_string(), value(&connection.username)),
            ("password".to_string(), value(&connection.password)),
        ])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

pub fn copy_database(source: &Dhis2Instance, names: &CopyNames) -> Dhis2Database {
    let mut db = Dhis2Database::new(
        &names.instance,
        Dhis2DatabaseSpec {
            provider: DatabaseProvider::External,
            image: None,
            storage: None,
            resources: None,
            parameters: BTreeMap::new(),
            external_secret_ref: Some(names.secret()),
            cnpg: None,
            deletion_policy: DeletionPolicy::Delete,
        },
    );
    db.metadata = meta_for(source, &names.instance);
    db
}

/// The copy: the previous version and image, read-only, one replica without Redis (it must
/// not share the instance's cache or leadership), no hostname, no backups, no upgrades; the
/// instance's S3 file store is shared (read-only mode writes nothing), a volume is the copy's
/// own, filled by the restore. Born held by its restore.
pub fn copy_instance(
    source: &Dhis2Instance,
    names: &CopyNames,
    from_version: &str,
    from_image: Option<&str>,
) -> Dhis2Instance {
    let mut spec = source.spec.clone();
    spec.version = from_version.to_string();
    spec.image = from_image.map(str::to_string);
    spec.replicas = 1;
    spec.redis = None;
    spec.database_ref = Some(names.instance.clone());
    spec.database_storage = None;
    spec.hostname = None;
    spec.ingress = None;
    spec.backup = None;
    spec.upgrade = None;
    spec.deletion_policy = DeletionPolicy::Delete;
    spec.dhis_conf
        .insert(READ_ONLY_MODE_KEY.to_string(), "on".to_string());
    let mut copy = Dhis2Instance::new(&names.instance, spec);
    copy.metadata = meta_for(source, &names.instance);
    copy.metadata.annotations.get_or_insert_default().insert(
        RESTORE_IN_PROGRESS_ANNOTATION.to_string(),
        names.instance.clone(),
    );
    copy
}

/// The restore of the pre-upgrade backup into the copy.
pub fn copy_restore(
    source: &Dhis2Instance,
    names: &CopyNames,
    backup_name: &str,
    to_version: &str,
) -> Dhis2Restore {
    let mut restore = Dhis2Restore::new(
        &names.instance,
        Dhis2RestoreSpec {
            source: RestoreSource {
                instance: source.name_any(),
                backup_ref: Some(backup_name.to_string()),
                backup_id: None,
                repository: None,
            },
            target: RestoreTarget {
                instance: names.instance.clone(),
                new_instance: None,
            },
            confirm_overwrite: Some(names.instance.clone()),
            approved_by: Some(format!(
                "dhis2-operator: read-only copy while {} upgrades to {to_version}",
                source.name_any()
            )),
            // The pre-upgrade backup carries analytics when a copy is asked for; a read-only
            // DHIS2 could not regenerate them anyway.
            regenerate_analytics: false,
            include_file_store: true,
            point_in_time: None,
            deadline_seconds: default_deadline_seconds(),
            skip_space_check: false,
        },
    );
    restore.metadata = meta_for(source, &names.instance);
    restore
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> CopyNames {
        CopyNames::of("hmis", "dhis2")
    }

    fn recorded(serving: bool) -> ReadOnlyCopyStatus {
        ReadOnlyCopyStatus {
            instance: "hmis-readonly".into(),
            database: "dhis2_readonly".into(),
            serving,
            message: None,
            failure: None,
        }
    }

    fn seen(restore: Option<RestorePhase>, ready: bool) -> CopySeen {
        CopySeen {
            instance_exists: restore.is_some(),
            ready,
            restore: restore.map(|p| (p, Some("no space left on device".into()))),
        }
    }

    fn upgrade(phase: UpgradePhase, backup_id: Option<&str>) -> UpgradeStatus {
        UpgradeStatus {
            phase,
            backup_id: backup_id.map(str::to_string),
            ..serde_json::from_value(serde_json::json!({
                "phase": "Checking", "fromVersion": "2.41.3", "toVersion": "2.42.0",
                "toImage": "dhis2/core:2.42.0", "startedAt": "2026-12-06T02:00:00Z"
            }))
            .unwrap()
        }
    }

    #[test]
    fn a_copy_is_wanted_only_when_asked_for_once_the_backup_exists_until_the_upgrade_ends() {
        let asked = UpgradeSpec {
            read_only_during_upgrade: true,
            ..Default::default()
        };
        let id = Some("20261206T020000Z");
        assert!(!copy_wanted(
            &UpgradeSpec::default(),
            Some(&upgrade(UpgradePhase::Migrating, id))
        ));
        for phase in [
            UpgradePhase::Checking,
            UpgradePhase::AwaitingApproval,
            UpgradePhase::Stopping,
            UpgradePhase::BackingUp,
            UpgradePhase::Refused,
            UpgradePhase::Failed,
        ] {
            assert!(!copy_wanted(&asked, Some(&upgrade(phase, id))), "{phase:?}");
        }
        for phase in [
            UpgradePhase::Preparing,
            UpgradePhase::Migrating,
            UpgradePhase::RollingBack,
        ] {
            assert!(copy_wanted(&asked, Some(&upgrade(phase, id))), "{phase:?}");
            assert!(
                !copy_wanted(&asked, Some(&upgrade(phase, None))),
                "{phase:?}"
            );
        }
        assert!(!copy_wanted(&asked, None));
    }

    #[test]
    fn the_copy_is_made_then_serves_once_ready() {
        let n = names();
        let p = plan_copy(Some(&n), None, &seen(None, false), "2.41.3", None);
        assert_eq!(p.action, Some(CopyAction::Create));
        assert_eq!(p.serving(), None);
        let p = plan_copy(
            Some(&n),
            p.status.as_ref(),
            &seen(Some(RestorePhase::Restoring), false),
            "2.41.3",
            None,
        );
        assert_eq!(p.action, None);
        assert_eq!(p.serving(), None);
        let p = plan_copy(
            Some(&n),
            p.status.as_ref(),
            &seen(Some(RestorePhase::Completed), true),
            "2.41.3",
            None,
        );
        assert_eq!(p.serving(), Some("hmis-readonly"));
        // The copy going down sends nobody to it.
        let p = plan_copy(
            Some(&n),
            p.status.as_ref(),
            &seen(Some(RestorePhase::Completed), false),
            "2.41.3",
            None,
        );
        assert_eq!(p.serving(), None);
    }

    #[test]
    fn a_copy_that_could_not_be_restored_is_reported_and_never_serves() {
        let p = plan_copy(
            Some(&names()),
            Some(&recorded(false)),
            &seen(Some(RestorePhase::Failed), true),
            "2.41.3",
            None,
        );
        assert_eq!(p.action, None);
        assert_eq!(p.serving(), None);
        let failure = p.status.unwrap().failure.unwrap();
        assert!(failure.contains("no space left on device"), "{failure}");
    }

    #[test]
    fn a_copy_that_could_not_be_made_is_reported_once_and_not_tried_again_in_this_upgrade() {
        let n = names();
        let why = create_database_failure(
            "dhis2_readonly",
            "dhis",
            "permission denied to create database",
            true,
        );
        assert!(why.contains("ALTER ROLE dhis CREATEDB"), "{why}");
        let failed = copy_failed(&n, &why);
        let p = plan_copy(Some(&n), Some(&failed), &seen(None, false), "2.41.3", None);
        assert_eq!(p.action, None, "no second attempt");
        assert_eq!(p.status.as_ref(), Some(&failed));
        // Once the upgrade ends, whatever was made is removed and the failure forgotten.
        let p = plan_copy(None, Some(&failed), &seen(None, false), "2.41.3", None);
        assert_eq!(p.action, Some(CopyAction::DropDatabases));
        assert_eq!(p.status, None);
    }

    #[test]
    fn on_cnpg_no_copy_is_made_and_status_says_to_turn_it_off() {
        let why = copy_impossible(DatabaseProvider::Cnpg, "hmis-db").unwrap();
        assert!(why.contains("readOnlyDuringUpgrade"), "{why}");
        assert_eq!(copy_impossible(DatabaseProvider::External, "hmis-db"), None);
        assert_eq!(copy_impossible(DatabaseProvider::Managed, "hmis-db"), None);
        let p = plan_copy(
            Some(&names()),
            None,
            &seen(None, false),
            "2.41.3",
            Some(&why),
        );
        assert_eq!(p.action, None);
        assert_eq!(p.serving(), None);
        assert_eq!(p.status.unwrap().failure.as_deref(), Some(why.as_str()));
    }

    #[test]
    fn a_database_in_use_is_dropped_on_every_postgresql_version() {
        assert_eq!(
            drop_database_statements("dhis2_readonly", 150004),
            vec![r#"DROP DATABASE IF EXISTS "dhis2_readonly" WITH (FORCE)"#]
        );
        let old = drop_database_statements("dhis2_readonly", 120015);
        assert!(old[0].contains("pg_terminate_backend") && old[0].contains("'dhis2_readonly'"));
        assert_eq!(old[1], r#"DROP DATABASE IF EXISTS "dhis2_readonly""#);
        assert!(old.iter().all(|s| !s.contains("FORCE")));
    }

    #[test]
    fn after_the_upgrade_users_go_back_first_then_the_copy_goes_then_its_database() {
        let existing = seen(Some(RestorePhase::Completed), true);
        let p = plan_copy(None, Some(&recorded(true)), &existing, "2.41.3", None);
        assert_eq!(
            p.action, None,
            "nothing is removed while users may be on it"
        );
        assert_eq!(p.serving(), None);
        let p = plan_copy(None, p.status.as_ref(), &existing, "2.41.3", None);
        assert_eq!(p.action, Some(CopyAction::Remove));
        let p = plan_copy(None, p.status.as_ref(), &seen(None, false), "2.41.3", None);
        assert_eq!(p.action, Some(CopyAction::DropDatabases));
        assert_eq!(p.status, None);
        let p = plan_copy(None, None, &seen(None, false), "2.41.3", None);
        assert_eq!(
            p,
            CopyPlan {
                action: None,
                status: None
            }
        );
    }

    #[test]
    fn names_fit_and_only_the_copys_databases_are_its_own() {
        let n = CopyNames::of(&"h".repeat(63), &"d".repeat(63));
        assert!(n.instance.len() <= 63 - "-database".len(), "{}", n.instance);
        let replaced = format!("{}__replaced_20261206t051209z_2", n.database);
        assert!(replaced.len() <= 63, "{replaced}");
        let n = names();
        assert!(n.owns_database("dhis2_readonly"));
        assert!(n.owns_database("dhis2_readonly__replaced_20261206t051209z"));
        assert!(!n.owns_database("dhis2"));
        assert!(!n.owns_database("dhis2_readonly_other"));
        assert!(!n.owns_database("dhis2__replaced_20261206t051209z"));
    }

    #[test]
    fn the_copy_runs_the_previous_version_read_only_alone_and_held() {
        let mut source = Dhis2Instance::new(
            "hmis",
            serde_saphyr::from_str(
                "version: 2.42.0\nenvironment: production\nreplicas: 3\nhostname: hmis.moh.gov.kh\nredis: {host: redis}\ndhisConf: {connection.pool.max_size: '40'}\n",
            )
            .unwrap(),
        );
        source.metadata.namespace = Some("moh".into());
        source.metadata.uid = Some("u1".into());
        let copy = copy_instance(&source, &names(), "2.41.3", Some("dhis2/core:2.41.3"));
        assert_eq!(copy.spec.version, "2.41.3");
        assert_eq!(copy.spec.replicas, 1);
        assert!(copy.spec.redis.is_none() && copy.spec.hostname.is_none());
        assert_eq!(copy.spec.dhis_conf[READ_ONLY_MODE_KEY], "on");
        assert_eq!(copy.spec.dhis_conf["connection.pool.max_size"], "40");
        assert_eq!(copy.spec.database_ref.as_deref(), Some("hmis-readonly"));
        assert_eq!(
            copy.annotations().get(RESTORE_IN_PROGRESS_ANNOTATION),
            Some(&"hmis-readonly".to_string())
        );
        assert_eq!(copy.owner_references()[0].name, "hmis");
    }
}
