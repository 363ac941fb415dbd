//! The operator's idea of "now". Schedules and deadlines ask the clock, never the system
//! directly, so tests can move time (`--clock-file`, development and tests only) instead of
//! sleeping until 02:00 in Phnom Penh.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Reads the time (RFC 3339) from a file at every call; the system time when the file is
/// missing or unreadable, with a warning.
pub struct FileClock(pub PathBuf);

impl Clock for FileClock {
    fn now(&self) -> DateTime<Utc> {
        match std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
        {
            Some(t) => t.with_timezone(&Utc),
            None => {
                tracing::warn!(file = %self.0.display(), "clock file unreadable; using the system time");
                Utc::now()
            }
        }
    }
}
