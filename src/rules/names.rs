//! Names both `dhis2ctl` and the operator must agree on: the objects made for an instance or a
//! database, and the labels and annotations that mark objects about a DHIS2 instance.

/// Lets an operator running outside the cluster (development, tests) reach DHIS2.
pub const ENDPOINT_OVERRIDE_ANNOTATION: &str = "dhis2operator.io/endpoint-override";
/// On a `Dhis2Instance` a restore holds: the `Dhis2Restore`'s name. DHIS2 runs no replica while
/// it is there (two writers never); the restore removes it when it is done.
pub const RESTORE_IN_PROGRESS_ANNOTATION: &str = "dhis2operator.io/restore-in-progress";
/// On a `Dhis2Instance` whose upgrade and rollback both failed: the failed upgrade's
/// `status.upgrade.startedAt`, set by whoever accepts that DHIS2 runs again on the database as
/// the failed migration left it (`dhis2ctl upgrade NAME --accept-migrated-database`).
pub const ACCEPT_MIGRATED_DATABASE_ANNOTATION: &str = "dhis2operator.io/accept-migrated-database";

/// The `app.kubernetes.io/name` of the engine's Jobs (backup, restore): never `dhis2`, so neither
/// DHIS2's Deployment nor its Service ever selects the engine's pods.
pub const ENGINE_APP: &str = "dhis2ctl";

/// On every object about an instance (backups, restores, drills): the instance's name.
pub const INSTANCE_LABEL: &str = "dhis2operator.io/instance";
/// On objects a schedule created: the `Dhis2BackupSchedule`'s name, or `drill` for an
/// instance's drill schedule.
pub const SCHEDULE_LABEL: &str = "dhis2operator.io/schedule";

/// The database's Service: suffixed so it never takes the name of an instance's Service.
pub fn database_service_name(database: &str) -> String {
    format!("{database}-postgresql")
}

pub fn credentials_secret_name(database: &str) -> String {
    format!("{database}-credentials")
}

pub fn dhis_conf_secret_name(instance: &str) -> String {
    format!("{instance}-dhis-conf")
}

pub fn file_store_claim_name(instance: &str) -> String {
    format!("{instance}-files")
}

pub fn dedicated_database_name(instance: &str) -> String {
    format!("{instance}-db")
}

/// The volume claim a StatefulSet creates from its `data` template for pod 0.
pub fn database_data_claim_name(database: &str) -> String {
    format!("data-{database}-0")
}

/// The longest name of a point-in-time `Dhis2Restore`: its database `<name>-db` becomes a
/// CloudNativePG cluster whose Services (`<cluster>-rw`, `-ro`, `-r`) must be DNS labels.
pub const MAX_RECOVERY_RESTORE_NAME: usize = 63 - "-db".len() - "-rw".len();

/// The cnpg `Dhis2Database` a point-in-time restore creates.
pub fn recovery_database_name(restore: &str) -> String {
    format!("{restore}-db")
}
