//! `drill`: proves a backup restores. Restores it into an empty scratch database, checks row
//! counts, regenerated tables, extensions and the DHIS2 schema version against the manifest,
//! wipes the scratch database again, and reports RPO (age of the backup) and RTO (time to a
//! checked restore).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::postgres::DatabaseTarget;
use crate::progress::Progress;

use super::error::BackupError;
use super::inventory;
use super::manifest::BackupManifest;
use super::restore::{RestoreRequest, restore_backup};
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
    progress: Progress,
) -> Result<DrillReport, BackupError> {
    let started_at = Utc::now();
    let client = scratch.connect().await?;
    let (count, examples) = inventory::user_relations(scratch, &client).await?;
    if count > 0 {
        return Err(BackupError::Input(format!(
            "--scratch-database-url: {scratch} is not empty ({count} relations, e.g. {}); a drill restores into an empty database and wipes it afterwards, so give an empty one (CREATE DATABASE dhis2_drill)",
            examples.join(", ")
        )));
    }
    let clock = Instant::now();
    let request = RestoreRequest {
        database: scratch.clone(),
        files_dir: None,
        dhis_conf: None,
        force: false,
        pg_bin_dir,
    };
    let outcome = match restore_backup(repo, manifest, &request, progress).await {
        Ok(_) => inspect(scratch, &client, manifest).await,
        Err(e) => Err(e),
    };
    let rto_seconds = clock.elapsed().as_secs_f64();
    // The scratch database goes back to empty whatever happened.
    let cleanup = inventory::clear_database(scratch, &client).await;
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
            "could not empty the scratch database afterwards: {e}"
        ));
    }
    Ok(DrillReport {
        backup_id: manifest.id.clone(),
        instance: manifest.instance.clone(),
        started_at,
        passed: failures.is_empty(),
        rpo_seconds: (started_at - manifest.completed_at).num_seconds().max(0),
        rto_seconds,
        checks,
        failures,
    })
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
