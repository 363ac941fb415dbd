//! `dhis2ctl demo seed`.

use std::process::ExitCode;

use clap::Args;

use crate::backup::BackupError;
use crate::demo::seed::{Scale, seed_demo};
use crate::output::{OutputFormat, human_bytes};
use crate::postgres::DatabaseTarget;

use super::emit;

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// An empty database to fill.
    #[arg(long, env = "DHIS2_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, value_enum, default_value = "small")]
    pub scale: Scale,
}

pub async fn seed(args: SeedArgs, output: OutputFormat) -> Result<ExitCode, BackupError> {
    let db = DatabaseTarget::parse(&args.database_url, "--database-url")?;
    let report = seed_demo(&db, args.scale).await?;
    emit(output, &report, || {
        format!(
            "seeded {} ({:?}): {} organisation units, {} data values, {} in {:.1}s",
            report.database,
            report.scale,
            report.organisation_units,
            report.data_values,
            human_bytes(report.database_bytes.max(0) as u64),
            report.seconds
        )
    });
    Ok(ExitCode::SUCCESS)
}
