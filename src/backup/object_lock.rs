//! S3 Object Lock: a backup set whose every object (manifest included) carries a retention date
//! before which the store refuses to delete or overwrite it, even for the repository's own
//! credentials. Here the pure parts: the mode, the retain-until date, and which sets prune may
//! delete now.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The two S3 retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum LockMode {
    /// Nobody can delete a version before its date unless they hold the
    /// s3:BypassGovernanceRetention permission and ask for the bypass: an administrator can undo
    /// a mistake (e.g. a lock of 3650 days meant as 365), the backup job's credentials cannot.
    Governance,
    /// Nobody can delete or shorten it before its date, not even the account's root user.
    Compliance,
}

impl LockMode {
    /// The value S3 expects in `x-amz-object-lock-mode`.
    pub fn as_s3(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Governance => "governance",
            Self::Compliance => "compliance",
        })
    }
}

/// The retention every object of one backup set carries; recorded in its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectLock {
    pub mode: LockMode,
    pub retain_until: DateTime<Utc>,
}

impl ObjectLock {
    /// A lock of `duration` from `now`, to whole seconds (S3 keeps dates to the second; a
    /// fraction would make the recorded date differ from the store's).
    pub fn from_now(mode: LockMode, duration: Duration, now: DateTime<Utc>) -> Self {
        let until = now + duration;
        let whole = until.timestamp() + i64::from(until.timestamp_subsec_nanos() > 0);
        Self {
            mode,
            retain_until: DateTime::from_timestamp(whole, 0).unwrap_or(until),
        }
    }

    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        now < self.retain_until
    }
}

/// A set retention would delete, but whose lock still holds: prune skips it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedBackup {
    pub id: String,
    /// From this moment a prune deletes it.
    pub deletable_after: DateTime<Utc>,
}

/// Splits the sets retention expired into those deletable now and those still locked (both in
/// the given order). `lock_of` gives a set's recorded lock; a set without one is deletable.
pub fn hold_locked<'a>(
    expired: &[String],
    lock_of: impl Fn(&str) -> Option<&'a ObjectLock>,
    now: DateTime<Utc>,
) -> (Vec<String>, Vec<LockedBackup>) {
    let mut deletable = Vec::new();
    let mut locked = Vec::new();
    for id in expired {
        match lock_of(id) {
            Some(lock) if lock.holds_at(now) => locked.push(LockedBackup {
                id: id.clone(),
                deletable_after: lock.retain_until,
            }),
            _ => deletable.push(id.clone()),
        }
    }
    (deletable, locked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::collections::HashMap;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap()
    }

    #[test]
    fn a_lock_ends_on_a_whole_second_no_earlier_than_asked() {
        let now = at(10, 0, 0) + Duration::milliseconds(250);
        let lock = ObjectLock::from_now(LockMode::Governance, Duration::days(30), now);
        assert_eq!(lock.retain_until, at(10, 0, 1) + Duration::days(30));
        assert!(lock.retain_until >= now + Duration::days(30));
        assert!(lock.holds_at(now + Duration::days(30)));
        assert!(!lock.holds_at(lock.retain_until));
        let whole = ObjectLock::from_now(LockMode::Governance, Duration::days(1), at(10, 0, 0));
        assert_eq!(whole.retain_until, at(10, 0, 0) + Duration::days(1));
    }

    #[test]
    fn prune_holds_locked_sets_until_their_date_then_deletes_them() {
        let until = at(12, 0, 0);
        let locks: HashMap<&str, ObjectLock> = HashMap::from([
            (
                "locked",
                ObjectLock {
                    mode: LockMode::Compliance,
                    retain_until: until,
                },
            ),
            (
                "expired-lock",
                ObjectLock {
                    mode: LockMode::Governance,
                    retain_until: at(9, 0, 0),
                },
            ),
        ]);
        let expired: Vec<String> = ["locked", "plain", "expired-lock"]
            .map(String::from)
            .to_vec();
        let lock_of = |id: &str| locks.get(id);

        let (deletable, locked) = hold_locked(&expired, lock_of, at(11, 59, 59));
        assert_eq!(deletable, vec!["plain", "expired-lock"]);
        assert_eq!(
            locked,
            vec![LockedBackup {
                id: "locked".into(),
                deletable_after: until
            }]
        );

        // A later run, once the date has passed: everything retention expired goes.
        let (deletable, locked) = hold_locked(&expired, lock_of, until);
        assert_eq!(deletable, expired);
        assert!(locked.is_empty());
    }

    #[test]
    fn modes_read_and_write_as_lowercase_and_go_to_s3_in_capitals() {
        let lock = ObjectLock {
            mode: LockMode::Compliance,
            retain_until: at(12, 0, 0),
        };
        let json = serde_json::to_value(lock).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"mode": "compliance", "retainUntil": "2026-03-01T12:00:00Z"})
        );
        assert_eq!(serde_json::from_value::<ObjectLock>(json).unwrap(), lock);
        assert_eq!(LockMode::Governance.as_s3(), "GOVERNANCE");
    }
}
