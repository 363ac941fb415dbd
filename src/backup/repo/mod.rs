//! Backup repositories: an S3-compatible bucket or a local directory, behind one interface.
//! Keys are relative to the repository root: `INSTANCE/BACKUP_ID/OBJECT`.

mod local;
mod location;
mod s3;
mod sink;

use std::pin::Pin;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

pub use local::LocalRepo;
pub use location::RepoLocation;
pub use s3::{S3Options, S3Repo};
pub use sink::{Chunk, ObjectSink, SinkSummary, part_size};

use crate::backup::object_lock::ObjectLock;

/// Why `--lock-days` cannot apply to a directory; a usage error (exit 2).
pub const LOCAL_CANNOT_LOCK: &str = "--lock-days: a local repository cannot be made immutable (whoever can write the directory can delete the backups); leave --lock-days out here and copy the backups to a second repository in an S3 bucket with Object Lock";

pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0}")]
    BadLocation(String),
    #[error("backup repository {location}: {operation} failed: {reason}")]
    S3 {
        location: String,
        operation: String,
        reason: String,
    },
    #[error("backup repository {location}: {operation} failed: {source}")]
    Local {
        location: String,
        operation: String,
        source: std::io::Error,
    },
    #[error("backup repository {location}: object {key} does not exist")]
    NotFound { location: String, key: String },
    #[error(
        "backup repository {location}: upload of {key} was abandoned because its producer failed"
    )]
    Abandoned { location: String, key: String },
    #[error(
        "backup repository {location}: the disk is full: storing {key} failed ({source}); free space on the filesystem that holds {location} (or give --repo another one) and run the backup again"
    )]
    DiskFull {
        location: String,
        key: String,
        source: std::io::Error,
    },
    #[error(
        "no repository at {location}: the directory does not exist; check --repo (only `dhis2ctl backup run` creates a repository)"
    )]
    NoRepository { location: String },
    #[error("backup repository {location}: {key} already exists")]
    AlreadyExists { location: String, key: String },
    #[error(
        "backup repository {location}: --lock-days needs S3 Object Lock, but bucket {bucket} does not have it enabled (nothing was written); enable versioning and object lock on it (aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled, then aws s3api put-object-lock-configuration --bucket {bucket} --object-lock-configuration ObjectLockEnabled=Enabled) or use a bucket created with --object-lock-enabled-for-bucket"
    )]
    ObjectLockNotEnabled { location: String, bucket: String },
}

/// An S3 multipart upload that was started and not completed (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// Relative to the repository root, like object keys.
    pub key: String,
    pub upload_id: String,
    pub initiated: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

pub enum Repository {
    Local(LocalRepo),
    S3(S3Repo),
}

impl Repository {
    /// Opens the repository and checks that it is reachable (bucket exists, credentials work,
    /// directory is usable), so a bad `--repo` fails before any work starts. Only `create` (a
    /// backup) makes a missing local directory; everything else reports "no repository at …".
    pub async fn open(
        location: RepoLocation,
        s3: &S3Options,
        create: bool,
    ) -> Result<Self, RepoError> {
        match location {
            RepoLocation::Local { root } => Ok(Self::Local(LocalRepo::open(root, create).await?)),
            RepoLocation::S3 { bucket, prefix } => {
                Ok(Self::S3(S3Repo::open(bucket, prefix, s3).await?))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Local(r) => r.describe(),
            Self::S3(r) => r.describe(),
        }
    }

    /// Makes every later `upload` and `put_locked_if_absent` carry `lock`, after checking that
    /// the bucket has Object Lock enabled; nothing is written either way. A local repository
    /// cannot be locked.
    pub async fn require_object_lock(&mut self, lock: ObjectLock) -> Result<(), RepoError> {
        match self {
            Self::Local(_) => Err(RepoError::BadLocation(LOCAL_CANNOT_LOCK.into())),
            Self::S3(r) => r.require_object_lock(lock).await,
        }
    }

    /// The lock new objects are put with, if `require_object_lock` set one.
    pub fn object_lock(&self) -> Option<ObjectLock> {
        match self {
            Self::Local(_) => None,
            Self::S3(r) => r.object_lock(),
        }
    }

    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), RepoError> {
        match self {
            Self::Local(r) => r.put_bytes(key, data).await,
            Self::S3(r) => r.put_bytes(key, data).await,
        }
    }

    /// Stores `data` only when `key` does not exist yet (`RepoError::AlreadyExists` otherwise).
    pub async fn put_bytes_if_absent(&self, key: &str, data: Bytes) -> Result<(), RepoError> {
        match self {
            Self::Local(r) => r.put_bytes_if_absent(key, data).await,
            Self::S3(r) => r.put_bytes_if_absent(key, data).await,
        }
    }

    /// `put_bytes_if_absent` under the repository's object lock, if it has one (the manifest).
    pub async fn put_locked_if_absent(&self, key: &str, data: Bytes) -> Result<(), RepoError> {
        match self {
            Self::Local(r) => r.put_bytes_if_absent(key, data).await,
            Self::S3(r) => r.put_locked_if_absent(key, data).await,
        }
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, RepoError> {
        match self {
            Self::Local(r) => r.get_bytes(key).await,
            Self::S3(r) => r.get_bytes(key).await,
        }
    }

    pub async fn open_reader(&self, key: &str) -> Result<ObjectReader, RepoError> {
        match self {
            Self::Local(r) => r.open_reader(key).await,
            Self::S3(r) => r.open_reader(key).await,
        }
    }

    /// Every object under `prefix` (a key prefix relative to the repository root).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, RepoError> {
        match self {
            Self::Local(r) => r.list(prefix).await,
            Self::S3(r) => r.list(prefix).await,
        }
    }

    pub async fn delete(&self, keys: &[String]) -> Result<(), RepoError> {
        match self {
            Self::Local(r) => r.delete(keys).await,
            Self::S3(r) => r.delete(keys).await,
        }
    }

    /// Consumes chunks until `Chunk::End` and stores them as one object (under the repository's
    /// object lock, if it has one); nothing is visible under `key` unless the end marker arrived.
    /// Returns the stored size.
    pub async fn upload(&self, key: &str, chunks: mpsc::Receiver<Chunk>) -> Result<u64, RepoError> {
        match self {
            Self::Local(r) => r.upload(key, chunks).await,
            Self::S3(r) => r.upload(key, chunks).await,
        }
    }

    /// Unfinished multipart uploads under `prefix` (a local repository has none: its partial
    /// files are listed objects).
    pub async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, RepoError> {
        match self {
            Self::Local(_) => Ok(Vec::new()),
            Self::S3(r) => r.pending_uploads(prefix).await,
        }
    }

    pub async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), RepoError> {
        match self {
            Self::Local(_) => Ok(()),
            Self::S3(r) => r.abort_upload(upload).await,
        }
    }
}
