//! `backup verify`: re-reads every object of a backup and checks its size and SHA-256, that it
//! decompresses, that the dump's table of contents is readable by `pg_restore`, and that the file
//! store archive is a readable tar. A restore does not need this pass: it checks the same while
//! restoring into a side database (see `restore_plan.rs`). An encrypted backup without its key
//! gets sizes, checksums and age headers checked; with the key, its contents too.

use std::io::{self, Read};
use std::path::Path;
use std::process::Stdio;

use serde::Serialize;

use crate::progress::Progress;

use super::encryption::{DecryptWith, check_age_header, check_key_opens, open_compressed};
use super::error::BackupError;
use super::manifest::{BackupManifest, ObjectKind, StoredObject};
use super::object_reader::blocking_reader;
use super::pg_tools::PgTools;
use super::repo::Repository;
use super::stream::{HashingReader, ProgressReader};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub id: String,
    pub instance: String,
    pub objects: Vec<VerifiedObject>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedObject {
    pub name: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// Entries in the dump's table of contents, or files in the file store archive.
    pub entries: Option<u64>,
    pub encrypted: bool,
    /// False for an encrypted object checked without its key: only its size, checksum and
    /// age header were.
    pub contents_checked: bool,
}

/// Compares what was read with what the manifest promises.
pub fn check_digest(
    manifest: &BackupManifest,
    object: &StoredObject,
    size: u64,
    sha256: &str,
) -> Result<(), BackupError> {
    let damaged = |reason: String| BackupError::Damaged {
        backup: format!("{}/{}", manifest.instance, manifest.id),
        object: object.name.clone(),
        reason,
    };
    if size != object.size_bytes {
        return Err(damaged(format!(
            "size is {size} bytes, the manifest says {}",
            object.size_bytes
        )));
    }
    if sha256 != object.sha256 {
        return Err(damaged(format!(
            "SHA-256 is {sha256}, the manifest says {}",
            object.sha256
        )));
    }
    Ok(())
}

/// The major version of the `pg_dump` that wrote the dump: `pg_restore` must be at least as new.
pub fn dump_major(manifest: &BackupManifest) -> u32 {
    manifest
        .tool
        .pg_dump
        .split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `key` may be empty: encrypted objects are then checked without being decrypted.
pub async fn verify_backup(
    repo: &Repository,
    manifest: &BackupManifest,
    pg_bin_dir: Option<&Path>,
    key: &DecryptWith,
    progress: Progress,
) -> Result<VerifyReport, BackupError> {
    let tools = PgTools::locate(pg_bin_dir, dump_major(manifest));
    let decrypt = manifest.is_encrypted() && key.covers(manifest);
    if decrypt {
        // A wrong key is the user's mistake, not damage: say so before reading gigabytes.
        check_key_opens(repo, manifest, key).await?;
    }
    let key = decrypt.then(|| key.clone());
    let mut objects = Vec::new();
    for object in &manifest.objects {
        let reader = blocking_reader(repo, manifest, object).await?;
        let bar = progress.bytes(
            &format!("verify {}", short_kind(object.kind)),
            Some(object.size_bytes),
        );
        let (m, o, t, b, k) = (
            manifest.clone(),
            object.clone(),
            tools.clone(),
            bar.clone(),
            key.clone(),
        );
        let entries = tokio::task::spawn_blocking(move || {
            check_object(&m, &o, &t, k.as_ref(), ProgressReader::new(reader, b))
        })
        .await
        .map_err(|e| BackupError::io("verify worker", io::Error::other(e)))??;
        bar.finish_and_clear();
        objects.push(VerifiedObject {
            name: object.name.clone(),
            size_bytes: object.size_bytes,
            sha256: object.sha256.clone(),
            entries,
            encrypted: object.is_encrypted(),
            contents_checked: !object.is_encrypted() || key.is_some(),
        });
    }
    Ok(VerifyReport {
        id: manifest.id.clone(),
        instance: manifest.instance.clone(),
        objects,
        ok: true,
    })
}

/// `backup run --verify`: re-reads the backup just written with what its writer holds (see
/// [`super::encryption::EncryptTo::writer_key`]). Whatever stops the check, damage or an
/// unreadable object, means the backup is not verified.
pub async fn verify_written_backup(
    repo: &Repository,
    manifest: &BackupManifest,
    pg_bin_dir: Option<&Path>,
    key: &DecryptWith,
    progress: Progress,
) -> Result<VerifyReport, BackupError> {
    tracing::info!(backup = %manifest.id, "verifying: re-reading every object from {}", repo.describe());
    verify_backup(repo, manifest, pg_bin_dir, key, progress)
        .await
        .map_err(|e| BackupError::NotVerified {
            backup: format!("{}/{}", manifest.instance, manifest.id),
            repo: repo.describe(),
            problem: verification_problem(e),
        })
}

/// What went wrong, without naming the backup a second time.
fn verification_problem(error: BackupError) -> String {
    match error {
        BackupError::Damaged { object, reason, .. } => format!("{object}: {reason}"),
        other => other.to_string(),
    }
}

impl VerifyReport {
    /// True when every object's contents were decoded, not only its size, checksum and (for an
    /// encrypted object checked without its key) age header.
    pub fn contents_checked(&self) -> bool {
        self.objects.iter().all(|o| o.contents_checked)
    }
}

fn short_kind(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Database => "database",
        ObjectKind::FileStore => "file store",
        ObjectKind::DhisConf => "dhis.conf",
    }
}

/// Reads one object to the end; checksum problems take precedence over decoding problems, since
/// they explain them. An encrypted object without `key` gets only its age header checked.
fn check_object<R: Read>(
    manifest: &BackupManifest,
    object: &StoredObject,
    tools: &PgTools,
    key: Option<&DecryptWith>,
    reader: R,
) -> Result<Option<u64>, BackupError> {
    let mut hashing = HashingReader::new(reader);
    let content = match (&object.encryption, key) {
        (Some(record), None) => check_age_header(record, &mut hashing).map(|()| None),
        // A tool that cannot start is a problem of this machine, never of the backup.
        (_, key) => {
            match open_compressed(object, &mut hashing, key.unwrap_or(&DecryptWith::default())) {
                Ok(compressed) => check_content(object.kind, tools, compressed)?,
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let drained = hashing.drain();
    let (size, sha) = hashing.finish();
    drained.map_err(|e| BackupError::io(format!("reading {}", object.name), e))?;
    check_digest(manifest, object, size, &sha)?;
    content.map_err(|reason| BackupError::Damaged {
        backup: format!("{}/{}", manifest.instance, manifest.id),
        object: object.name.clone(),
        reason,
    })
}

/// Outer error: the check could not run (a missing tool); inner: what is wrong with the content.
fn check_content<R: Read>(
    kind: ObjectKind,
    tools: &PgTools,
    reader: R,
) -> Result<Result<Option<u64>, String>, BackupError> {
    let mut running = None;
    if kind == ObjectKind::Database {
        let mut cmd = tools.plain_command("pg_restore");
        cmd.arg("--list")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        running = Some(tools.spawn("pg_restore", cmd)?);
    }
    Ok(check_decoded(kind, running, reader))
}

fn check_decoded<R: Read>(
    kind: ObjectKind,
    running: Option<super::pg_tools::RunningTool>,
    reader: R,
) -> Result<Option<u64>, String> {
    let mut decoder = zstd::stream::read::Decoder::new(reader).map_err(|e| format!("zstd: {e}"))?;
    match (kind, running) {
        (ObjectKind::Database, Some(mut running)) => {
            let mut stdin = running
                .child
                .stdin
                .take()
                .ok_or("pg_restore has no stdin")?;
            let stdout = running
                .child
                .stdout
                .take()
                .ok_or("pg_restore has no stdout")?;
            let toc = std::thread::spawn(move || {
                let mut text = String::new();
                let mut stdout = stdout;
                let _ = stdout.read_to_string(&mut text);
                text
            });
            let copied = io::copy(&mut decoder, &mut stdin);
            drop(stdin);
            // pg_restore --list stops reading after the table of contents.
            if let Err(e) = &copied
                && e.kind() != io::ErrorKind::BrokenPipe
            {
                running.kill();
                return Err(format!("decompressing: {e}"));
            }
            let result = running.finish();
            let toc = toc.join().unwrap_or_default();
            result.map_err(|e| format!("the dump's table of contents is not readable: {e}"))?;
            // Whatever pg_restore did not read must still decompress cleanly.
            io::copy(&mut decoder, &mut io::sink()).map_err(|e| format!("decompressing: {e}"))?;
            let entries = toc
                .lines()
                .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
                .count() as u64;
            if entries == 0 {
                return Err("the dump's table of contents is empty".into());
            }
            Ok(Some(entries))
        }
        (ObjectKind::Database, None) => Err("pg_restore was not started".into()),
        (ObjectKind::FileStore, _) => {
            let mut archive = tar::Archive::new(decoder);
            let mut files = 0u64;
            for entry in archive.entries().map_err(|e| format!("tar: {e}"))? {
                let mut entry = entry.map_err(|e| format!("tar: {e}"))?;
                io::copy(&mut entry, &mut io::sink()).map_err(|e| format!("tar: {e}"))?;
                if entry.header().entry_type().is_file() {
                    files += 1;
                }
            }
            Ok(Some(files))
        }
        (ObjectKind::DhisConf, _) => {
            io::copy(&mut decoder, &mut io::sink()).map_err(|e| format!("decompressing: {e}"))?;
            Ok(None)
        }
    }
}
