//! `drill`: proves a backup restores. Restores it into a database of its own beside the scratch
//! database (`<scratch>__drill_<id>`), checks row counts, regenerated tables, extensions and the
//! DHIS2 schema version against the manifest, drops that database again, and reports RPO (the
//! data a disaster now would lose: time since the backup's snapshot was taken) and RTO (time to
//! a checked restore). The scratch database itself is only the way in and must be empty.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::postgres::DatabaseTarget;
use crate::progress::Progress;

use super::encryption::{DecryptWith, check_key_opens};
use super::error::BackupError;
use super::inventory;
use super::manifest::BackupManifest;
use super::restore::restore_dump;
use super::restore_plan::free_name;
use super::side_database::Maintenance;
use super::table_rules::TableName;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillCheck {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    pub backup_id: String,
    pub instance: String,
    pub started_at: DateTime<Utc>,
    pub passed: bool,
    /// Age of the backup when the drill ran: the data a disaster now would lose.
    pub rpo_seconds: i64,
    /// Time from the start of the restore to a checked database.
    pub rto_seconds: f64,
    pub checks: Vec<DrillCheck>,
    pub failures: Vec<String>,
}

/// Compares what the scratch database holds with what the manifest promises (pure).
pub fn compare_with_manifest(
    manifest: &BackupManifest,
    restored_counts: &HashMap<String, i64>,
    restored_extensions: &[String],
    restored_schema_version: Option<&str>,
) -> Vec<DrillCheck> {
    let mut checks = Vec::new();
    let mut wrong_counts = Vec::new();
    let mut missing = Vec::new();
    let mut not_empty = Vec::new();
    let mut rows_checked = 0i64;
    for t in &manifest.tables {
        let name = TableName::new(&t.schema, &t.name).qualified();
        match (restored_counts.get(&name), t.rows) {
            (None, _) => missing.push(name),
            (Some(&n), Some(expected)) if t.data_included => {
                rows_checked += expected;
                if n != expected {
                    wrong_counts.push(format!("{name}: {n} rows, backup had {expected}"));
                }
            }
            (Some(&n), _) if n != 0 => not_empty.push(format!("{name}: {n} rows")),
            _ => {}
        }
    }
    let included = manifest.tables.iter().filter(|t| t.data_included).count();
    checks.push(DrillCheck {
        name: "tables present".into(),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("all {} tables restored", manifest.tables.len())
        } else {
            format!("missing: {}", missing.join(", "))
        },
    });
    checks.push(DrillCheck {
        name: "row counts".into(),
        passed: wrong_counts.is_empty(),
        detail: if wrong_counts.is_empty() {
            format!("{included} tables, {rows_checked} rows match the manifest")
        } else {
            wrong_counts.join("; ")
        },
    });
    checks.push(DrillCheck {
        name: "regenerated tables empty".into(),
        passed: not_empty.is_empty(),
        detail: if not_empty.is_empty() {
            format!(
                "{} analytics/resource tables present without data",
                manifest.skipped_table_data.len()
            )
        } else {
            not_empty.join("; ")
        },
    });
    let missing_ext: Vec<&str> = manifest
        .extensions
        .iter()
        .filter(|e| !restored_extensions.contains(&e.name))
        .map(|e| e.name.as_str())
        .collect();
    checks.push(DrillCheck {
        name: "extensions".into(),
        passed: missing_ext.is_empty(),
        detail: if missing_ext.is_empty() {
            let names: Vec<&str> = manifest
                .extensions
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            format!(
                "present: {}",
                if names.is_empty() {
                    "none needed".to_string()
                } else {
                    names.join(", ")
                }
            )
        } else {
            format!("missing: {}", missing_ext.join(", "))
        },
    });
    let expected = manifest.dhis2_schema_version.as_deref();
    checks.push(DrillCheck {
        name: "DHIS2 schema version".into(),
        passed: expected == restored_schema_version,
        detail: format!(
            "restored {}, backup {}",
            restored_schema_version.unwrap_or("none"),
            expected.unwrap_or("none")
        ),
    });
    checks
}

pub async fn run_drill(
    repo: &super::repo::Repository,
    manifest: &BackupManifest,
    scratch: &DatabaseTarget,
    pg_bin_dir: Option<PathBuf>,
    key: &DecryptWith,
    progress: Progress,
) -> Result<DrillReport, BackupError> {
    let started_at = Utc::now();
    // Before the drill creates anything: a drill that cannot decrypt proves nothing.
    check_key_opens(repo, manifest, key).await?;
    let client = scratch.connect().await?;
    let (count, examples) = inventory::user_objects(scratch, &client).await?;
    if count > 0 {
        return Err(BackupError::Input(format!(
            "--scratch-database-url: {scratch} is not empty ({count} objects, e.g. {}); a drill needs a database nobody else uses, so give an empty one (CREATE DATABASE dhis2_drill)",
            examples.join(", ")
        )));
    }
    drop(client);
    let admin = Maintenance::connect(scratch).await?;
    let taken = admin.databases_starting_with(scratch.dbname()).await?;
    let side_name = free_name(scratch.dbname(), "drill", &manifest.id, &taken);
    let side = scratch.with_dbname(&side_name);
    let clock = Instant::now();
    let role = admin.role().await?;
    // Only what the drill made goes away, whatever happened: nothing if it could not create it.
    let (outcome, cleanup) = match admin.create_database(&side_name, &role.name, None).await {
        Ok(()) => {
            let outcome =
                restore_and_inspect(&side, repo, manifest, pg_bin_dir, key, &progress).await;
            (outcome, admin.drop_database(&side_name).await)
        }
        Err(e) => (Err(e), Ok(())),
    };
    let rto_seconds = clock.elapsed().as_secs_f64();
    let mut failures = Vec::new();
    let checks = match outcome {
        Ok(checks) => checks,
        Err(e) => {
            failures.push(format!("restore failed: {e}"));
            Vec::new()
        }
    };
    failures.extend(
        checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail)),
    );
    if let Err(e) = cleanup {
        failures.push(format!(
            "could not drop the drill's database afterwards: {e}"
        ));
    }
    Ok(DrillReport {
        backup_id: manifest.id.clone(),
        instance: manifest.instance.clone(),
        started_at,
        passed: failures.is_empty(),
        rpo_seconds: rpo_seconds(manifest, started_at),
        rto_seconds,
        checks,
        failures,
    })
}

/// The data a disaster at `now` would lose: everything since the backup's snapshot, which is
/// taken when the backup starts, not when it completes.
pub fn rpo_seconds(manifest: &BackupManifest, now: DateTime<Utc>) -> i64 {
    (now - manifest.started_at).num_seconds().max(0)
}

async fn restore_and_inspect(
    side: &DatabaseTarget,
    repo: &super::repo::Repository,
    manifest: &BackupManifest,
    pg_bin_dir: Option<PathBuf>,
    key: &DecryptWith,
    progress: &Progress,
) -> Result<Vec<DrillCheck>, BackupError> {
    restore_dump(repo, manifest, side, pg_bin_dir.as_deref(), key, progress).await?;
    let client = side.connect().await?;
    let checks = inspect(side, &client, manifest).await;
    drop(client);
    checks
}

async fn inspect(
    scratch: &DatabaseTarget,
    client: &tokio_postgres::Client,
    manifest: &BackupManifest,
) -> Result<Vec<DrillCheck>, BackupError> {
    let tables = inventory::user_tables(scratch, client).await?;
    let counts = inventory::row_counts(scratch, client, &tables).await?;
    let restored: HashMap<String, i64> = tables
        .iter()
        .map(TableName::qualified)
        .zip(counts)
        .collect();
    let extensions: Vec<String> = inventory::extensions(scratch, client)
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    let version = inventory::dhis2_schema_version(scratch, client).await?;
    Ok(compare_with_manifest(
        manifest,
        &restored,
        &extensions,
        version.as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpo_counts_from_the_backups_start() {
        // A long backup: the data is as old as its snapshot, not its completion.
        let manifest: BackupManifest = serde_json::from_value(serde_json::json!({
            "formatVersion": 1, "id": "20261125T010000Z-0000", "instance": "hmis",
            "startedAt": "2026-11-25T01:00:00Z", "completedAt": "2026-11-25T04:00:00Z",
            "database": "dhis2", "dhis2SchemaVersion": null, "postgresVersion": "15",
            "extensions": [], "includeAnalytics": false, "objects": [], "tables": [],
            "skippedTableData": [],
            "tool": {"name": "dhis2ctl", "version": "0", "pgDump": ""}
        }))
        .unwrap();
        let now = manifest.started_at + chrono::Duration::hours(5);
        assert_eq!(rpo_seconds(&manifest, now), 5 * 3600);
    }
}
