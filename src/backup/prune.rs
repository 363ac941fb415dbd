//! `backup prune`: applies retention to the complete backups of one instance and removes the
//! debris of incomplete ones (older than a day, so a backup still running is never touched).
//! A complete backup loses its manifest first: interrupted, it becomes incomplete debris that the
//! next prune removes, never a listed backup with missing parts.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::catalog::{IncompleteBackup, load_catalog};
use super::error::{BackupError, validate_instance_name};
use super::manifest::MANIFEST_FILE;
use super::repo::Repository;
use super::retention::{Candidate, Kept, RetentionPolicy};

/// How old debris must be before prune removes it: no backup runs this long unnoticed.
pub fn incomplete_grace() -> Duration {
    Duration::hours(24)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub instance: String,
    pub dry_run: bool,
    pub kept: Vec<Kept>,
    pub deleted: Vec<String>,
    pub incomplete_deleted: Vec<String>,
    pub aborted_uploads: usize,
    pub freed_bytes: u64,
}

/// A prune without a policy would delete every backup but the newest: refuse it.
pub fn check_policy(policy: &RetentionPolicy) -> Result<(), BackupError> {
    if policy.is_empty() {
        return Err(BackupError::Input(
            "prune needs a retention policy: give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly".into(),
        ));
    }
    Ok(())
}

/// Incomplete backups whose newest object is older than the grace period.
pub fn select_stale_incomplete(
    incomplete: &[IncompleteBackup],
    now: DateTime<Utc>,
) -> Vec<&IncompleteBackup> {
    incomplete
        .iter()
        .filter(|b| b.last_modified() < now - incomplete_grace())
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
        })
        .collect();
    let decision = policy.select_expired(&candidates);
    let mut freed = 0u64;
    for id in &decision.expire {
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
            let keys: Vec<String> = debris.objects.iter().map(|o| o.key.clone()).collect();
            repo.delete(&keys).await?;
        }
    }
    let aborted_uploads = repo
        .abort_stale_uploads(&format!("{instance}/"), now - incomplete_grace(), dry_run)
        .await?;
    Ok(PruneReport {
        instance: instance.to_string(),
        dry_run,
        kept: decision.keep,
        deleted: decision.expire,
        incomplete_deleted: stale.iter().map(|d| d.id.clone()).collect(),
        aborted_uploads,
        freed_bytes: freed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::repo::ObjectMeta;

    #[test]
    fn only_old_debris_is_stale() {
        let now = Utc::now();
        let debris = |id: &str, age_hours: i64| IncompleteBackup {
            instance: "hmis".into(),
            id: id.into(),
            objects: vec![ObjectMeta {
                key: format!("hmis/{id}/database.pgdump.zst"),
                size: 10,
                last_modified: now - Duration::hours(age_hours),
            }],
            reason: "no manifest".into(),
        };
        let all = vec![debris("running", 1), debris("old", 30)];
        let stale: Vec<&str> = select_stale_incomplete(&all, now)
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(stale, vec!["old"]);
    }
}
