//! Errors of the backup engine, one variant per failing step, each phrased so an MoH system
//! administrator knows what to do next.

use crate::postgres::PostgresError;

use super::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The command line itself is wrong (a flag's value, a missing flag): exit code 2.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// The key given does not open an encrypted backup.
    #[error(transparent)]
    Key(#[from] KeyMismatch),
    #[error("{tool} failed: {reason}")]
    Tool { tool: String, reason: String },
    /// SIGINT/SIGTERM stopped the command; `undone` says what was put back (exit 130 / 143).
    #[error("interrupted by {signal}: {undone}")]
    Interrupted {
        signal: &'static str,
        undone: String,
    },
    #[error(
        "no complete backup '{id}' of instance '{instance}' in {repo}; `dhis2ctl backup list --repo {repo} --instance {instance}` shows the backups there"
    )]
    NotFound {
        instance: String,
        id: String,
        repo: String,
    },
    #[error("backup {backup} is damaged: {object}: {reason}")]
    Damaged {
        backup: String,
        object: String,
        reason: String,
    },
    /// `backup run --verify`: the set is stored (and listed) but reading it back failed.
    #[error(
        "backup {backup} is in {repo} but failed verification and must not be relied on: {problem}; it stays listed (nothing was deleted): take a new backup, and check this one again with `dhis2ctl backup verify`"
    )]
    NotVerified {
        backup: String,
        repo: String,
        problem: String,
    },
    #[error("{count} backup(s) could not be copied to {to}: {details}")]
    CopyFailed {
        count: usize,
        to: String,
        details: String,
    },
    #[error(
        "refusing to restore into {target}: it already holds {count} tables or other objects (e.g. {examples}); pass --force to swap the restored database in: the current one is kept, renamed to {target}__replaced_<time>"
    )]
    TargetNotEmpty {
        target: String,
        count: i64,
        examples: String,
    },
    #[error(
        "refusing to restore the file store into {dir}: it is not empty; pass --force (the current contents are kept aside as {dir}.replaced-<time>)"
    )]
    FilesDirNotEmpty { dir: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl BackupError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Instance names become key prefixes and Kubernetes names: DNS labels.
pub fn validate_instance_name(name: &str) -> Result<(), BackupError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(BackupError::Usage(format!(
            "--instance: '{name}' is not a valid instance name; use 1-63 lowercase letters, digits and '-' (e.g. hmis-production)"
        )))
    }
}

/// The key given does not open the backup. Checked before a restore or drill touches anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyMismatch {
    #[error(
        "backup {backup} is encrypted to {recipients}: give the private key of one of them with --identity FILE or DHIS2_BACKUP_IDENTITY_FILE"
    )]
    IdentityMissing { backup: String, recipients: String },
    #[error(
        "backup {backup} is encrypted to {recipients}, but {origin} holds the private key of {given}, none of them: give the private key of one of the backup's recipients"
    )]
    WrongIdentity {
        backup: String,
        recipients: String,
        origin: String,
        given: String,
    },
    #[error(
        "backup {backup} is encrypted with a passphrase: give it with --passphrase-file FILE, DHIS2_BACKUP_PASSPHRASE_FILE or DHIS2_BACKUP_PASSPHRASE"
    )]
    PassphraseMissing { backup: String },
    #[error(
        "the passphrase given does not open backup {backup}: it was encrypted with another passphrase"
    )]
    WrongPassphrase { backup: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_dns_labels() {
        assert!(validate_instance_name("hmis-prod").is_ok());
        for bad in ["", "HMIS", "hmis/prod", "-x", "x-", &"a".repeat(64)] {
            let e = validate_instance_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("--instance:"), "{e}");
        }
    }
}
