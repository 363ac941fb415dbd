//! Which backups retention keeps. Semantics follow restic's `forget`: `--keep-daily N` keeps the
//! newest backup of each of the N most recent days that have a backup (a day without a backup does
//! not use up the allowance, so gaps never cost history). Days, weeks (ISO) and months are taken
//! in the given time zone. The newest backup is always kept, and so are the two newest pre-upgrade
//! backups (the ways back from the last two upgrades), whatever their age: a nightly backup
//! right after an upgrade must never leave the instance without its way back.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

/// The calendar bucket (day, ISO week or month) a local time falls in.
type BucketOf = fn(DateTime<Tz>) -> (i32, u32);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub time_zone: Option<Tz>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub completed_at: DateTime<Utc>,
    /// Taken before an upgrade (`backup run --pre-upgrade`).
    pub pre_upgrade: bool,
}

/// How many pre-upgrade backups retention keeps whatever their age: the way back from the
/// current version and from the previous one.
pub const KEPT_PRE_UPGRADE_BACKUPS: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    pub id: String,
    /// Why: `last`, `daily`, `weekly`, `monthly`, `newest`, `pre-upgrade`.
    pub reasons: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionDecision {
    pub keep: Vec<Kept>,
    pub expire: Vec<String>,
}

impl RetentionPolicy {
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
    }

    /// Splits backups into kept (with reasons) and expired, both newest first.
    pub fn select_expired(&self, backups: &[Candidate]) -> RetentionDecision {
        let mut sorted: Vec<&Candidate> = backups.iter().collect();
        sorted.sort_by(|a, b| b.completed_at.cmp(&a.completed_at).then(b.id.cmp(&a.id)));
        let tz = self.time_zone.unwrap_or(chrono_tz::UTC);

        let mut reasons: BTreeMap<usize, Vec<&'static str>> = BTreeMap::new();
        if !sorted.is_empty() {
            reasons.entry(0).or_default().push("newest");
        }
        for (i, _) in sorted
            .iter()
            .enumerate()
            .filter(|(_, b)| b.pre_upgrade)
            .take(KEPT_PRE_UPGRADE_BACKUPS)
        {
            reasons.entry(i).or_default().push("pre-upgrade");
        }
        if let Some(n) = self.keep_last {
            for i in 0..sorted.len().min(n as usize) {
                reasons.entry(i).or_default().push("last");
            }
        }
        let buckets: [(Option<u32>, &'static str, BucketOf); 3] = [
            (self.keep_daily, "daily", |t| (t.year(), t.ordinal())),
            (self.keep_weekly, "weekly", |t| {
                let w = t.iso_week();
                (w.year(), w.week())
            }),
            (self.keep_monthly, "monthly", |t| (t.year(), t.month())),
        ];
        for (limit, reason, bucket_of) in buckets {
            let Some(limit) = limit else { continue };
            let mut seen = HashSet::new();
            for (i, b) in sorted.iter().enumerate() {
                if seen.len() >= limit as usize {
                    break;
                }
                // Newest first, so the first backup met in a bucket is that bucket's newest.
                if seen.insert(bucket_of(b.completed_at.with_timezone(&tz))) {
                    reasons.entry(i).or_default().push(reason);
                }
            }
        }

        let mut decision = RetentionDecision::default();
        for (i, b) in sorted.iter().enumerate() {
            match reasons.remove(&i) {
                Some(r) => decision.keep.push(Kept {
                    id: b.id.clone(),
                    reasons: r,
                }),
                None => decision.expire.push(b.id.clone()),
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn c(id: &str, t: DateTime<Utc>) -> Candidate {
        Candidate {
            id: id.to_string(),
            completed_at: t,
            pre_upgrade: false,
        }
    }

    fn kept_ids(d: &RetentionDecision) -> Vec<&str> {
        d.keep.iter().map(|k| k.id.as_str()).collect()
    }

    #[test]
    fn the_ways_back_from_the_last_two_upgrades_outlive_the_nightly_retention() {
        let pre = |id: &str, t| Candidate {
            pre_upgrade: true,
            ..c(id, t)
        };
        // Three upgrades over the months; nightly backups; keep only the newest of each day.
        let backups = vec![
            pre("pre-2.40", at(2026, 3, 1, 1)),
            pre("pre-2.41", at(2026, 9, 1, 1)),
            c("nightly-09-01", at(2026, 9, 1, 19)),
            pre("pre-2.42", at(2026, 12, 7, 1)),
            c("nightly-12-07", at(2026, 12, 7, 19)),
        ];
        let policy = RetentionPolicy {
            keep_daily: Some(1),
            ..Default::default()
        };
        let d = policy.select_expired(&backups);
        let kept = kept_ids(&d);
        // The nightly after the upgrade does not push the way back out (same day), nor does the
        // previous upgrade's way back age out; the third-newest is ordinary again.
        assert!(kept.contains(&"pre-2.42"), "{kept:?}");
        assert!(kept.contains(&"pre-2.41"), "{kept:?}");
        assert!(d.expire.contains(&"pre-2.40".to_string()), "{:?}", d.expire);
        assert!(d.expire.contains(&"nightly-09-01".to_string()));
        let reasons = |id: &str| d.keep.iter().find(|k| k.id == id).unwrap().reasons.clone();
        assert_eq!(reasons("pre-2.42"), vec!["pre-upgrade"]);
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let backups: Vec<_> = (0..5)
            .map(|i| c(&format!("b{i}"), at(2026, 1, 1, i)))
            .collect();
        let p = RetentionPolicy {
            keep_last: Some(2),
            ..Default::default()
        };
        let d = p.select_expired(&backups);
        assert_eq!(kept_ids(&d), vec!["b4", "b3"]);
        assert_eq!(d.expire, vec!["b2", "b1", "b0"]);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_skips_gaps() {
        // Two backups a day on Jan 1, 2, 5 (gap on 3-4).
        let mut backups = vec![];
        for day in [1, 2, 5] {
            backups.push(c(&format!("d{day}-early"), at(2026, 1, day, 1)));
            backups.push(c(&format!("d{day}-late"), at(2026, 1, day, 20)));
        }
        let p = RetentionPolicy {
            keep_daily: Some(3),
            ..Default::default()
        };
        let d = p.select_expired(&backups);
        assert_eq!(kept_ids(&d), vec!["d5-late", "d2-late", "d1-late"]);
        assert_eq!(d.expire.len(), 3);
    }

    #[test]
    fn days_follow_the_time_zone() {
        // 20:00 UTC on Jan 1 is 03:00 on Jan 2 in Phnom Penh (UTC+7): same local day as 10:00 UTC Jan 2.
        let backups = vec![c("a", at(2026, 1, 1, 20)), c("b", at(2026, 1, 2, 10))];
        let utc = RetentionPolicy {
            keep_daily: Some(2),
            ..Default::default()
        };
        assert_eq!(utc.select_expired(&backups).expire, Vec::<String>::new());
        let pp = RetentionPolicy {
            keep_daily: Some(2),
            time_zone: Some(chrono_tz::Asia::Phnom_Penh),
            ..Default::default()
        };
        assert_eq!(pp.select_expired(&backups).expire, vec!["a"]);
    }

    #[test]
    fn weekly_and_monthly_combine_with_reasons() {
        let start = at(2026, 1, 1, 2);
        let backups: Vec<_> = (0..90)
            .map(|i| c(&format!("b{i:02}"), start + Duration::days(i)))
            .collect();
        let p = RetentionPolicy {
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(3),
            ..Default::default()
        };
        let d = p.select_expired(&backups);
        // b89 is Tue 31 March. 7 daily (Mar 25-31); weekly adds Sundays Mar 22 (b80) and
        // Mar 15 (b73) (Mar 29 is already kept); monthly adds Jan 31 (b30) and Feb 28 (b58).
        assert_eq!(d.keep.len(), 7 + 2 + 2, "{:?}", kept_ids(&d));
        assert!(kept_ids(&d).contains(&"b80") && kept_ids(&d).contains(&"b73"));
        assert_eq!(d.keep.len() + d.expire.len(), 90);
        let newest = &d.keep[0];
        assert_eq!(newest.id, "b89");
        assert_eq!(newest.reasons, vec!["newest", "daily", "weekly", "monthly"]);
        assert!(kept_ids(&d).contains(&"b30")); // Jan 31
        assert!(kept_ids(&d).contains(&"b58")); // Feb 28
    }

    #[test]
    fn the_newest_backup_survives_any_policy() {
        let backups = vec![c("only", at(2026, 1, 1, 0))];
        let p = RetentionPolicy {
            keep_last: Some(0),
            ..Default::default()
        };
        assert_eq!(kept_ids(&p.select_expired(&backups)), vec!["only"]);
    }
}
