//! The backup lines of `dhis2ctl status`: how old the last backup and drill are, when the next
//! backup runs, and which of the shipped alerts (manifests/monitoring) their age or outcome
//! would fire — the same thresholds, so the CLI and the on-call officer's pager agree (pure).

use chrono::{DateTime, Utc};

use crate::crd::dhis2_instance::InstanceBackupStatus;
use crate::output::human_duration;

/// DHIS2BackupMissing: no backup completed for this long.
pub const BACKUP_MISSING_AFTER_SECONDS: i64 = 26 * 3600;
/// DHIS2DrillMissing: no drill for this long.
pub const DRILL_MISSING_AFTER_SECONDS: i64 = 8 * 86400;

fn age(time: &str, now: DateTime<Utc>) -> Option<i64> {
    DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| (now - t.with_timezone(&Utc)).num_seconds())
}

fn when(time: &str, now: DateTime<Utc>) -> String {
    match age(time, now) {
        Some(s) if s >= 0 => format!("{} ago", human_duration(s)),
        Some(s) => format!("in {}", human_duration(-s)),
        None => time.to_string(),
    }
}

pub fn backup_lines(b: &InstanceBackupStatus, now: DateTime<Utc>) -> String {
    let last_backup = match &b.last_backup_time {
        Some(t) => {
            let mut line = format!(
                "{} ({t}; {}, {})",
                when(t, now),
                b.last_backup_id.as_deref().unwrap_or("-"),
                b.last_backup_size.as_deref().unwrap_or("-")
            );
            if age(t, now).is_some_and(|s| s > BACKUP_MISSING_AFTER_SECONDS) {
                line.push_str(" — older than 26h: alert DHIS2BackupMissing");
            }
            line
        }
        None => "none — alert DHIS2BackupMissing once the instance is 26h old".into(),
    };
    let last_drill = match (&b.last_drill_time, &b.last_drill_result) {
        (Some(t), Some(result)) => {
            let mut line = format!(
                "{result} {} ({t}), RTO {}, RPO {}",
                when(t, now),
                human_duration(b.last_drill_rto_seconds.unwrap_or_default().round() as i64),
                human_duration(b.last_drill_rpo_seconds.unwrap_or_default())
            );
            if result != "Passed" {
                line.push_str(" — alert DHIS2DrillFailing");
            } else if age(t, now).is_some_and(|s| s > DRILL_MISSING_AFTER_SECONDS) {
                line.push_str(" — older than 8 days: alert DHIS2DrillMissing");
            }
            line
        }
        _ => "none".into(),
    };
    let next_backup = match &b.next_backup_time {
        Some(t) => format!("{} ({t})", when(t, now)),
        None => "not scheduled".into(),
    };
    format!(
        "Last backup:  {last_backup}\nLast drill:   {last_drill}\nNext backup:  {next_backup}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-12-07T09:00:00Z".parse().unwrap()
    }

    fn status(backup: &str, drill: &str, result: &str) -> InstanceBackupStatus {
        InstanceBackupStatus {
            last_backup_time: Some(backup.into()),
            last_backup_id: Some("20261206T190000Z-1a2b3c4d".into()),
            last_backup_size: Some("1.2 GiB".into()),
            last_drill_time: Some(drill.into()),
            last_drill_result: Some(result.into()),
            last_drill_rto_seconds: Some(754.4),
            last_drill_rpo_seconds: Some(3600),
            next_backup_time: Some("2026-12-07T19:00:00Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn fresh_backups_show_their_age_and_no_alert() {
        let text = backup_lines(
            &status("2026-12-06T19:02:00Z", "2026-12-06T20:00:00Z", "Passed"),
            now(),
        );
        assert_eq!(
            text,
            "Last backup:  13h 58m ago (2026-12-06T19:02:00Z; 20261206T190000Z-1a2b3c4d, 1.2 GiB)\n\
             Last drill:   Passed 13h 0m ago (2026-12-06T20:00:00Z), RTO 12m 34s, RPO 1h 0m\n\
             Next backup:  in 10h 0m (2026-12-07T19:00:00Z)\n"
        );
    }

    #[test]
    fn stale_or_failed_ones_name_the_alert_they_fire() {
        let text = backup_lines(
            &status("2026-12-05T19:02:00Z", "2026-11-20T20:00:00Z", "Passed"),
            now(),
        );
        assert!(
            text.contains("older than 26h: alert DHIS2BackupMissing"),
            "{text}"
        );
        assert!(
            text.contains("older than 8 days: alert DHIS2DrillMissing"),
            "{text}"
        );
        let text = backup_lines(
            &status("2026-12-06T19:02:00Z", "2026-12-06T20:00:00Z", "Failed"),
            now(),
        );
        assert!(!text.contains("DHIS2BackupMissing"), "{text}");
        assert!(text.contains("alert DHIS2DrillFailing"), "{text}");
        let none = backup_lines(&InstanceBackupStatus::default(), now());
        assert!(none.starts_with("Last backup:  none"), "{none}");
        assert!(
            none.contains("Last drill:   none\nNext backup:  not scheduled\n"),
            "{none}"
        );
    }
}
