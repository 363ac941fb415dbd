//! `--metrics-textfile`: the thin I/O around `crate::metrics_textfile` — read the previous file,
//! update it, write it back atomically. Never fails the command: a file that cannot be written
//! is a warning on stderr, and the backup or drill keeps its own exit code.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::metrics_textfile::{ENVIRONMENTS, InstanceLabels, Textfile};

#[derive(Debug, Clone, Default, Args)]
pub struct MetricsTextfileArgs {
    /// Also write the backup and drill metrics (docs/metrics.md) to this file for
    /// node_exporter's textfile collector, e.g. /var/lib/node_exporter/textfile/dhis2_backup_hmis.prom.
    /// `backup run` and `drill` share one file per instance. Written even when the backup
    /// fails; a file that cannot be written is a warning, never a failed backup.
    #[arg(long, env = "DHIS2_METRICS_TEXTFILE", value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,
    /// The `environment` label of those metrics (empty unless given).
    #[arg(long, env = "DHIS2_METRICS_ENVIRONMENT", value_name = "ENV", value_parser = ENVIRONMENTS)]
    pub metrics_environment: Option<String>,
}

impl MetricsTextfileArgs {
    /// Updates the instance's series in the textfile, if one was asked for.
    pub fn record(&self, instance: &str, update: impl FnOnce(&mut Textfile, &InstanceLabels)) {
        let Some(path) = &self.metrics_textfile else {
            return;
        };
        let labels = InstanceLabels {
            instance: instance.to_string(),
            environment: self.metrics_environment.clone().unwrap_or_default(),
        };
        if let Err(e) = update_textfile(path, &labels, update) {
            eprintln!(
                "warning: could not write the metrics textfile {}: {e}; the backup or drill itself is not affected. \
                 Create the directory (mkdir -p {}) and let the user running dhis2ctl write to it, or drop --metrics-textfile",
                path.display(),
                parent_dir(path).display()
            );
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn update_textfile(
    path: &Path,
    labels: &InstanceLabels,
    update: impl FnOnce(&mut Textfile, &InstanceLabels),
) -> std::io::Result<()> {
    let dir = parent_dir(path);
    // A backup and a drill may end at the same moment: one at a time reads and writes, or one
    // of them loses the other's update. node_exporter does not lock, so is never blocked.
    let dir_handle = std::fs::File::open(dir)?;
    dir_handle.lock()?;
    let previous = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        // Not overwritten: that would reset the failure counter.
        Err(e) => return Err(e),
    };
    let mut file = Textfile::parse(&previous);
    update(&mut file, labels);
    write_atomically(path, dir, &dir_handle, file.render().as_bytes())
}

/// Writes a temporary file beside `path` (not `*.prom`, so node_exporter skips it), syncs it and
/// renames it over `path`: node_exporter reads the old file or the new one, never half of one.
fn write_atomically(
    path: &Path,
    dir: &Path,
    dir_handle: &std::fs::File,
    contents: &[u8],
) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        let mut file = options.open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    // The rename itself survives a crash once the directory is synced; best effort.
    let _ = dir_handle.sync_all();
    Ok(())
}
