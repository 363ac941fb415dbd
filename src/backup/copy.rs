//! `backup copy`: puts complete backup sets of one repository into a second one (off site), as
//! they are. Only sets whose manifest exists and validates at the source are copied; every object
//! the manifest names is copied byte for byte (compressed, or encrypted `.age`, alike: no key is
//! needed), its SHA-256 and size checked while it streams — the upload is completed only when
//! they match — and checked again by reading the copy back from the destination. The manifest is
//! written last, so a set exists at the destination only once all of it is there and checked.
//!
//! Which sets to copy is a pure decision (`select_sets`, `judge_destination`, `decide`); the rest
//! is the thin I/O shell around the repositories' streaming upload.

use std::io;

use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::SyncIoBridge;

use crate::progress::Progress;

use super::catalog::{Catalog, Incompleteness, completeness, load_catalog};
use super::error::BackupError;
use super::lease::Lease;
use super::manifest::object_key;
use super::manifest::{BackupManifest, LEASE_FILE, MANIFEST_FILE, StoredObject};
use super::repo::{ObjectSink, RepoError, Repository};
use super::run::{heartbeat, lease_body};
use super::stream::{HashingReader, ProgressReader};

/// Which of an instance's complete sets to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySelection {
    /// One backup id, or `latest`.
    One(String),
    /// Every complete set the destination lacks.
    Missing,
}

/// What the destination holds under a set's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtDestination {
    Absent,
    /// Objects without a manifest: an interrupted copy (or backup). Copied over.
    Partial,
    /// The same manifest, byte for byte, but an object missing or of the wrong size. Repaired.
    SameManifestIncomplete,
    /// The same manifest, byte for byte, and every object it names with its size.
    Complete,
    /// Another manifest under the same id: never overwritten.
    DifferentManifest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDecision {
    Copy,
    SkipComplete,
    RefuseDifferent,
}

/// Picks the source's complete sets to copy, oldest first (so an interrupted `--missing` has
/// copied the oldest ones). `complete` is the source's complete sets of the instance.
pub fn select_sets<'a>(
    complete: &'a [BackupManifest],
    selection: &CopySelection,
) -> Option<Vec<&'a BackupManifest>> {
    let mut newest_first: Vec<&BackupManifest> = complete.iter().collect();
    newest_first.sort_by(|a, b| b.completed_at.cmp(&a.completed_at).then(b.id.cmp(&a.id)));
    match selection {
        CopySelection::One(id) if id == "latest" => newest_first.first().map(|m| vec![*m]),
        CopySelection::One(id) => newest_first.iter().find(|m| m.id == *id).map(|m| vec![*m]),
        CopySelection::Missing => {
            newest_first.reverse();
            Some(newest_first)
        }
    }
}

/// Judges the destination from what is stored there: `manifest` is the destination's manifest
/// bytes when one exists, `complete` whether every object it names is present with its size,
/// `has_objects` whether anything at all is stored under the set's id.
pub fn judge_destination(
    source_manifest: &[u8],
    manifest: Option<&[u8]>,
    complete: bool,
    has_objects: bool,
) -> AtDestination {
    match manifest {
        Some(m) if m != source_manifest => AtDestination::DifferentManifest,
        Some(_) if complete => AtDestination::Complete,
        Some(_) => AtDestination::SameManifestIncomplete,
        None if has_objects => AtDestination::Partial,
        None => AtDestination::Absent,
    }
}

pub fn decide(at_destination: AtDestination) -> CopyDecision {
    match at_destination {
        AtDestination::Absent | AtDestination::Partial | AtDestination::SameManifestIncomplete => {
            CopyDecision::Copy
        }
        AtDestination::Complete => CopyDecision::SkipComplete,
        AtDestination::DifferentManifest => CopyDecision::RefuseDifferent,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CopyResult {
    Copied,
    /// Already complete at the destination, with the same manifest.
    Skipped,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopiedSet {
    pub id: String,
    pub result: CopyResult,
    /// The set's stored size (every object the manifest names).
    pub size_bytes: u64,
    pub objects: usize,
    /// Bytes sent to the destination by this run (0 when skipped).
    pub copied_bytes: u64,
    /// Why it was skipped or failed; what was finished for a copy over a partial set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    pub instance: String,
    pub from: String,
    pub to: String,
    /// Whether every copied object was read back from the destination and checked.
    pub read_back: bool,
    pub sets: Vec<CopiedSet>,
}

impl CopyReport {
    pub fn failed(&self) -> impl Iterator<Item = &CopiedSet> {
        self.sets.iter().filter(|s| s.result == CopyResult::Failed)
    }

    pub fn count(&self, result: CopyResult) -> usize {
        self.sets.iter().filter(|s| s.result == result).count()
    }

    /// An error when a set was not copied (exit code 1), after the report was printed.
    pub fn outcome(&self) -> Result<(), BackupError> {
        let failed: Vec<&CopiedSet> = self.failed().collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(BackupError::CopyFailed {
            count: failed.len(),
            to: self.to.clone(),
            details: failed
                .iter()
                .map(|s| format!("{}: {}", s.id, s.detail.as_deref().unwrap_or("failed")))
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// Read every copied object back from the destination and check its SHA-256 before the
    /// manifest is written.
    pub read_back: bool,
}

/// Copies the selected complete sets of `instance` from `from` to `to`. Returns the report of
/// every set (a set that failed is in it, with why); an error only when nothing could be judged.
pub async fn copy_backups(
    from: &Repository,
    to: &Repository,
    instance: &str,
    selection: &CopySelection,
    options: CopyOptions,
    progress: Progress,
) -> Result<CopyReport, BackupError> {
    let source = load_catalog(from, Some(instance)).await?;
    let selected = select_sets(&source.complete, selection)
        .ok_or_else(|| not_selectable(&source, from, instance, selection))?;
    let destination = load_catalog(to, Some(instance)).await?;
    let mut sets = Vec::new();
    for manifest in selected {
        let outcome = copy_one(from, to, &destination, manifest, options, progress).await;
        let mut set = CopiedSet {
            id: manifest.id.clone(),
            result: CopyResult::Copied,
            size_bytes: manifest.size_bytes(),
            objects: manifest.objects.len(),
            copied_bytes: 0,
            detail: None,
        };
        match outcome {
            Ok(SetOutcome::Copied { over }) => {
                set.copied_bytes = manifest.size_bytes();
                set.detail = over;
            }
            Ok(SetOutcome::Skipped) => {
                set.result = CopyResult::Skipped;
                set.detail = Some("already complete at the destination".into());
            }
            Err(e) => {
                // Reported once, with the others, when the copy ends.
                tracing::info!(backup = %manifest.id, "copy failed: {e}");
                set.result = CopyResult::Failed;
                set.detail = Some(e.to_string());
            }
        }
        sets.push(set);
    }
    Ok(CopyReport {
        instance: instance.to_string(),
        from: from.describe(),
        to: to.describe(),
        read_back: options.read_back,
        sets,
    })
}

/// Why `ID`/`latest` names no complete set at the source; an incomplete one is said to be so.
fn not_selectable(
    source: &Catalog,
    from: &Repository,
    instance: &str,
    selection: &CopySelection,
) -> BackupError {
    let id = match selection {
        CopySelection::One(id) => id.as_str(),
        CopySelection::Missing => "latest",
    };
    if let Some(incomplete) = source.incomplete.iter().find(|i| i.id == id) {
        return BackupError::Input(format!(
            "backup {id} of instance {instance} in {} is not complete ({}): only complete backups are copied",
            from.describe(),
            incomplete.reason
        ));
    }
    BackupError::NotFound {
        instance: instance.to_string(),
        id: id.to_string(),
        repo: from.describe(),
    }
}

enum SetOutcome {
    /// `over`: what was at the destination before, when something was.
    Copied {
        over: Option<String>,
    },
    Skipped,
}

async fn copy_one(
    from: &Repository,
    to: &Repository,
    destination: &Catalog,
    manifest: &BackupManifest,
    options: CopyOptions,
    progress: Progress,
) -> Result<SetOutcome, BackupError> {
    let manifest_key = object_key(&manifest.instance, &manifest.id, MANIFEST_FILE);
    let source_manifest = from.get_bytes(&manifest_key).await?;
    check_source_manifest(manifest, &source_manifest)?;
    let at_destination = destination_state(to, destination, manifest, &source_manifest).await?;
    match decide(at_destination) {
        CopyDecision::SkipComplete => return Ok(SetOutcome::Skipped),
        CopyDecision::RefuseDifferent => {
            return Err(BackupError::Input(format!(
                "{} already holds a different backup under the id {}/{} (its manifest differs from the source's); it is left as it is: check both with `dhis2ctl backup verify`",
                to.describe(),
                manifest.instance,
                manifest.id
            )));
        }
        CopyDecision::Copy => {}
    }
    copy_set(from, to, manifest, source_manifest, options, progress).await?;
    Ok(SetOutcome::Copied {
        over: match at_destination {
            AtDestination::Partial => Some("finished a partial copy".into()),
            AtDestination::SameManifestIncomplete => {
                Some("repaired: an object was missing or short".into())
            }
            _ => None,
        },
    })
}

/// The manifest read for copying must be the one the catalog judged complete (a set rewritten
/// between the two reads is not copied).
fn check_source_manifest(manifest: &BackupManifest, body: &[u8]) -> Result<(), BackupError> {
    let parsed: Option<BackupManifest> = serde_json::from_slice(body).ok();
    if parsed.as_ref() == Some(manifest) {
        Ok(())
    } else {
        Err(BackupError::Input(format!(
            "the manifest of backup {}/{} changed at the source while copying; run the copy again",
            manifest.instance, manifest.id
        )))
    }
}

async fn destination_state(
    to: &Repository,
    destination: &Catalog,
    manifest: &BackupManifest,
    source_manifest: &[u8],
) -> Result<AtDestination, BackupError> {
    let complete = destination
        .complete
        .iter()
        .any(|m| m.instance == manifest.instance && m.id == manifest.id);
    let incomplete = destination
        .incomplete
        .iter()
        .find(|i| i.instance == manifest.instance && i.id == manifest.id);
    let has_manifest =
        complete || incomplete.is_some_and(|i| i.reason != Incompleteness::NoManifest);
    let stored = if has_manifest {
        let key = object_key(&manifest.instance, &manifest.id, MANIFEST_FILE);
        match to.get_bytes(&key).await {
            Ok(body) => Some(body),
            Err(RepoError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    Ok(judge_destination(
        source_manifest,
        stored.as_deref(),
        complete,
        complete || incomplete.is_some(),
    ))
}

/// Copies every object, then writes the manifest. A lease marks the set as being written, so the
/// destination's prune leaves a long copy alone; a failed copy removes what it stored there.
async fn copy_set(
    from: &Repository,
    to: &Repository,
    manifest: &BackupManifest,
    source_manifest: Bytes,
    options: CopyOptions,
    progress: Progress,
) -> Result<(), BackupError> {
    let lease_key = object_key(&manifest.instance, &manifest.id, LEASE_FILE);
    let lease = Lease::new(&manifest.id, Utc::now());
    to.put_bytes(&lease_key, lease_body(&lease)?).await?;
    let (stop, stopped) = oneshot::channel();
    let work = async {
        let result = write_set(from, to, manifest, source_manifest, options, progress).await;
        let _ = stop.send(());
        result
    };
    let beat = heartbeat(to, &lease_key, lease, stopped);
    let (result, ()) = tokio::join!(work, beat);
    if result.is_err() {
        tidy_failed_copy(to, manifest).await;
    }
    if let Err(e) = to.delete(std::slice::from_ref(&lease_key)).await {
        tracing::warn!(backup = %manifest.id, "could not remove the copy's lease: {e}");
    }
    result
}

async fn write_set(
    from: &Repository,
    to: &Repository,
    manifest: &BackupManifest,
    source_manifest: Bytes,
    options: CopyOptions,
    progress: Progress,
) -> Result<(), BackupError> {
    for object in &manifest.objects {
        copy_object(from, to, manifest, object, progress).await?;
        if options.read_back {
            read_back(to, manifest, object, progress).await?;
        }
    }
    // What the destination's list, restore and prune will judge by: every object with its size.
    let prefix = format!("{}/{}/", manifest.instance, manifest.id);
    completeness(manifest, &to.list(&prefix).await?).map_err(|reason| {
        BackupError::Input(format!(
            "after copying, {} does not hold all of backup {}/{}: {reason}",
            to.describe(),
            manifest.instance,
            manifest.id
        ))
    })?;
    // Last: from this moment the set exists at the destination.
    let key = object_key(&manifest.instance, &manifest.id, MANIFEST_FILE);
    match to.put_bytes_if_absent(&key, source_manifest.clone()).await {
        Ok(()) => Ok(()),
        Err(RepoError::AlreadyExists { .. }) if to.get_bytes(&key).await? == source_manifest => {
            Ok(())
        }
        Err(RepoError::AlreadyExists { .. }) => Err(BackupError::Input(format!(
            "a different manifest appeared at {} for backup {}/{} while copying; it is left as it is",
            to.describe(),
            manifest.instance,
            manifest.id
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Removes what a failed copy stored, unless a manifest is there (another copy finished it, or
/// it was a repair of a set that already had its manifest): a set without one is invisible
/// debris either way, and removing it frees the space at once.
async fn tidy_failed_copy(to: &Repository, manifest: &BackupManifest) {
    let prefix = format!("{}/{}/", manifest.instance, manifest.id);
    let Ok(objects) = to.list(&prefix).await else {
        return;
    };
    let manifest_suffix = format!("/{MANIFEST_FILE}");
    if objects.iter().any(|o| o.key.ends_with(&manifest_suffix)) {
        return;
    }
    let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
    if let Err(e) = to.delete(&keys).await {
        tracing::warn!(backup = %manifest.id, "could not remove the failed copy's objects: {e}");
    }
}

/// Whether what streamed by is what the manifest records.
pub fn digest_mismatch(object: &StoredObject, size: u64, sha256: &str) -> Option<String> {
    if size != object.size_bytes {
        Some(format!(
            "it holds {size} bytes, the manifest records {}",
            object.size_bytes
        ))
    } else if sha256 != object.sha256 {
        Some(format!(
            "its SHA-256 is {sha256}, the manifest records {}",
            object.sha256
        ))
    } else {
        None
    }
}

/// Streams one object from `from` into `to`: source reader → SHA-256 → upload parts. The end
/// marker is sent only when size and checksum match the manifest, so a damaged source object
/// never becomes an object at the destination (the upload is abandoned instead).
async fn copy_object(
    from: &Repository,
    to: &Repository,
    manifest: &BackupManifest,
    object: &StoredObject,
    progress: Progress,
) -> Result<(), BackupError> {
    let key = object_key(&manifest.instance, &manifest.id, &object.name);
    let reader = SyncIoBridge::new(from.open_reader(&key).await?);
    let bar = progress.bytes(&format!("copy {}", object.name), Some(object.size_bytes));
    let (tx, rx) = mpsc::channel(1);
    let (expected, b) = (object.clone(), bar.clone());
    let source = format!(
        "{}/{} in {}",
        manifest.instance,
        manifest.id,
        from.describe()
    );
    let producer = tokio::task::spawn_blocking(move || -> Result<(), BackupError> {
        let mut reading = HashingReader::new(ProgressReader::new(reader, b));
        let mut sink = ObjectSink::new(tx);
        io::copy(&mut reading, &mut sink)
            .map_err(|e| BackupError::io(format!("copying {}", expected.name), e))?;
        let (size, sha) = reading.finish();
        if let Some(reason) = digest_mismatch(&expected, size, &sha) {
            // Dropping the sink without its end marker abandons the upload.
            return Err(BackupError::Damaged {
                backup: source,
                object: expected.name.clone(),
                reason: format!(
                    "{reason}; the copy of this backup stopped and nothing of it is listed at the destination (check the source with `dhis2ctl backup verify`)"
                ),
            });
        }
        sink.finish()
            .map_err(|e| BackupError::io("finishing the upload stream", e))?;
        Ok(())
    });
    let upload = to.upload(&key, rx);
    let (produced, uploaded) = tokio::join!(producer, upload);
    bar.finish_and_clear();
    let produced = produced.map_err(|e| BackupError::io("copy worker", io::Error::other(e)))?;
    match (produced, uploaded) {
        (Ok(()), Ok(_)) => Ok(()),
        // A damaged source is the cause; the upload only saw its producer stop.
        (Err(e @ BackupError::Damaged { .. }), _) => Err(e),
        (_, Err(e)) if !matches!(e, RepoError::Abandoned { .. }) => Err(e.into()),
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e.into()),
    }
}

/// Reads a just-copied object back from the destination and checks size and SHA-256: catches
/// what the streamed checksum cannot, such as parts assembled out of order or a store that
/// damaged the bytes on the way in.
async fn read_back(
    to: &Repository,
    manifest: &BackupManifest,
    object: &StoredObject,
    progress: Progress,
) -> Result<(), BackupError> {
    let key = object_key(&manifest.instance, &manifest.id, &object.name);
    let reader = SyncIoBridge::new(to.open_reader(&key).await?);
    let bar = progress.bytes(&format!("check {}", object.name), Some(object.size_bytes));
    let b = bar.clone();
    let name = object.name.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut reading = HashingReader::new(ProgressReader::new(reader, b));
        reading
            .drain()
            .map_err(|e| BackupError::io(format!("reading back {name}"), e))?;
        Ok::<_, BackupError>(reading.finish())
    })
    .await
    .map_err(|e| BackupError::io("copy worker", io::Error::other(e)))?;
    bar.finish_and_clear();
    let (size, sha) = read?;
    match digest_mismatch(object, size, &sha) {
        None => Ok(()),
        Some(reason) => Err(BackupError::Damaged {
            backup: format!(
                "{}/{} (the copy in {})",
                manifest.instance,
                manifest.id,
                to.describe()
            ),
            object: object.name.clone(),
            reason: format!(
                "read back after the upload, {reason}; the copy is not listed there: run it again"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::{DateTime, TimeZone};

    fn manifest(id: &str, completed_at: DateTime<Utc>) -> BackupManifest {
        let json = serde_json::json!({
            "formatVersion": 1, "id": id, "instance": "hmis",
            "startedAt": completed_at, "completedAt": completed_at,
            "database": "dhis2", "dhis2SchemaVersion": null, "postgresVersion": "16.4",
            "extensions": [], "includeAnalytics": false, "objects": [], "tables": [],
            "skippedTableData": [],
            "tool": {"name": "dhis2ctl", "version": "0", "pgDump": ""}
        });
        serde_json::from_value(json).unwrap()
    }

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, 1, 0, 0).unwrap()
    }

    fn ids(sets: Option<Vec<&BackupManifest>>) -> Option<Vec<&str>> {
        sets.map(|s| s.iter().map(|m| m.id.as_str()).collect())
    }

    #[test]
    fn selects_latest_an_id_or_every_set_oldest_first() {
        let complete = vec![
            manifest("20260302T010000Z-00000002", day(2)),
            manifest("20260303T010000Z-00000003", day(3)),
            manifest("20260301T010000Z-00000001", day(1)),
        ];
        assert_eq!(
            ids(select_sets(&complete, &CopySelection::One("latest".into()))),
            Some(vec!["20260303T010000Z-00000003"])
        );
        assert_eq!(
            ids(select_sets(
                &complete,
                &CopySelection::One("20260302T010000Z-00000002".into())
            )),
            Some(vec!["20260302T010000Z-00000002"])
        );
        assert_eq!(
            ids(select_sets(&complete, &CopySelection::Missing)),
            Some(vec![
                "20260301T010000Z-00000001",
                "20260302T010000Z-00000002",
                "20260303T010000Z-00000003"
            ])
        );
        // An id the source holds no complete set of (incomplete sets are never in `complete`).
        assert_eq!(
            ids(select_sets(&complete, &CopySelection::One("nope".into()))),
            None
        );
        assert_eq!(
            ids(select_sets(&[], &CopySelection::One("latest".into()))),
            None
        );
        assert_eq!(ids(select_sets(&[], &CopySelection::Missing)), Some(vec![]));
    }

    #[test]
    fn only_an_identical_complete_set_is_skipped_and_a_different_one_is_never_overwritten() {
        let source = b"{\"id\":\"a\"}";
        let judge = |m: Option<&[u8]>, complete, has| judge_destination(source, m, complete, has);
        assert_eq!(judge(None, false, false), AtDestination::Absent);
        assert_eq!(judge(None, false, true), AtDestination::Partial);
        assert_eq!(judge(Some(source), true, true), AtDestination::Complete);
        assert_eq!(
            judge(Some(source), false, true),
            AtDestination::SameManifestIncomplete
        );
        // One byte of difference (e.g. pretty-printed otherwise) is another manifest.
        assert_eq!(
            judge(Some(b"{\"id\": \"a\"}"), true, true),
            AtDestination::DifferentManifest
        );
        assert_eq!(
            judge(Some(b"{\"id\":\"b\"}"), false, true),
            AtDestination::DifferentManifest
        );

        assert_eq!(decide(AtDestination::Absent), CopyDecision::Copy);
        assert_eq!(decide(AtDestination::Partial), CopyDecision::Copy);
        assert_eq!(
            decide(AtDestination::SameManifestIncomplete),
            CopyDecision::Copy
        );
        assert_eq!(decide(AtDestination::Complete), CopyDecision::SkipComplete);
        assert_eq!(
            decide(AtDestination::DifferentManifest),
            CopyDecision::RefuseDifferent
        );
    }

    #[test]
    fn a_stream_matches_only_with_the_recorded_size_and_checksum() {
        let object = StoredObject {
            name: "database.pgdump.zst".into(),
            kind: crate::backup::manifest::ObjectKind::Database,
            size_bytes: 10,
            sha256: "a".repeat(64),
            uncompressed_bytes: 0,
            posix: None,
            encryption: None,
        };
        assert_eq!(digest_mismatch(&object, 10, &"a".repeat(64)), None);
        assert!(
            digest_mismatch(&object, 9, &"a".repeat(64))
                .unwrap()
                .contains("9 bytes")
        );
        assert!(
            digest_mismatch(&object, 10, &"b".repeat(64))
                .unwrap()
                .contains("SHA-256")
        );
    }
}
