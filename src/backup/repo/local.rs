//! A backup repository in a local directory. Objects are written to `NAME.partial`, flushed and
//! fsynced, then renamed into place (and the directory fsynced), so a crash or a full disk never
//! leaves a complete-looking object behind. Every write, flush and sync is checked. Directories
//! are 0700 and files 0600 whatever the umask: they hold the health database and dhis.conf.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Chunk, ObjectMeta, ObjectReader, RepoError};

pub const PARTIAL_SUFFIX: &str = ".partial";
pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

pub struct LocalRepo {
    root: PathBuf,
}

/// Whether an upload may replace an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    Yes,
    /// Create-if-absent: fails with `AlreadyExists` when the object is there.
    No,
}

impl LocalRepo {
    /// Opens the repository directory; only `backup run` (`create`) makes it when missing, so a
    /// mistyped path for a read-only verb says so instead of leaving an empty directory behind.
    pub async fn open(root: PathBuf, create: bool) -> Result<Self, RepoError> {
        let repo = Self { root };
        match tokio::fs::metadata(&repo.root).await {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(RepoError::BadLocation(format!(
                    "--repo: {} is not a directory",
                    repo.describe()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
                return Err(RepoError::NoRepository {
                    location: repo.describe(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                repo.create_dirs(&repo.root).await?;
            }
            Err(e) => return Err(repo.error("opening the repository directory", "", e)),
        }
        Ok(repo)
    }

    pub fn describe(&self) -> String {
        self.root.display().to_string()
    }

    /// A full disk (or quota) gets its own message: it says what filled up and where.
    fn error(&self, operation: &str, key: &str, source: std::io::Error) -> RepoError {
        if is_disk_full(&source) {
            return RepoError::DiskFull {
                location: self.describe(),
                key: key.to_string(),
                source,
            };
        }
        RepoError::Local {
            location: self.describe(),
            operation: if key.is_empty() {
                operation.to_string()
            } else {
                format!("{operation} {key}")
            },
            source,
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    async fn create_dirs(&self, dir: &Path) -> Result<(), RepoError> {
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true).mode(DIR_MODE);
        builder
            .create(dir)
            .await
            .map_err(|e| self.error("creating the directory", &dir.display().to_string(), e))
    }

    async fn ensure_parent(&self, path: &Path) -> Result<(), RepoError> {
        match path.parent() {
            Some(parent) => self.create_dirs(parent).await,
            None => Ok(()),
        }
    }

    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), RepoError> {
        self.upload_bytes(key, data, Replace::Yes).await
    }

    /// Stores `data` only if no object `key` exists (`RepoError::AlreadyExists` otherwise).
    pub async fn put_bytes_if_absent(&self, key: &str, data: Bytes) -> Result<(), RepoError> {
        self.upload_bytes(key, data, Replace::No).await
    }

    async fn upload_bytes(
        &self,
        key: &str,
        data: Bytes,
        replace: Replace,
    ) -> Result<(), RepoError> {
        let (tx, rx) = mpsc::channel(2);
        tx.send(Chunk::Data(data)).await.ok();
        tx.send(Chunk::End).await.ok();
        drop(tx);
        self.upload_with(key, rx, replace).await.map(|_| ())
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, RepoError> {
        match tokio::fs::read(self.path(key)).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RepoError::NotFound {
                location: self.describe(),
                key: key.to_string(),
            }),
            Err(e) => Err(self.error("reading", key, e)),
        }
    }

    pub async fn open_reader(&self, key: &str) -> Result<ObjectReader, RepoError> {
        match tokio::fs::File::open(self.path(key)).await {
            Ok(f) => Ok(Box::pin(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RepoError::NotFound {
                location: self.describe(),
                key: key.to_string(),
            }),
            Err(e) => Err(self.error("opening", key, e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, RepoError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let listed = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &mut out)?;
            out.retain(|o| o.key.starts_with(&prefix));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok::<_, std::io::Error>(out)
        })
        .await
        .map_err(|e| self.error("listing", "", std::io::Error::other(e)))?;
        listed.map_err(|e| self.error("listing", "", e))
    }

    pub async fn delete(&self, keys: &[String]) -> Result<(), RepoError> {
        for key in keys {
            let path = self.path(key);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.error("deleting", key, e)),
            }
            // Remove now-empty backup directories; a non-empty one stays.
            let mut dir = path.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if d == self.root || tokio::fs::remove_dir(&d).await.is_err() {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
        }
        Ok(())
    }

    pub async fn upload(&self, key: &str, chunks: mpsc::Receiver<Chunk>) -> Result<u64, RepoError> {
        self.upload_with(key, chunks, Replace::Yes).await
    }

    async fn upload_with(
        &self,
        key: &str,
        chunks: mpsc::Receiver<Chunk>,
        replace: Replace,
    ) -> Result<u64, RepoError> {
        let path = self.path(key);
        self.ensure_parent(&path).await?;
        let partial = PathBuf::from(format!("{}{PARTIAL_SUFFIX}", path.display()));
        let written = self.write_partial(key, &partial, chunks).await;
        let outcome = match written {
            Ok(size) => self
                .publish(key, &partial, &path, replace)
                .await
                .map(|_| size),
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            // Frees the space at once; nothing half-written stays under a final name.
            let _ = tokio::fs::remove_file(&partial).await;
        }
        outcome
    }

    /// Writes every chunk to `partial`, then flushes and fsyncs it. Returns the size written.
    async fn write_partial(
        &self,
        key: &str,
        partial: &Path,
        mut chunks: mpsc::Receiver<Chunk>,
    ) -> Result<u64, RepoError> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(partial)
            .await
            .map_err(|e| self.error("creating", key, e))?;
        let mut size = 0u64;
        loop {
            match chunks.recv().await {
                Some(Chunk::Data(data)) => {
                    file.write_all(&data)
                        .await
                        .map_err(|e| self.error("writing", key, e))?;
                    size += data.len() as u64;
                }
                Some(Chunk::End) => break,
                None => {
                    return Err(RepoError::Abandoned {
                        location: self.describe(),
                        key: key.to_string(),
                    });
                }
            }
        }
        // tokio's File reports the error of its last background write only on flush: without
        // it a full disk would go unnoticed and a truncated object would be kept.
        file.flush()
            .await
            .map_err(|e| self.error("writing", key, e))?;
        file.sync_all()
            .await
            .map_err(|e| self.error("syncing", key, e))?;
        Ok(size)
    }

    /// Moves a finished `partial` to its final name and makes the rename durable.
    async fn publish(
        &self,
        key: &str,
        partial: &Path,
        path: &Path,
        replace: Replace,
    ) -> Result<(), RepoError> {
        match replace {
            Replace::Yes => tokio::fs::rename(partial, path)
                .await
                .map_err(|e| self.error("finishing", key, e))?,
            Replace::No => {
                // A hard link fails when the name exists: create-if-absent without a race.
                match tokio::fs::hard_link(partial, path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(RepoError::AlreadyExists {
                            location: self.describe(),
                            key: key.to_string(),
                        });
                    }
                    // Filesystems without hard links (FAT/exFAT USB disks, some network shares):
                    // check, then rename; the id's 32 random bits cover the race.
                    Err(e) if no_hard_links(&e) => {
                        if tokio::fs::try_exists(path)
                            .await
                            .map_err(|e| self.error("finishing", key, e))?
                        {
                            return Err(RepoError::AlreadyExists {
                                location: self.describe(),
                                key: key.to_string(),
                            });
                        }
                        tokio::fs::rename(partial, path)
                            .await
                            .map_err(|e| self.error("finishing", key, e))?;
                    }
                    Err(e) => return Err(self.error("finishing", key, e)),
                }
                // Gone already when the rename fallback ran.
                match tokio::fs::remove_file(partial).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(self.error("finishing", key, e)),
                }
            }
        }
        if let Some(parent) = path.parent() {
            let dir = tokio::fs::File::open(parent)
                .await
                .map_err(|e| self.error("syncing the directory of", key, e))?;
            dir.sync_all()
                .await
                .map_err(|e| self.error("syncing the directory of", key, e))?;
        }
        Ok(())
    }
}

/// ENOSPC or EDQUOT: the filesystem (or the user's quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == std::io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// EPERM, EOPNOTSUPP or ENOSYS from `link`: the filesystem has no hard links.
fn no_hard_links(e: &std::io::Error) -> bool {
    const EPERM: i32 = 1;
    const ENOSYS: i32 = 38;
    const EOPNOTSUPP: i32 = 95;
    e.kind() == std::io::ErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(EPERM | ENOSYS | EOPNOTSUPP))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        let path = entry.path();
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() {
            let key = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            let last_modified: DateTime<Utc> =
                meta.modified().map(DateTime::from).unwrap_or_default();
            out.push(ObjectMeta {
                key,
                size: meta.len(),
                last_modified,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_recognised() {
        assert!(is_disk_full(&std::io::Error::from_raw_os_error(28)));
        assert!(is_disk_full(&std::io::Error::from_raw_os_error(122)));
        assert!(!is_disk_full(&std::io::Error::from_raw_os_error(13)));
    }
}
