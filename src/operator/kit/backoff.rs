//! How long to wait before retrying a failed reconcile: exponential in the number of failures
//! in a row, capped, with jitter so many objects failing together (an API server restart) do not
//! retry in lockstep. The delay is a pure function; the per-object failure counts live here too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub const FIRST_DELAY: Duration = Duration::from_secs(2);
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// The delay before retry `attempt` (1 = after the first failure). `jitter` in `[0, 1)` spreads
/// the delay over ±20 % of the nominal value; the cap holds after jitter too.
pub fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let nominal = FIRST_DELAY.saturating_mul(1u32 << exponent).min(MAX_DELAY);
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    nominal.mul_f64(factor).min(MAX_DELAY)
}

/// Failures in a row per object (`Kind/namespace/name`); a success forgets the object.
#[derive(Default)]
pub struct FailureCounts(Mutex<HashMap<String, u32>>);

impl FailureCounts {
    /// Records one more failure and returns how many there have been in a row.
    pub fn failed(&self, key: &str) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn succeeded(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_two_seconds_up_to_five_minutes() {
        let nominal: Vec<u64> = (1..=10).map(|a| backoff_delay(a, 0.5).as_secs()).collect();
        assert_eq!(nominal, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX, 0.5), MAX_DELAY);
        assert_eq!(backoff_delay(0, 0.5), FIRST_DELAY);
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_under_the_cap() {
        assert_eq!(backoff_delay(3, 0.0), Duration::from_millis(6400));
        assert_eq!(backoff_delay(3, 0.999_999).as_millis(), 9599);
        for attempt in 1..40 {
            for j in [0.0, 0.3, 0.7, 0.999] {
                assert!(backoff_delay(attempt, j) <= MAX_DELAY);
                assert!(backoff_delay(attempt, j) >= FIRST_DELAY.mul_f64(0.8));
            }
        }
    }

    #[test]
    fn counts_reset_on_success() {
        let c = FailureCounts::default();
        assert_eq!(c.failed("Dhis2Instance/ns/a"), 1);
        assert_eq!(c.failed("Dhis2Instance/ns/a"), 2);
        assert_eq!(c.failed("Dhis2Instance/ns/b"), 1);
        c.succeeded("Dhis2Instance/ns/a");
        assert_eq!(c.failed("Dhis2Instance/ns/a"), 1);
    }
}
