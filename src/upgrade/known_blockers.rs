//! Data that makes a DHIS2 migration fail, found before the upgrade instead of by a failed
//! Flyway run. Each rule comes from DHIS2's own migration notes.

use super::check_result::{CheckOutcome, CheckResult};
use super::facts::DatabaseFacts;
use super::version::{Dhis2Version, Major};

/// DHIS2's default category option combo uid.
pub const CANONICAL_DEFAULT_COC_UID: &str = "HllvX50cXC0";

/// How many offending rows a check lists (it always gives the count).
pub const LISTED_ROWS: usize = 10;

/// The migration that fails on duplicate default category option combos
/// (`V2_43_45__add_enrollment_categoryoptioncombo.sql`).
fn enrollment_coc_migration() -> Dhis2Version {
    Dhis2Version::parse("2.43.45").expect("a valid version")
}

/// The checks for the migrations an upgrade from `current` (the database's schema version when
/// known) to `to` will run.
pub fn known_blocker_checks(
    current: &Dhis2Version,
    to: &Dhis2Version,
    facts: &DatabaseFacts,
) -> Vec<CheckResult> {
    let mut checks = Vec::new();
    if to.major() >= Major(43) && *current < enrollment_coc_migration() {
        checks.push(duplicate_default_category_option_combos(facts));
    }
    if to.major() >= Major(43) && current.major() < Major(43) {
        checks.push(single_events_without_occurred_date(facts));
        checks.push(tracker_associate_value_type(facts));
    }
    checks
}

/// 2.43 migration notes, "Enrollment Attribute Option Combo": several combos named `default`,
/// none with the canonical uid, make the migration fail and DHIS2 not start.
fn duplicate_default_category_option_combos(facts: &DatabaseFacts) -> CheckResult {
    const NAME: &str = "default category option combo";
    let Some(defaults) = &facts.default_category_option_combos else {
        return CheckResult::new(
            NAME,
            CheckOutcome::Warning,
            "no categoryoptioncombo table found: cannot check for duplicate default category option combos",
        );
    };
    let rows: Vec<String> = defaults
        .listed
        .iter()
        .take(LISTED_ROWS)
        .map(|r| format!("uid {} (id {}, name '{}')", r.uid, r.id, r.name))
        .collect();
    let more = defaults.count - rows.len() as i64;
    let listing = if more > 0 {
        format!("{}, and {more} more", rows.join(", "))
    } else {
        rows.join(", ")
    };
    match (defaults.count, defaults.canonical_present) {
        (0..=1, _) => CheckResult::new(NAME, CheckOutcome::Passed, "exactly one default category option combo"),
        (n, false) => CheckResult::new(
            NAME,
            CheckOutcome::Blocked,
            format!(
                "{n} category option combos are named 'default' and none has DHIS2's uid {CANONICAL_DEFAULT_COC_UID}: \
                 the 2.43 migration V2_43_45 fails on this and DHIS2 does not start. Merge them into one, or give \
                 the one in use the uid {CANONICAL_DEFAULT_COC_UID} (DHIS2's data integrity check \"Only one default \
                 category option combo should exist\" helps): {listing}"
            ),
        )
        .with_rows(rows),
        (n, true) => CheckResult::new(
            NAME,
            CheckOutcome::Warning,
            format!(
                "{n} category option combos are named 'default'; one has DHIS2's uid {CANONICAL_DEFAULT_COC_UID}, \
                 so the 2.43 migration copes, but DHIS2's integrity check reports the others: {listing}"
            ),
        )
        .with_rows(rows),
    }
}

/// 2.43 migration notes, "Null Occurred Date for Single Events": 2.43 makes the column NOT NULL.
fn single_events_without_occurred_date(facts: &DatabaseFacts) -> CheckResult {
    const NAME: &str = "single events without occurred date";
    match facts.single_events_without_occurred_date {
        None => CheckResult::new(
            NAME,
            CheckOutcome::Passed,
            "no event table of a version before 2.43 to check",
        ),
        Some(0) => CheckResult::new(
            NAME,
            CheckOutcome::Passed,
            "every single event has an occurred date",
        ),
        Some(n) => CheckResult::new(
            NAME,
            CheckOutcome::Blocked,
            format!(
                "{n} single events (programs without registration) have no occurred date, which 2.43 no longer \
                 allows: give them one or delete them as DHIS2's 2.43 migration notes show (\"Null Occurred Date \
                 for Single Events\"), or run the integrity check \"Single events without an occurred date\""
            ),
        ),
    }
}

/// 2.43 migration notes, "Tracker Associate": the value type is gone and the upgrade fails
/// while any data element or tracked entity attribute still has it.
fn tracker_associate_value_type(facts: &DatabaseFacts) -> CheckResult {
    const NAME: &str = "tracker associate value type";
    match &facts.tracker_associate_value_types {
        None => CheckResult::new(
            NAME,
            CheckOutcome::Warning,
            "no dataelement or trackedentityattribute table found: cannot check for the TRACKER_ASSOCIATE value type",
        ),
        Some(found) if found.count == 0 => CheckResult::new(
            NAME,
            CheckOutcome::Passed,
            "no data element or tracked entity attribute has the value type TRACKER_ASSOCIATE",
        ),
        Some(found) => {
            let more = found.count - found.listed.len() as i64;
            let mut listing = found.listed.join(", ");
            if more > 0 {
                listing.push_str(&format!(", and {more} more"));
            }
            CheckResult::new(
                NAME,
                CheckOutcome::Blocked,
                format!(
                    "{} data elements or tracked entity attributes have the value type TRACKER_ASSOCIATE, which 2.43 \
                     no longer supports (its upgrade fails): change their value type or delete them, as DHIS2's \
                     integrity check \"tracker_associate_is_deprecated\" shows: {listing}",
                    found.count
                ),
            )
            .with_rows(found.listed.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::facts::{CategoryOptionComboRow, DefaultCategoryOptionCombos, FoundRows};

    fn v(s: &str) -> Dhis2Version {
        Dhis2Version::parse(s).unwrap()
    }

    fn coc(id: i64, uid: &str) -> CategoryOptionComboRow {
        CategoryOptionComboRow {
            id,
            uid: uid.into(),
            name: "default".into(),
        }
    }

    fn facts_with_defaults(listed: Vec<CategoryOptionComboRow>, count: i64) -> DatabaseFacts {
        DatabaseFacts {
            default_category_option_combos: Some(DefaultCategoryOptionCombos {
                count,
                canonical_present: listed.iter().any(|r| r.uid == CANONICAL_DEFAULT_COC_UID),
                listed,
            }),
            single_events_without_occurred_date: Some(0),
            tracker_associate_value_types: Some(FoundRows::default()),
            ..DatabaseFacts::default()
        }
    }

    fn outcome_of<'a>(checks: &'a [CheckResult], name: &str) -> &'a CheckResult {
        checks.iter().find(|c| c.check == name).unwrap()
    }

    #[test]
    fn duplicate_defaults_without_the_canonical_uid_block_2_43_and_are_listed() {
        let facts = facts_with_defaults(vec![coc(26, "AAAAAAAAAA1"), coc(99, "BBBBBBBBBB2")], 2);
        let checks = known_blocker_checks(&v("2.42.52"), &v("2.43"), &facts);
        let c = outcome_of(&checks, "default category option combo");
        assert_eq!(c.outcome, CheckOutcome::Blocked);
        assert!(
            c.detail.contains("AAAAAAAAAA1") && c.detail.contains("BBBBBBBBBB2"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains(CANONICAL_DEFAULT_COC_UID), "{}", c.detail);
        assert_eq!(c.rows.len(), 2);
    }

    #[test]
    fn at_most_ten_rows_are_listed_with_the_count() {
        let listed: Vec<_> = (0..10).map(|i| coc(i, &format!("X{i:010}"))).collect();
        let facts = facts_with_defaults(listed, 25);
        let checks = known_blocker_checks(&v("2.41"), &v("2.43.1"), &facts);
        let c = outcome_of(&checks, "default category option combo");
        assert_eq!(c.rows.len(), 10);
        assert!(
            c.detail.starts_with("25 category option combos"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("and 15 more"), "{}", c.detail);
    }

    #[test]
    fn duplicates_with_the_canonical_uid_only_warn_and_one_default_passes() {
        let facts = facts_with_defaults(
            vec![coc(26, CANONICAL_DEFAULT_COC_UID), coc(99, "BBBBBBBBBB2")],
            2,
        );
        let checks = known_blocker_checks(&v("2.42"), &v("2.43"), &facts);
        assert_eq!(
            outcome_of(&checks, "default category option combo").outcome,
            CheckOutcome::Warning
        );
        let facts = facts_with_defaults(vec![coc(26, CANONICAL_DEFAULT_COC_UID)], 1);
        let checks = known_blocker_checks(&v("2.42"), &v("2.43"), &facts);
        assert_eq!(
            outcome_of(&checks, "default category option combo").outcome,
            CheckOutcome::Passed
        );
    }

    #[test]
    fn the_2_43_rules_apply_only_to_upgrades_that_run_those_migrations() {
        let facts = facts_with_defaults(vec![coc(26, "AAAAAAAAAA1"), coc(99, "BBBBBBBBBB2")], 2);
        assert!(known_blocker_checks(&v("2.41"), &v("2.42.3"), &facts).is_empty());
        // Past V2_43_45 already: the migration ran, nothing left to fail.
        assert!(known_blocker_checks(&v("2.43.60"), &v("2.43.2"), &facts).is_empty());
        // Within 2.43 but before V2_43_45: it still runs.
        let checks = known_blocker_checks(&v("2.43.10"), &v("2.43.2"), &facts);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].outcome, CheckOutcome::Blocked);
    }

    #[test]
    fn single_events_without_occurred_date_block_2_43() {
        let mut facts = facts_with_defaults(vec![coc(26, CANONICAL_DEFAULT_COC_UID)], 1);
        facts.single_events_without_occurred_date = Some(3);
        let checks = known_blocker_checks(&v("2.42"), &v("2.43"), &facts);
        let c = outcome_of(&checks, "single events without occurred date");
        assert_eq!(c.outcome, CheckOutcome::Blocked);
        assert!(c.detail.starts_with("3 single events"), "{}", c.detail);
    }

    #[test]
    fn the_tracker_associate_value_type_blocks_2_43_and_is_listed() {
        let mut facts = facts_with_defaults(vec![coc(26, CANONICAL_DEFAULT_COC_UID)], 1);
        facts.tracker_associate_value_types = Some(FoundRows {
            count: 12,
            listed: (0..10).map(|i| format!("data element DE{i}")).collect(),
        });
        let checks = known_blocker_checks(&v("2.41.9"), &v("2.43"), &facts);
        let c = outcome_of(&checks, "tracker associate value type");
        assert_eq!(c.outcome, CheckOutcome::Blocked);
        assert!(c.detail.starts_with("12 data elements"), "{}", c.detail);
        assert!(c.detail.contains("DE9, and 2 more"), "{}", c.detail);
        assert_eq!(c.rows.len(), 10);
        facts.tracker_associate_value_types = Some(FoundRows::default());
        let checks = known_blocker_checks(&v("2.41.9"), &v("2.43"), &facts);
        assert_eq!(
            outcome_of(&checks, "tracker associate value type").outcome,
            CheckOutcome::Passed
        );
    }
}
