//! `dhis2ctl reference --out docs/reference` (hidden; for whoever changes the code): writes the
//! reference generated from the code — api.md from the CRDs, dhis2ctl.md from this command
//! line. `--check` writes nothing and fails naming each file that differs;
//! tests/reference_docs.rs fails the same way when the committed files are stale.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory};

use crate::backup::BackupError;

/// The command that regenerates docs/reference/, from a checkout.
pub const REGENERATE: &str = "cargo run --bin dhis2ctl -- reference --out docs/reference";

#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// The directory api.md and dhis2ctl.md are written into.
    #[arg(long, default_value = "docs/reference")]
    pub out: PathBuf,
    /// Write nothing; exit 1 naming each file that is not what the code generates.
    #[arg(long)]
    pub check: bool,
}

/// Each file of docs/reference/ with what the code generates for it (pure).
pub fn reference_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "api.md",
            crate::crd::api_reference::render(&crate::crd::crds(), REGENERATE),
        ),
        (
            "dhis2ctl.md",
            super::reference_markdown::render(super::Cli::command(), REGENERATE),
        ),
    ]
}

pub fn reference(args: ReferenceArgs) -> Result<ExitCode, BackupError> {
    let mut stale = Vec::new();
    if !args.check {
        std::fs::create_dir_all(&args.out)
            .map_err(|e| BackupError::Input(format!("creating {}: {e}", args.out.display())))?;
    }
    for (name, text) in reference_files() {
        let path = args.out.join(name);
        if args.check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, text)
                .map_err(|e| BackupError::Input(format!("writing {}: {e}", path.display())))?;
            eprintln!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "out of date: {} (run `{REGENERATE}` and commit the result)",
        stale.join(", ")
    );
    Ok(ExitCode::from(1))
}
