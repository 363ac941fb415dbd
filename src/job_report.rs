//! What an engine Job tells the operator. `dhis2ctl … --report-file /dev/termination-log` writes
//! it as the container's termination message; the kubelet copies that into the pod's status,
//! where the operator reads it. The message is limited to 4096 bytes and readable by anyone who
//! can read pods: it never holds a secret, and long lists are cut.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// The kubelet keeps at most this many bytes of a termination message.
pub const MAX_REPORT_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum JobReport {
    Backup(BackupJobReport),
    Restore(RestoreJobReport),
    Drill(DrillJobReport),
    /// `backup restore --resolve-only`: which backup an id (or `latest`) names.
    Resolved(ResolvedBackupReport),
    /// The command failed before it could report anything else.
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupJobReport {
    pub id: String,
    pub repository: String,
    pub started_at: String,
    pub completed_at: String,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhis2_schema_version: Option<String>,
    pub postgres_version: String,
    /// Retention run after the backup: `kept N, deleted M`, or why it failed (the backup
    /// itself succeeded either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// The objects are age-encrypted (restoring needs the key).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// S3 Object Lock retention date (RFC 3339) of every object; absent when not locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
    /// `backup run --verify`: true once the whole backup was re-read from the repository and
    /// matched; absent when not asked for (a failed verification is a failed Job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreJobReport {
    pub id: String,
    pub target: String,
    pub duration_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhis2_schema_version: Option<String>,
    /// Where the file store was restored; absent when the database alone was (or the file
    /// store was not restored: see `failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_dir: Option<String>,
    /// A restore report is written only once the restored database is swapped in. Set when a
    /// later step failed, or the engine ended before finishing them: the target holds the
    /// restored database (the one it replaced is `replacedDatabase`), `filesDir` says whether
    /// the file store was restored too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The backup a restore will restore, found before anything is stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedBackupReport {
    pub instance: String,
    pub id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillJobReport {
    pub backup_id: String,
    pub passed: bool,
    pub rpo_seconds: i64,
    pub rto_seconds: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl JobReport {
    /// Compact JSON within [`MAX_REPORT_BYTES`]: long texts and lists are cut, never the fields
    /// the operator needs.
    pub fn to_bounded_json(&self) -> String {
        let mut report = self.clone();
        loop {
            let text = serde_json::to_string(&report).unwrap_or_default();
            if text.len() <= MAX_REPORT_BYTES || !report.shrink() {
                return text;
            }
        }
    }

    /// Makes the report smaller; false when nothing is left to cut.
    fn shrink(&mut self) -> bool {
        match self {
            JobReport::Drill(d) if d.failures.len() > 1 => {
                let n = d.failures.len();
                d.failures.truncate(n / 2);
                d.failures.push(format!("… and {} more", n - n / 2));
                true
            }
            JobReport::Drill(d) => shorten(d.failures.first_mut()),
            JobReport::Failed { error } => shorten(Some(error)),
            JobReport::Backup(b) => shorten(b.retention.as_mut()),
            JobReport::Restore(_) | JobReport::Resolved(_) => false,
        }
    }

    pub fn parse(message: &str) -> Option<JobReport> {
        serde_json::from_str(message.trim()).ok()
    }
}

fn shorten(text: Option<&mut String>) -> bool {
    match text {
        Some(t) if t.len() > 64 => {
            let mut cut = t.len() / 2;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t.truncate(cut);
            t.push('…');
            true
        }
        _ => false,
    }
}

static REPORT_FILE: OnceLock<PathBuf> = OnceLock::new();
/// Set once a report says how the command failed: the generic failure report must not
/// overwrite it.
static FINAL: AtomicBool = AtomicBool::new(false);

/// Where reports go (`--report-file`); set once at start-up.
pub fn set_report_file(path: PathBuf) {
    let _ = REPORT_FILE.set(path);
}

/// Writes the report when `--report-file` was given. Failing to write it is logged, not fatal:
/// the operator then falls back to the Job's exit code and log.
pub fn record(report: &JobReport) {
    if FINAL.load(Ordering::SeqCst) {
        return;
    }
    if let Some(path) = REPORT_FILE.get() {
        write_report(path, report);
    }
}

/// Writes the report, and nothing after it: it says how the command failed better than the
/// error alone would.
pub fn record_final(report: &JobReport) {
    record(report);
    FINAL.store(true, Ordering::SeqCst);
}

fn write_report(path: &Path, report: &JobReport) {
    if let Err(e) = std::fs::write(path, report.to_bounded_json()) {
        tracing::warn!(path = %path.display(), error = %e, "could not write the job report");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips_and_stays_within_the_kubelet_limit() {
        let report = JobReport::Drill(DrillJobReport {
            backup_id: "20261125T020000Z-1a2b3c4d".into(),
            passed: false,
            rpo_seconds: 3600,
            rto_seconds: 12.5,
            failures: (0..500)
                .map(|i| format!("table {i}: expected 1000 rows, found 0"))
                .collect(),
        });
        let text = report.to_bounded_json();
        assert!(text.len() <= MAX_REPORT_BYTES, "{} bytes", text.len());
        let JobReport::Drill(back) = JobReport::parse(&text).unwrap() else {
            panic!("not a drill report: {text}")
        };
        assert_eq!(back.backup_id, "20261125T020000Z-1a2b3c4d");
        assert!(!back.passed);
        assert!(back.failures.last().unwrap().contains("more"));
    }

    #[test]
    fn a_long_error_is_cut_on_a_character_boundary() {
        let report = JobReport::Failed {
            error: "ការបម្រុងទុកបានបរាជ័យ ".repeat(400),
        };
        let text = report.to_bounded_json();
        assert!(text.len() <= MAX_REPORT_BYTES);
        assert!(matches!(
            JobReport::parse(&text),
            Some(JobReport::Failed { .. })
        ));
    }
}
