//! What a repository holds: complete backups (a valid manifest) and the debris of incomplete
//! ones (objects without a manifest). Only complete backups exist for list, verify, restore,
//! prune and drill.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::error::BackupError;
use super::manifest::{BackupManifest, MANIFEST_FILE};
use super::repo::{ObjectMeta, Repository};

#[derive(Debug, Clone)]
pub struct IncompleteBackup {
    pub instance: String,
    pub id: String,
    pub objects: Vec<ObjectMeta>,
    /// Why it does not count: no manifest, or a manifest that is not valid.
    pub reason: String,
}

impl IncompleteBackup {
    pub fn last_modified(&self) -> DateTime<Utc> {
        self.objects
            .iter()
            .map(|o| o.last_modified)
            .max()
            .unwrap_or_default()
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

pub async fn load_catalog(
    repo: &Repository,
    instance: Option<&str>,
) -> Result<Catalog, BackupError> {
    let prefix = instance.map(|i| format!("{i}/")).unwrap_or_default();
    let groups = group_by_backup(repo.list(&prefix).await?);
    let manifest_name = format!("/{MANIFEST_FILE}");
    let manifest_name = manifest_name.as_str();
    let reads = groups
        .into_iter()
        .map(|((instance, id), objects)| async move {
            let has_manifest = objects.iter().any(|o| o.key.ends_with(manifest_name));
            if !has_manifest {
                return Ok::<_, BackupError>((
                    instance,
                    id,
                    objects,
                    Err("no manifest".to_string()),
                ));
            }
            let body = repo
                .get_bytes(&format!("{instance}/{id}/{MANIFEST_FILE}"))
                .await?;
            let parsed = serde_json::from_slice::<BackupManifest>(&body)
                .map_err(|e| format!("manifest is not readable: {e}"))
                .and_then(|m| m.validate(&id, &instance).map(|_| m));
            Ok((instance, id, objects, parsed))
        });
    let results: Vec<_> = futures::stream::iter(reads)
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let mut catalog = Catalog::default();
    for (instance, id, objects, parsed) in results {
        match parsed {
            Ok(manifest) => {
                catalog.objects.insert((instance, id), objects);
                catalog.complete.push(manifest);
            }
            Err(reason) => {
                if reason != "no manifest" {
                    tracing::warn!(backup = %id, instance = %instance, "ignoring backup: {reason}");
                }
                catalog.incomplete.push(IncompleteBackup {
                    instance,
                    id,
                    objects,
                    reason,
                })
            }
        }
    }
    catalog
        .complete
        .sort_by(|a, b| b.completed_at.cmp(&a.completed_at).then(b.id.cmp(&a.id)));
    Ok(catalog)
}

/// `ID` or `latest`, among the complete backups of one instance.
pub fn find_backup<'a>(
    catalog: &'a Catalog,
    repo: &Repository,
    instance: &str,
    id: &str,
) -> Result<&'a BackupManifest, BackupError> {
    let mut of_instance = catalog.complete.iter().filter(|m| m.instance == instance);
    let found = if id == "latest" {
        of_instance.next()
    } else {
        of_instance.find(|m| m.id == id)
    };
    found.ok_or_else(|| BackupError::NotFound {
        instance: instance.to_string(),
        id: id.to_string(),
        repo: repo.describe(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 1,
            last_modified: DateTime::default(),
        }
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
}
