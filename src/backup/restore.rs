//! `backup restore`: verifies the whole backup first, refuses a non-empty target without
//! `--force`, creates the extensions the dump needs, then streams the dump into `pg_restore`
//! (checking the checksum again on the way) and puts the file store and dhis.conf back. Replaced
//! files are kept aside, never deleted.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::postgres::{DatabaseTarget, quote_ident};
use crate::progress::Progress;

use super::error::BackupError;
use super::inventory;
use super::manifest::{BackupManifest, ObjectKind, StoredObject};
use super::pg_tools::{PgTools, dbname_conninfo};
use super::repo::Repository;
use super::stream::{HashingReader, ProgressReader};
use super::verify::{blocking_reader, check_digest, dump_major, verify_backup};

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub database: DatabaseTarget,
    pub files_dir: Option<PathBuf>,
    pub dhis_conf: Option<PathBuf>,
    pub force: bool,
    pub pg_bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub id: String,
    pub instance: String,
    pub target: String,
    pub dhis2_schema_version: Option<String>,
    pub duration_seconds: f64,
    pub files_dir: Option<String>,
    pub dhis_conf: Option<String>,
    /// Where replaced files were moved (with --force), so nothing is lost.
    pub kept_aside: Vec<String>,
    pub next_steps: Vec<String>,
}

fn dir_is_empty(dir: &Path) -> io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

fn aside_path(path: &Path) -> PathBuf {
    PathBuf::from(format!(
        "{}.replaced-{}",
        path.display(),
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ))
}

/// Refusals that need no download: wrong flags for this backup, occupied file targets.
fn check_request(manifest: &BackupManifest, req: &RestoreRequest) -> Result<(), BackupError> {
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
    if let Some(dir) = &req.files_dir
        && !req.force
        && !dir_is_empty(dir)
            .map_err(|e| BackupError::io(format!("reading {}", dir.display()), e))?
    {
        return Err(BackupError::FilesDirNotEmpty {
            dir: dir.display().to_string(),
        });
    }
    if let Some(conf) = &req.dhis_conf
        && !req.force
        && conf.exists()
    {
        return Err(BackupError::Input(format!(
            "--dhis-conf: {} exists; refusing to overwrite it without --force (the current file is then kept as {}.replaced-<time>)",
            conf.display(),
            conf.display()
        )));
    }
    Ok(())
}

pub async fn restore_backup(
    repo: &Repository,
    manifest: &BackupManifest,
    req: &RestoreRequest,
    progress: Progress,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    check_request(manifest, req)?;
    let db = &req.database;
    let client = db.connect().await?;
    let (count, examples) = inventory::user_relations(db, &client).await?;
    if count > 0 && !req.force {
        return Err(BackupError::TargetNotEmpty {
            target: db.to_string(),
            count,
            examples: examples.join(", "),
        });
    }
    // Nothing is touched until every object has proven intact.
    verify_backup(repo, manifest, req.pg_bin_dir.as_deref(), progress).await?;
    if count > 0 {
        tracing::warn!("--force: replacing the {count} relations in {db}");
        inventory::clear_database(db, &client).await?;
    }
    for ext in &manifest.extensions {
        client
            .batch_execute(&format!("CREATE EXTENSION IF NOT EXISTS {}", quote_ident(&ext.name)))
            .await
            .map_err(|e| BackupError::Input(format!(
                "the target server cannot create extension {} {} that the backup needs ({}); install it on the server (for PostGIS on Debian: postgresql-<version>-postgis-3)",
                ext.name,
                ext.version,
                crate::postgres::describe_pg_error(&e)
            )))?;
    }
    drop(client);

    let database_object = manifest
        .object(ObjectKind::Database)
        .ok_or_else(|| BackupError::Input("the backup holds no database dump".into()))?;
    let tools = PgTools::locate(req.pg_bin_dir.as_deref(), dump_major(manifest));
    let reader = blocking_reader(repo, manifest, database_object).await?;
    let bar = progress.bytes("restore", Some(database_object.size_bytes));
    {
        let (m, o, t, d, b) = (
            manifest.clone(),
            database_object.clone(),
            tools.clone(),
            db.clone(),
            bar.clone(),
        );
        tokio::task::spawn_blocking(move || {
            stream_into_pg_restore(&m, &o, &t, &d, ProgressReader::new(reader, b))
        })
        .await
        .map_err(|e| BackupError::io("restore worker", io::Error::other(e)))??;
    }
    bar.finish_and_clear();

    let mut kept_aside = Vec::new();
    if let (Some(dir), Some(object)) = (&req.files_dir, manifest.object(ObjectKind::FileStore))
        && let Some(aside) = restore_file_store(repo, manifest, object, dir).await?
    {
        kept_aside.push(aside.display().to_string());
    }
    if let (Some(conf), Some(object)) = (&req.dhis_conf, manifest.object(ObjectKind::DhisConf))
        && let Some(aside) = restore_dhis_conf(repo, manifest, object, conf).await?
    {
        kept_aside.push(aside.display().to_string());
    }
    let mut next_steps = vec![
        "start DHIS2 against the restored database; it regenerates nothing by itself".to_string(),
    ];
    if !manifest.skipped_table_data.is_empty() {
        next_steps.push(format!(
            "regenerate analytics ({} tables were backed up without data): Data Administration → Analytics Tables, or POST /api/resourceTables/analytics",
            manifest.skipped_table_data.len()
        ));
    }
    if manifest.object(ObjectKind::DhisConf).is_some() && req.dhis_conf.is_none() {
        next_steps.push("the backup holds dhis.conf (with encryption.password): restore it with --dhis-conf if this server lacks it".into());
    }
    Ok(RestoreReport {
        id: manifest.id.clone(),
        instance: manifest.instance.clone(),
        target: db.to_string(),
        dhis2_schema_version: manifest.dhis2_schema_version.clone(),
        duration_seconds: started.elapsed().as_secs_f64(),
        files_dir: req.files_dir.as_ref().map(|d| d.display().to_string()),
        dhis_conf: req.dhis_conf.as_ref().map(|d| d.display().to_string()),
        kept_aside,
        next_steps,
    })
}

fn stream_into_pg_restore<R: Read>(
    manifest: &BackupManifest,
    object: &StoredObject,
    tools: &PgTools,
    db: &DatabaseTarget,
    reader: R,
) -> Result<(), BackupError> {
    let mut hashing = HashingReader::new(reader);
    let mut cmd = tools.command("pg_restore", db);
    // Objects belong to the restoring user: the source's roles rarely exist on the target.
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
        let mut decoder = zstd::stream::read::Decoder::new(&mut hashing)
            .map_err(|e| BackupError::io("starting zstd", e))?;
        io::copy(&mut decoder, &mut stdin)
    };
    drop(stdin);
    match copied {
        // pg_restore stopped reading: its own error says why.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            running.finish()?;
            return Err(BackupError::io("pg_restore stopped reading", e));
        }
        Err(e) => {
            running.kill();
            return Err(BackupError::io(format!("reading {}", object.name), e));
        }
        Ok(_) => running.finish().map(|_| ())?,
    }
    hashing
        .drain()
        .map_err(|e| BackupError::io(format!("reading {}", object.name), e))?;
    let (size, sha) = hashing.finish();
    check_digest(manifest, object, size, &sha)
}

/// Extracts into a staging directory beside the target, then swaps it in; an existing
/// non-empty directory is renamed aside. Returns where the old contents went.
async fn restore_file_store(
    repo: &Repository,
    manifest: &BackupManifest,
    object: &StoredObject,
    dir: &Path,
) -> Result<Option<PathBuf>, BackupError> {
    let reader = blocking_reader(repo, manifest, object).await?;
    let (m, o, dir) = (manifest.clone(), object.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let staging = PathBuf::from(format!("{}.restoring-{}", dir.display(), m.id));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)
            .map_err(|e| BackupError::io(format!("creating {}", staging.display()), e))?;
        let mut hashing = HashingReader::new(reader);
        // The archive holds one top-level directory, `filestore/`; `unpack` refuses paths that
        // would escape the staging directory.
        let unpacked = zstd::stream::read::Decoder::new(&mut hashing).and_then(|decoder| {
            let mut archive = tar::Archive::new(decoder);
            archive.set_preserve_permissions(true);
            archive.unpack(&staging)
        });
        let drained = hashing.drain();
        let (size, sha) = hashing.finish();
        let cleanup = |e: BackupError| {
            let _ = std::fs::remove_dir_all(&staging);
            e
        };
        check_digest(&m, &o, size, &sha).map_err(cleanup)?;
        unpacked
            .and(drained)
            .map_err(|e| cleanup(BackupError::io("unpacking the file store", e)))?;
        let restored = staging.join("filestore");
        std::fs::create_dir_all(&restored)
            .map_err(|e| BackupError::io(format!("creating {}", restored.display()), e))?;
        let mut aside = None;
        if dir.exists() {
            if dir_is_empty(&dir).unwrap_or(false) {
                std::fs::remove_dir(&dir)
                    .map_err(|e| BackupError::io(format!("replacing {}", dir.display()), e))?;
            } else {
                let to = aside_path(&dir);
                std::fs::rename(&dir, &to)
                    .map_err(|e| BackupError::io(format!("moving {} aside", dir.display()), e))?;
                aside = Some(to);
            }
        }
        std::fs::rename(&restored, &dir).map_err(|e| {
            BackupError::io(
                format!("moving the restored file store to {}", dir.display()),
                e,
            )
        })?;
        let _ = std::fs::remove_dir_all(&staging);
        Ok(aside)
    })
    .await
    .map_err(|e| BackupError::io("restore worker", io::Error::other(e)))?
}

async fn restore_dhis_conf(
    repo: &Repository,
    manifest: &BackupManifest,
    object: &StoredObject,
    path: &Path,
) -> Result<Option<PathBuf>, BackupError> {
    let reader = blocking_reader(repo, manifest, object).await?;
    let (m, o, path) = (manifest.clone(), object.clone(), path.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut hashing = HashingReader::new(reader);
        let mut content = Vec::new();
        let decoded = zstd::stream::read::Decoder::new(&mut hashing)
            .and_then(|mut d| d.read_to_end(&mut content));
        let drained = hashing.drain();
        let (size, sha) = hashing.finish();
        check_digest(&m, &o, size, &sha)?;
        decoded
            .and(drained)
            .map_err(|e| BackupError::io("reading dhis.conf from the backup", e))?;
        let mut aside = None;
        if path.exists() {
            let to = aside_path(&path);
            std::fs::rename(&path, &to)
                .map_err(|e| BackupError::io(format!("moving {} aside", path.display()), e))?;
            aside = Some(to);
        }
        write_private_file(&path, &content)
            .map_err(|e| BackupError::io(format!("writing {}", path.display()), e))?;
        Ok(aside)
    })
    .await
    .map_err(|e| BackupError::io("restore worker", io::Error::other(e)))?
}

/// dhis.conf holds the database password and encryption.password: readable by its owner only.
fn write_private_file(path: &Path, content: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    file.sync_all()
}
