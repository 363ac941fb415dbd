//! Restoring the file store and dhis.conf. The file store is staged inside its directory (which
//! is usually a mount point and cannot be renamed) and swapped in entry by entry; the old
//! entries are kept aside. Owners and modes come back as recorded when running as root; setuid
//! and setgid bits never do.

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use chrono::Utc;

use super::encryption::{DecryptWith, open_compressed};
use super::error::BackupError;
use super::manifest::{BackupManifest, PosixMetadata, StoredObject};
use super::object_reader::blocking_reader;
use super::repo::Repository;
use super::stream::HashingReader;
use super::verify::check_digest;

/// Never restored: setuid and setgid.
const FORBIDDEN_MODE_BITS: u32 = 0o6000;
/// dhis.conf holds the database password and encryption.password.
const DHIS_CONF_MAX_MODE: u32 = 0o640;

/// Entries that belong to the volume, not to the file store: a fresh ext4 volume holds
/// `lost+found`. They neither make a directory "not empty" nor are moved aside.
pub fn is_volume_entry(name: &std::ffi::OsStr) -> bool {
    name == "lost+found"
}

pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The mode a restored file gets: the recorded one without setuid/setgid.
pub fn restored_mode(recorded: u32) -> u32 {
    recorded & 0o7777 & !FORBIDDEN_MODE_BITS
}

/// dhis.conf's mode: the recorded one capped at 0640, or 0600 when none was recorded.
pub fn dhis_conf_mode(recorded: Option<u32>) -> u32 {
    recorded.map(|m| m & DHIS_CONF_MAX_MODE).unwrap_or(0o600)
}

fn aside_name(path: &Path) -> PathBuf {
    PathBuf::from(format!(
        "{}.replaced-{}",
        path.display(),
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ))
}

/// A file store extracted and checked, waiting to be swapped in.
pub struct StagedFileStore {
    dir: PathBuf,
    staging: PathBuf,
}

pub async fn stage_file_store(
    repo: &Repository,
    manifest: &BackupManifest,
    object: &StoredObject,
    dir: &Path,
    key: &DecryptWith,
) -> Result<StagedFileStore, BackupError> {
    let reader = blocking_reader(repo, manifest, object).await?;
    let (m, o, dir, key) = (
        manifest.clone(),
        object.clone(),
        dir.to_path_buf(),
        key.clone(),
    );
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|e| BackupError::io(format!("creating {}", dir.display()), e))?;
        let staging = dir.join(format!(".dhis2ctl-restoring-{}", m.id));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging)
            .map_err(|e| BackupError::io(format!("creating {}", staging.display()), e))?;
        let staged = StagedFileStore { dir, staging };
        let mut hashing = HashingReader::new(reader);
        let unpacked = open_compressed(&o, &mut hashing, &key)
            .and_then(zstd::stream::read::Decoder::new)
            .and_then(|decoder| unpack(decoder, &staged.staging));
        let drained = hashing.drain();
        let (size, sha) = hashing.finish();
        let checked = check_digest(&m, &o, size, &sha)
            .and_then(|_| drained.map_err(|e| BackupError::io(format!("reading {}", o.name), e)))
            .and_then(|_| unpacked.map_err(|e| BackupError::io("unpacking the file store", e)));
        match checked {
            Ok(()) => Ok(staged),
            Err(e) => {
                staged.discard();
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| BackupError::io("restore worker", io::Error::other(e)))?
}

/// Unpacks entry by entry so modes and owners are set as this restore decides (directories
/// last, so a read-only directory does not block its own files).
fn unpack<R: Read>(reader: R, into: &Path) -> io::Result<()> {
    let as_root = running_as_root();
    let mut archive = tar::Archive::new(reader);
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header();
        let mode = header.mode()?;
        let owner = (header.uid()?, header.gid()?);
        let is_dir = header.entry_type().is_dir();
        let is_symlink = header.entry_type().is_symlink();
        let relative: PathBuf = entry
            .path()?
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_os_string()),
                _ => None,
            })
            .collect();
        entry.set_preserve_permissions(false);
        // `unpack_in` refuses paths that would escape `into`.
        if !entry.unpack_in(into)? {
            continue;
        }
        let path = into.join(&relative);
        if is_dir {
            directories.push((path, mode, owner));
        } else {
            apply_metadata(&path, mode, owner, as_root, is_symlink)?;
        }
    }
    for (path, mode, owner) in directories.into_iter().rev() {
        apply_metadata(&path, mode, owner, as_root, false)?;
    }
    Ok(())
}

fn apply_metadata(
    path: &Path,
    mode: u32,
    (uid, gid): (u64, u64),
    as_root: bool,
    is_symlink: bool,
) -> io::Result<()> {
    if as_root {
        let (uid, gid) = (u32::try_from(uid).ok(), u32::try_from(gid).ok());
        std::os::unix::fs::lchown(path, uid, gid)?;
    }
    if !is_symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(restored_mode(mode)))?;
    }
    Ok(())
}

impl StagedFileStore {
    /// Moves the directory's current entries aside (beside it, else inside it when it is a
    /// mount point) and the restored ones in. Returns where the old entries went.
    pub fn swap_in(self) -> Result<Option<PathBuf>, BackupError> {
        let staging_name = self.staging.file_name().map(|n| n.to_os_string());
        let old: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| BackupError::io(format!("reading {}", self.dir.display()), e))?
            .filter_map(Result::ok)
            .filter(|e| Some(e.file_name()) != staging_name && !is_volume_entry(&e.file_name()))
            .map(|e| e.path())
            .collect();
        let mut aside = None;
        if !old.is_empty() {
            let target = self.keep_aside(&old)?;
            aside = Some(target);
        }
        let restored = self.staging.join("filestore");
        if restored.is_dir() {
            for entry in std::fs::read_dir(&restored)
                .map_err(|e| BackupError::io(format!("reading {}", restored.display()), e))?
            {
                let entry = entry
                    .map_err(|e| BackupError::io(format!("reading {}", restored.display()), e))?;
                let to = self.dir.join(entry.file_name());
                std::fs::rename(entry.path(), &to).map_err(|e| {
                    BackupError::io(format!("moving the restored {} in", to.display()), e)
                })?;
            }
        }
        self.discard();
        Ok(aside)
    }

    fn keep_aside(&self, old: &[PathBuf]) -> Result<PathBuf, BackupError> {
        let beside = aside_name(&self.dir);
        let inside = self
            .dir
            .join(format!(".replaced-{}", Utc::now().format("%Y%m%dT%H%M%SZ")));
        let mut aside = beside.clone();
        std::fs::create_dir(&aside)
            .map_err(|e| BackupError::io(format!("creating {}", aside.display()), e))?;
        for (i, path) in old.iter().enumerate() {
            let name = path.file_name().unwrap_or_default();
            match std::fs::rename(path, aside.join(name)) {
                Ok(()) => {}
                // A mount point: its entries cannot leave the filesystem by renaming.
                Err(e) if i == 0 && e.raw_os_error() == Some(18) => {
                    let _ = std::fs::remove_dir(&beside);
                    aside = inside.clone();
                    std::fs::create_dir(&aside)
                        .map_err(|e| BackupError::io(format!("creating {}", aside.display()), e))?;
                    std::fs::rename(path, aside.join(name)).map_err(|e| {
                        BackupError::io(format!("moving {} aside", path.display()), e)
                    })?;
                }
                Err(e) => {
                    return Err(BackupError::io(
                        format!("moving {} aside", path.display()),
                        e,
                    ));
                }
            }
        }
        Ok(aside)
    }

    pub fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// dhis.conf from the backup, checksum checked.
pub async fn read_dhis_conf(
    repo: &Repository,
    manifest: &BackupManifest,
    object: &StoredObject,
    key: &DecryptWith,
) -> Result<Vec<u8>, BackupError> {
    let reader = blocking_reader(repo, manifest, object).await?;
    let (m, o, key) = (manifest.clone(), object.clone(), key.clone());
    tokio::task::spawn_blocking(move || {
        let mut hashing = HashingReader::new(reader);
        let mut content = Vec::new();
        let decoded = open_compressed(&o, &mut hashing, &key)
            .and_then(zstd::stream::read::Decoder::new)
            .and_then(|mut d| d.read_to_end(&mut content));
        let drained = hashing.drain();
        let (size, sha) = hashing.finish();
        check_digest(&m, &o, size, &sha)?;
        decoded
            .and(drained)
            .map_err(|e| BackupError::io("reading dhis.conf from the backup", e))?;
        Ok(content)
    })
    .await
    .map_err(|e| BackupError::io("restore worker", io::Error::other(e)))?
}

/// Writes dhis.conf (an existing one is moved aside first) with its recorded owner, when
/// running as root, and its recorded mode capped at 0640. Returns where the old file went.
pub fn write_dhis_conf(
    path: &Path,
    content: &[u8],
    recorded: Option<PosixMetadata>,
) -> Result<Option<PathBuf>, BackupError> {
    let mut aside = None;
    if path.exists() {
        let to = aside_name(path);
        std::fs::rename(path, &to)
            .map_err(|e| BackupError::io(format!("moving {} aside", path.display()), e))?;
        aside = Some(to);
    }
    write_private_file(path, content, recorded)
        .map_err(|e| BackupError::io(format!("writing {}", path.display()), e))?;
    Ok(aside)
}

fn write_private_file(
    path: &Path,
    content: &[u8],
    recorded: Option<PosixMetadata>,
) -> io::Result<()> {
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
    if let Some(r) = recorded
        && running_as_root()
    {
        std::os::unix::fs::fchown(&file, Some(r.uid), Some(r.gid))?;
    }
    // Explicitly, so the umask cannot widen or narrow it.
    file.set_permissions(std::fs::Permissions::from_mode(dhis_conf_mode(
        recorded.map(|r| r.mode),
    )))?;
    file.sync_all()
}

#[cfg(test)]
mod volume_entry_tests {
    #[test]
    fn lost_and_found_belongs_to_the_volume() {
        assert!(super::is_volume_entry(std::ffi::OsStr::new("lost+found")));
        assert!(!super::is_volume_entry(std::ffi::OsStr::new("apps")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setuid_and_setgid_never_come_back() {
        assert_eq!(restored_mode(0o4755), 0o755);
        assert_eq!(restored_mode(0o2775), 0o775);
        assert_eq!(restored_mode(0o1777), 0o1777);
        assert_eq!(restored_mode(0o100644), 0o644);
    }

    #[test]
    fn dhis_conf_is_never_more_than_0640() {
        assert_eq!(dhis_conf_mode(Some(0o644)), 0o640);
        assert_eq!(dhis_conf_mode(Some(0o600)), 0o600);
        assert_eq!(dhis_conf_mode(Some(0o4777)), 0o640);
        assert_eq!(dhis_conf_mode(Some(0o400)), 0o400);
        assert_eq!(dhis_conf_mode(None), 0o600);
    }

    #[test]
    fn a_staged_file_store_replaces_the_contents_not_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("files");
        std::fs::create_dir_all(dir.join("old")).unwrap();
        std::fs::write(dir.join("old/a.txt"), "old").unwrap();
        let staging = dir.join(".dhis2ctl-restoring-x");
        std::fs::create_dir_all(staging.join("filestore/new")).unwrap();
        std::fs::write(staging.join("filestore/new/b.txt"), "new").unwrap();
        let inode = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).unwrap().ino()
        };
        let before = inode(&dir);
        let aside = StagedFileStore {
            dir: dir.clone(),
            staging: staging.clone(),
        }
        .swap_in()
        .unwrap()
        .unwrap();
        assert_eq!(inode(&dir), before, "the directory itself stays");
        assert_eq!(
            std::fs::read_to_string(dir.join("new/b.txt")).unwrap(),
            "new"
        );
        assert!(!dir.join("old").exists());
        assert!(!staging.exists());
        assert_eq!(
            std::fs::read_to_string(aside.join("old/a.txt")).unwrap(),
            "old"
        );
    }
}
