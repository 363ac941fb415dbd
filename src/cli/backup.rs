//! Handlers for `dhis2ctl backup …` and `dhis2ctl drill`.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::Args;
use serde::Serialize;

use crate::backup::BackupError;
use crate::backup::catalog::{find_backup, load_catalog, presence};
use crate::backup::copy::{CopyOptions, CopyResult, CopySelection, copy_backups};
use crate::backup::drill::{DrillReport, run_drill};
use crate::backup::encryption::EncryptTo;
use crate::backup::error::validate_instance_name;
use crate::backup::manifest::{BackupManifest, BackupSummary, EncryptionRecord, ObjectKind};
use crate::backup::object_lock::{LockMode, ObjectLock};
use crate::backup::prune::{check_policy, prune_backups};
use crate::backup::repo::{LOCAL_CANNOT_LOCK, RepoLocation, Repository};
use crate::backup::restore::{RestoreRequest, restore_backup, undo_interrupted};
use crate::backup::retention::RetentionPolicy;
use crate::backup::room_check::SpaceCheck;
use crate::backup::run::{BackupPurpose, BackupRequest, run_backup};
use crate::backup::verify::{VerifyReport, verify_backup, verify_written_backup};
use crate::job_report::{
    self, BackupJobReport, DrillJobReport, JobReport, ResolvedBackupReport, RestoreJobReport,
};
use crate::metrics_textfile::{BackupOutcome, DrillOutcome};
use crate::output::{OutputFormat, human_bytes, human_duration, render_table};
use crate::postgres::DatabaseTarget;
use crate::progress::Progress;

use super::encryption::{DecryptArgs, EncryptArgs};
use super::metrics_textfile::MetricsTextfileArgs;
use super::{DrillArgs, PgBinArgs, RepoArgs, ReposArgs, S3Args, emit};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The DHIS2 database, postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (or PGPASSWORD for the password).
    #[arg(long, env = "DHIS2_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// DHIS2 instance name (groups backups in the repository).
    #[arg(long)]
    pub instance: String,
    /// The DHIS2 file store directory (filestore.provider=filesystem), e.g. /opt/dhis2/files.
    #[arg(long)]
    pub files_dir: Option<PathBuf>,
    /// dhis.conf, which holds encryption.password: without it encrypted DHIS2 data is lost.
    #[arg(long)]
    pub dhis_conf: Option<PathBuf>,
    /// Also keep the data of analytics and resource tables (DHIS2 regenerates it).
    #[arg(long)]
    pub include_analytics: bool,
    /// zstd level: 1 fastest … 19 smallest. 3 matches gzip's size at several times its speed.
    #[arg(long, default_value_t = crate::backup::store::DEFAULT_ZSTD_LEVEL)]
    pub zstd_level: i32,
    #[command(flatten)]
    pub encryption: EncryptArgs,
    /// Make the backup immutable for N days with S3 Object Lock: the store refuses to delete or
    /// overwrite any of its objects (manifest included) before then, whoever asks. The bucket
    /// needs versioning and object lock enabled; not possible for a local repository.
    #[arg(long, env = "DHIS2_BACKUP_LOCK_DAYS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub lock_days: Option<u32>,
    /// With --lock-days: governance (default; an administrator holding the
    /// s3:BypassGovernanceRetention permission can still remove the lock) or compliance (nobody
    /// can, not even the account's root user, until the date passes).
    #[arg(long, env = "DHIS2_BACKUP_LOCK_MODE", value_enum)]
    pub lock_mode: Option<LockMode>,
    /// Tests only: a lock of N seconds instead of days (S3 stores cannot be made to wait a day).
    #[arg(long, hide = true, value_name = "N", conflicts_with = "lock_days",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub lock_seconds_for_tests: Option<u32>,
    /// Retention applied to this instance's backups once this one succeeded (as `backup
    /// prune`); none without a --keep-* flag. A failed prune does not fail the backup.
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// This backup keeps what is there just before a restore (the disaster-recovery runbook's
    /// "keep what is there now", possibly the damaged data): restores and drills of `latest`
    /// never pick it; restore it by its id.
    #[arg(
        long,
        env = "DHIS2_BACKUP_BEFORE_RESTORE",
        conflicts_with = "pre_upgrade"
    )]
    pub before_restore: bool,
    /// This backup is the way back from an upgrade about to start (the operator's pre-upgrade
    /// backup; by hand before upgrading a plain server): retention keeps the two newest such
    /// backups whatever their age.
    #[arg(long, env = "DHIS2_BACKUP_PRE_UPGRADE")]
    pub pre_upgrade: bool,
    /// After the manifest is written, re-read the whole backup from the repository and check
    /// every object's size and SHA-256 (and that it decodes; an encrypted backup without its
    /// private key gets its age headers checked instead). Exit 1 when it does not match.
    #[arg(long, env = "DHIS2_BACKUP_VERIFY")]
    pub verify: bool,
    #[command(flatten)]
    pub pg: PgBinArgs,
    #[command(flatten)]
    pub metrics: MetricsTextfileArgs,
}

/// The lock `backup run` was asked for, refused before any work when it cannot apply.
fn lock_request(args: &RunArgs) -> Result<Option<(LockMode, chrono::Duration)>, BackupError> {
    let duration = match (args.lock_days, args.lock_seconds_for_tests) {
        (Some(days), _) => chrono::Duration::days(days.into()),
        (None, Some(seconds)) => chrono::Duration::seconds(seconds.into()),
        (None, None) if args.lock_mode.is_some() => {
            return Err(BackupError::Usage(
                "--lock-mode: only means something with --lock-days N (or DHIS2_BACKUP_LOCK_DAYS)"
                    .into(),
            ));
        }
        (None, None) => return Ok(None),
    };
    if matches!(args.repo.location()?, RepoLocation::Local { .. }) {
        return Err(BackupError::Usage(LOCAL_CANNOT_LOCK.into()));
    }
    Ok(Some((
        args.lock_mode.unwrap_or(LockMode::Governance),
        duration,
    )))
}

/// What `backup run -o json` prints: the manifest, and the retention outcome when a policy was
/// given.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunOutput<'a> {
    #[serde(flatten)]
    manifest: &'a BackupManifest,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention: Option<String>,
    /// With --verify: true (a failed verification exits 1 instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<bool>,
    /// With --verify: false when encrypted objects were checked without their private key
    /// (sizes, checksums and age headers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    contents_checked: Option<bool>,
}

/// The `verified` line of `backup run --verify`.
fn describe_verification(report: &VerifyReport) -> &'static str {
    if report.contents_checked() {
        "every object re-read, sizes and SHA-256 match, contents decode"
    } else {
        "every object re-read, sizes, SHA-256 and age headers match (contents not decrypted: the private key is not here)"
    }
}

/// The retention run after a successful backup, in one line: `kept 7, deleted 2`, or why it
/// failed. A failure is a warning: the backup itself is stored and complete.
async fn retention_after_backup(
    repo: &Repository,
    instance: &str,
    policy: &RetentionPolicy,
) -> String {
    match prune_backups(repo, instance, policy, false).await {
        Ok(report) => {
            let mut text = format!(
                "kept {}, deleted {}",
                report.kept.len(),
                report.deleted.len()
            );
            let ways_back: Vec<&str> = report
                .kept
                .iter()
                .filter(|k| k.reasons.contains(&"pre-upgrade"))
                .map(|k| k.id.as_str())
                .collect();
            if !ways_back.is_empty() {
                // Said in the Dhis2Backup's status.retention: why old backups are still there.
                text.push_str(&format!(
                    " (the way back from an upgrade kept: {})",
                    ways_back.join(", ")
                ));
            }
            if !report.locked.is_empty() {
                text.push_str(&format!(", {} expired but locked", report.locked.len()));
            }
            if !report.incomplete_deleted.is_empty() {
                text.push_str(&format!(
                    ", removed {} incomplete",
                    report.incomplete_deleted.len()
                ));
            }
            text
        }
        Err(e) => {
            tracing::warn!(%instance, error = %e, "retention after the backup failed; the backup itself succeeded");
            format!("retention failed: {e}")
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The instance: without --repo, its Dhis2Backups in the cluster are listed.
    #[arg(value_name = "INSTANCE")]
    pub cluster_instance: Option<String>,
    #[command(flatten)]
    pub kube: super::kube_access::KubeArgs,
    #[command(flatten)]
    pub repos: ReposArgs,
    /// Only this instance's backups (with --repo).
    #[arg(long)]
    pub instance: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[arg(long)]
    pub instance: String,
    /// Backup id, or `latest`.
    pub id: String,
    /// Without a key an encrypted backup gets sizes, checksums and age headers checked; with
    /// it, its contents too.
    #[command(flatten)]
    pub key: DecryptArgs,
    #[command(flatten)]
    pub pg: PgBinArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[arg(long)]
    pub instance: String,
    /// Backup id, or `latest`.
    pub id: String,
    /// The database to restore into (created if missing); must be empty unless --force. Never
    /// taken from DHIS2_DATABASE_URL, the backup source: a restore target is always named.
    #[arg(long, env = "DHIS2_RESTORE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Restore the file store into this directory (must be empty unless --force).
    #[arg(long)]
    pub files_dir: Option<PathBuf>,
    /// With --files-dir: a backup without a file store restores the database alone instead of
    /// being refused (the operator restores any backup of an instance with a file store volume).
    #[arg(long, requires = "files_dir")]
    pub skip_missing_file_store: bool,
    /// Write the backed-up dhis.conf here (refused if it exists, unless --force).
    #[arg(long)]
    pub dhis_conf: Option<PathBuf>,
    /// Replace a target that holds data; the old database and files are kept aside.
    #[arg(long)]
    pub force: bool,
    /// Role that owns every restored object (default: the target database's owner, else the
    /// connecting role), e.g. dhis.
    #[arg(long, value_name = "ROLE")]
    pub owner: Option<String>,
    /// Drop the replaced database at once instead of keeping it as <target>__replaced_<time>.
    #[arg(long)]
    pub drop_replaced: bool,
    /// The size in bytes of the volume the database server keeps its data on: the restore
    /// checks the restored database fits beside what is there (without it, only a server on
    /// this machine is measured, through its data directory).
    #[arg(long, value_name = "BYTES", conflicts_with = "skip_space_check")]
    pub database_volume_bytes: Option<u64>,
    /// Restore without checking that the server has room for the restored database.
    #[arg(long)]
    pub skip_space_check: bool,
    /// Only say which backup ID names (`latest`: the newest that may be restored) and touch no
    /// database: the operator records it before it stops DHIS2.
    #[arg(long)]
    pub resolve_only: bool,
    #[command(flatten)]
    pub key: DecryptArgs,
    #[command(flatten)]
    pub pg: PgBinArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[arg(long)]
    pub instance: String,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Only report what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("which")
        .required(true)
        .args(["id", "missing"])
))]
pub struct CopyArgs {
    /// The repository to copy from: s3://BUCKET/PREFIX, file:///PATH or a directory path.
    #[arg(long, value_name = "REPO")]
    pub from: String,
    /// The repository to copy into (a local directory is created when missing).
    #[arg(long, value_name = "REPO")]
    pub to: String,
    /// DHIS2 instance name whose backups to copy.
    #[arg(long)]
    pub instance: String,
    /// Backup id, or `latest`.
    #[arg(value_name = "ID|latest")]
    pub id: Option<String>,
    /// Copy every complete backup of the instance that --to does not hold yet.
    #[arg(long)]
    pub missing: bool,
    /// S3 settings of --from, and of --to unless --to-s3-* say otherwise.
    #[command(flatten)]
    pub s3: S3Args,
    /// S3 endpoint of --to, when it is another store than --from.
    #[arg(long, value_name = "URL")]
    pub to_s3_endpoint: Option<String>,
    /// Path-style S3 addressing for --to.
    #[arg(long)]
    pub to_s3_path_style: Option<bool>,
    /// S3 region of --to.
    #[arg(long)]
    pub to_s3_region: Option<String>,
    /// AWS profile (~/.aws/credentials) with the credentials of --to, when they are not those of
    /// --from.
    #[arg(long, value_name = "PROFILE")]
    pub to_aws_profile: Option<String>,
    /// Do not read each copied object back from --to to check its SHA-256 (saves downloading
    /// the copy again; the checksum of the bytes sent is still checked before each upload
    /// completes).
    #[arg(long)]
    pub no_read_back: bool,
}

/// A retention policy: which of an instance's backups to keep (`backup prune`, and `backup run`
/// after a successful backup).
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Keep the N newest backups.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N days that have one.
    #[arg(long)]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// Time zone for days, weeks and months (IANA name, e.g. Asia/Phnom_Penh). Default UTC.
    #[arg(long, value_parser = parse_time_zone)]
    pub time_zone: Option<chrono_tz::Tz>,
}

impl RetentionArgs {
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            time_zone: self.time_zone,
        }
    }
}

fn parse_time_zone(s: &str) -> Result<chrono_tz::Tz, String> {
    s.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("'{s}' is not an IANA time zone name (e.g. Asia/Phnom_Penh, UTC)"))
}

pub async fn run(args: RunArgs, output: OutputFormat) -> Result<ExitCode, BackupError> {
    validate_instance_name(&args.instance)?;
    let metrics = args.metrics.clone();
    let instance = args.instance.clone();
    let result = run_here(args, output).await;
    metrics.record(&instance, |file, labels| {
        file.record_backup(labels, &backup_outcome(result.as_ref().ok()))
    });
    result.map(|_| ExitCode::SUCCESS)
}

/// What the metrics textfile records of a `backup run`: a stored backup whose run then failed
/// (say, --verify) is a failure too.
fn backup_outcome(stored: Option<&BackupManifest>) -> BackupOutcome {
    match stored {
        Some(m) => BackupOutcome::Succeeded {
            completed_at: m.completed_at,
            size_bytes: m.size_bytes(),
            duration_seconds: (m.completed_at - m.started_at).num_milliseconds() as f64 / 1000.0,
        },
        None => BackupOutcome::Failed,
    }
}

/// `backup run` itself; returns the stored backup's manifest.
async fn run_here(args: RunArgs, output: OutputFormat) -> Result<BackupManifest, BackupError> {
    let database = DatabaseTarget::parse(&args.database_url, "--database-url")?;
    let policy = args.retention.policy();
    // A bad policy is refused before the backup, not discovered after it.
    if !policy.is_empty() {
        check_policy(&policy)?;
    }
    let encrypt_to = args.encryption.encrypt_to()?;
    let lock = lock_request(&args)?;
    let mut repo = args.repo.open_for_backup().await?;
    if let Some((mode, duration)) = lock {
        // Checked before the first object is written; the date counts from the start.
        repo.require_object_lock(ObjectLock::from_now(mode, duration, Utc::now()))
            .await?;
    }
    let request = BackupRequest {
        instance: args.instance,
        database,
        files_dir: args.files_dir,
        dhis_conf: args.dhis_conf,
        include_analytics: args.include_analytics,
        pg_bin_dir: args.pg.pg_bin_dir,
        zstd_level: args.zstd_level,
        encrypt_to,
        purpose: match (args.before_restore, args.pre_upgrade) {
            (true, _) => BackupPurpose::BeforeRestore,
            (_, true) => BackupPurpose::PreUpgrade,
            _ => BackupPurpose::Routine,
        },
    };
    let progress = Progress::new(output.is_machine());
    let manifest = run_backup(&repo, &request, progress).await?;
    // Before retention: a backup that does not read back must not make older ones expire.
    let verification = if args.verify {
        let key = request
            .encrypt_to
            .as_ref()
            .map(EncryptTo::writer_key)
            .unwrap_or_default();
        let pg_bin_dir = request.pg_bin_dir.as_deref();
        Some(verify_written_backup(&repo, &manifest, pg_bin_dir, &key, progress).await?)
    } else {
        None
    };
    let retention = if policy.is_empty() {
        None
    } else {
        Some(retention_after_backup(&repo, &manifest.instance, &policy).await)
    };
    job_report::record(&JobReport::Backup(BackupJobReport {
        id: manifest.id.clone(),
        repository: repo.describe(),
        started_at: manifest.started_at.to_rfc3339(),
        completed_at: manifest.completed_at.to_rfc3339(),
        size_bytes: manifest.size_bytes(),
        dhis2_schema_version: manifest.dhis2_schema_version.clone(),
        postgres_version: manifest.postgres_version.clone(),
        retention: retention.clone(),
        encrypted: manifest.is_encrypted(),
        locked_until: manifest.object_lock.map(|l| l.retain_until.to_rfc3339()),
        verified: verification.as_ref().map(|_| true),
    }));
    let shown = RunOutput {
        manifest: &manifest,
        retention: retention.clone(),
        verified: verification.as_ref().map(|_| true),
        contents_checked: verification.as_ref().map(VerifyReport::contents_checked),
    };
    emit(output, &shown, || {
        let took = (manifest.completed_at - manifest.started_at).num_milliseconds() as f64 / 1000.0;
        let mut text = format!(
            "backup {} of {} stored in {}: {} in {:.1}s",
            manifest.id,
            manifest.instance,
            repo.describe(),
            human_bytes(manifest.size_bytes()),
            took
        );
        if let Some(db) = manifest.object(ObjectKind::Database) {
            text.push_str(&format!(
                "\n  database   {} (dump of {}), {} tables, data of {} regenerated tables skipped",
                human_bytes(db.size_bytes),
                human_bytes(db.uncompressed_bytes),
                manifest.tables.len(),
                manifest.skipped_table_data.len()
            ));
        }
        if let Some(fs) = manifest.object(ObjectKind::FileStore) {
            text.push_str(&format!("\n  file store {}", human_bytes(fs.size_bytes)));
        }
        if manifest.object(ObjectKind::DhisConf).is_some() {
            text.push_str("\n  dhis.conf  included (with encryption.password)");
        }
        if let Some(e) = manifest.encryption() {
            text.push_str(&format!("\n  encrypted  {}", describe_encryption(e)));
        }
        if let Some(v) = &manifest.dhis2_schema_version {
            text.push_str(&format!(
                "\n  DHIS2 schema {v}, PostgreSQL {}",
                manifest.postgres_version
            ));
        }
        if let Some(lock) = &manifest.object_lock {
            text.push_str(&format!(
                "\n  locked     until {} ({} mode)",
                lock.retain_until.format("%Y-%m-%d %H:%M:%SZ"),
                lock.mode
            ));
        }
        if let Some(v) = &verification {
            text.push_str(&format!("\n  verified   {}", describe_verification(v)));
        }
        if let Some(r) = &retention {
            text.push_str(&format!("\n  retention  {r}"));
        }
        text
    });
    Ok(manifest)
}

/// `to age1…, age1…` or `with a passphrase`: what the manifest records, no secret.
fn describe_encryption(e: &EncryptionRecord) -> String {
    match e {
        EncryptionRecord::Recipients { recipients } => {
            format!("with age to {}", recipients.join(", "))
        }
        EncryptionRecord::Passphrase => "with age and a passphrase".into(),
    }
}

pub async fn list(args: ListArgs, output: OutputFormat) -> Result<ExitCode, BackupError> {
    let instance = args.instance.clone().or(args.cluster_instance.clone());
    if let Some(i) = &instance {
        validate_instance_name(i)?;
    }
    let each = args.repos.each();
    if each.len() > 1 {
        return list_several(&each, instance.as_deref(), output).await;
    }
    let repo = match each.first() {
        Some(one) => one.open().await?,
        // Says which flag is missing.
        None => {
            RepoArgs {
                repo: None,
                s3: args.repos.s3.clone(),
            }
            .open()
            .await?
        }
    };
    let catalog = load_catalog(&repo, instance.as_deref()).await?;
    let summaries: Vec<BackupSummary> = catalog.complete.iter().map(BackupSummary::from).collect();
    emit(output, &summaries, || {
        if summaries.is_empty() {
            return format!("no complete backups in {}", repo.describe());
        }
        render_table(&LIST_COLUMNS, summaries.iter().map(list_row).collect())
    });
    Ok(ExitCode::SUCCESS)
}

const LIST_COLUMNS: [&str; 9] = [
    "id",
    "instance",
    "completed",
    "age",
    "size",
    "dhis2",
    "postgres",
    "encrypted",
    "locked until",
];

fn list_row(s: &BackupSummary) -> Vec<String> {
    vec![
        s.id.clone(),
        s.instance.clone(),
        s.completed_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        human_duration((Utc::now() - s.completed_at).num_seconds()),
        human_bytes(s.size_bytes),
        s.dhis2_schema_version.clone().unwrap_or_else(|| "-".into()),
        s.postgres_version.clone(),
        if s.encrypted { "age" } else { "no" }.to_string(),
        s.locked_until
            .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".into()),
    ]
}

/// One backup of `list` with several `--repo`: where a complete set of it exists.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedBackup {
    #[serde(flatten)]
    summary: BackupSummary,
    /// The repositories (as given) holding a complete set of this backup.
    repositories: Vec<String>,
}

/// Every complete backup in any of the repositories, newest first, with a column per repository
/// marking where it is complete.
async fn list_several(
    each: &[RepoArgs],
    instance: Option<&str>,
    output: OutputFormat,
) -> Result<ExitCode, BackupError> {
    let mut repos = Vec::new();
    for args in each {
        let repo = args.open().await?;
        if repos
            .iter()
            .any(|r: &Repository| r.describe() == repo.describe())
        {
            return Err(BackupError::Usage(format!(
                "--repo: {} is named twice",
                repo.describe()
            )));
        }
        repos.push(repo);
    }
    let mut catalogs = Vec::new();
    for repo in &repos {
        catalogs.push(load_catalog(repo, instance).await?);
    }
    let present = presence(&catalogs.iter().collect::<Vec<_>>());
    let mut manifests: Vec<&BackupManifest> = Vec::new();
    for m in catalogs.iter().flat_map(|c| &c.complete) {
        if !manifests
            .iter()
            .any(|k| k.instance == m.instance && k.id == m.id)
        {
            manifests.push(m);
        }
    }
    manifests.sort_by(|a, b| b.completed_at.cmp(&a.completed_at).then(b.id.cmp(&a.id)));
    let listed: Vec<ListedBackup> = manifests
        .iter()
        .map(|m| ListedBackup {
            summary: BackupSummary::from(*m),
            repositories: present[&(m.instance.clone(), m.id.clone())]
                .iter()
                .zip(&repos)
                .filter(|(here, _)| **here)
                .map(|(_, r)| r.describe())
                .collect(),
        })
        .collect();
    emit(output, &listed, || {
        let names: Vec<String> = repos.iter().map(Repository::describe).collect();
        if listed.is_empty() {
            return format!("no complete backups in {}", names.join(" or "));
        }
        // Numbered columns and a legend: repository names are long, and headers are upper-cased.
        let labels: Vec<String> = (1..=names.len()).map(|i| format!("repo{i}")).collect();
        let mut headers: Vec<&str> = LIST_COLUMNS.to_vec();
        headers.extend(labels.iter().map(String::as_str));
        let mut text = render_table(
            &headers,
            listed
                .iter()
                .map(|l| {
                    let mut row = list_row(&l.summary);
                    row.extend(names.iter().map(|n| {
                        if l.repositories.contains(n) {
                            "yes"
                        } else {
                            "-"
                        }
                        .to_string()
                    }));
                    row
                })
                .collect(),
        );
        for (label, name) in labels.iter().zip(&names) {
            text.push_str(&format!("\n{}: {name}", label.to_uppercase()));
        }
        for (purpose, meaning) in [
            (
                BackupPurpose::BeforeRestore,
                "kept before a restore (never `latest`)",
            ),
            (
                BackupPurpose::PreUpgrade,
                "the way back from an upgrade (kept by retention)",
            ),
        ] {
            let ids: Vec<&str> = listed
                .iter()
                .filter(|l| l.summary.purpose == purpose)
                .map(|l| l.summary.id.as_str())
                .collect();
            if !ids.is_empty() {
                text.push_str(&format!("\n{}: {meaning}", ids.join(", ")));
            }
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(args: VerifyArgs, output: OutputFormat) -> Result<ExitCode, BackupError> {
    validate_instance_name(&args.instance)?;
    let key = args.key.key()?;
    let repo = args.repo.open().await?;
    let catalog = load_catalog(&repo, Some(&args.instance)).await?;
    let manifest = find_backup(&catalog, &repo, &args.instance, &args.id)?;
    let report = verify_backup(
        &repo,
        manifest,
        args.pg.pg_bin_dir.as_deref(),
        &key,
        Progress::new(output.is_machine()),
    )
    .await?;
    emit(output, &report, || {
        let unread = report
            .objects
            .iter()
            .filter(|o| !o.contents_checked)
            .count();
        let mut text = format!(
            "backup {} of {} is intact{}: {} objects, {} checked",
            report.id,
            report.instance,
            if unread > 0 {
                " as far as checked without its key (sizes, checksums, age headers)"
            } else {
                ""
            },
            report.objects.len(),
            human_bytes(report.objects.iter().map(|o| o.size_bytes).sum())
        );
        for o in &report.objects {
            text.push_str(&format!(
                "\n  {:<26} {:>10}  sha256 {}{}",
                o.name,
                human_bytes(o.size_bytes),
                &o.sha256[..16],
                match (o.entries, o.contents_checked) {
                    (_, false) => "  (encrypted: contents not checked without --identity or --passphrase-file)".to_string(),
                    (Some(e), true) => format!("  ({e} entries)"),
                    (None, true) => String::new(),
                }
            ));
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}

/// `backup restore --resolve-only`: the backup `ID|latest` names, reported; nothing restored.
async fn resolve(args: RestoreArgs, output: OutputFormat) -> Result<ExitCode, BackupError> {
    validate_instance_name(&args.instance)?;
    let repo = args.repo.open().await?;
    let catalog = load_catalog(&repo, Some(&args.instance)).await?;
    let manifest = find_backup(&catalog, &repo, &args.instance, &args.id)?;
    let resolved = ResolvedBackupReport {
        instance: manifest.instance.clone(),
        id: manifest.id.clone(),
    };
    job_report::record(&JobReport::Resolved(resolved.clone()));
    emit(output, &resolved, || {
        format!(
            "{} of {} in {} is backup {}",
            args.id,
            args.instance,
            repo.describe(),
            resolved.id
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// A usage error, reported like clap's own: one line on stderr, exit code 2.
fn usage_error(message: &str) -> ! {
    clap::Error::raw(
        clap::error::ErrorKind::MissingRequiredArgument,
        format!("{message}\n"),
    )
    .exit()
}

pub async fn restore(args: RestoreArgs, output: OutputFormat) -> Result<ExitCode, BackupError> {
    if args.resolve_only {
        return resolve(args, output).await;
    }
    let Some(url) = args.database_url.as_deref() else {
        usage_error(
            "--database-url: name the database to restore into, with --database-url or DHIS2_RESTORE_DATABASE_URL (DHIS2_DATABASE_URL, the backup source, is never used as a restore target)",
        );
    };
    validate_instance_name(&args.instance)?;
    let database = DatabaseTarget::parse(url, "--database-url")?;
    let key = args.key.key()?;
    let repo = args.repo.open().await?;
    let catalog = load_catalog(&repo, Some(&args.instance)).await?;
    let manifest = find_backup(&catalog, &repo, &args.instance, &args.id)?;
    let files_dir = args.files_dir.filter(|_| {
        !args.skip_missing_file_store || manifest.object(ObjectKind::FileStore).is_some()
    });
    let request = RestoreRequest {
        database,
        files_dir,
        dhis_conf: args.dhis_conf,
        force: args.force,
        owner: args.owner,
        drop_replaced: args.drop_replaced,
        pg_bin_dir: args.pg.pg_bin_dir,
        key,
        space: match (args.skip_space_check, args.database_volume_bytes) {
            (true, _) => SpaceCheck::Skip,
            (false, Some(capacity_bytes)) => SpaceCheck::Volume { capacity_bytes },
            (false, None) => SpaceCheck::Measure,
        },
    };
    // An interrupted restore must not leave a half-filled side database on the server.
    let report = tokio::select! {
        report = restore_backup(&repo, manifest, &request, Progress::new(output.is_machine())) => report?,
        signal = interrupted() => {
            let undone = match undo_interrupted(&request.database).await {
                Ok(dropped) if dropped.is_empty() => format!(
                    "no side database was left to drop; {} is as it was, unless the restore had already swapped the restored database in (its previous one is then kept as {}__replaced_<time>)",
                    request.database.dbname(),
                    request.database.dbname()
                ),
                Ok(dropped) => format!(
                    "dropped the side database {}; {} is as it was",
                    dropped.join(", "),
                    request.database.dbname()
                ),
                Err(e) => format!(
                    "the side database could not be dropped ({e}); the next restore into {} drops it",
                    request.database.dbname()
                ),
            };
            return Err(BackupError::Interrupted { signal, undone });
        }
    };
    job_report::record(&JobReport::Restore(RestoreJobReport {
        id: report.id.clone(),
        target: report.target.clone(),
        duration_seconds: report.duration_seconds,
        replaced_database: report.replaced_database.clone(),
        dhis2_schema_version: report.dhis2_schema_version.clone(),
        files_dir: report.files_dir.clone(),
        failure: None,
    }));
    emit(output, &report, || {
        let mut text = format!(
            "restored backup {} of {} into {} (owner {}) in {:.1}s",
            report.id, report.instance, report.target, report.owner, report.duration_seconds
        );
        if report.closed_connections > 0 {
            text.push_str(&format!(
                "\n  closed {} connections to the database to swap it",
                report.closed_connections
            ));
        }
        for leftover in &report.dropped_leftovers {
            text.push_str(&format!(
                "\n  dropped {leftover}, left behind by an earlier restore that was killed"
            ));
        }
        if let Some(r) = &report.replaced_database {
            text.push_str(&format!("\n  previous database kept as {r}"));
        }
        if report.dropped_replaced_database {
            text.push_str("\n  previous database dropped (--drop-replaced)");
        }
        if let Some(d) = &report.files_dir {
            text.push_str(&format!("\n  file store -> {d}"));
        }
        if let Some(c) = &report.dhis_conf {
            text.push_str(&format!("\n  dhis.conf  -> {c}"));
        }
        for a in &report.kept_aside {
            text.push_str(&format!("\n  previous contents kept at {a}"));
        }
        for step in &report.next_steps {
            text.push_str(&format!("\nnext: {step}"));
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}

/// The first SIGINT or SIGTERM, by name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

pub async fn prune(args: PruneArgs, output: OutputFormat) -> Result<ExitCode, BackupError> {
    validate_instance_name(&args.instance)?;
    let policy = args.retention.policy();
    // Before any network access, so a forgotten flag fails at once.
    check_policy(&policy)?;
    let repo = args.repo.open().await?;
    let report = prune_backups(&repo, &args.instance, &policy, args.dry_run).await?;
    emit(output, &report, || {
        let verb = if report.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let locked = report.locked.iter().map(|l| {
            vec![
                l.id.clone(),
                format!(
                    "object lock (expired by the policy; deletable after {})",
                    l.deletable_after.format("%Y-%m-%d %H:%M:%SZ")
                ),
            ]
        });
        let mut text = render_table(
            &["kept", "why"],
            report
                .kept
                .iter()
                .map(|k| vec![k.id.clone(), k.reasons.join(",")])
                .chain(locked)
                .collect(),
        );
        text.push_str(&format!(
            "\n{verb} {} backups, {} incomplete, {} unfinished uploads: {}",
            report.deleted.len(),
            report.incomplete_deleted.len(),
            report.aborted_uploads,
            human_bytes(report.freed_bytes)
        ));
        for id in &report.deleted {
            text.push_str(&format!("\n  {verb} {id}"));
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}

/// `--from`/`--to` parsed, with the flag named in the error.
fn copy_location(flag: &str, text: &str) -> Result<RepoLocation, BackupError> {
    RepoLocation::parse(text).map_err(|e| BackupError::Usage(e.replacen("--repo", flag, 1)))
}

pub async fn copy(args: CopyArgs, output: OutputFormat) -> Result<ExitCode, BackupError> {
    validate_instance_name(&args.instance)?;
    let from_location = copy_location("--from", &args.from)?;
    let to_location = copy_location("--to", &args.to)?;
    let same_store = args.to_s3_endpoint.is_none() || args.to_s3_endpoint == args.s3.s3_endpoint;
    if from_location == to_location && same_store {
        return Err(BackupError::Usage(format!(
            "--to: {to_location} is the repository named by --from; copy into a second repository (another bucket, prefix or directory)"
        )));
    }
    let selection = match (&args.id, args.missing) {
        (Some(id), false) => CopySelection::One(id.clone()),
        (None, true) => CopySelection::Missing,
        // clap's group makes these exactly one of the two.
        _ => {
            return Err(BackupError::Usage(
                "give a backup ID (or `latest`) or --missing, not both".into(),
            ));
        }
    };
    let from = RepoArgs {
        repo: Some(args.from.clone()),
        s3: args.s3.clone(),
    }
    .open()
    .await?;
    let to_s3 = S3Args {
        s3_endpoint: args.to_s3_endpoint.clone().or(args.s3.s3_endpoint.clone()),
        s3_path_style: args.to_s3_path_style.or(args.s3.s3_path_style),
        s3_region: args.to_s3_region.clone().or(args.s3.s3_region.clone()),
    };
    let mut to_options = to_s3.options();
    to_options.profile = args.to_aws_profile.clone();
    let to = Repository::open(to_location, &to_options, true).await?;
    let report = copy_backups(
        &from,
        &to,
        &args.instance,
        &selection,
        CopyOptions {
            read_back: !args.no_read_back,
        },
        Progress::new(output.is_machine()),
    )
    .await?;
    emit(output, &report, || {
        if report.sets.is_empty() {
            return format!(
                "no complete backups of {} in {}: nothing to copy",
                report.instance, report.from
            );
        }
        let mut text = render_table(
            &["id", "result", "size", "detail"],
            report
                .sets
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        match s.result {
                            CopyResult::Copied => "copied",
                            CopyResult::Skipped => "skipped",
                            CopyResult::Failed => "FAILED",
                        }
                        .to_string(),
                        human_bytes(s.size_bytes),
                        s.detail.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        );
        let copied_bytes: u64 = report.sets.iter().map(|s| s.copied_bytes).sum();
        text.push_str(&format!(
            "\n{} -> {}: copied {} ({}), skipped {}, failed {}{}",
            report.from,
            report.to,
            report.count(CopyResult::Copied),
            human_bytes(copied_bytes),
            report.count(CopyResult::Skipped),
            report.count(CopyResult::Failed),
            if report.read_back {
                ""
            } else {
                " (not read back: --no-read-back)"
            }
        ));
        text
    });
    report.outcome()?;
    Ok(ExitCode::SUCCESS)
}

pub async fn drill(args: DrillArgs, output: OutputFormat) -> Result<ExitCode, BackupError> {
    let instance = args.instance.clone().or(args.cluster_instance.clone()).ok_or_else(|| {
        BackupError::Usage(
            "--instance: name the instance whose backup to drill (or `dhis2ctl drill INSTANCE` to ask the operator)".into(),
        )
    })?;
    validate_instance_name(&instance)?;
    let result = drill_here(&args, &instance, output).await;
    args.metrics.record(&instance, |file, labels| {
        file.record_drill(labels, &drill_outcome(result.as_ref().ok()))
    });
    let report = result?;
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the metrics textfile records of a drill. A drill that ended in an error measured
/// nothing; one whose restore failed has its RPO (the backup's age) but no RTO.
fn drill_outcome(report: Option<&DrillReport>) -> DrillOutcome {
    match report {
        Some(r) => DrillOutcome {
            ended_at: Utc::now(),
            passed: r.passed,
            rto_seconds: (!r.checks.is_empty()).then_some(r.rto_seconds),
            rpo_seconds: Some(r.rpo_seconds),
        },
        None => DrillOutcome {
            ended_at: Utc::now(),
            passed: false,
            rto_seconds: None,
            rpo_seconds: None,
        },
    }
}

/// A drill run here; returns its report.
async fn drill_here(
    args: &DrillArgs,
    instance: &str,
    output: OutputFormat,
) -> Result<DrillReport, BackupError> {
    let scratch_url = args.scratch_database_url.as_deref().ok_or_else(|| {
        BackupError::Usage(
            "--scratch-database-url: name an empty database on a server that is not production, or set DHIS2_SCRATCH_DATABASE_URL".into(),
        )
    })?;
    let scratch = DatabaseTarget::parse(scratch_url, "--scratch-database-url")?;
    let key = args.key.key()?;
    let repo = args.repo.open().await?;
    let catalog = load_catalog(&repo, Some(instance)).await?;
    let manifest = find_backup(&catalog, &repo, instance, &args.backup)?;
    let report = run_drill(
        &repo,
        manifest,
        &scratch,
        args.pg.pg_bin_dir.clone(),
        &key,
        Progress::new(output.is_machine()),
    )
    .await?;
    job_report::record(&JobReport::Drill(DrillJobReport {
        backup_id: report.backup_id.clone(),
        passed: report.passed,
        rpo_seconds: report.rpo_seconds,
        rto_seconds: report.rto_seconds,
        failures: report.failures.clone(),
    }));
    emit(output, &report, || {
        let mut text = format!(
            "restore drill of backup {} ({}): {}\n  RPO {} (since the backup started)\n  RTO {:.1}s (restore and checks)\n",
            report.backup_id,
            report.instance,
            if report.passed { "PASSED" } else { "FAILED" },
            human_duration(report.rpo_seconds),
            report.rto_seconds
        );
        text.push_str(&render_table(
            &["check", "result", "detail"],
            report
                .checks
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        if c.passed { "ok" } else { "FAILED" }.to_string(),
                        c.detail.clone(),
                    ]
                })
                .collect(),
        ));
        for f in &report.failures {
            text.push_str(&format!("\nfailure: {f}"));
        }
        text
    });
    Ok(report)
}
