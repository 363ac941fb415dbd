//! `dhis2ctl` (also `kubectl dhis2`): the command line. It parses, calls the engine, and prints.

mod backup;
mod backup_freshness;
mod check_render;
mod cluster;
mod cluster_backup;
mod cluster_upgrade;
mod demo;
mod encryption;
mod help_tree;
mod kube_access;
mod man;
mod metrics_textfile;
mod promote;
pub mod reference;
mod reference_markdown;
mod refresh;
mod upgrade;
mod upgrade_history;
mod upgrade_plan;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::backup::BackupError;
use crate::backup::repo::{RepoLocation, Repository, S3Options};
use crate::output::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "dhis2ctl",
    version,
    about = "Run DHIS2 safely: backups, verified restores and restore drills",
    long_about = "Run DHIS2 safely: DHIS2-aware backups into S3 or a local directory, verification, \
                  guarded restores, retention and restore drills. Works on a plain server; also \
                  installable as the kubectl plugin `kubectl dhis2`."
)]
pub struct Cli {
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value_t
    )]
    pub output: OutputFormat,
    /// More log output (-v info, -vv debug); logs go to stderr. DHIS2_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    /// Also write a short JSON report of the outcome here (in Jobs: /dev/termination-log, which
    /// the operator reads). Never holds a secret.
    #[arg(long, global = true, env = "DHIS2_REPORT_FILE")]
    pub report_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up (here, or in the cluster with `create`), list, verify, restore and prune.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Prove a backup restores: restore it into a scratch database, check it, wipe it, report
    /// RPO/RTO. `drill INSTANCE` asks the operator (a Dhis2Drill); `drill --repo …` runs here.
    Drill(DrillArgs),
    /// Restore a backup in the cluster (a Dhis2Restore): into a new instance, or over an
    /// existing one with --confirm-overwrite (and --approved-by for production).
    Restore(cluster_backup::ClusterRestoreArgs),
    /// An instance's backup and drill schedules and their next runs in local time.
    Schedule {
        /// The Dhis2Instance.
        instance: String,
        #[command(flatten)]
        kube: kube_access::KubeArgs,
        /// How many next runs to show.
        #[arg(long, default_value_t = 3)]
        next: usize,
    },
    /// Upgrade DHIS2 safely: `upgrade INSTANCE --to VERSION` prints the plan and asks the
    /// operator for it (--dry-run only prints); `upgrade check` checks a database before one.
    Upgrade(upgrade::UpgradeArgs),
    /// An instance's upgrade in progress and its last upgrades (who approved, the backup taken
    /// before, how each ended).
    History(upgrade_history::HistoryArgs),
    /// Take the version a staging instance has proven to production once every gate passes
    /// (a Dhis2Promotion); shows each gate. --approve approves it.
    Promote(promote::PromoteArgs),
    /// Overwrite a staging (or training) instance with production's latest backup, so what is
    /// tested before a promotion is what production holds; never overwrites production.
    Refresh(refresh::RefreshArgs),
    /// Demo data for trying things out and for benchmarks.
    #[command(subcommand)]
    Demo(DemoCommand),
    /// List DHIS2 instances or databases, like kubectl get.
    Get(cluster::GetArgs),
    /// One instance in detail: version, replicas, database, conditions, recent events.
    Status(cluster::StatusArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, dhis2ctl(1), in roff: `dhis2ctl man > /usr/local/share/man/man1/dhis2ctl.1`.
    Man,
    /// Write docs/reference/ (api.md from the CRDs, dhis2ctl.md from this command line).
    #[command(hide = true)]
    Reference(reference::ReferenceArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// Backup repository: s3://BUCKET/PREFIX, file:///PATH or a directory path.
    #[arg(long, env = "DHIS2_BACKUP_REPO")]
    pub repo: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

/// How to reach an S3-compatible store.
#[derive(Debug, Clone, Default, Args)]
pub struct S3Args {
    /// S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, Ceph); defaults to AWS_ENDPOINT_URL.
    #[arg(long, env = "DHIS2_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Path-style S3 addressing (on by default with a custom endpoint).
    #[arg(long)]
    pub s3_path_style: Option<bool>,
    /// S3 region (default: from the AWS configuration, else us-east-1).
    #[arg(long, env = "DHIS2_S3_REGION")]
    pub s3_region: Option<String>,
}

impl S3Args {
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            path_style: self.s3_path_style,
            region: self.s3_region.clone(),
            profile: None,
        }
    }
}

impl RepoArgs {
    /// Opens an existing repository: read-only verbs never create one, so a mistyped local path
    /// says "no repository at …".
    pub async fn open(&self) -> Result<Repository, BackupError> {
        self.open_with(false).await
    }

    /// Opens the repository a backup writes into, creating a missing local directory (0700).
    pub async fn open_for_backup(&self) -> Result<Repository, BackupError> {
        self.open_with(true).await
    }

    /// Where `--repo` points, checked without touching it.
    pub fn location(&self) -> Result<RepoLocation, BackupError> {
        let repo = self.repo.as_deref().ok_or_else(|| {
            BackupError::Usage(
                "--repo: name the backup repository (s3://BUCKET/PREFIX or a directory), or set DHIS2_BACKUP_REPO".into(),
            )
        })?;
        RepoLocation::parse(repo).map_err(BackupError::Usage)
    }

    async fn open_with(&self, create: bool) -> Result<Repository, BackupError> {
        let location = self.location()?;
        Ok(Repository::open(location, &self.s3.options(), create).await?)
    }
}

/// `--repo` for `backup list`, the one verb that takes several repositories (to show which
/// backup is in which).
#[derive(Debug, Clone, Args)]
pub struct ReposArgs {
    /// Backup repository: s3://BUCKET/PREFIX, file:///PATH or a directory path. Repeat it to
    /// see in which repositories each backup exists.
    #[arg(long = "repo", env = "DHIS2_BACKUP_REPO", value_name = "REPO")]
    pub repos: Vec<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

impl ReposArgs {
    /// One `RepoArgs` per `--repo`, in the order given.
    pub fn each(&self) -> Vec<RepoArgs> {
        self.repos
            .iter()
            .map(|r| RepoArgs {
                repo: Some(r.clone()),
                s3: self.s3.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Args)]
pub struct PgBinArgs {
    /// Directory with pg_dump/pg_restore (default: the newest /usr/lib/postgresql/N/bin that fits the server, then PATH).
    #[arg(long, env = "DHIS2_PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Ask the operator for a backup of an instance now (a Dhis2Backup); --wait follows it.
    Create(cluster_backup::CreateBackupArgs),
    /// Take a backup here: database (without regenerated analytics data), file store, dhis.conf.
    Run(backup::RunArgs),
    /// List backups: `list INSTANCE` the instance's Dhis2Backups in the cluster; with --repo the
    /// complete backups in a repository, newest first.
    List(backup::ListArgs),
    /// Re-read a backup and check every object's size, checksum and readability.
    Verify(backup::VerifyArgs),
    /// Restore a backup (ID or `latest`) into a database and file store.
    Restore(backup::RestoreArgs),
    /// Delete backups that retention no longer keeps, and debris of failed backups.
    Prune(backup::PruneArgs),
    /// Copy complete backups into a second (off-site) repository, checked object by object.
    Copy(backup::CopyArgs),
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// In the cluster: the Dhis2Instance whose backup the operator drills (a Dhis2Drill).
    /// Without it, with --repo: a drill run here, on a scratch database you name.
    #[arg(value_name = "INSTANCE")]
    pub cluster_instance: Option<String>,
    #[command(flatten)]
    pub kube: kube_access::KubeArgs,
    /// Follow the cluster drill until it finishes (exit 1 when it does not pass).
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// DHIS2 instance name (with --repo).
    #[arg(long)]
    pub instance: Option<String>,
    /// Backup to drill (default: the latest).
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// An empty database on the server to drill on; the drill restores beside it into a
    /// database of its own and drops that again. Never taken from DHIS2_DATABASE_URL.
    #[arg(long, env = "DHIS2_SCRATCH_DATABASE_URL", hide_env_values = true)]
    pub scratch_database_url: Option<String>,
    #[command(flatten)]
    pub key: encryption::DecryptArgs,
    #[command(flatten)]
    pub pg: PgBinArgs,
    /// With --repo: the drill's metrics into a node_exporter textfile.
    #[command(flatten)]
    pub metrics: metrics_textfile::MetricsTextfileArgs,
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Create a DHIS2-shaped database (Cambodia-like hierarchy, data values, analytics tables).
    Seed(demo::SeedArgs),
}

fn init_logging(cli: &Cli) {
    // The AWS SDK warns about every credential source it tries; only its errors matter here.
    let default = match cli.verbose {
        0 => "warn,aws_config=error,aws_smithy_runtime=error,kube_client=error",
        1 => "info,aws_config=error,aws_smithy_runtime=warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DHIS2_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only for a person at a terminal, never in files, pipes or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Entry point shared by `dhis2ctl` and `kubectl-dhis2`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    crate::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &cli.report_file {
        crate::job_report::set_report_file(path.clone());
    }
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            crate::job_report::record(&crate::job_report::JobReport::Failed {
                error: e.to_string(),
            });
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// What docs/guides/dhis2ctl.md promises: 2 when the command line itself is wrong (found before
/// any work: a flag's value, a missing policy), 1 for every failure met while working.
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Cluster(#[from] kube_access::ClusterError),
    #[error(transparent)]
    Upgrade(#[from] crate::upgrade::UpgradeError),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        use crate::backup::repo::RepoError;
        use crate::postgres::PostgresError;
        use crate::upgrade::UpgradeError;
        match self {
            Self::Backup(
                BackupError::Usage(_)
                | BackupError::Postgres(
                    PostgresError::BadUrl { .. } | PostgresError::NoDatabase { .. },
                )
                | BackupError::Repo(RepoError::BadLocation(_)),
            )
            | Self::Cluster(kube_access::ClusterError::Refused(_))
            | Self::Upgrade(
                UpgradeError::Usage(_)
                | UpgradeError::Postgres(
                    PostgresError::BadUrl { .. } | PostgresError::NoDatabase { .. },
                ),
            ) => EXIT_USAGE,
            // 128 + the signal's number, as a shell reports a command it stopped.
            Self::Backup(BackupError::Interrupted { signal, .. }) => {
                if *signal == "SIGINT" {
                    130
                } else {
                    143
                }
            }
            _ => EXIT_FAILURE,
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    let output = cli.output;
    match cli.command {
        Command::Backup(BackupCommand::Run(args)) => Ok(backup::run(args, output).await?),
        Command::Backup(BackupCommand::Create(args)) => {
            Ok(cluster_backup::create_backup(args, output).await?)
        }
        Command::Backup(BackupCommand::List(args)) => {
            match (args.repos.repos.is_empty(), &args.cluster_instance) {
                (true, Some(instance)) => {
                    Ok(cluster_backup::list_backups(instance, &args.kube, output).await?)
                }
                _ => Ok(backup::list(args, output).await?),
            }
        }
        Command::Restore(args) => Ok(cluster_backup::restore(args, output).await?),
        Command::Schedule {
            instance,
            kube,
            next,
        } => Ok(cluster_backup::schedule(&instance, &kube, next, output).await?),
        Command::Backup(BackupCommand::Verify(args)) => Ok(backup::verify(args, output).await?),
        Command::Backup(BackupCommand::Restore(args)) => Ok(backup::restore(args, output).await?),
        Command::Backup(BackupCommand::Prune(args)) => Ok(backup::prune(args, output).await?),
        Command::Backup(BackupCommand::Copy(args)) => Ok(backup::copy(args, output).await?),
        Command::Drill(args) => match (&args.repo.repo, args.cluster_instance.clone()) {
            (None, Some(instance)) => {
                Ok(
                    cluster_backup::drill(&instance, &args.backup, &args.kube, args.wait, output)
                        .await?,
                )
            }
            _ => Ok(backup::drill(args, output).await?),
        },
        Command::Upgrade(args) => match args.command {
            Some(upgrade::UpgradeCommand::Check(check)) => Ok(upgrade::check(check, output).await?),
            None => cluster_upgrade::upgrade(args.cluster, output).await,
        },
        Command::History(args) => Ok(upgrade_history::history(args, output).await?),
        Command::Promote(args) => Ok(promote::promote(args, output).await?),
        Command::Refresh(args) => Ok(refresh::refresh(args, output).await?),
        Command::Demo(DemoCommand::Seed(args)) => Ok(demo::seed(args, output).await?),
        Command::Get(args) => Ok(cluster::get(args, output).await?),
        Command::Status(args) => Ok(cluster::status(args, output).await?),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let name = cmd.get_name().to_string();
            clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut page = Vec::new();
            man::render(Cli::command(), &mut page)
                .map_err(|e| BackupError::Input(format!("rendering the man page: {e}")))?;
            print_stdout(String::from_utf8_lossy(&page).trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Reference(args) => Ok(reference::reference(args)?),
    }
}

/// Prints a report as JSON/YAML, or as the given human text.
pub fn emit<T: serde::Serialize>(output: OutputFormat, report: &T, human: impl FnOnce() -> String) {
    let text = crate::output::render_structured(output, report).unwrap_or_else(human);
    print_stdout(&text);
}

/// Prints a line to stdout; a closed pipe (`| head`) ends output quietly instead of panicking.
pub fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|_| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_exit_2_failures_exit_1() {
        let usage = CliError::Backup(BackupError::Usage("--keep-last 0 keeps nothing".into()));
        assert_eq!(usage.exit_code(), 2);
        let bad_url = CliError::Backup(BackupError::Postgres(
            crate::postgres::PostgresError::BadUrl {
                flag: "--database-url",
                reason: "x".into(),
            },
        ));
        assert_eq!(bad_url.exit_code(), 2);
        let failure = CliError::Backup(BackupError::Input("not empty".into()));
        assert_eq!(failure.exit_code(), 1);
        let missing = CliError::Backup(BackupError::Repo(
            crate::backup::repo::RepoError::NoRepository {
                location: "/x".into(),
            },
        ));
        assert_eq!(missing.exit_code(), 1);
        let bad_version = CliError::Upgrade(crate::upgrade::UpgradeError::Usage(
            "--to: 'latest' is not a DHIS2 version".into(),
        ));
        assert_eq!(bad_version.exit_code(), 2);
        let not_dhis2 = CliError::Upgrade(crate::upgrade::UpgradeError::NoSchemaVersion {
            target: "postgresql://dhis@db:5432/x".into(),
        });
        assert_eq!(not_dhis2.exit_code(), 1);
        let downgrade = CliError::Cluster(kube_access::ClusterError::Refused("--to 2.41".into()));
        assert_eq!(downgrade.exit_code(), 2);
        let in_progress = CliError::Cluster(kube_access::ClusterError::NotNow("Migrating".into()));
        assert_eq!(in_progress.exit_code(), 1);
    }
}
