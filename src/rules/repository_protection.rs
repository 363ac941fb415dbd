//! Whether a repository's protection settings (encryption, Object Lock) make sense, checked
//! before a Job is created so a mistake is a clear status message, not a failed Job. Pure.

use crate::backup::encryption::parse_recipient;
use crate::crd::backup_common::RepositorySpec;

/// What the Job will do with the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepositoryUse {
    /// Write backups (encrypt to the recipients or passphrase, lock).
    Backup,
    /// Read backups (restores and drills: decrypt).
    Read,
}

/// `field` names the repository as the user wrote it (e.g. `the Dhis2Instance's
/// spec.backup.repository`). Messages never repeat anything that might be a secret.
pub fn check_protection(
    repository: &RepositorySpec,
    field: &str,
    usage: RepositoryUse,
) -> Result<(), String> {
    if let Some(lock) = repository.s3.as_ref().and_then(|s| s.object_lock.as_ref())
        && !(1..=3650).contains(&lock.days)
    {
        return Err(format!(
            "{field}.s3.objectLock.days is {}; give 1 to 3650 days",
            lock.days
        ));
    }
    let Some(encryption) = &repository.encryption else {
        return Ok(());
    };
    for (i, recipient) in encryption.recipients.iter().enumerate() {
        parse_recipient(recipient, &format!("{field}.encryption.recipients[{i}]"))?;
    }
    let passphrase = encryption.passphrase_secret_ref.is_some();
    match (encryption.recipients.is_empty(), passphrase) {
        (true, false) => {
            return Err(format!(
                "{field}.encryption names neither recipients (age public keys) nor passphraseSecretRef; give one, or remove encryption"
            ));
        }
        (false, true) => {
            return Err(format!(
                "{field}.encryption names both recipients and passphraseSecretRef; a backup is encrypted either to public keys or with a passphrase: keep one"
            ));
        }
        _ => {}
    }
    if usage == RepositoryUse::Read && !passphrase && encryption.identity_secret_ref.is_none() {
        return Err(format!(
            "{field}.encryption: backups are encrypted to age public keys and reading them needs the private key: create a Secret with the key `identity` (the file from `age-keygen -o`) and set {field}.encryption.identitySecretRef to its name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::backup_common::{EncryptionSpec, ObjectLockSpec, S3RepositorySpec};

    const KEY: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn repo(encryption: Option<EncryptionSpec>, lock_days: Option<u32>) -> RepositorySpec {
        RepositorySpec {
            s3: Some(S3RepositorySpec {
                bucket: "moh-backups".into(),
                credentials_secret_ref: "backup-s3".into(),
                object_lock: lock_days.map(|days| ObjectLockSpec {
                    days,
                    mode: Default::default(),
                }),
                ..Default::default()
            }),
            volume: None,
            encryption,
        }
    }

    fn to_keys(identity: Option<&str>) -> Option<EncryptionSpec> {
        Some(EncryptionSpec {
            recipients: vec![KEY.into()],
            identity_secret_ref: identity.map(Into::into),
            passphrase_secret_ref: None,
        })
    }

    const FIELD: &str = "spec.backup.repository";

    #[test]
    fn public_keys_back_up_and_only_an_identity_reads() {
        let backup_only = repo(to_keys(None), None);
        assert_eq!(
            check_protection(&backup_only, FIELD, RepositoryUse::Backup),
            Ok(())
        );
        let refused = check_protection(&backup_only, FIELD, RepositoryUse::Read).unwrap_err();
        assert!(refused.contains("identitySecretRef"), "{refused}");
        let with_identity = repo(to_keys(Some("backup-identity")), None);
        assert_eq!(
            check_protection(&with_identity, FIELD, RepositoryUse::Read),
            Ok(())
        );
        assert_eq!(
            check_protection(&repo(None, Some(30)), FIELD, RepositoryUse::Backup),
            Ok(())
        );
    }

    #[test]
    fn a_private_key_in_the_spec_is_refused_without_repeating_it() {
        let secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        let mut encryption = to_keys(None).unwrap();
        encryption.recipients.push(secret.into());
        let error = check_protection(&repo(Some(encryption), None), FIELD, RepositoryUse::Backup)
            .unwrap_err();
        assert!(error.contains("recipients[1]"), "{error}");
        assert!(error.contains("private key"), "{error}");
        assert!(!error.contains("QQQQ"), "{error}");
    }

    #[test]
    fn incoherent_settings_name_the_field_and_the_fix() {
        let both = EncryptionSpec {
            recipients: vec![KEY.into()],
            identity_secret_ref: None,
            passphrase_secret_ref: Some("backup-passphrase".into()),
        };
        let neither = EncryptionSpec::default();
        let typo = EncryptionSpec {
            recipients: vec!["age1notakey".into()],
            ..Default::default()
        };
        for (encryption, lock, expected) in [
            (Some(both), None, "keep one"),
            (Some(neither), None, "neither"),
            (Some(typo), None, "recipients[0]"),
            (None, Some(0), "objectLock.days"),
            (None, Some(5000), "objectLock.days"),
        ] {
            let error = check_protection(&repo(encryption, lock), FIELD, RepositoryUse::Backup)
                .unwrap_err();
            assert!(error.contains(expected), "{error}");
            assert!(error.starts_with(FIELD), "{error}");
        }
        let passphrase = EncryptionSpec {
            passphrase_secret_ref: Some("backup-passphrase".into()),
            ..Default::default()
        };
        assert_eq!(
            check_protection(&repo(Some(passphrase), None), FIELD, RepositoryUse::Read),
            Ok(())
        );
    }
}
