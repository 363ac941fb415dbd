//! `backup run`: one consistent, DHIS2-aware backup set — database dump, file store, dhis.conf —
//! and, only when all of it is stored, the manifest that makes it exist.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::postgres::DatabaseTarget;
use crate::progress::Progress;

use super::encryption::{EncryptTo, stored_name};
use super::error::{BackupError, validate_instance_name};
use super::inventory;
use super::lease::{HEARTBEAT_INTERVAL_SECONDS, Lease};
pub use super::manifest::BackupPurpose;
use super::manifest::{
    BackupManifest, DATABASE_OBJECT, DHIS_CONF_OBJECT, FILESTORE_OBJECT, LEASE_FILE, MANIFEST_FILE,
    MANIFEST_FORMAT_VERSION, ObjectKind, TableRecord, ToolRecord, new_backup_id, object_key,
    skipped_names,
};
use super::pg_tools::PgTools;
use super::repo::{RepoError, Repository};
use super::store::{ObjectTarget, store_compressed};
use super::stream::{FirstOutput, ProgressReader, ProgressWriter};
use super::table_rules::{TableName, tables_with_skipped_data};

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
    /// Encrypt every object with age (None: stored unencrypted).
    pub encrypt_to: Option<EncryptTo>,
    /// Recorded in the manifest: `BeforeRestore` keeps it out of `latest`.
    pub purpose: BackupPurpose,
}

/// Checks the inputs that need no network, so a typo fails in milliseconds.
fn check_request(req: &BackupRequest) -> Result<(), BackupError> {
    validate_instance_name(&req.instance)?;
    if !(1..=19).contains(&req.zstd_level) {
        return Err(BackupError::Usage(format!(
            "--zstd-level: {} is out of range; use 1 (fastest) to 19 (smallest), default 3",
            req.zstd_level
        )));
    }
    if let Some(dir) = &req.files_dir
        && !dir.is_dir()
    {
        return Err(BackupError::Usage(format!(
            "--files-dir: {} is not a directory; give the DHIS2 file store directory (e.g. /opt/dhis2/files)",
            dir.display()
        )));
    }
    if let Some(conf) = &req.dhis_conf
        && !conf.is_file()
    {
        return Err(BackupError::Usage(format!(
            "--dhis-conf: {} is not a file; give the path of dhis.conf (e.g. /opt/dhis2/dhis.conf)",
            conf.display()
        )));
    }
    Ok(())
}

/// DHIS2 decides a database is empty when it has no `organisationunit` table; so do we.
pub fn has_dhis2_tables(tables: &[TableName]) -> bool {
    tables.iter().any(|t| t.name == "organisationunit")
}

pub async fn run_backup(
    repo: &Repository,
    req: &BackupRequest,
    progress: Progress,
) -> Result<BackupManifest, BackupError> {
    check_request(req)?;
    let (id, started_at) = claim_backup_id(repo, &req.instance).await?;
    let lease_key = object_key(&req.instance, &id, LEASE_FILE);
    let (stop, stopped) = oneshot::channel();
    let work = async {
        let result = write_backup(repo, req, progress, &id, started_at).await;
        let _ = stop.send(());
        result
    };
    let beat = heartbeat(repo, &lease_key, Lease::new(&id, started_at), stopped);
    let (result, ()) = tokio::join!(work, beat);
    match &result {
        Ok(_) => {
            // The manifest exists: the lease has done its job (prune ignores it if left).
            if let Err(e) = repo.delete(std::slice::from_ref(&lease_key)).await {
                tracing::warn!(backup = %id, "could not remove the backup's lease: {e}");
            }
        }
        Err(_) => {
            // Tidy what this attempt stored; it is invisible without a manifest either way,
            // and on a full disk this frees the space again.
            let prefix = format!("{}/{id}/", req.instance);
            let mut keys = vec![lease_key.clone()];
            if let Ok(objects) = repo.list(&prefix).await {
                keys.extend(objects.into_iter().map(|o| o.key));
            }
            keys.sort_by_key(|k| !k.ends_with(&format!("/{MANIFEST_FILE}")));
            keys.dedup();
            let _ = repo.delete(&keys).await;
        }
    }
    result
}

/// Picks a fresh id and creates its lease only if absent, so two backups never share a set.
async fn claim_backup_id(
    repo: &Repository,
    instance: &str,
) -> Result<(String, DateTime<Utc>), BackupError> {
    for _ in 0..5 {
        let started_at = Utc::now();
        let id = new_backup_id(started_at, rand::random());
        let key = object_key(instance, &id, LEASE_FILE);
        match repo
            .put_bytes_if_absent(&key, lease_body(&Lease::new(&id, started_at))?)
            .await
        {
            Ok(()) => return Ok((id, started_at)),
            Err(RepoError::AlreadyExists { .. }) => continue,
            Err(e) => {
                let _ = repo.delete(&[key]).await;
                return Err(e.into());
            }
        }
    }
    Err(BackupError::io(
        "choosing a backup id",
        io::Error::other(
            "five random ids in a row were taken; is something copying backups into this repository?",
        ),
    ))
}

pub(crate) fn lease_body(lease: &Lease) -> Result<Bytes, BackupError> {
    serde_json::to_vec_pretty(lease)
        .map(Bytes::from)
        .map_err(|e| BackupError::io("encoding the lease", io::Error::other(e)))
}

/// Rewrites the lease every few minutes until `stop`, so prune knows the backup is alive. A
/// failed rewrite is only logged: the backup itself fails if the store is really gone.
pub(crate) async fn heartbeat(
    repo: &Repository,
    key: &str,
    mut lease: Lease,
    mut stop: oneshot::Receiver<()>,
) {
    let interval = std::env::var("DHIS2_LEASE_HEARTBEAT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(HEARTBEAT_INTERVAL_SECONDS);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(interval)) => {}
        }
        lease.heartbeat_at = Utc::now();
        let written = match lease_body(&lease) {
            Ok(body) => repo.put_bytes(key, body).await.map_err(BackupError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(backup = %lease.backup_id, "could not refresh the backup's lease: {e}");
        }
    }
}

async fn write_backup(
    repo: &Repository,
    req: &BackupRequest,
    progress: Progress,
    id: &str,
    started_at: DateTime<Utc>,
) -> Result<BackupManifest, BackupError> {
    let db = &req.database;
    let client = db.connect().await?;
    let snapshot = inventory::export_snapshot(db, &client).await?;
    let (postgres_version, version_num) = inventory::server_version(db, &client).await?;
    let extensions = inventory::extensions(db, &client).await?;
    let tables = inventory::user_tables(db, &client).await?;
    if !has_dhis2_tables(&tables) {
        tracing::warn!(
            "{db} holds no DHIS2 tables (no organisationunit table in any schema): is this the DHIS2 database? Backing it up anyway"
        );
    }
    let dhis2_schema_version = inventory::dhis2_schema_version(db, &client).await?;
    let skipped = tables_with_skipped_data(&tables, req.include_analytics);
    let restored_size_bytes = Some(inventory::restored_size(db, &client, &skipped).await?);
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
    let encrypted = req.encrypt_to.is_some();
    let target = |base: &str, kind| {
        let name = stored_name(base, encrypted);
        (object_key(&req.instance, id, &name), name, kind)
    };
    fn store<'a>(
        (key, name, kind): &'a (String, String, ObjectKind),
        req: &'a BackupRequest,
    ) -> ObjectTarget<'a> {
        ObjectTarget {
            key,
            name,
            kind: *kind,
            zstd_level: req.zstd_level,
            encrypt_to: req.encrypt_to.as_ref(),
        }
    }
    let dump_target = target(DATABASE_OBJECT, ObjectKind::Database);
    let (first_output, dump_started) = oneshot::channel();
    let dump = store_compressed(repo, store(&dump_target, req), move |out| {
        let mut running = dump_tools.spawn("pg_dump", cmd)?;
        let Some(stdout) = running.child.stdout.take() else {
            running.kill();
            return Err(BackupError::io("pg_dump", io::Error::other("no stdout")));
        };
        let mut reader = ProgressReader::new(FirstOutput::new(stdout, first_output), dump_bar);
        match io::copy(&mut reader, out) {
            Ok(_) => running.finish().map(|_| ()),
            Err(e) => {
                running.kill();
                Err(BackupError::io("streaming pg_dump output", e))
            }
        }
    });
    // Counted in the dump's own snapshot, while the dump runs. The exporting transaction ends as
    // soon as the counts are done and pg_dump has imported the snapshot (it does so when it
    // starts, before it writes a byte), so a dump of many hours never depends on an idle session.
    let counts = async {
        let counts = inventory::row_counts(db, &client, &included).await?;
        // An error means pg_dump ended without output; the dump's own error tells why.
        let _ = dump_started.await;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| db.query_error("ending the snapshot transaction", e))?;
        tracing::debug!(
            backup = id,
            "snapshot transaction ended; pg_dump holds its own copy"
        );
        Ok::<_, BackupError>(counts)
    };
    let (database_object, counts) = tokio::try_join!(dump, counts)?;
    bar.finish_and_clear();

    let mut objects = vec![database_object];
    if let Some(dir) = req.files_dir.clone() {
        let bar = progress.bytes("file store", None);
        let files_bar = bar.clone();
        let files_target = target(FILESTORE_OBJECT, ObjectKind::FileStore);
        objects.push(
            store_compressed(repo, store(&files_target, req), move |out| {
                let mut tar = tar::Builder::new(ProgressWriter {
                    inner: out,
                    bar: files_bar,
                });
                tar.follow_symlinks(false);
                tar.append_dir_all("filestore", &dir)
                    .and_then(|_| tar.finish())
                    .map_err(|e| BackupError::io(format!("archiving {}", dir.display()), e))
            })
            .await?,
        );
        bar.finish_and_clear();
    }
    if let Some(conf) = req.dhis_conf.clone() {
        // Owner and mode go into the manifest: a restore puts dhis.conf back readable by DHIS2 only.
        let posix = super::manifest::PosixMetadata::of(&conf)
            .map_err(|e| BackupError::io(format!("reading {}", conf.display()), e))?;
        let conf_target = target(DHIS_CONF_OBJECT, ObjectKind::DhisConf);
        let mut object = store_compressed(repo, store(&conf_target, req), move |out| {
            let mut file = std::fs::File::open(&conf)
                .map_err(|e| BackupError::io(format!("reading {}", conf.display()), e))?;
            let mut data = Vec::new();
            file.read_to_end(&mut data)
                .map_err(|e| BackupError::io(format!("reading {}", conf.display()), e))?;
            out.write_all(&data)
                .map_err(|e| BackupError::io("storing dhis.conf", e))
        })
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
        object_lock: repo.object_lock(),
        purpose: req.purpose,
        restored_size_bytes,
    };
    let body = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::io("encoding the manifest", io::Error::other(e)))?;
    // Last: from this moment the backup exists.
    repo.put_locked_if_absent(
        &object_key(&req.instance, id, MANIFEST_FILE),
        Bytes::from(body),
    )
    .await?;
    tracing::info!(backup = id, "backup complete");
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_without_organisationunit_is_not_dhis2() {
        let t = TableName::new;
        assert!(!has_dhis2_tables(&[]));
        assert!(!has_dhis2_tables(&[t("public", "orders")]));
        assert!(has_dhis2_tables(&[
            t("public", "orders"),
            t("public", "organisationunit")
        ]));
        assert!(has_dhis2_tables(&[t("dhis", "organisationunit")]));
    }
}
