//! Whether a managed database may get a new password (pure). Only before its data volume exists:
//! afterwards PostgreSQL was initialised with the old password, and a new one would lock DHIS2
//! out of its own data. And the new password itself.

use rand::Rng;
use rand::distr::Alphanumeric;

/// What the operator found of the credentials Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFound {
    Absent,
    /// Exists but belongs to someone else.
    Foreign,
    /// Ours; the password when it has one that is not empty.
    Ours {
        password: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsPlan {
    /// Nothing was ever initialised with a password: make one.
    Generate,
    Keep(String),
    /// The Secret is somebody else's.
    Conflict,
    /// The data volume exists but its password is gone: report, never regenerate.
    Missing {
        secret_deleted: bool,
    },
}

pub fn credentials_plan(found: SecretFound, volume_exists: bool) -> CredentialsPlan {
    match found {
        SecretFound::Foreign => CredentialsPlan::Conflict,
        SecretFound::Ours {
            password: Some(p), ..
        } => CredentialsPlan::Keep(p),
        SecretFound::Ours { password: None } if volume_exists => CredentialsPlan::Missing {
            secret_deleted: false,
        },
        SecretFound::Absent if volume_exists => CredentialsPlan::Missing {
            secret_deleted: true,
        },
        SecretFound::Ours { password: None } | SecretFound::Absent => CredentialsPlan::Generate,
    }
}

/// What an officer reads in the `Degraded` condition and the Event: what is wrong and the two
/// ways out (restore the Secret; or reset the password in PostgreSQL: docs/concepts/operator.md).
pub fn credentials_missing_message(
    namespace: &str,
    database: &str,
    secret: &str,
    claim: &str,
    secret_deleted: bool,
) -> String {
    let what = if secret_deleted {
        format!("Secret {secret} was deleted")
    } else {
        format!("Secret {secret} has no key 'password'")
    };
    format!(
        "{what}, but the data volume {claim} exists and PostgreSQL was initialised with that password; \
         the operator will not generate a new one. Restore the Secret from your copy: \
         kubectl -n {namespace} create secret generic {secret} --from-literal=password=<the old password> \
         && kubectl -n {namespace} annotate secret {secret} dhis2operator.io/retained-for=Dhis2Database/{database} \
         (the operator re-adds host, port, database and username). If the password is lost, \
         set a new one inside PostgreSQL first (docs/concepts/operator.md: \"Changing the database password\")"
    )
}

/// 32 letters and digits from the thread's cryptographic generator.
pub(crate) fn random_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_generated_only_while_no_volume_exists() {
        assert_eq!(
            credentials_plan(SecretFound::Absent, false),
            CredentialsPlan::Generate
        );
        assert_eq!(
            credentials_plan(SecretFound::Ours { password: None }, false),
            CredentialsPlan::Generate
        );
        assert_eq!(
            credentials_plan(SecretFound::Absent, true),
            CredentialsPlan::Missing {
                secret_deleted: true
            }
        );
        assert_eq!(
            credentials_plan(SecretFound::Ours { password: None }, true),
            CredentialsPlan::Missing {
                secret_deleted: false
            }
        );
    }

    #[test]
    fn an_existing_password_is_kept_and_a_foreign_secret_is_a_conflict() {
        assert_eq!(
            credentials_plan(
                SecretFound::Ours {
                    password: Some("pw".into())
                },
                true
            ),
            CredentialsPlan::Keep("pw".into())
        );
        assert_eq!(
            credentials_plan(SecretFound::Foreign, true),
            CredentialsPlan::Conflict
        );
    }

    #[test]
    fn the_message_says_how_to_restore_the_secret() {
        let m = credentials_missing_message("moh", "hmis", "hmis-credentials", "data-hmis-0", true);
        assert!(m.contains("Secret hmis-credentials was deleted"), "{m}");
        assert!(m.contains("kubectl -n moh create secret generic hmis-credentials"));
        assert!(m.contains("retained-for=Dhis2Database/hmis"));
        assert!(!m.contains("pw"));
    }
}
