//! `backup restore`: carries out a `RestorePlan`. The dump is read once, streamed into a side
//! database while its SHA-256 is checked; row counts are compared with the manifest; only then
//! are the target's sessions closed and the side database swapped in. Any failure before that
//! drops the side database and the staged files: the target stays exactly as it was.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::job_report::{JobReport, RestoreJobReport};
use crate::output::human_bytes;
use crate::postgres::DatabaseTarget;
use crate::progress::Progress;

use super::encryption::{DecryptWith, check_key_opens, open_compressed};
use super::error::BackupError;
use super::file_restore::{StagedFileStore, read_dhis_conf, stage_file_store, write_dhis_conf};
use super::inventory;
use super::manifest::{BackupManifest, ObjectKind, StoredObject};
use super::object_reader::blocking_reader;
use super::pg_tools::{PgTools, dbname_conninfo};
use super::repo::Repository;
use super::restore_plan::{
    PathState, RestoreFacts, RestoreOptions, RestorePlan, RestoreStep, leftover_side_databases,
    resolve_owner,
};
use super::room_check::{Room, SpaceCheck, check_room, free_on_volume, needed_for};
use super::side_database::{Maintenance, count_rows, hand_over_ownership};
use super::stream::{HashingReader, ProgressReader};
use super::table_rules::TableName;
use super::verify::{check_digest, dump_major};

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub database: DatabaseTarget,
    pub files_dir: Option<PathBuf>,
    pub dhis_conf: Option<PathBuf>,
    pub force: bool,
    /// Who owns the restored objects (default: the target's owner, else the connecting role).
    pub owner: Option<String>,
    /// Drop the replaced database at once instead of keeping it.
    pub drop_replaced: bool,
    pub pg_bin_dir: Option<PathBuf>,
    /// What opens an encrypted backup (empty for unencrypted ones).
    pub key: DecryptWith,
    /// Whether and how the room for the restored database is checked first.
    pub space: SpaceCheck,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub id: String,
    pub instance: String,
    pub target: String,
    pub owner: String,
    pub dhis2_schema_version: Option<String>,
    pub duration_seconds: f64,
    /// Sessions on the target that were closed for the swap.
    pub closed_connections: u64,
    /// The previous database, renamed aside (None when there was none or it was dropped).
    pub replaced_database: Option<String>,
    pub dropped_replaced_database: bool,
    /// Side databases of earlier restores that were killed before they could drop them.
    pub dropped_leftovers: Vec<String>,
    /// Whether the server had room for the restored database, or why that was not checked.
    pub space_check: String,
    pub files_dir: Option<String>,
    pub dhis_conf: Option<String>,
    /// Where replaced files were moved, so nothing is lost.
    pub kept_aside: Vec<String>,
    pub next_steps: Vec<String>,
}

fn path_state(path: &std::path::Path, dir: bool) -> Result<PathState, BackupError> {
    if !dir {
        return Ok(if path.exists() {
            PathState::NotEmpty
        } else {
            PathState::Missing
        });
    }
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(
            if entries
                .all(|e| e.is_ok_and(|e| super::file_restore::is_volume_entry(&e.file_name())))
            {
                PathState::Empty
            } else {
                PathState::NotEmpty
            },
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PathState::Missing),
        Err(e) => Err(BackupError::io(format!("reading {}", path.display()), e)),
    }
}

/// Wrong flags for this backup.
fn check_flags(manifest: &BackupManifest, req: &RestoreRequest) -> Result<(), BackupError> {
    if req.files_dir.is_some() && manifest.object(ObjectKind::FileStore).is_none() {
        return Err(BackupError::Input(format!(
            "--files-dir: backup {} holds no file store (it was taken without --files-dir); leave the flag out",
            manifest.id
        )));
    }
    if req.dhis_conf.is_some() && manifest.object(ObjectKind::DhisConf).is_none() {
        return Err(BackupError::Input(format!(
            "--dhis-conf: backup {} holds no dhis.conf (it was taken without --dhis-conf); leave the flag out",
            manifest.id
        )));
    }
    Ok(())
}

async fn gather_facts(
    admin: &Maintenance,
    manifest: &BackupManifest,
    req: &RestoreRequest,
) -> Result<RestoreFacts, BackupError> {
    let db = &req.database;
    let role = admin.role().await?;
    let target_owner = admin.database_owner(db.dbname()).await?;
    let (target_relations, target_examples) = if target_owner.is_some() {
        let client = db.connect().await?;
        inventory::user_relations(db, &client).await?
    } else {
        (0, Vec::new())
    };
    let owner = resolve_owner(req.owner.as_deref(), target_owner.as_deref(), &role.name);
    let owner_exists = admin.role_exists(&owner).await?;
    let role_acts_as_owner = owner_exists && admin.acts_as(&owner).await?;
    let role_acts_as_target_owner = match &target_owner {
        Some(o) => admin.acts_as(o).await?,
        None => true,
    };
    let names: Vec<String> = manifest.extensions.iter().map(|e| e.name.clone()).collect();
    let extensions = admin.extensions(&names).await?;
    let files_dir = match &req.files_dir {
        Some(d) => Some((d.display().to_string(), path_state(d, true)?)),
        None => None,
    };
    let dhis_conf = match &req.dhis_conf {
        Some(c) => Some((c.display().to_string(), path_state(c, false)?)),
        None => None,
    };
    // Shortened side names start with a shorter prefix; a few extra names cost nothing.
    let prefix: String = db.dbname().chars().take(8).collect();
    let taken_names = admin.databases_starting_with(&prefix).await?;
    Ok(RestoreFacts {
        taken_names,
        target: db.dbname().to_string(),
        target_owner,
        target_relations,
        target_examples,
        role,
        owner,
        owner_exists,
        role_acts_as_owner,
        role_acts_as_target_owner,
        extensions,
        files_dir,
        dhis_conf,
    })
}

/// What the steps before the swap produced, and what to undo if a later one fails.
#[derive(Default)]
struct Progressed {
    conf: Option<Vec<u8>>,
    staged: Option<StagedFileStore>,
    side_created: Option<String>,
}

pub async fn restore_backup(
    repo: &Repository,
    manifest: &BackupManifest,
    req: &RestoreRequest,
    progress: Progress,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    check_flags(manifest, req)?;
    // Before any connection: a wrong key leaves the target and the server untouched.
    check_key_opens(repo, manifest, &req.key).await?;
    let admin = Maintenance::connect(&req.database).await?;
    let dropped_leftovers = drop_leftovers(&admin, req.database.dbname()).await?;
    let facts = gather_facts(&admin, manifest, req).await?;
    let options = RestoreOptions {
        force: req.force,
        drop_replaced: req.drop_replaced,
        restore_files: req.files_dir.is_some(),
        restore_conf: req.dhis_conf.is_some(),
    };
    let plan = RestorePlan::for_request(&facts, &options, &manifest.id, Utc::now())?;
    let space_check = check_space(&admin, manifest, req, &facts.taken_names).await?;
    tracing::info!(side = %plan.side, owner = %plan.owner, "restoring into a side database");

    let mut done = Progressed::default();
    let commit = plan
        .steps
        .iter()
        .position(RestoreStep::is_commit)
        .unwrap_or_else(|| {
            plan.steps
                .iter()
                .position(|s| matches!(s, RestoreStep::SwapDatabases { .. }))
                .unwrap_or(plan.steps.len())
        });
    for step in &plan.steps[..commit] {
        if let Err(e) = prepare(repo, manifest, req, &admin, step, &mut done, &progress).await {
            undo(&admin, done).await;
            return Err(e);
        }
    }

    let mut report = RestoreReport {
        id: manifest.id.clone(),
        instance: manifest.instance.clone(),
        target: req.database.to_string(),
        owner: plan.owner.clone(),
        dhis2_schema_version: manifest.dhis2_schema_version.clone(),
        duration_seconds: 0.0,
        closed_connections: 0,
        replaced_database: None,
        dropped_replaced_database: false,
        dropped_leftovers,
        space_check,
        files_dir: req.files_dir.as_ref().map(|d| d.display().to_string()),
        dhis_conf: req.dhis_conf.as_ref().map(|d| d.display().to_string()),
        kept_aside: Vec::new(),
        next_steps: Vec::new(),
    };
    let mut files_restored = None;
    for step in &plan.steps[commit..] {
        match step {
            RestoreStep::TerminateConnections { database } => {
                match admin.close_connections(database).await {
                    Ok(n) => report.closed_connections += n,
                    Err(e) => {
                        undo(&admin, done).await;
                        return Err(e);
                    }
                }
            }
            RestoreStep::SwapDatabases {
                target,
                side,
                replaced,
            } => {
                match admin.swap(target, side, replaced.as_deref()).await {
                    Ok(n) => report.closed_connections += n,
                    Err(e) => {
                        undo(&admin, done).await;
                        return Err(e);
                    }
                }
                if report.closed_connections > 0 {
                    tracing::warn!(
                        "closed {} connections to {target} to swap the restored database in",
                        report.closed_connections
                    );
                }
                done.side_created = None;
                report.replaced_database = replaced.clone();
                // Should the engine die from here on, its report still says the database was
                // swapped in (the kubelet reads the report file however the container ended).
                record_after_swap(
                    &report,
                    None,
                    "the restore ended after the restored database was swapped in, before the file store and dhis.conf were restored",
                );
            }
            RestoreStep::DropReplaced { name } => match admin.drop_database(name).await {
                Ok(()) => {
                    report.replaced_database = None;
                    report.dropped_replaced_database = true;
                }
                // The restore itself succeeded: the old database is merely still there.
                Err(e) => tracing::warn!("--drop-replaced: {e}"),
            },
            RestoreStep::SwapFileStoreContents => {
                if let Some(staged) = done.staged.take() {
                    let swapped = run_blocking(move || staged.swap_in()).await;
                    if let Some(aside) = swapped.map_err(|e| after_swap(&report, None, e))? {
                        report.kept_aside.push(aside.display().to_string());
                    }
                    files_restored = report.files_dir.clone();
                }
            }
            RestoreStep::WriteDhisConf => {
                if let (Some(path), Some(content)) = (&req.dhis_conf, done.conf.take()) {
                    let recorded = manifest.object(ObjectKind::DhisConf).and_then(|o| o.posix);
                    let path = path.clone();
                    let written =
                        run_blocking(move || write_dhis_conf(&path, &content, recorded)).await;
                    if let Some(aside) =
                        written.map_err(|e| after_swap(&report, files_restored.clone(), e))?
                    {
                        report.kept_aside.push(aside.display().to_string());
                    }
                }
            }
            other => {
                return Err(BackupError::Input(format!(
                    "internal: step {other:?} after the swap"
                )));
            }
        }
    }
    report.duration_seconds = started.elapsed().as_secs_f64();
    report.next_steps = next_steps(manifest, req, &report);
    Ok(report)
}

/// Refuses, before anything is built, a restore the server has no room for (a volume that fills
/// half-way stops the server for every database on it); otherwise says what it found, or why it
/// could not measure (the report's `spaceCheck`).
async fn check_space(
    admin: &Maintenance,
    manifest: &BackupManifest,
    req: &RestoreRequest,
    taken_names: &[String],
) -> Result<String, BackupError> {
    let (free_bytes, free_from) = match req.space {
        SpaceCheck::Skip => return Ok("not checked (--skip-space-check)".into()),
        SpaceCheck::Volume { capacity_bytes } => {
            let used =
                admin.default_tablespace_bytes().await? + admin.wal_bytes().await.unwrap_or(0);
            (
                free_on_volume(capacity_bytes, used),
                format!(
                    "its data volume ({}, of which its databases and WAL take {})",
                    human_bytes(capacity_bytes),
                    human_bytes(used)
                ),
            )
        }
        SpaceCheck::Measure => match local_free_space(admin, &req.database).await {
            Ok(found) => found,
            Err(why) => {
                tracing::info!("free space on the database server not checked: {why}");
                return Ok(format!("not checked: {why}"));
            }
        },
    };
    let target = req.database.dbname();
    let prefix = format!("{target}__replaced_");
    let replaced_names: Vec<String> = taken_names
        .iter()
        .filter(|n| n.starts_with(&prefix))
        .cloned()
        .collect();
    let (needed_bytes, needed_from) = needed_for(manifest);
    let room = Room {
        needed_bytes,
        needed_from,
        free_bytes,
        free_from,
        replaced: admin.database_sizes(&replaced_names).await?,
    };
    check_room(&room, target).map_err(BackupError::Input)?;
    Ok(format!(
        "room for about {} ({}): {} free on {}",
        human_bytes(room.needed_bytes),
        room.needed_from,
        human_bytes(room.free_bytes),
        room.free_from
    ))
}

/// The free room where a server on this machine keeps its data.
async fn local_free_space(
    admin: &Maintenance,
    database: &DatabaseTarget,
) -> Result<(u64, String), String> {
    if !database.is_local() {
        return Err("the server is not on this machine (--database-volume-bytes with the size of its data volume checks it)".into());
    }
    let Some(dir) = admin.data_directory().await else {
        return Err("the role may not read the server's data_directory (a superuser or a member of pg_read_all_settings may)".into());
    };
    let stat = rustix::fs::statvfs(dir.as_str()).map_err(|e| format!("measuring {dir}: {e}"))?;
    Ok((
        stat.f_bavail.saturating_mul(stat.f_frsize),
        format!("the file system of the server's data directory {dir}"),
    ))
}

/// Drops what earlier restores into this target left when they were killed (their side
/// databases fill the volume, and the retry would pick yet another name). One with a session
/// belongs to a restore still running: left alone.
async fn drop_leftovers(admin: &Maintenance, target: &str) -> Result<Vec<String>, BackupError> {
    let names = admin.databases_starting_with(target).await?;
    let mut dropped = Vec::new();
    for name in leftover_side_databases(target, &names) {
        if admin.sessions_on(&name).await? > 0 {
            tracing::warn!(
                "{name} is in use (another restore into {target} is running?): left alone"
            );
            continue;
        }
        admin.drop_database(&name).await?;
        tracing::warn!(
            "dropped {name}, left behind by an earlier restore into {target} that was killed"
        );
        dropped.push(name);
    }
    Ok(dropped)
}

/// After SIGINT/SIGTERM: stops the tools the abandoned restore started and drops its side
/// database, once no session uses it any more (the killed `pg_restore`'s goes within moments).
/// The names dropped; none when the restore had not made one yet, or had swapped it in.
pub async fn undo_interrupted(database: &DatabaseTarget) -> Result<Vec<String>, BackupError> {
    super::pg_tools::terminate_running_tools();
    let admin = Maintenance::connect(database).await?;
    let target = database.dbname();
    let mut dropped = Vec::new();
    for _ in 0..50 {
        let names = admin.databases_starting_with(target).await?;
        let left = leftover_side_databases(target, &names);
        if left.is_empty() {
            break;
        }
        for name in left {
            if admin.sessions_on(&name).await? == 0 {
                admin.drop_database(&name).await?;
                dropped.push(name);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(dropped)
}

/// A failure once the database was swapped in must not read as if nothing happened: the error
/// says so, and so does the job report (a restore report with `failure`, never overwritten).
fn after_swap(
    report: &RestoreReport,
    files_restored: Option<String>,
    e: BackupError,
) -> BackupError {
    let kept = report
        .replaced_database
        .as_deref()
        .map(|r| format!(" (the previous one is kept as {r})"))
        .unwrap_or_default();
    let files = match &files_restored {
        Some(dir) => format!("the file store was restored into {dir}, but dhis.conf was not"),
        None => "the file store was not restored (the files are as they were)".to_string(),
    };
    let error = BackupError::Input(format!(
        "the database was restored into {}{kept}, but {files}: {e}",
        report.target
    ));
    crate::job_report::record_final(&after_swap_report(
        report,
        files_restored,
        &error.to_string(),
    ));
    error
}

/// What the operator reads of a restore whose database is swapped in but which did not finish.
fn after_swap_report(
    report: &RestoreReport,
    files_restored: Option<String>,
    failure: &str,
) -> JobReport {
    JobReport::Restore(RestoreJobReport {
        id: report.id.clone(),
        target: report.target.clone(),
        duration_seconds: report.duration_seconds,
        replaced_database: report.replaced_database.clone(),
        dhis2_schema_version: report.dhis2_schema_version.clone(),
        files_dir: files_restored,
        failure: Some(failure.to_string()),
    })
}

fn record_after_swap(report: &RestoreReport, files_restored: Option<String>, failure: &str) {
    crate::job_report::record(&after_swap_report(report, files_restored, failure));
}

fn next_steps(
    manifest: &BackupManifest,
    req: &RestoreRequest,
    report: &RestoreReport,
) -> Vec<String> {
    let mut steps = vec![
        "start DHIS2 against the restored database; it regenerates nothing by itself".to_string(),
    ];
    if !manifest.skipped_table_data.is_empty() {
        steps.push(format!(
            "regenerate analytics ({} tables were backed up without data): Data Administration → Analytics Tables, or POST /api/resourceTables/analytics",
            manifest.skipped_table_data.len()
        ));
    }
    if let Some(replaced) = &report.replaced_database {
        steps.push(format!(
            "the previous database is kept as {replaced}; once DHIS2 works, drop it: DROP DATABASE \"{replaced}\";"
        ));
    }
    if manifest.object(ObjectKind::DhisConf).is_some() && req.dhis_conf.is_none() {
        steps.push("the backup holds dhis.conf (with encryption.password): restore it with --dhis-conf if this server lacks it".into());
    }
    steps
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackupError::io("restore worker", io::Error::other(e)))?
}

/// The steps before the swap: they read the backup and write only to the side database and
/// the staging directory.
async fn prepare(
    repo: &Repository,
    manifest: &BackupManifest,
    req: &RestoreRequest,
    admin: &Maintenance,
    step: &RestoreStep,
    done: &mut Progressed,
    progress: &Progress,
) -> Result<(), BackupError> {
    match step {
        RestoreStep::ReadDhisConf => {
            if let Some(object) = manifest.object(ObjectKind::DhisConf) {
                done.conf = Some(read_dhis_conf(repo, manifest, object, &req.key).await?);
            }
        }
        RestoreStep::StageFileStore => {
            if let (Some(dir), Some(object)) =
                (&req.files_dir, manifest.object(ObjectKind::FileStore))
            {
                done.staged = Some(stage_file_store(repo, manifest, object, dir, &req.key).await?);
            }
        }
        RestoreStep::CreateSideDatabase { name, owner } => {
            let like = admin.database_owner(req.database.dbname()).await?;
            admin
                .create_database(name, owner, like.map(|_| req.database.dbname()))
                .await?;
            done.side_created = Some(name.clone());
        }
        RestoreStep::RestoreDump { database } => {
            let side = req.database.with_dbname(database);
            restore_dump(
                repo,
                manifest,
                &side,
                req.pg_bin_dir.as_deref(),
                &req.key,
                progress,
            )
            .await?;
        }
        RestoreStep::HandOverOwnership { database, to } => {
            let n = hand_over_ownership(&req.database.with_dbname(database), to).await?;
            tracing::info!("gave {n} restored objects to {to}");
        }
        RestoreStep::CheckRowCounts { database } => {
            check_row_counts(manifest, &req.database.with_dbname(database)).await?;
        }
        other => {
            return Err(BackupError::Input(format!(
                "internal: step {other:?} before the swap"
            )));
        }
    }
    Ok(())
}

/// Leaves everything as it was: drops the side database and the staged files.
async fn undo(admin: &Maintenance, done: Progressed) {
    if let Some(staged) = done.staged {
        staged.discard();
    }
    if let Some(side) = done.side_created
        && let Err(e) = admin.drop_database(&side).await
    {
        tracing::error!("{e}");
    }
}

/// Streams the dump once into `pg_restore` connected to `side`, checking size and SHA-256, and
/// decrypting with `key` when the backup is encrypted.
pub async fn restore_dump(
    repo: &Repository,
    manifest: &BackupManifest,
    side: &DatabaseTarget,
    pg_bin_dir: Option<&std::path::Path>,
    key: &DecryptWith,
    progress: &Progress,
) -> Result<(), BackupError> {
    let object = manifest
        .object(ObjectKind::Database)
        .ok_or_else(|| BackupError::Input("the backup holds no database dump".into()))?;
    let tools = PgTools::locate(pg_bin_dir, dump_major(manifest));
    let reader = blocking_reader(repo, manifest, object).await?;
    let bar = progress.bytes("restore", Some(object.size_bytes));
    let (m, o, t, d, b, k) = (
        manifest.clone(),
        object.clone(),
        tools,
        side.clone(),
        bar.clone(),
        key.clone(),
    );
    run_blocking(move || {
        stream_into_pg_restore(&m, &o, &t, &d, &k, ProgressReader::new(reader, b))
    })
    .await?;
    bar.finish_and_clear();
    Ok(())
}

fn stream_into_pg_restore<R: Read>(
    manifest: &BackupManifest,
    object: &StoredObject,
    tools: &PgTools,
    db: &DatabaseTarget,
    key: &DecryptWith,
    reader: R,
) -> Result<(), BackupError> {
    let mut hashing = HashingReader::new(reader);
    let mut cmd = tools.command("pg_restore", db);
    // Objects belong to the restoring role (then to --owner): the source's roles rarely exist
    // on the target.
    cmd.args([
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--no-password",
    ])
    .arg(format!("--dbname={}", dbname_conninfo(db.dbname())))
    .stdin(Stdio::piped())
    .stdout(Stdio::null());
    let mut running = tools.spawn("pg_restore", cmd)?;
    let mut stdin = running
        .child
        .stdin
        .take()
        .ok_or_else(|| BackupError::io("pg_restore", io::Error::other("no stdin")))?;
    let copied = {
        let decoder =
            open_compressed(object, &mut hashing, key).and_then(zstd::stream::read::Decoder::new);
        decoder.and_then(|mut d| io::copy(&mut d, &mut stdin))
    };
    drop(stdin);
    let restored = match copied {
        // pg_restore stopped reading: its own error says why.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => running
            .finish()
            .and(Err(BackupError::io("pg_restore stopped reading", e))),
        Err(e) => {
            running.kill();
            Err(BackupError::io(
                format!("reading {} from the backup repository", object.name),
                e,
            ))
        }
        Ok(_) => running.finish().map(|_| ()),
    };
    // A damaged dump explains whatever pg_restore or zstd said: read the rest and compare.
    let drained = hashing.drain();
    let (size, sha) = hashing.finish();
    if drained.is_ok() {
        check_digest(manifest, object, size, &sha)?;
    }
    restored?;
    drained.map_err(|e| {
        BackupError::io(
            format!("reading {} from the backup repository", object.name),
            e,
        )
    })
}

/// Every table whose data was backed up holds exactly the rows the manifest recorded.
async fn check_row_counts(
    manifest: &BackupManifest,
    side: &DatabaseTarget,
) -> Result<(), BackupError> {
    let tables: Vec<_> = manifest
        .tables
        .iter()
        .filter(|t| t.data_included && t.rows.is_some())
        .collect();
    let names: Vec<TableName> = tables
        .iter()
        .map(|t| TableName::new(&t.schema, &t.name))
        .collect();
    let counts = count_rows(side, &names).await?;
    let wrong: Vec<String> = tables
        .iter()
        .zip(&counts)
        .filter(|(t, n)| t.rows != Some(**n))
        .map(|(t, n)| {
            format!(
                "{}.{} has {n} rows, the manifest says {}",
                t.schema,
                t.name,
                t.rows.unwrap_or_default()
            )
        })
        .take(5)
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(BackupError::Damaged {
            backup: format!("{}/{}", manifest.instance, manifest.id),
            object: manifest
                .object(ObjectKind::Database)
                .map(|o| o.name.clone())
                .unwrap_or_else(|| super::manifest::DATABASE_OBJECT.to_string()),
            reason: format!("after restoring, {}", wrong.join("; ")),
        })
    }
}
