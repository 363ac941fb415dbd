//! Opens an object of a backup for blocking reads (decompression, tar and `pg_restore` feeding
//! run on blocking threads).

use tokio_util::io::SyncIoBridge;

use super::error::BackupError;
use super::manifest::{BackupManifest, StoredObject, object_key};
use super::repo::{ObjectReader, Repository};

/// A blocking `Read` over a stored object, for use on a blocking thread.
pub async fn blocking_reader(
    repo: &Repository,
    manifest: &BackupManifest,
    object: &StoredObject,
) -> Result<SyncIoBridge<ObjectReader>, BackupError> {
    let key = object_key(&manifest.instance, &manifest.id, &object.name);
    Ok(SyncIoBridge::new(repo.open_reader(&key).await?))
}
