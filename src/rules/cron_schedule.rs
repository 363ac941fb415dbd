//! A 5-field cron schedule in an IANA time zone and its fire times (pure). Daylight saving changes
//! follow cron's rules (croner implements them): a fixed time skipped by spring-forward runs once,
//! right after the jump; a fixed time repeated by fall-back runs once, at its first pass.

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, JobType};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "{field}: '{value}' is not a 5-field cron schedule (minute hour day-of-month month day-of-week, e.g. '0 2 * * *' for 02:00 every day, '0 3 * * 0' for Sundays at 03:00): {reason}"
    )]
    Cron {
        field: String,
        value: String,
        reason: String,
    },
    #[error(
        "{field}: '{value}' is not an IANA time zone name (e.g. 'Asia/Phnom_Penh', 'Europe/Oslo', 'UTC')"
    )]
    TimeZone { field: String, value: String },
}

/// A parsed schedule: when it fires, in which zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
    fixed_time: bool,
}

impl Schedule {
    /// Parses `schedule` and `time_zone`; errors name the fields under `field_prefix` (e.g.
    /// `spec` → `spec.schedule`, `spec.timeZone`).
    pub fn parse(
        schedule: &str,
        time_zone: &str,
        field_prefix: &str,
    ) -> Result<Self, ScheduleError> {
        let cron_error = |reason: String| ScheduleError::Cron {
            field: format!("{field_prefix}.schedule"),
            value: schedule.to_string(),
            reason,
        };
        let fields = schedule.split_whitespace().count();
        if fields != 5 {
            return Err(cron_error(format!("it has {fields} fields")));
        }
        // Plain cron only: no seconds or years, and `@daily`-style nicknames are refused by the
        // field count above (the CRD's pattern refuses them too).
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(schedule)
            .map_err(|e| cron_error(e.to_string()))?;
        let zone = time_zone
            .parse::<Tz>()
            .map_err(|_| ScheduleError::TimeZone {
                field: format!("{field_prefix}.timeZone"),
                value: time_zone.to_string(),
            })?;
        // A schedule that never fires (e.g. 30 February) would make every search fail.
        let schedule = Self {
            fixed_time: cron.determine_job_type() == JobType::FixedTime,
            cron,
            zone,
        };
        if schedule.next_after(DateTime::UNIX_EPOCH).is_none() {
            return Err(cron_error("it never fires".into()));
        }
        Ok(schedule)
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire time strictly after `t`, or `None` when there is none (a pattern that
    /// matches no date).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = t.with_timezone(&self.zone);
        loop {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            // A fixed time (e.g. 02:30) that fall-back repeats runs at its first pass only. A
            // search starting inside the repeated hour could meet the second pass: skip it.
            if self.fixed_time && self.is_second_pass(&next) {
                from = next;
                continue;
            }
            return Some(next.with_timezone(&Utc));
        }
    }

    fn is_second_pass(&self, t: &DateTime<Tz>) -> bool {
        matches!(
            self.zone.from_local_datetime(&t.naive_local()),
            LocalResult::Ambiguous(first, _) if first != *t
        )
    }

    /// The latest fire time in `(after, until]`, found by bisection (a year of a once-a-minute
    /// schedule is a few dozen searches, not half a million).
    pub fn latest_fire_in(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut latest = self.next_after(after).filter(|f| *f <= until)?;
        let mut hi = until;
        // Invariant: `latest` fires, and no fire time lies in (hi, until].
        loop {
            match self.next_after(latest) {
                Some(n) if n <= hi => {}
                _ => return Some(latest),
            }
            let mid = latest + (hi - latest) / 2;
            match self.next_after(mid) {
                Some(n) if n <= hi => latest = n,
                _ => hi = mid,
            }
        }
    }
}
