//! `backup run`: one consistent, DHIS2-aware backup set — database dump, file store, dhis.conf —
//! and, only when all of it is stored, the manifest that makes it exist.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use chrono::Utc;

use crate::postgres::DatabaseTarget;
use crate::progress::Progress;

use super::error::{BackupError, validate_instance_name};
use super::inventory;
use super::manifest::{
    BackupManifest, DATABASE_OBJECT, DHIS_CONF_OBJECT, FILESTORE_OBJECT, MANIFEST_FILE,
    MANIFEST_FORMAT_VERSION, ObjectKind, TableRecord, ToolRecord, new_backup_id, skipped_names,
};
use super::pg_tools::PgTools;
use super::repo::Repository;
use super::store::store_compressed;
use super::stream::{ProgressReader, ProgressWriter};
use super::table_rules::tables_with_skipped_data;

#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub instance: String,
    pub database: DatabaseTarget,
    pub files_dir: Option<PathBuf>,
    pub dhis_conf: Option<PathBuf>,
    pub include_analytics: bool,
    pub pg_bin_dir: Option<PathBuf>,
    /// zstd level, 1 (fastest) to 19 (smallest).
    pub zstd_level: i32,
}

pub fn object_key(instance: &str, id: &str, object: &str) -> String {
    format!("{instance}/{id}/{object}")
}

/// Checks the inputs that need no network, so a typo fails in milliseconds.
fn check_request(req: &BackupRequest) -> Result<(), BackupError> {
    validate_instance_name(&req.instance)?;
    if !(1..=19).contains(&req.zstd_level) {
        return Err(BackupError::Input(format!(
            "--zstd-level: {} is out of range; use 1 (fastest) to 19 (smallest), default 3",
            req.zstd_level
        )));
    }
    if let Some(dir) = &req.files_dir
        && !dir.is_dir()
    {
        return Err(BackupError::Input(format!(
            "--files-dir: {} is not a directory; give the DHIS2 file store directory (e.g. /opt/dhis2/files)",
            dir.display()
        )));
    }
    if let Some(conf) = &req.dhis_conf
        && !conf.is_file()
    {
        return Err(BackupError::Input(format!(
            "--dhis-conf: {} is not a file; give the path of dhis.conf (e.g. /opt/dhis2/dhis.conf)",
            conf.display()
        )));
    }
    Ok(())
}

pub async fn run_backup(
    repo: &Repository,
    req: &BackupRequest,
    progress: Progress,
) -> Result<BackupManifest, BackupError> {
    check_request(req)?;
    let started_at = Utc::now();
    let id = new_backup_id(started_at, rand::random());
    let result = write_backup(repo, req, progress, &id, started_at).await;
    if result.is_err() {
        // Tidy what this attempt stored; it is invisible without a manifest either way.
        let prefix = format!("{}/{id}/", req.instance);
        if let Ok(objects) = repo.list(&prefix).await {
            let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
            let _ = repo.delete(&keys).await;
        }
    }
    result
}

async fn write_backup(
    repo: &Repository,
    req: &BackupRequest,
    progress: Progress,
    id: &str,
    started_at: chrono::DateTime<Utc>,
) -> Result<BackupManifest, BackupError> {
    let db = &req.database;
    let client = db.connect().await?;
    let snapshot = inventory::export_snapshot(db, &client).await?;
    let (postgres_version, version_num) = inventory::server_version(db, &client).await?;
    let extensions = inventory::extensions(db, &client).await?;
    let tables = inventory::user_tables(db, &client).await?;
    let dhis2_schema_version = inventory::dhis2_schema_version(db, &client).await?;
    let skipped = tables_with_skipped_data(&tables, req.include_analytics);
    let included: Vec<_> = tables
        .iter()
        .filter(|t| !skipped.contains(t))
        .cloned()
        .collect();
    tracing::info!(
        backup = id,
        tables = tables.len(),
        skipped = skipped.len(),
        "starting backup of {db}"
    );

    let tools = PgTools::locate(req.pg_bin_dir.as_deref(), (version_num / 10000) as u32);
    let mut cmd = tools.command("pg_dump", db);
    cmd.args(["--format=custom", "--compress=0", "--no-password"])
        .arg(format!("--snapshot={snapshot}"))
        .args(
            skipped
                .iter()
                .map(|t| format!("--exclude-table-data={}", t.exact_pg_dump_pattern())),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let bar = progress.bytes("database", None);
    let dump_tools = tools.clone();
    let dump_bar = bar.clone();
    let dump_key = object_key(&req.instance, id, DATABASE_OBJECT);
    let dump = store_compressed(
        repo,
        &dump_key,
        DATABASE_OBJECT,
        ObjectKind::Database,
        req.zstd_level,
        move |out| {
            let mut running = dump_tools.spawn("pg_dump", cmd)?;
            let Some(stdout) = running.child.stdout.take() else {
                running.kill();
                return Err(BackupError::io("pg_dump", io::Error::other("no stdout")));
            };
            let mut reader = ProgressReader::new(stdout, dump_bar);
            match io::copy(&mut reader, out) {
                Ok(_) => running.finish().map(|_| ()),
                Err(e) => {
                    running.kill();
                    Err(BackupError::io("streaming pg_dump output", e))
                }
            }
        },
    );
    // Counted in the dump's own snapshot, while the dump runs.
    let counts = async {
        inventory::row_counts(db, &client, &included)
            .await
            .map_err(BackupError::from)
    };
    let (database_object, counts) = tokio::try_join!(dump, counts)?;
    bar.finish_and_clear();
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| db.query_error("ending the snapshot transaction", e))?;

    let mut objects = vec![database_object];
    if let Some(dir) = req.files_dir.clone() {
        let bar = progress.bytes("file store", None);
        let files_bar = bar.clone();
        objects.push(
            store_compressed(
                repo,
                &object_key(&req.instance, id, FILESTORE_OBJECT),
                FILESTORE_OBJECT,
                ObjectKind::FileStore,
                req.zstd_level,
                move |out| {
                    let mut tar = tar::Builder::new(ProgressWriter {
                        inner: out,
                        bar: files_bar,
                    });
                    tar.follow_symlinks(false);
                    tar.append_dir_all("filestore", &dir)
                        .and_then(|_| tar.finish())
                        .map_err(|e| BackupError::io(format!("archiving {}", dir.display()), e))
                },
            )
            .await?,
        );
        bar.finish_and_clear();
    }
    if let Some(conf) = req.dhis_conf.clone() {
        // Owner and mode go into the manifest: a restore puts dhis.conf back readable by DHIS2 only.
        let posix = super::manifest::PosixMetadata::of(&conf)
            .map_err(|e| BackupError::io(format!("reading {}", conf.display()), e))?;
        let mut object = store_compressed(
            repo,
            &object_key(&req.instance, id, DHIS_CONF_OBJECT),
            DHIS_CONF_OBJECT,
            ObjectKind::DhisConf,
            req.zstd_level,
            move |out| {
                let mut file = std::fs::File::open(&conf)
                    .map_err(|e| BackupError::io(format!("reading {}", conf.display()), e))?;
                let mut data = Vec::new();
                file.read_to_end(&mut data)
                    .map_err(|e| BackupError::io(format!("reading {}", conf.display()), e))?;
                out.write_all(&data)
                    .map_err(|e| BackupError::io("storing dhis.conf", e))
            },
        )
        .await?;
        object.posix = Some(posix);
        objects.push(object);
    }

    let table_records = tables
        .iter()
        .map(|t| {
            let position = included.iter().position(|i| i == t);
            TableRecord {
                schema: t.schema.clone(),
                name: t.name.clone(),
                rows: position.map(|p| counts[p]),
                data_included: position.is_some(),
            }
        })
        .collect();
    let manifest = BackupManifest {
        format_version: MANIFEST_FORMAT_VERSION,
        id: id.to_string(),
        instance: req.instance.clone(),
        started_at,
        completed_at: Utc::now(),
        database: db.dbname().to_string(),
        dhis2_schema_version,
        postgres_version,
        extensions,
        include_analytics: req.include_analytics,
        objects,
        tables: table_records,
        skipped_table_data: skipped_names(&skipped),
        tool: ToolRecord {
            name: "dhis2ctl".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pg_dump: tools.version("pg_dump"),
        },
    };
    let body = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::io("encoding the manifest", io::Error::other(e)))?;
    // Last: from this moment the backup exists.
    repo.put_bytes(
        &object_key(&req.instance, id, MANIFEST_FILE),
        Bytes::from(body),
    )
    .await?;
    tracing::info!(backup = id, "backup complete");
    Ok(manifest)
}
