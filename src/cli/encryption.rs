//! The encryption flags: what `backup run` encrypts to, and what `backup restore`, `backup
//! verify` and `drill` decrypt with. Secrets come from files or the environment, never from the
//! command line (where `ps` and shell history would show them).

use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use clap::Args;

use crate::backup::BackupError;
use crate::backup::encryption::{
    DecryptWith, EncryptTo, collect_recipients, parse_identity_file, parse_passphrase,
};

/// The passphrase itself, for whoever can set a variable but not write a file.
pub const PASSPHRASE_VAR: &str = "DHIS2_BACKUP_PASSPHRASE";

#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Encrypt the backup with age to this public key (age1…, printed by `age-keygen -y
    /// key.txt`); repeat for more keys, or comma-separate. Only their private keys restore: the
    /// server that backs up needs none.
    #[arg(
        long = "encrypt-to",
        value_name = "AGE_PUBLIC_KEY",
        env = "DHIS2_BACKUP_RECIPIENTS",
        value_delimiter = ','
    )]
    pub encrypt_to: Vec<String>,
    /// Encrypt to the age public keys in this file, one a line (`#` comments allowed).
    #[arg(long, value_name = "FILE")]
    pub recipients_file: Vec<PathBuf>,
    /// Encrypt with the passphrase in this file instead (age scrypt), where nobody manages
    /// keys; DHIS2_BACKUP_PASSPHRASE holds the passphrase itself. Never on the command line.
    #[arg(long, value_name = "FILE", env = "DHIS2_BACKUP_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl EncryptArgs {
    /// None when nothing asks for encryption. Read before any work, so a bad key fails in
    /// milliseconds with exit code 2.
    pub fn encrypt_to(&self) -> Result<Option<EncryptTo>, BackupError> {
        let mut files = Vec::new();
        for path in &self.recipients_file {
            let text = read_file(path, "--recipients-file")?;
            files.push((path.display().to_string(), text));
        }
        let recipients =
            collect_recipients(&self.encrypt_to, &files).map_err(BackupError::Usage)?;
        let passphrase = passphrase(self.passphrase_file.as_deref())?;
        match (recipients.is_empty(), passphrase) {
            (true, None) => Ok(None),
            (false, None) => Ok(Some(EncryptTo::Recipients(recipients))),
            (true, Some(p)) => Ok(Some(EncryptTo::Passphrase(p))),
            (false, Some(_)) => Err(BackupError::Usage(
                "--passphrase-file: a backup is encrypted either to public keys (--encrypt-to, --recipients-file, DHIS2_BACKUP_RECIPIENTS) or with a passphrase (--passphrase-file, DHIS2_BACKUP_PASSPHRASE), not both; keep one".into(),
            )),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DecryptArgs {
    /// For an encrypted backup: the age identity file holding the private key
    /// (`age-keygen -o key.txt`).
    #[arg(long, value_name = "FILE", env = "DHIS2_BACKUP_IDENTITY_FILE")]
    pub identity: Option<PathBuf>,
    /// For a passphrase-encrypted backup: the file holding the passphrase
    /// (DHIS2_BACKUP_PASSPHRASE holds the passphrase itself).
    #[arg(long, value_name = "FILE", env = "DHIS2_BACKUP_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl DecryptArgs {
    /// What was given, possibly nothing: an unencrypted backup needs no key.
    pub fn key(&self) -> Result<DecryptWith, BackupError> {
        let mut key = DecryptWith {
            passphrase: passphrase(self.passphrase_file.as_deref())?,
            ..Default::default()
        };
        if let Some(path) = &self.identity {
            let origin = format!("--identity {}", path.display());
            let text = read_file(path, "--identity")?;
            key.identities = parse_identity_file(&text, &origin).map_err(BackupError::Usage)?;
            key.identity_source = Some(origin);
        }
        Ok(key)
    }
}

fn read_file(path: &Path, flag: &str) -> Result<String, BackupError> {
    std::fs::read_to_string(path)
        .map_err(|e| BackupError::Usage(format!("{flag} {}: cannot read it: {e}", path.display())))
}

/// The passphrase from `--passphrase-file` (or its variable), else from DHIS2_BACKUP_PASSPHRASE.
fn passphrase(file: Option<&Path>) -> Result<Option<SecretString>, BackupError> {
    let from_var = std::env::var(PASSPHRASE_VAR).ok().filter(|v| !v.is_empty());
    match (file, from_var) {
        (Some(_), Some(_)) => Err(BackupError::Usage(format!(
            "--passphrase-file: {PASSPHRASE_VAR} is set too; give the passphrase one way only"
        ))),
        (Some(path), None) => {
            let origin = format!("--passphrase-file {}", path.display());
            parse_passphrase(&read_file(path, "--passphrase-file")?, &origin)
                .map(Some)
                .map_err(BackupError::Usage)
        }
        (None, Some(value)) => parse_passphrase(&value, PASSPHRASE_VAR)
            .map(Some)
            .map_err(BackupError::Usage),
        (None, None) => Ok(None),
    }
}
