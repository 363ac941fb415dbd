//! `dhis2ctl upgrade check`: may this database be upgraded to a DHIS2 version? Reads the
//! database, prints each check; exit 1 when the upgrade is blocked.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::output::OutputFormat;
use crate::postgres::DatabaseTarget;
use crate::upgrade::{
    CurrentVersion, Dhis2Version, UpgradeError, check_upgrade, read_database_facts,
};

use super::check_render::render_check;
use super::{EXIT_FAILURE, emit};

/// `dhis2ctl upgrade INSTANCE --to VERSION …` (in the cluster), or `dhis2ctl upgrade check …`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct UpgradeArgs {
    #[command(subcommand)]
    pub command: Option<UpgradeCommand>,
    #[command(flatten)]
    pub cluster: super::cluster_upgrade::ClusterUpgradeArgs,
}

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Check an upgrade before doing it: the target is newer, the database meets its needs
    /// (PostgreSQL, PostGIS, extensions), no failed migration, none of the data DHIS2's
    /// migrations are known to fail on. Exit 1 when something blocks it. Only reads.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The DHIS2 database, postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (or PGPASSWORD for the password).
    #[arg(long, env = "DHIS2_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The DHIS2 version to upgrade to, e.g. 2.43 or 2.43.1 (the dhis2/core image tag).
    #[arg(long, value_name = "VERSION")]
    pub to: String,
    /// The DHIS2 version running now (default: the release line of the database's Flyway
    /// schema version; give it to be refused a patch downgrade too).
    #[arg(long, value_name = "VERSION")]
    pub from: Option<String>,
}

pub async fn check(args: CheckArgs, output: OutputFormat) -> Result<ExitCode, UpgradeError> {
    // Everything the command line says is checked before connecting.
    let flag_version = |flag: &str, text: &str| {
        Dhis2Version::parse(text).map_err(|e| UpgradeError::Usage(format!("{flag}: {e}")))
    };
    let to = flag_version("--to", &args.to)?;
    let from = args
        .from
        .as_deref()
        .map(|f| flag_version("--from", f))
        .transpose()?;
    let db = DatabaseTarget::parse(&args.database_url, "--database-url")?;

    let facts = read_database_facts(&db).await?;
    let current = match (from, &facts.schema_version) {
        (Some(from), _) => CurrentVersion::Release(from),
        (None, Some(schema)) => CurrentVersion::Schema(schema.clone()),
        (None, None) => {
            return Err(UpgradeError::NoSchemaVersion {
                target: db.to_string(),
            });
        }
    };
    let result = check_upgrade(&current, &to, &facts);
    emit(output, &result, || render_check(&result));
    Ok(if result.is_blocked() {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
