//! Stores one object by streaming: a producer on a blocking thread writes into zstd, which writes
//! (through age, when the backup is encrypted) into an `ObjectSink`, while the repository uploads
//! parts as they fill. No temporary file, no plaintext outside memory, and memory bounded by a
//! few parts.

use std::io::Write;

use tokio::sync::mpsc;

use super::encryption::{EncryptTo, SealingWriter};
use super::error::BackupError;
use super::manifest::{ObjectKind, StoredObject};
use super::repo::{ObjectSink, RepoError, Repository};
use super::stream::CountingWriter;

/// zstd level 3 by default: gzip's size at several times its speed, so the backup keeps up with
/// `pg_dump` (docs/benchmarks.md has the size/speed of higher levels).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How one object is stored: where, under which name, compressed how, encrypted to whom.
pub struct ObjectTarget<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub kind: ObjectKind,
    pub zstd_level: i32,
    pub encrypt_to: Option<&'a EncryptTo>,
}

pub async fn store_compressed<F>(
    repo: &Repository,
    target: ObjectTarget<'_>,
    produce: F,
) -> Result<StoredObject, BackupError>
where
    F: FnOnce(&mut dyn Write) -> Result<(), BackupError> + Send + 'static,
{
    let ObjectTarget {
        key,
        name,
        kind,
        zstd_level: level,
        encrypt_to,
    } = target;
    let encryption = encrypt_to.map(EncryptTo::record);
    let encrypt_to = encrypt_to.cloned();
    let (tx, rx) = mpsc::channel(1);
    let producer = tokio::task::spawn_blocking(move || -> Result<_, BackupError> {
        let sink = SealingWriter::new(ObjectSink::new(tx), encrypt_to.as_ref())
            .map_err(|e| BackupError::io("starting age encryption", e))?;
        let mut encoder = zstd::stream::Encoder::new(sink, level)
            .map_err(|e| BackupError::io("starting zstd", e))?;
        // One worker thread compresses while this thread keeps reading the producer.
        encoder
            .multithread(1)
            .map_err(|e| BackupError::io("starting zstd", e))?;
        encoder
            .include_checksum(true)
            .map_err(|e| BackupError::io("starting zstd", e))?;
        let mut counting = CountingWriter {
            inner: encoder,
            count: 0,
        };
        produce(&mut counting)?;
        let uncompressed = counting.count;
        let sealed = counting
            .inner
            .finish()
            .map_err(|e| BackupError::io("finishing zstd", e))?;
        let sink = sealed
            .finish()
            .map_err(|e| BackupError::io("finishing age encryption", e))?;
        let summary = sink
            .finish()
            .map_err(|e| BackupError::io("finishing the upload stream", e))?;
        Ok((summary, uncompressed))
    });
    let upload = repo.upload(key, rx);
    let (produced, uploaded) = tokio::join!(producer, upload);
    let produced =
        produced.map_err(|e| BackupError::io("backup worker", std::io::Error::other(e)))?;
    match (produced, uploaded) {
        (Ok((summary, uncompressed)), Ok(_)) => Ok(StoredObject {
            name: name.to_string(),
            kind,
            size_bytes: summary.size_bytes,
            sha256: summary.sha256,
            uncompressed_bytes: uncompressed,
            posix: None,
            encryption,
        }),
        // The upload failing is the cause; the producer only saw its pipe close.
        (_, Err(e)) if !matches!(e, RepoError::Abandoned { .. }) => Err(e.into()),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.into()),
    }
}
