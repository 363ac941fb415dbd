//! A backup repository in a local directory. Objects are written to `NAME.partial` and renamed
//! into place after an fsync, so a crash never leaves a complete-looking object behind.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Chunk, ObjectMeta, ObjectReader, RepoError};

pub const PARTIAL_SUFFIX: &str = ".partial";

pub struct LocalRepo {
    root: PathBuf,
}

impl LocalRepo {
    pub async fn open(root: PathBuf) -> Result<Self, RepoError> {
        let repo = Self { root };
        tokio::fs::create_dir_all(&repo.root)
            .await
            .map_err(|e| repo.error("creating the repository directory", e))?;
        Ok(repo)
    }

    pub fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn error(&self, operation: &str, source: std::io::Error) -> RepoError {
        RepoError::Local {
            location: self.describe(),
            operation: operation.to_string(),
            source,
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    async fn ensure_parent(&self, path: &Path) -> Result<(), RepoError> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| self.error("creating a backup directory", e))?;
        }
        Ok(())
    }

    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), RepoError> {
        let (tx, rx) = mpsc::channel(2);
        tx.send(Chunk::Data(data)).await.ok();
        tx.send(Chunk::End).await.ok();
        drop(tx);
        self.upload(key, rx).await.map(|_| ())
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, RepoError> {
        match tokio::fs::read(self.path(key)).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RepoError::NotFound {
                location: self.describe(),
                key: key.to_string(),
            }),
            Err(e) => Err(self.error(&format!("reading {key}"), e)),
        }
    }

    pub async fn open_reader(&self, key: &str) -> Result<ObjectReader, RepoError> {
        match tokio::fs::File::open(self.path(key)).await {
            Ok(f) => Ok(Box::pin(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RepoError::NotFound {
                location: self.describe(),
                key: key.to_string(),
            }),
            Err(e) => Err(self.error(&format!("opening {key}"), e)),
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
        .map_err(|e| self.error("listing", std::io::Error::other(e)))?;
        listed.map_err(|e| self.error("listing", e))
    }

    pub async fn delete(&self, keys: &[String]) -> Result<(), RepoError> {
        for key in keys {
            let path = self.path(key);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.error(&format!("deleting {key}"), e)),
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

    pub async fn upload(
        &self,
        key: &str,
        mut chunks: mpsc::Receiver<Chunk>,
    ) -> Result<u64, RepoError> {
        let path = self.path(key);
        self.ensure_parent(&path).await?;
        let partial = PathBuf::from(format!("{}{PARTIAL_SUFFIX}", path.display()));
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| self.error(&format!("creating {key}"), e))?;
        let mut size = 0u64;
        let outcome = loop {
            match chunks.recv().await {
                Some(Chunk::Data(data)) => {
                    size += data.len() as u64;
                    if let Err(e) = file.write_all(&data).await {
                        break Err(self.error(&format!("writing {key}"), e));
                    }
                }
                Some(Chunk::End) => break Ok(()),
                None => {
                    break Err(RepoError::Abandoned {
                        location: self.describe(),
                        key: key.to_string(),
                    });
                }
            }
        };
        if let Err(e) = outcome {
            drop(file);
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        file.sync_all()
            .await
            .map_err(|e| self.error(&format!("syncing {key}"), e))?;
        drop(file);
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| self.error(&format!("finishing {key}"), e))?;
        if let Some(parent) = path.parent()
            && let Ok(dir) = tokio::fs::File::open(parent).await
        {
            let _ = dir.sync_all().await;
        }
        Ok(size)
    }
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
