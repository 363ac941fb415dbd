//! What a repository holds: complete backups (a valid manifest, and every object it names present
//! with the recorded size) and the debris of incomplete ones. Only complete backups exist for
//! list, verify, restore, prune and drill.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::error::BackupError;
use super::lease::{Lease, is_stale};
use super::manifest::{BackupManifest, LEASE_FILE, MANIFEST_FILE};
use super::repo::{ObjectMeta, Repository};

/// Why a backup set does not count as a backup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompleteness {
    #[error("no manifest")]
    NoManifest,
    #[error("manifest is not valid: {0}")]
    InvalidManifest(String),
    #[error("object {name} named by the manifest is missing")]
    Missing { name: String },
    #[error("object {name} holds {actual} bytes, the manifest records {expected}")]
    WrongSize {
        name: String,
        expected: u64,
        actual: u64,
    },
}

/// The one rule list, verify, restore, prune and drill share: a backup exists only when every
/// object its manifest names is present with the size the manifest records.
pub fn completeness(
    manifest: &BackupManifest,
    objects: &[ObjectMeta],
) -> Result<(), Incompleteness> {
    let present: HashMap<&str, u64> = objects
        .iter()
        .filter_map(|o| o.key.rsplit('/').next().map(|name| (name, o.size)))
        .collect();
    for object in &manifest.objects {
        match present.get(object.name.as_str()) {
            None => {
                return Err(Incompleteness::Missing {
                    name: object.name.clone(),
                });
            }
            Some(&actual) if actual != object.size_bytes => {
                return Err(Incompleteness::WrongSize {
                    name: object.name.clone(),
                    expected: object.size_bytes,
                    actual,
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct IncompleteBackup {
    pub instance: String,
    pub id: String,
    pub objects: Vec<ObjectMeta>,
    pub reason: Incompleteness,
    /// The lease of a backup that is (or was) running, when it left a readable one.
    pub lease: Option<Lease>,
}

impl IncompleteBackup {
    pub fn last_modified(&self) -> Option<DateTime<Utc>> {
        self.objects.iter().map(|o| o.last_modified).max()
    }

    /// Abandoned debris that prune may remove; a running backup never is.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        is_stale(self.lease.as_ref(), self.last_modified(), now)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Newest first.
    pub complete: Vec<BackupManifest>,
    pub incomplete: Vec<IncompleteBackup>,
    /// Every object of each complete backup, for pruning.
    pub objects: BTreeMap<(String, String), Vec<ObjectMeta>>,
}

/// Groups objects laid out as `INSTANCE/ID/OBJECT`; anything else in the bucket is not ours.
pub fn group_by_backup(objects: Vec<ObjectMeta>) -> BTreeMap<(String, String), Vec<ObjectMeta>> {
    let mut groups: BTreeMap<(String, String), Vec<ObjectMeta>> = BTreeMap::new();
    for object in objects {
        let parts: Vec<&str> = object.key.split('/').collect();
        if let [instance, id, _name] = parts[..] {
            groups
                .entry((instance.to_string(), id.to_string()))
                .or_default()
                .push(object);
        }
    }
    groups
}

/// Reads one backup set's manifest (or lease) and judges it.
async fn judge(
    repo: &Repository,
    instance: String,
    id: String,
    objects: Vec<ObjectMeta>,
) -> Result<Result<(BackupManifest, Vec<ObjectMeta>), IncompleteBackup>, BackupError> {
    let has = |file: &str| {
        objects
            .iter()
            .any(|o| o.key.rsplit('/').next() == Some(file))
    };
    let verdict = if has(MANIFEST_FILE) {
        let body = repo
            .get_bytes(&format!("{instance}/{id}/{MANIFEST_FILE}"))
            .await?;
        serde_json::from_slice::<BackupManifest>(&body)
            .map_err(|e| Incompleteness::InvalidManifest(format!("not readable: {e}")))
            .and_then(|m| {
                m.validate(&id, &instance)
                    .map_err(Incompleteness::InvalidManifest)?;
                completeness(&m, &objects)?;
                Ok(m)
            })
    } else {
        Err(Incompleteness::NoManifest)
    };
    let reason = match verdict {
        Ok(manifest) => return Ok(Ok((manifest, objects))),
        Err(reason) => reason,
    };
    let lease = if has(LEASE_FILE) {
        match repo
            .get_bytes(&format!("{instance}/{id}/{LEASE_FILE}"))
            .await
        {
            Ok(body) => serde_json::from_slice::<Lease>(&body).ok(),
            // Removed between listing and reading: the backup just finished or failed.
            Err(super::repo::RepoError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    Ok(Err(IncompleteBackup {
        instance,
        id,
        objects,
        reason,
        lease,
    }))
}

pub async fn load_catalog(
    repo: &Repository,
    instance: Option<&str>,
) -> Result<Catalog, BackupError> {
    let prefix = instance.map(|i| format!("{i}/")).unwrap_or_default();
    let groups = group_by_backup(repo.list(&prefix).await?);
    let reads = groups
        .into_iter()
        .map(|((instance, id), objects)| judge(repo, instance, id, objects));
    let results: Vec<_> = futures::stream::iter(reads)
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let mut catalog = Catalog::default();
    for result in results {
        match result {
            Ok((manifest, objects)) => {
                catalog
                    .objects
                    .insert((manifest.instance.clone(), manifest.id.clone()), objects);
                catalog.complete.push(manifest);
            }
            Err(incomplete) => {
                if incomplete.reason != Incompleteness::NoManifest {
                    tracing::warn!(
                        backup = %incomplete.id,
                        instance = %incomplete.instance,
                        "ignoring incomplete backup: {}",
                        incomplete.reason
                    );
                }
                catalog.incomplete.push(incomplete);
            }
        }
    }
    catalog
        .complete
        .sort_by(|a, b| b.completed_at.cmp(&a.completed_at).then(b.id.cmp(&a.id)));
    Ok(catalog)
}

/// `ID` or `latest`, among the complete backups of one instance. `latest` is the newest backup
/// not kept just before a restore (that one holds the data as it was, maybe damaged: it is
/// chosen only by its id).
pub fn find_backup<'a>(
    catalog: &'a Catalog,
    repo: &Repository,
    instance: &str,
    id: &str,
) -> Result<&'a BackupManifest, BackupError> {
    let mut of_instance = catalog.complete.iter().filter(|m| m.instance == instance);
    let found = if id == "latest" {
        of_instance.find(|m| m.purpose.may_be_latest())
    } else {
        of_instance.find(|m| m.id == id)
    };
    found.ok_or_else(|| BackupError::NotFound {
        instance: instance.to_string(),
        id: id.to_string(),
        repo: repo.describe(),
    })
}

/// Which of the repositories hold each complete backup: `(instance, id)` → a flag per repository,
/// in the order given. For `backup list` with several `--repo`.
pub fn presence(catalogs: &[&Catalog]) -> HashMap<(String, String), Vec<bool>> {
    let mut out: HashMap<(String, String), Vec<bool>> = HashMap::new();
    for (i, catalog) in catalogs.iter().enumerate() {
        for m in &catalog.complete {
            out.entry((m.instance.clone(), m.id.clone()))
                .or_insert_with(|| vec![false; catalogs.len()])[i] = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backup::manifest::{DATABASE_OBJECT, FILESTORE_OBJECT, ObjectKind, StoredObject};

    fn obj(key: &str) -> ObjectMeta {
        sized(key, 1)
    }

    fn sized(key: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            last_modified: DateTime::default(),
        }
    }

    fn manifest(objects: &[(&str, u64)]) -> BackupManifest {
        let json = serde_json::json!({
            "formatVersion": 1, "id": "20260101T000000Z-00000001", "instance": "hmis",
            "startedAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:10:00Z",
            "database": "dhis2", "dhis2SchemaVersion": null, "postgresVersion": "16.4",
            "extensions": [], "includeAnalytics": false, "objects": [], "tables": [],
            "skippedTableData": [],
            "tool": {"name": "dhis2ctl", "version": "0", "pgDump": ""}
        });
        let mut m: BackupManifest = serde_json::from_value(json).unwrap();
        m.objects = objects
            .iter()
            .map(|(name, size)| StoredObject {
                name: name.to_string(),
                kind: if *name == DATABASE_OBJECT {
                    ObjectKind::Database
                } else {
                    ObjectKind::FileStore
                },
                size_bytes: *size,
                sha256: "0".repeat(64),
                uncompressed_bytes: 0,
                posix: None,
                encryption: None,
            })
            .collect();
        m
    }

    #[test]
    fn complete_only_when_every_object_is_there_with_its_size() {
        let m = manifest(&[(DATABASE_OBJECT, 100), (FILESTORE_OBJECT, 7)]);
        let key = |name: &str| format!("hmis/20260101T000000Z-00000001/{name}");
        let all = vec![
            sized(&key(MANIFEST_FILE), 900),
            sized(&key(DATABASE_OBJECT), 100),
            sized(&key(FILESTORE_OBJECT), 7),
        ];
        assert_eq!(completeness(&m, &all), Ok(()));

        let only_manifest = vec![sized(&key(MANIFEST_FILE), 900)];
        assert_eq!(
            completeness(&m, &only_manifest),
            Err(Incompleteness::Missing {
                name: DATABASE_OBJECT.into()
            })
        );
        let truncated = vec![
            sized(&key(MANIFEST_FILE), 900),
            sized(&key(DATABASE_OBJECT), 99),
            sized(&key(FILESTORE_OBJECT), 7),
        ];
        assert_eq!(
            completeness(&m, &truncated),
            Err(Incompleteness::WrongSize {
                name: DATABASE_OBJECT.into(),
                expected: 100,
                actual: 99
            })
        );
        // A `.partial` beside the object is not the object.
        let partial = vec![
            sized(&key(DATABASE_OBJECT), 100),
            sized(&key(&format!("{FILESTORE_OBJECT}.partial")), 7),
        ];
        assert!(matches!(
            completeness(&m, &partial),
            Err(Incompleteness::Missing { .. })
        ));
    }

    #[test]
    fn groups_only_our_layout() {
        let groups = group_by_backup(vec![
            obj("hmis/20260101T000000Z-0001/manifest.json"),
            obj("hmis/20260101T000000Z-0001/database.pgdump.zst"),
            obj("hmis/20260102T000000Z-0002/database.pgdump.zst.partial"),
            obj("README.txt"),
            obj("a/b/c/d"),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[&("hmis".to_string(), "20260101T000000Z-0001".to_string())].len(),
            2
        );
    }

    #[test]
    fn presence_marks_each_repository_holding_a_complete_set() {
        let with_id = |id: &str| BackupManifest {
            id: id.into(),
            ..manifest(&[])
        };
        let a = Catalog {
            complete: vec![with_id("x"), with_id("y")],
            ..Default::default()
        };
        let b = Catalog {
            complete: vec![with_id("y")],
            ..Default::default()
        };
        let p = presence(&[&a, &b]);
        assert_eq!(p[&("hmis".into(), "x".into())], vec![true, false]);
        assert_eq!(p[&("hmis".into(), "y".into())], vec![true, true]);
        assert_eq!(p.len(), 2);
    }
}
