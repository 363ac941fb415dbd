//! `backup prune`: applies retention to the complete backups of one instance and removes the
//! debris of incomplete ones once abandoned: a backup's lease (rewritten by the running backup)
//! decides, so a backup still running is never touched however long it takes.
//! A complete backup loses its manifest first: interrupted, it becomes incomplete debris that the
//! next prune removes, never a listed backup with missing parts.
//! A set under S3 Object Lock is never deleted before its retain-until date: retention may expire
//! it, but prune skips it, reports the date, and deletes it on the first run after that date.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::catalog::{IncompleteBackup, load_catalog};
use super::error::{BackupError, validate_instance_name};
use super::lease::is_stale;
use super::manifest::{BackupPurpose, MANIFEST_FILE};
use super::object_lock::{LockedBackup, hold_locked};
use super::repo::{PendingUpload, Repository};
use super::retention::{Candidate, Kept, RetentionPolicy};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub instance: String,
    pub dry_run: bool,
    pub kept: Vec<Kept>,
    pub deleted: Vec<String>,
    /// Expired by the policy but still under object lock: kept until the date shown.
    pub locked: Vec<LockedBackup>,
    pub incomplete_deleted: Vec<String>,
    pub aborted_uploads: usize,
    pub freed_bytes: u64,
}

/// A prune without a policy would delete every backup but the newest, and a zero keep means
/// nothing: refuse both, naming the flag.
pub fn check_policy(policy: &RetentionPolicy) -> Result<(), BackupError> {
    if policy.is_empty() {
        return Err(BackupError::Usage(
            "prune needs a retention policy: give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly".into(),
        ));
    }
    for (flag, value) in [
        ("--keep-last", policy.keep_last),
        ("--keep-daily", policy.keep_daily),
        ("--keep-weekly", policy.keep_weekly),
        ("--keep-monthly", policy.keep_monthly),
    ] {
        if value == Some(0) {
            return Err(BackupError::Usage(format!(
                "{flag} 0 keeps nothing; give 1 or more, or leave the flag out"
            )));
        }
    }
    Ok(())
}

/// Incomplete backups that are abandoned: their lease stopped beating (or, without a lease,
/// their newest object is a day old).
pub fn select_stale_incomplete(
    incomplete: &[IncompleteBackup],
    now: DateTime<Utc>,
) -> Vec<&IncompleteBackup> {
    incomplete.iter().filter(|b| b.is_stale(now)).collect()
}

/// Unfinished uploads to abort. An upload belongs to the backup named in its key: while that
/// backup's set is in the repository, its liveness decides (a running backup's lease keeps its
/// uploads); an upload with no set at all (or one under a complete backup) is judged by its start
/// with the no-lease grace.
pub fn select_stale_uploads<'a>(
    uploads: &'a [PendingUpload],
    incomplete: &[IncompleteBackup],
    now: DateTime<Utc>,
) -> Vec<&'a PendingUpload> {
    let by_backup: HashMap<(&str, &str), &IncompleteBackup> = incomplete
        .iter()
        .map(|b| ((b.instance.as_str(), b.id.as_str()), b))
        .collect();
    uploads
        .iter()
        .filter(|u| {
            let mut parts = u.key.split('/');
            let backup = match (parts.next(), parts.next()) {
                (Some(instance), Some(id)) => by_backup.get(&(instance, id)),
                _ => None,
            };
            match backup {
                Some(b) => b.is_stale(now),
                None => is_stale(None, Some(u.initiated), now),
            }
        })
        .collect()
}

pub async fn prune_backups(
    repo: &Repository,
    instance: &str,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> Result<PruneReport, BackupError> {
    validate_instance_name(instance)?;
    check_policy(policy)?;
    let now = Utc::now();
    let catalog = load_catalog(repo, Some(instance)).await?;
    let candidates: Vec<Candidate> = catalog
        .complete
        .iter()
        .map(|m| Candidate {
            id: m.id.clone(),
            completed_at: m.completed_at,
            pre_upgrade: m.purpose == BackupPurpose::PreUpgrade,
        })
        .collect();
    let decision = policy.select_expired(&candidates);
    let (deletable, locked) = hold_locked(
        &decision.expire,
        |id| {
            catalog
                .complete
                .iter()
                .find(|m| m.id == id)
                .and_then(|m| m.object_lock.as_ref())
        },
        now,
    );
    for held in &locked {
        tracing::info!(backup = %held.id, until = %held.deletable_after, "expired backup kept: object lock");
    }
    let mut freed = 0u64;
    for id in &deletable {
        let objects = catalog
            .objects
            .get(&(instance.to_string(), id.clone()))
            .cloned()
            .unwrap_or_default();
        freed += objects.iter().map(|o| o.size).sum::<u64>();
        if dry_run {
            continue;
        }
        let manifest_key = format!("{instance}/{id}/{MANIFEST_FILE}");
        repo.delete(std::slice::from_ref(&manifest_key)).await?;
        let rest: Vec<String> = objects
            .into_iter()
            .map(|o| o.key)
            .filter(|k| *k != manifest_key)
            .collect();
        repo.delete(&rest).await?;
        tracing::info!(backup = %id, "deleted expired backup");
    }
    let stale = select_stale_incomplete(&catalog.incomplete, now);
    for debris in &stale {
        freed += debris.objects.iter().map(|o| o.size).sum::<u64>();
        if !dry_run {
            // The manifest of a set that lost an object goes first, as for expired backups.
            let mut keys: Vec<String> = debris.objects.iter().map(|o| o.key.clone()).collect();
            keys.sort_by_key(|k| !k.ends_with(&format!("/{MANIFEST_FILE}")));
            repo.delete(&keys).await?;
            tracing::info!(backup = %debris.id, reason = %debris.reason, "deleted abandoned incomplete backup");
        }
    }
    let uploads = repo.pending_uploads(&format!("{instance}/")).await?;
    let stale_uploads = select_stale_uploads(&uploads, &catalog.incomplete, now);
    if !dry_run {
        for upload in &stale_uploads {
            repo.abort_upload(upload).await?;
        }
    }
    Ok(PruneReport {
        instance: instance.to_string(),
        dry_run,
        kept: decision.keep,
        deleted: deletable,
        locked,
        incomplete_deleted: stale.iter().map(|d| d.id.clone()).collect(),
        aborted_uploads: stale_uploads.len(),
        freed_bytes: freed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::catalog::Incompleteness;
    use crate::backup::lease::Lease;
    use crate::backup::repo::ObjectMeta;
    use chrono::Duration;

    fn debris(id: &str, age_hours: i64, lease_beat_hours_ago: Option<i64>) -> IncompleteBackup {
        let now = Utc::now();
        IncompleteBackup {
            instance: "hmis".into(),
            id: id.into(),
            objects: vec![ObjectMeta {
                key: format!("hmis/{id}/database.pgdump.zst.partial"),
                size: 10,
                last_modified: now - Duration::hours(age_hours),
            }],
            reason: Incompleteness::NoManifest,
            lease: lease_beat_hours_ago.map(|h| Lease {
                backup_id: id.into(),
                started_at: now - Duration::hours(40),
                heartbeat_at: now - Duration::hours(h),
                host: "db1".into(),
                pid: 1,
            }),
        }
    }

    #[test]
    fn only_abandoned_debris_is_stale() {
        let now = Utc::now();
        let all = vec![
            debris("running", 1, None),
            debris("old", 30, None),
            // 30 hours of dump with no part visible yet, but the lease beats: alive.
            debris("long-running", 30, Some(0)),
            debris("dead", 30, Some(5)),
        ];
        let stale: Vec<&str> = select_stale_incomplete(&all, now)
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(stale, vec!["old", "dead"]);
    }

    #[test]
    fn uploads_follow_their_backups_lease_not_their_start() {
        let now = Utc::now();
        let upload = |id: &str, started_hours_ago: i64| PendingUpload {
            key: format!("hmis/{id}/database.pgdump.zst"),
            upload_id: format!("u-{id}"),
            initiated: now - Duration::hours(started_hours_ago),
        };
        let sets = vec![
            debris("long-running", 30, Some(0)),
            debris("dead", 30, Some(5)),
        ];
        let uploads = vec![
            upload("long-running", 30),
            upload("dead", 30),
            upload("orphan-old", 30),
            upload("orphan-new", 1),
        ];
        let stale: Vec<&str> = select_stale_uploads(&uploads, &sets, now)
            .iter()
            .map(|u| u.upload_id.as_str())
            .collect();
        assert_eq!(stale, vec!["u-dead", "u-orphan-old"]);
    }

    #[test]
    fn zero_keeps_are_refused_naming_the_flag() {
        let p = RetentionPolicy {
            keep_daily: Some(7),
            keep_last: Some(0),
            ..Default::default()
        };
        let e = check_policy(&p).unwrap_err().to_string();
        assert!(e.starts_with("--keep-last 0"), "{e}");
        assert!(check_policy(&RetentionPolicy::default()).is_err());
        let ok = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        assert!(check_policy(&ok).is_ok());
    }
}
