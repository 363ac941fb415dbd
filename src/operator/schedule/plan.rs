//! When scheduled backups and drills run (pure): a 5-field cron schedule in an IANA time zone,
//! the next fire time after an instant, and the decision "which fire time runs now, and when to
//! look again". Daylight saving changes follow cron's rules (croner implements them): a fixed
//! time skipped by spring-forward runs once, right after the jump; a fixed time repeated by
//! fall-back runs once, at its first pass. After downtime at most one catch-up runs: the latest
//! missed fire time, never all of them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::crd::dhis2_instance::Dhis2Instance;

use crate::rules::cron_schedule::Schedule;
use crate::rules::names::RESTORE_IN_PROGRESS_ANNOTATION;

/// The longest sleep between looks, whatever the next fire time: a clock that jumped (or a
/// test's clock file) is noticed within this.
pub const MAX_SLEEP: Duration = Duration::from_secs(300);
/// Longest name of an object made at a fire time: fits a label value and a Job's name.
pub const MAX_NAME_LEN: usize = 63;

/// What a schedule should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleDecision {
    /// The fire time to run now (the latest one due), if any.
    pub run: Option<DateTime<Utc>>,
    /// Earlier fire times that were missed and are not run (at most one catch-up).
    pub skipped_earlier: bool,
    /// The next fire time after now; `None` when suspended.
    pub next_run: Option<DateTime<Utc>>,
}

/// Decides which fire time runs now. Fire times after `since` are due: `since` is the fire time
/// last run (the last schedule time), or, before the first run, when the schedule became active.
/// A clock that went back never runs anything twice: a fire time at or before `since` is done.
pub fn decide(
    schedule: &Schedule,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    suspended: bool,
) -> ScheduleDecision {
    if suspended {
        return ScheduleDecision {
            run: None,
            skipped_earlier: false,
            next_run: None,
        };
    }
    let run = if now > since {
        schedule.latest_fire_in(since, now)
    } else {
        None
    };
    let skipped_earlier = run.is_some_and(|r| schedule.next_after(since).is_some_and(|f| f < r));
    ScheduleDecision {
        run,
        skipped_earlier,
        next_run: schedule.next_after(now.max(since)),
    }
}

/// Why a scheduled backup of `instance` must wait instead of starting now: a restore holds it or
/// an upgrade is under way. A backup then would copy a database being replaced or migrated, and
/// its retention could expire the pre-upgrade backup, the way back. The fire time stays due and
/// runs once the instance is free (as a catch-up).
pub fn why_scheduled_backup_waits(instance: &Dhis2Instance) -> Option<String> {
    let name = instance.name_any();
    if let Some(restore) = instance.annotations().get(RESTORE_IN_PROGRESS_ANNOTATION) {
        return Some(format!("Dhis2Restore {restore} holds instance {name}"));
    }
    let upgrade = instance.status.as_ref()?.upgrade.as_ref()?;
    upgrade.outcome.is_none().then(|| {
        format!(
            "instance {name} is being upgraded from {} to {}",
            upgrade.from_version, upgrade.to_version
        )
    })
}

/// How long to sleep before looking again: until the next fire time, but never longer than
/// `cap`, so a changed clock (or a clock file in tests) is noticed.
pub fn requeue_after(
    next_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    cap: Duration,
) -> Duration {
    match next_run {
        Some(next) => (next - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1))
            .min(cap),
        None => cap,
    }
}

/// The name of the object made at `fire_time`: `<prefix>-<YYYYMMDDHHMM>` (UTC), so a restarted
/// operator re-creating it meets AlreadyExists instead of making a second one. A prefix too long
/// for 63 characters is cut and completed with a hash of the whole prefix, so two long prefixes
/// never share names.
pub fn fire_time_name(prefix: &str, fire_time: DateTime<Utc>) -> String {
    let stamp = fire_time.format("%Y%m%d%H%M").to_string();
    format!(
        "{}-{stamp}",
        shorten_name(prefix, MAX_NAME_LEN - stamp.len() - 1)
    )
}

/// `name` if it fits `max` characters, else its start, `-`, and 8 hex digits of its hash.
pub fn shorten_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    let mut head: String = name.chars().take(max - hash.len() - 1).collect();
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_backup_waits_while_a_restore_holds_the_instance_or_an_upgrade_runs() {
        let instance = |extra: serde_json::Value| -> Dhis2Instance {
            let mut v = serde_json::json!({"apiVersion": "dhis2operator.io/v1alpha1",
                "kind": "Dhis2Instance", "metadata": {"name": "hmis", "namespace": "dhis2"},
                "spec": {"version": "2.41.3", "environment": "production"}});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                for (k, x) in e {
                    if k == "metadata" {
                        o["metadata"]["annotations"] = x["annotations"].clone();
                    } else {
                        o.insert(k.clone(), x.clone());
                    }
                }
            }
            serde_json::from_value(v).unwrap()
        };
        assert_eq!(
            why_scheduled_backup_waits(&instance(serde_json::json!({}))),
            None
        );
        let held = instance(serde_json::json!({"metadata": {"annotations":
            {"dhis2operator.io/restore-in-progress": "dr-restore"}}}));
        assert_eq!(
            why_scheduled_backup_waits(&held).as_deref(),
            Some("Dhis2Restore dr-restore holds instance hmis")
        );
        let upgrading = |outcome: Option<&str>| {
            let mut upgrade = serde_json::json!({"phase": "Migrating", "fromVersion": "2.41.3",
                "toVersion": "2.42.1", "toImage": "dhis2/core:2.42.1",
                "startedAt": "2026-12-07T02:00:00Z"});
            if let Some(o) = outcome {
                upgrade["outcome"] = o.into();
            }
            instance(serde_json::json!({"status": {"upgrade": upgrade}}))
        };
        assert_eq!(
            why_scheduled_backup_waits(&upgrading(None)).as_deref(),
            Some("instance hmis is being upgraded from 2.41.3 to 2.42.1")
        );
        assert_eq!(
            why_scheduled_backup_waits(&upgrading(Some("Succeeded"))),
            None
        );
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn schedule(cron: &str, zone: &str) -> Schedule {
        Schedule::parse(cron, zone, "spec").unwrap()
    }

    /// Every fire time in (from, to].
    fn fires(s: &Schedule, from: &str, to: &str) -> Vec<DateTime<Utc>> {
        let mut out = vec![];
        let mut t = utc(from);
        while let Some(n) = s.next_after(t).filter(|n| *n <= utc(to)) {
            out.push(n);
            t = n;
        }
        out
    }

    #[test]
    fn two_in_the_morning_in_phnom_penh_is_seven_in_the_evening_utc_the_day_before() {
        let s = schedule("0 2 * * *", "Asia/Phnom_Penh");
        assert_eq!(
            s.next_after(utc("2026-11-24T12:00:00Z")),
            Some(utc("2026-11-24T19:00:00Z"))
        );
        // Strictly after: at the fire time itself, the next one is a day later.
        assert_eq!(
            s.next_after(utc("2026-11-24T19:00:00Z")),
            Some(utc("2026-11-25T19:00:00Z"))
        );
    }

    #[test]
    fn a_time_skipped_by_spring_forward_runs_once_right_after_the_jump() {
        // Oslo, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
        let s = schedule("30 2 * * *", "Europe/Oslo");
        assert_eq!(
            fires(&s, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
            vec![
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST, the first minute after the gap
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
            ]
        );
    }

    #[test]
    fn a_time_repeated_by_fall_back_runs_once() {
        // Oslo, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let s = schedule("30 2 * * *", "Europe/Oslo");
        assert_eq!(
            fires(&s, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
            vec![
                utc("2026-10-25T00:30:00Z"), // the first 02:30 (CEST) only
                utc("2026-10-26T01:30:00Z"), // 02:30 CET
            ]
        );
        // Looking from inside the repeated hour (the operator woke at the second 02:20) never
        // finds the second 02:30.
        assert_eq!(
            s.next_after(utc("2026-10-25T01:20:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
        let after_first = decide(
            &s,
            utc("2026-10-25T00:30:00Z"),
            utc("2026-10-25T01:45:00Z"),
            false,
        );
        assert_eq!(after_first.run, None);
        assert_eq!(after_first.next_run, Some(utc("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn an_interval_schedule_runs_in_both_passes_of_the_repeated_hour() {
        // Cron's rule for wildcard hours: every 02:30 that the wall clock shows runs.
        let s = schedule("30 * * * *", "Europe/Oslo");
        let runs = fires(&s, "2026-10-24T23:45:00Z", "2026-10-25T02:45:00Z");
        assert_eq!(
            runs,
            vec![
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-25T01:30:00Z"),
                utc("2026-10-25T02:30:00Z"),
            ]
        );
    }

    #[test]
    fn a_fire_time_runs_when_the_clock_reaches_it_and_not_before() {
        let s = schedule("0 2 * * *", "Asia/Phnom_Penh");
        let since = utc("2026-11-24T10:00:00Z");
        let before = decide(&s, since, utc("2026-11-24T18:59:59Z"), false);
        assert_eq!(before.run, None);
        assert_eq!(before.next_run, Some(utc("2026-11-24T19:00:00Z")));
        let at = decide(&s, since, utc("2026-11-24T19:00:00Z"), false);
        assert_eq!(at.run, Some(utc("2026-11-24T19:00:00Z")));
        assert!(!at.skipped_earlier);
        assert_eq!(at.next_run, Some(utc("2026-11-25T19:00:00Z")));
        // Once run, it is done: the same instant, or a clock that went back, runs nothing.
        let again = decide(
            &s,
            utc("2026-11-24T19:00:00Z"),
            utc("2026-11-24T19:03:00Z"),
            false,
        );
        assert_eq!(again.run, None);
        let back = decide(
            &s,
            utc("2026-11-24T19:00:00Z"),
            utc("2026-11-24T12:00:00Z"),
            false,
        );
        assert_eq!(back.run, None);
        assert_eq!(back.next_run, Some(utc("2026-11-25T19:00:00Z")));
    }

    #[test]
    fn three_days_down_catch_up_once_with_the_latest_missed_fire_time() {
        let s = schedule("0 2 * * *", "Asia/Phnom_Penh");
        let last = utc("2026-11-24T19:00:00Z");
        let d = decide(&s, last, utc("2026-11-27T23:00:00Z"), false);
        assert_eq!(d.run, Some(utc("2026-11-27T19:00:00Z")));
        assert!(d.skipped_earlier);
        assert_eq!(d.next_run, Some(utc("2026-11-28T19:00:00Z")));
        // After that catch-up nothing else is due.
        let after = decide(&s, d.run.unwrap(), utc("2026-11-27T23:00:01Z"), false);
        assert_eq!(after.run, None);
    }

    #[test]
    fn a_year_of_a_minutely_schedule_down_is_still_one_catch_up() {
        let s = schedule("* * * * *", "UTC");
        let d = decide(
            &s,
            utc("2025-01-01T00:00:00Z"),
            utc("2026-01-01T12:34:56Z"),
            false,
        );
        assert_eq!(d.run, Some(utc("2026-01-01T12:34:00Z")));
        assert_eq!(d.next_run, Some(utc("2026-01-01T12:35:00Z")));
    }

    #[test]
    fn a_suspended_schedule_runs_nothing() {
        let s = schedule("0 2 * * *", "Asia/Phnom_Penh");
        let d = decide(
            &s,
            utc("2026-11-20T00:00:00Z"),
            utc("2026-11-27T23:00:00Z"),
            true,
        );
        assert_eq!(d.run, None);
        assert_eq!(d.next_run, None);
    }

    #[test]
    fn bad_schedules_and_zones_name_the_field_and_an_example() {
        for bad in [
            "0 2 * *",
            "0 25 * * *",
            "every day",
            "0 0 2 * * *",
            "@daily",
            "0 2 30 2 *",
        ] {
            let e = Schedule::parse(bad, "UTC", "spec").unwrap_err().to_string();
            assert!(e.starts_with("spec.schedule: "), "{bad}: {e}");
            assert!(e.contains("e.g. '0 2 * * *'"), "{bad}: {e}");
        }
        let e = Schedule::parse("0 3 * * 0", "Asia/Phnom Penh", "spec.backup.drill")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("spec.backup.drill.timeZone: 'Asia/Phnom Penh'"),
            "{e}"
        );
        assert!(e.contains("e.g. 'Asia/Phnom_Penh'"), "{e}");
    }

    #[test]
    fn the_wait_is_until_the_next_fire_time_but_capped() {
        let cap = Duration::from_secs(300);
        let now = utc("2026-11-24T18:58:00Z");
        assert_eq!(
            requeue_after(Some(utc("2026-11-24T19:00:00Z")), now, cap),
            Duration::from_secs(120)
        );
        assert_eq!(
            requeue_after(Some(utc("2026-11-25T19:00:00Z")), now, cap),
            cap
        );
        assert_eq!(requeue_after(None, now, cap), cap);
        assert_eq!(
            requeue_after(Some(utc("2026-11-24T18:00:00Z")), now, cap),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn names_come_from_the_fire_time_and_fit_63_characters() {
        let fire = utc("2026-11-24T19:00:00Z");
        assert_eq!(
            fire_time_name("hmis-nightly", fire),
            "hmis-nightly-202611241900"
        );
        let long = "a".repeat(60);
        let name = fire_time_name(&long, fire);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-202611241900"), "{name}");
        let other = fire_time_name(&format!("{}b", "a".repeat(59)), fire);
        assert_ne!(name, other, "long names differ by their hash");
        assert_eq!(fire_time_name(&long, fire), name, "deterministic");
        assert_eq!(shorten_name("short", 63), "short");
        assert!(shorten_name(&"x-".repeat(40), 63).len() <= 63);
    }
}
