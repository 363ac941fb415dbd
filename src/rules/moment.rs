//! Moments as people write them for point-in-time recovery (RFC 3339).

use chrono::{DateTime, FixedOffset};

/// A moment as people write it for point-in-time recovery (RFC 3339), or why not, for a message
/// that names the field first.
pub fn parse_moment(value: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(value).map_err(|_| {
        format!("'{value}' is not an RFC 3339 time: write it like 2026-12-07T10:13:00+07:00")
    })
}
