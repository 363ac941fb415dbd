//! Which finished objects a schedule deletes (pure): the oldest beyond a history limit. Deleting
//! a `Dhis2Backup` object never deletes the backup in the repository (retention does that).

use chrono::{DateTime, Utc};

/// One finished object a schedule made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRun {
    pub name: String,
    /// Its fire time (or creation time for one without).
    pub at: DateTime<Utc>,
}

/// The names of the runs beyond the newest `keep`, oldest first.
pub fn beyond_history_limit(runs: &[FinishedRun], keep: usize) -> Vec<String> {
    let mut sorted: Vec<&FinishedRun> = runs.iter().collect();
    sorted.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.name.cmp(&a.name)));
    sorted
        .into_iter()
        .skip(keep)
        .rev()
        .map(|r| r.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn run(name: &str, day: u32) -> FinishedRun {
        FinishedRun {
            name: name.into(),
            at: Utc.with_ymd_and_hms(2026, 11, day, 19, 0, 0).unwrap(),
        }
    }

    #[test]
    fn the_newest_are_kept_and_the_oldest_deleted() {
        let runs = vec![run("d3", 3), run("d1", 1), run("d4", 4), run("d2", 2)];
        assert_eq!(beyond_history_limit(&runs, 2), vec!["d1", "d2"]);
        assert_eq!(beyond_history_limit(&runs, 4), Vec::<String>::new());
        assert_eq!(beyond_history_limit(&runs, 0), vec!["d1", "d2", "d3", "d4"]);
    }
}
