//! The lease of a running backup: `INSTANCE/ID/lease.json`, created (only if absent) before the
//! backup stores anything, rewritten every few minutes while it runs, and removed once the
//! manifest is written. Prune decides whether incomplete debris is abandoned from this sign of
//! life, never from when an upload started, so a 30-hour backup survives the nightly prune.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How often a running backup rewrites its lease.
pub const HEARTBEAT_INTERVAL_SECONDS: u64 = 5 * 60;
/// How long without a heartbeat before a leased backup counts as abandoned: 24 missed
/// heartbeats, so a slow or briefly unreachable store never makes a live backup look dead.
pub const STALE_AFTER_SECONDS: i64 = 2 * 60 * 60;
/// Debris without a lease (left by a dhis2ctl that wrote none, or killed before its lease was
/// stored) is judged by its newest object, with the grace older versions used.
pub const NO_LEASE_GRACE_SECONDS: i64 = 24 * 60 * 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub backup_id: String,
    pub started_at: DateTime<Utc>,
    /// Written by the backup's own clock; prune also takes the store's time of the write.
    pub heartbeat_at: DateTime<Utc>,
    /// Where the backup runs, for a person looking at a stuck one.
    pub host: String,
    pub pid: u32,
}

impl Lease {
    pub fn new(backup_id: &str, started_at: DateTime<Utc>) -> Self {
        Self {
            backup_id: backup_id.to_string(),
            started_at,
            heartbeat_at: started_at,
            host: hostname(),
            pid: std::process::id(),
        }
    }
}

/// Whether incomplete debris is abandoned. `newest_object_time` is the newest time the store
/// recorded for any of the backup's objects (the lease itself, partial files), or for its
/// unfinished uploads when it has no object at all. A backup is alive while either its lease's
/// heartbeat or the store's newest write is recent.
pub fn is_stale(
    lease: Option<&Lease>,
    newest_object_time: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let (last_sign_of_life, allowed) = match lease {
        Some(lease) => (
            newest_object_time.map_or(lease.heartbeat_at, |t| t.max(lease.heartbeat_at)),
            Duration::seconds(STALE_AFTER_SECONDS),
        ),
        None => match newest_object_time {
            Some(t) => (t, Duration::seconds(NO_LEASE_GRACE_SECONDS)),
            // Nothing at all to judge by: nothing to protect either.
            None => return true,
        },
    };
    now - last_sign_of_life > allowed
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::hours(h)
    }

    fn lease(started: i64, beat: DateTime<Utc>) -> Lease {
        Lease {
            backup_id: "x".into(),
            started_at: t(started),
            heartbeat_at: beat,
            host: "h".into(),
            pid: 1,
        }
    }

    #[test]
    fn a_thirty_hour_backup_with_a_fresh_heartbeat_survives() {
        // Started 30 hours ago; its upload too (no part shows as an object); heartbeat 5 min ago.
        let now = t(30);
        let l = lease(0, now - Duration::minutes(5));
        assert!(!is_stale(Some(&l), Some(t(0)), now));
        assert!(!is_stale(Some(&l), None, now));
    }

    #[test]
    fn a_lease_that_stopped_beating_is_stale() {
        let now = t(30);
        let l = lease(0, t(27));
        assert!(is_stale(Some(&l), Some(t(27)), now));
        // The store saw a write recently (clock skew of the backup host): still alive.
        assert!(!is_stale(Some(&l), Some(now - Duration::minutes(10)), now));
        // Just inside and just past the window.
        let edge = now - Duration::seconds(STALE_AFTER_SECONDS);
        assert!(!is_stale(Some(&lease(0, edge)), None, now));
        assert!(is_stale(
            Some(&lease(0, edge - Duration::seconds(1))),
            None,
            now
        ));
    }

    #[test]
    fn debris_without_a_lease_gets_a_day() {
        let now = t(30);
        assert!(!is_stale(None, Some(t(10)), now));
        assert!(is_stale(None, Some(t(5)), now));
        assert!(is_stale(None, None, now));
    }

    #[test]
    fn the_heartbeat_is_much_shorter_than_the_window() {
        assert!(STALE_AFTER_SECONDS >= 10 * HEARTBEAT_INTERVAL_SECONDS as i64);
    }
}
