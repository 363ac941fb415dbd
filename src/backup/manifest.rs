//! The backup manifest: written last, it is what makes a backup exist. Everything `list`,
//! `verify`, `restore`, `prune` and `drill` know about a backup comes from here.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::object_lock::ObjectLock;
use super::schema_version::release_line;
use super::table_rules::TableName;

/// Appended to the name of every encrypted object: `database.pgdump.zst.age`.
pub const AGE_SUFFIX: &str = ".age";

/// Where an object of a backup is stored: `<instance>/<backup id>/<object name>`.
pub fn object_key(instance: &str, id: &str, object: &str) -> String {
    format!("{instance}/{id}/{object}")
}

pub const MANIFEST_FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
/// Present only while a backup runs; see `lease.rs`.
pub const LEASE_FILE: &str = "lease.json";
pub const DATABASE_OBJECT: &str = "database.pgdump.zst";
pub const FILESTORE_OBJECT: &str = "filestore.tar.zst";
pub const DHIS_CONF_OBJECT: &str = "dhis.conf.zst";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectKind {
    /// `pg_dump --format=custom --compress=0`, compressed with zstd.
    Database,
    /// A tar of the DHIS2 file store directory, compressed with zstd.
    FileStore,
    /// `dhis.conf` (holds `encryption.password`), compressed with zstd.
    DhisConf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredObject {
    pub name: String,
    pub kind: ObjectKind,
    /// Size of the stored (compressed) bytes.
    pub size_bytes: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// Size before compression.
    pub uncompressed_bytes: u64,
    /// Owner and mode of the original file (dhis.conf), so a restore can put them back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posix: Option<PosixMetadata>,
    /// Set when the stored bytes are an age file (the name then ends in `.age`). Absent in
    /// unencrypted backups, so manifests of older backups read unchanged, and older dhis2ctl
    /// versions still see encrypted backups as complete (they never prune them as debris).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionRecord>,
}

/// How an object is encrypted: public keys only, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum EncryptionRecord {
    /// age X25519: any one of these public keys' private keys decrypts.
    Recipients { recipients: Vec<String> },
    /// age scrypt: the passphrase decrypts.
    Passphrase,
}

impl StoredObject {
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PosixMetadata {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, e.g. 0o640 (stored as a number).
    pub mode: u32,
}

impl PosixMetadata {
    pub fn of(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableRecord {
    pub schema: String,
    pub name: String,
    /// Exact row count in the dump's snapshot; not counted when the data was skipped.
    pub rows: Option<i64>,
    /// False when DHIS2 regenerates the table and only its definition was kept.
    pub data_included: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionRecord {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolRecord {
    pub name: String,
    pub version: String,
    pub pg_dump: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupManifest {
    pub format_version: u32,
    pub id: String,
    pub instance: String,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub database: String,
    /// Highest version in `flyway_schema_history`, e.g. `2.41.38`.
    pub dhis2_schema_version: Option<String>,
    pub postgres_version: String,
    pub extensions: Vec<ExtensionRecord>,
    pub include_analytics: bool,
    pub objects: Vec<StoredObject>,
    pub tables: Vec<TableRecord>,
    /// Exactly the tables whose data was skipped (`schema.name`).
    pub skipped_table_data: Vec<String>,
    pub tool: ToolRecord,
    /// The S3 Object Lock every object of the set carries (`backup run --lock-days`); absent in
    /// manifests of unlocked sets and of older dhis2ctl versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
    /// Why it was taken; absent for routine backups (and in older manifests).
    #[serde(default, skip_serializing_if = "BackupPurpose::is_routine")]
    pub purpose: BackupPurpose,
    /// Roughly what restoring it takes on a server: the database's size when it was backed up,
    /// less the tables whose data was skipped (a restore checks it has that room); absent in
    /// manifests of older dhis2ctl versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_size_bytes: Option<u64>,
}

/// Why a backup was taken. A backup that keeps what was there just before a restore (step 2 of
/// the disaster-recovery runbook: possibly the damaged data) is never what `latest` means for a
/// restore or a drill: the restore would bring the damage back. A pre-upgrade backup is the way
/// back from an upgrade: retention keeps the two newest whatever their age.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BackupPurpose {
    #[default]
    Routine,
    BeforeRestore,
    PreUpgrade,
}

impl BackupPurpose {
    pub fn is_routine(&self) -> bool {
        *self == BackupPurpose::Routine
    }

    /// Whether `latest` may mean this backup.
    pub fn may_be_latest(&self) -> bool {
        *self != BackupPurpose::BeforeRestore
    }
}

impl BackupManifest {
    pub fn size_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size_bytes).sum()
    }

    pub fn is_encrypted(&self) -> bool {
        self.objects.iter().any(StoredObject::is_encrypted)
    }

    /// What the backup is encrypted to, as the manifest records it (the database's record).
    pub fn encryption(&self) -> Option<&EncryptionRecord> {
        self.objects.iter().find_map(|o| o.encryption.as_ref())
    }

    pub fn object(&self, kind: ObjectKind) -> Option<&StoredObject> {
        self.objects.iter().find(|o| o.kind == kind)
    }

    /// The DHIS2 release line (`2.41`) derived from the schema version.
    pub fn dhis2_version(&self) -> Option<String> {
        self.dhis2_schema_version.as_deref().map(release_line)
    }

    /// A manifest that parses but does not describe a usable backup is treated as absent.
    pub fn validate(&self, expected_id: &str, expected_instance: &str) -> Result<(), String> {
        if self.format_version != MANIFEST_FORMAT_VERSION {
            return Err(format!(
                "manifest format {} is not supported by this dhis2ctl (supports {})",
                self.format_version, MANIFEST_FORMAT_VERSION
            ));
        }
        if self.id != expected_id || self.instance != expected_instance {
            return Err(format!(
                "manifest names backup {}/{} but is stored as {}/{}",
                self.instance, self.id, expected_instance, expected_id
            ));
        }
        if self.object(ObjectKind::Database).is_none() {
            return Err("manifest lists no database dump".to_string());
        }
        if self
            .objects
            .iter()
            .any(|o| o.sha256.len() != 64 || !o.sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err("manifest holds a malformed checksum".to_string());
        }
        let mut seen = std::collections::HashSet::new();
        for o in &self.objects {
            check_object_name(&o.name)?;
            if !seen.insert(o.name.as_str()) {
                return Err(format!("manifest names object {} twice", o.name));
            }
            if o.is_encrypted() != o.name.ends_with(AGE_SUFFIX) {
                return Err(format!(
                    "manifest names object {} with an encryption that does not match its name",
                    o.name
                ));
            }
            if let Some(EncryptionRecord::Recipients { recipients }) = &o.encryption
                && (recipients.is_empty() || recipients.iter().any(|r| !r.starts_with("age1")))
            {
                return Err(format!(
                    "manifest records malformed recipients for object {}",
                    o.name
                ));
            }
        }
        Ok(())
    }
}

/// Object names become the last part of a key or a file name in the repository: a name that
/// could reach outside its backup (`/`, `..`) or clash with the set's own files is refused.
pub fn check_object_name(name: &str) -> Result<(), String> {
    let safe = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.contains("..")
        && name != MANIFEST_FILE
        && name != LEASE_FILE;
    if safe {
        Ok(())
    } else {
        Err(format!(
            "manifest names an object '{}' that is not a plain file name",
            name.escape_debug()
        ))
    }
}

/// What `list -o json` shows for one backup.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    pub id: String,
    pub instance: String,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub size_bytes: u64,
    pub dhis2_version: Option<String>,
    pub dhis2_schema_version: Option<String>,
    pub postgres_version: String,
    pub database: String,
    pub skipped_tables: usize,
    /// True when the backup's objects are encrypted (restoring needs the key).
    pub encrypted: bool,
    /// Until when the store refuses to delete the set (S3 Object Lock); null when not locked.
    pub locked_until: Option<DateTime<Utc>>,
    /// `beforeRestore` or `preUpgrade`; absent for routine backups.
    #[serde(skip_serializing_if = "BackupPurpose::is_routine")]
    pub purpose: BackupPurpose,
}

impl From<&BackupManifest> for BackupSummary {
    fn from(m: &BackupManifest) -> Self {
        Self {
            id: m.id.clone(),
            instance: m.instance.clone(),
            started_at: m.started_at,
            completed_at: m.completed_at,
            size_bytes: m.size_bytes(),
            dhis2_version: m.dhis2_version(),
            dhis2_schema_version: m.dhis2_schema_version.clone(),
            postgres_version: m.postgres_version.clone(),
            database: m.database.clone(),
            skipped_tables: m.skipped_table_data.len(),
            encrypted: m.is_encrypted(),
            locked_until: m.object_lock.map(|l| l.retain_until),
            purpose: m.purpose,
        }
    }
}

/// Backup ids sort by time: `20261125T101500Z-3f9a0c17` (UTC start time, then 32 random bits so
/// backups started in the same second do not collide; the lease is also created only if absent).
/// Older ids carry 16 random bits (`20261125T101500Z-3f9a`); both parse.
pub fn new_backup_id(started_at: DateTime<Utc>, suffix: u32) -> String {
    format!("{}-{:08x}", started_at.format("%Y%m%dT%H%M%SZ"), suffix)
}

/// The start time encoded in a backup id, if it is one.
pub fn backup_id_time(id: &str) -> Option<DateTime<Utc>> {
    let stamp = id.split('-').next()?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

pub fn skipped_names(tables: &[TableName]) -> Vec<String> {
    tables.iter().map(TableName::qualified).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_time_and_round_trip() {
        let a = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let b = Utc.with_ymd_and_hms(2026, 11, 2, 3, 4, 5).unwrap();
        let ida = new_backup_id(a, 0xffff_ffff);
        let idb = new_backup_id(b, 0);
        assert_eq!(ida, "20260102T030405Z-ffffffff");
        assert!(ida < idb);
        assert_eq!(backup_id_time(&ida), Some(a));
        assert_eq!(backup_id_time("20260102T030405Z-3f9a"), Some(a));
        assert_eq!(backup_id_time("latest"), None);
    }

    fn manifest_with_object(object: serde_json::Value) -> BackupManifest {
        serde_json::from_value(serde_json::json!({
            "formatVersion": 1, "id": "20261125T010000Z-3f9a", "instance": "hmis",
            "startedAt": "2026-11-25T01:00:00Z", "completedAt": "2026-11-25T01:10:00Z",
            "database": "dhis2", "dhis2SchemaVersion": "2.41.38", "postgresVersion": "15.8",
            "extensions": [], "includeAnalytics": false, "objects": [object], "tables": [],
            "skippedTableData": [],
            "tool": {"name": "dhis2ctl", "version": "0.1.0", "pgDump": "pg_dump (PostgreSQL) 15.8"}
        }))
        .unwrap()
    }

    #[test]
    fn manifests_from_before_encryption_read_as_unencrypted() {
        let old = manifest_with_object(serde_json::json!({
            "name": DATABASE_OBJECT, "kind": "database", "sizeBytes": 10,
            "sha256": "a".repeat(64), "uncompressedBytes": 20
        }));
        assert_eq!(old.validate("20261125T010000Z-3f9a", "hmis"), Ok(()));
        assert!(!old.is_encrypted());
        assert_eq!(old.encryption(), None);
        // Written back, an unencrypted object has no encryption field: older tools read it as before.
        let written = serde_json::to_value(&old).unwrap();
        assert!(
            written["objects"][0].get("encryption").is_none(),
            "{written}"
        );
    }

    #[test]
    fn an_encrypted_object_is_named_age_and_names_public_keys_only() {
        let object = |name: &str, encryption: serde_json::Value| {
            manifest_with_object(serde_json::json!({
                "name": name, "kind": "database", "sizeBytes": 10,
                "sha256": "a".repeat(64), "uncompressedBytes": 20, "encryption": encryption
            }))
        };
        let recipients = serde_json::json!({"mode": "recipients", "recipients": ["age1abc"]});
        let ok = object("database.pgdump.zst.age", recipients.clone());
        assert_eq!(ok.validate("20261125T010000Z-3f9a", "hmis"), Ok(()));
        assert!(ok.is_encrypted());
        let passphrase = object(
            "database.pgdump.zst.age",
            serde_json::json!({"mode": "passphrase"}),
        );
        assert_eq!(passphrase.encryption(), Some(&EncryptionRecord::Passphrase));
        for bad in [
            object(DATABASE_OBJECT, recipients),
            object("database.pgdump.zst.age", serde_json::Value::Null),
            object(
                "database.pgdump.zst.age",
                serde_json::json!({"mode": "recipients", "recipients": ["AGE-SECRET-KEY-1X"]}),
            ),
            object(
                "database.pgdump.zst.age",
                serde_json::json!({"mode": "recipients", "recipients": []}),
            ),
        ] {
            assert!(
                bad.validate("20261125T010000Z-3f9a", "hmis").is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_object_lock_is_optional_so_older_manifests_still_parse() {
        let older = serde_json::json!({
            "formatVersion": 1, "id": "20260101T000000Z-00000001", "instance": "hmis",
            "startedAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:10:00Z",
            "database": "dhis2", "dhis2SchemaVersion": null, "postgresVersion": "16.4",
            "extensions": [], "includeAnalytics": false, "objects": [], "tables": [],
            "skippedTableData": [],
            "tool": {"name": "dhis2ctl", "version": "0", "pgDump": ""}
        });
        let mut m: BackupManifest = serde_json::from_value(older.clone()).unwrap();
        assert_eq!(m.object_lock, None);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            older,
            "unlocked: no new field"
        );
        assert_eq!(BackupSummary::from(&m).locked_until, None);

        let until = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        m.object_lock = Some(ObjectLock {
            mode: crate::backup::object_lock::LockMode::Governance,
            retain_until: until,
        });
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["objectLock"]["retainUntil"], "2026-02-01T00:00:00Z");
        assert_eq!(serde_json::from_value::<BackupManifest>(json).unwrap(), m);
        assert_eq!(BackupSummary::from(&m).locked_until, Some(until));
    }

    #[test]
    fn object_names_stay_inside_their_backup() {
        for good in [
            DATABASE_OBJECT,
            FILESTORE_OBJECT,
            DHIS_CONF_OBJECT,
            "extra-1_x.zst",
        ] {
            assert!(check_object_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            "../other/database.pgdump.zst",
            "a/b",
            "a\\b",
            ".hidden",
            "x..y",
            MANIFEST_FILE,
            LEASE_FILE,
            "name\n",
        ] {
            assert!(check_object_name(bad).is_err(), "{bad:?}");
        }
    }
}
