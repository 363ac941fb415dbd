//! The upgrade check: may this database go from one DHIS2 version to another? A pure function
//! of the two versions and the database's facts; every check says what to do when it fails.

use serde::Serialize;

use super::check_result::{CheckOutcome, CheckResult};
use super::facts::DatabaseFacts;
use super::known_blockers::known_blocker_checks;
use super::requirements::{
    LATEST, MIN_POSTGIS, OLDEST_DIRECT_UPGRADE, REQUIRED_EXTENSIONS, Requirements, lines_between,
    postgres_version_label, requirements_of, supported_lines,
};
use super::version::{Dhis2Version, Major};

/// Where the current version came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CurrentVersion {
    /// A release the caller knows runs on the database (`--from`, the instance's spec).
    Release(Dhis2Version),
    /// The database's Flyway schema version (`2.42.52`): only its release line is meaningful.
    Schema(Dhis2Version),
}

impl CurrentVersion {
    pub fn version(&self) -> &Dhis2Version {
        match self {
            Self::Release(v) | Self::Schema(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Every check passed.
    Ready,
    /// Nothing blocks; read the warnings first.
    ReadyWithWarnings,
    /// At least one check blocks the upgrade.
    Blocked,
    /// Already on the target version.
    NothingToDo,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeCheck {
    pub from: Dhis2Version,
    /// `release` (given) or `schema` (read from flyway_schema_history).
    pub from_source: &'static str,
    pub to: Dhis2Version,
    pub verdict: Verdict,
    pub checks: Vec<CheckResult>,
}

impl UpgradeCheck {
    pub fn is_blocked(&self) -> bool {
        self.verdict == Verdict::Blocked
    }

    pub fn blocked(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks
            .iter()
            .filter(|c| c.outcome == CheckOutcome::Blocked)
    }
}

/// Checks an upgrade of the database described by `facts` from `from` to `to`.
pub fn check_upgrade(
    from: &CurrentVersion,
    to: &Dhis2Version,
    facts: &DatabaseFacts,
) -> UpgradeCheck {
    let mut checks = vec![target_check(to)];
    let (direction, nothing_to_do) = direction_check(from, to);
    let is_downgrade = direction.outcome == CheckOutcome::Blocked;
    checks.push(direction);
    if let (CurrentVersion::Release(given), Some(schema)) = (from, &facts.schema_version) {
        checks.push(schema_check(given, schema, to));
    }
    if !is_downgrade && !nothing_to_do {
        checks.push(path_check(from.version().major(), to));
    }
    if let Some(target) = requirements_of(to.major()) {
        checks.push(postgres_check(to, target, facts));
        checks.extend(extension_checks(to, target, facts));
        if !is_downgrade && !nothing_to_do {
            checks.push(runtime_check(from.version().major(), target));
        }
    }
    checks.push(migrations_check(facts));
    if !is_downgrade && !nothing_to_do {
        let current = facts.schema_version.as_ref().unwrap_or(from.version());
        checks.extend(known_blocker_checks(current, to, facts));
    }
    let verdict = if checks.iter().any(|c| c.outcome == CheckOutcome::Blocked) {
        Verdict::Blocked
    } else if nothing_to_do {
        Verdict::NothingToDo
    } else if checks.iter().any(|c| c.outcome == CheckOutcome::Warning) {
        Verdict::ReadyWithWarnings
    } else {
        Verdict::Ready
    };
    UpgradeCheck {
        from: from.version().clone(),
        from_source: match from {
            CurrentVersion::Release(_) => "release",
            CurrentVersion::Schema(_) => "schema",
        },
        to: to.clone(),
        verdict,
        checks,
    }
}

fn list(majors: &[Major]) -> String {
    let names: Vec<String> = majors.iter().map(Major::to_string).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn target_check(to: &Dhis2Version) -> CheckResult {
    const NAME: &str = "target version";
    let supported = list(&supported_lines());
    match requirements_of(to.major()) {
        None => CheckResult::new(
            NAME,
            CheckOutcome::Blocked,
            format!(
                "DHIS2 {} is not a release line this dhis2ctl knows ({OLDEST_DIRECT_UPGRADE} to {LATEST}): choose {supported}, or use a newer dhis2ctl",
                to.major()
            ),
        ),
        Some(r) if !r.supported => CheckResult::new(
            NAME,
            CheckOutcome::Warning,
            format!(
                "DHIS2 {} no longer gets fixes (security ones included): choose {supported} if you can",
                to.major()
            ),
        ),
        Some(_) => CheckResult::new(
            NAME,
            CheckOutcome::Passed,
            if to.major() == LATEST {
                format!("DHIS2 {to} is supported (the latest release line)")
            } else {
                format!("DHIS2 {to} is supported")
            },
        ),
    }
}

/// The direction check and whether there is nothing to do.
fn direction_check(from: &CurrentVersion, to: &Dhis2Version) -> (CheckResult, bool) {
    const NAME: &str = "direction";
    let current = from.version();
    // A schema version (2.42.52) names its line, not a release: say `2.42`.
    let running = match from {
        CurrentVersion::Release(v) => v.to_string(),
        CurrentVersion::Schema(v) => v.major().to_string(),
    };
    let downgrade = |older: &dyn std::fmt::Display| {
        CheckResult::new(
            NAME,
            CheckOutcome::Blocked,
            format!(
                "{older} is older than {running}: DHIS2 cannot be downgraded once its migrations ran. The way \
                 back is to restore the backup taken before the upgrade to {running} (dhis2ctl backup restore), \
                 then start {older} on it"
            ),
        )
    };
    if to.major() < current.major() {
        return (downgrade(to), false);
    }
    if to.major() > current.major() {
        return (
            CheckResult::new(
                NAME,
                CheckOutcome::Passed,
                format!("an upgrade from {} to {}", current.major(), to.major()),
            ),
            false,
        );
    }
    match from {
        CurrentVersion::Release(current) if to < current => (downgrade(to), false),
        CurrentVersion::Release(current) if to == current => (
            CheckResult::new(
                NAME,
                CheckOutcome::Passed,
                format!("already on {current}: nothing to do"),
            ),
            true,
        ),
        CurrentVersion::Release(current) => (
            CheckResult::new(
                NAME,
                CheckOutcome::Passed,
                format!("a patch upgrade within {} ({current} to {to})", to.major()),
            ),
            false,
        ),
        CurrentVersion::Schema(schema) => (
            CheckResult::new(
                NAME,
                CheckOutcome::Passed,
                format!(
                    "the database is on {} (schema {schema}): a patch release of the same line; which \
                     patch runs now is not recorded in the database, so give --from to be refused a patch downgrade",
                    to.major()
                ),
            ),
            false,
        ),
    }
}

/// The running release given by the caller against what the database's Flyway history says:
/// a database already migrated past the target cannot go back, whatever `--from` says.
fn schema_check(given: &Dhis2Version, schema: &Dhis2Version, to: &Dhis2Version) -> CheckResult {
    const NAME: &str = "database schema";
    if schema.major() > to.major() {
        return CheckResult::new(
            NAME,
            CheckOutcome::Blocked,
            format!(
                "the database's schema is {schema}: DHIS2 {} migrated it already, and {to} cannot run on it. The way \
                 back is to restore a backup taken before that upgrade",
                schema.major()
            ),
        );
    }
    if schema.major() != given.major() {
        return CheckResult::new(
            NAME,
            CheckOutcome::Warning,
            format!(
                "--from says {given}, but the database's schema is {schema} (DHIS2 {}): check which version really runs on it",
                schema.major()
            ),
        );
    }
    CheckResult::new(
        NAME,
        CheckOutcome::Passed,
        format!("schema {schema} belongs to {}", given.major()),
    )
}

fn path_check(from: Major, to: &Dhis2Version) -> CheckResult {
    const NAME: &str = "upgrade path";
    if from < OLDEST_DIRECT_UPGRADE {
        return CheckResult::new(
            NAME,
            CheckOutcome::Blocked,
            format!(
                "DHIS2 {from} must first be upgraded to {OLDEST_DIRECT_UPGRADE} (DHIS2's upgrade guide allows a \
                 direct jump only from {OLDEST_DIRECT_UPGRADE} on), then to {to}"
            ),
        );
    }
    let skipped = lines_between(from, to.major());
    if skipped.is_empty() {
        return CheckResult::new(
            NAME,
            CheckOutcome::Passed,
            if from == to.major() {
                format!("within {from}: read the release notes of {to}")
            } else {
                format!(
                    "one release line up: read the upgrade and migration notes of {}",
                    to.major()
                )
            },
        );
    }
    let mut notes = skipped.clone();
    notes.push(to.major());
    CheckResult::new(
        NAME,
        CheckOutcome::Warning,
        format!(
            "skips {}: a direct jump is allowed, but read the upgrade and migration notes of {} first; \
             each line's data fixes apply",
            list(&skipped),
            notes
                .iter()
                .map(Major::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

fn postgres_check(to: &Dhis2Version, target: &Requirements, facts: &DatabaseFacts) -> CheckResult {
    const NAME: &str = "postgresql";
    let have = postgres_version_label(facts.server_version_num);
    if facts.server_version_num >= target.min_postgres_num {
        CheckResult::new(
            NAME,
            CheckOutcome::Passed,
            format!(
                "PostgreSQL {have} ({} needs {} or later)",
                to.major(),
                target.min_postgres
            ),
        )
    } else {
        CheckResult::new(
            NAME,
            CheckOutcome::Blocked,
            format!(
                "PostgreSQL {have} is too old for {}, which needs {} or later: move the database to a newer \
                 PostgreSQL first (dump and restore, with PostGIS 3)",
                to.major(),
                target.min_postgres,
            ),
        )
    }
}

/// (major, minor) of an extension version such as `3.3.2` or `2.5.5`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(['.', ' ', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// What a PostGIS version means for the target: too old (blocks), older than recommended
/// (warns, with the reason), or fine.
fn judge_postgis(
    version: &str,
    to: Major,
    target: &Requirements,
    package: &str,
) -> Option<(CheckOutcome, String)> {
    let (major, minor) = major_minor(version)?;
    if (major, minor) < MIN_POSTGIS {
        return Some((
            CheckOutcome::Blocked,
            format!(
                "PostGIS {version} is older than DHIS2 accepts ({}.{} or later): install {package} on the database server",
                MIN_POSTGIS.0, MIN_POSTGIS.1
            ),
        ));
    }
    match target.recommended_postgis_major {
        Some(recommended) if major < recommended => Some((
            CheckOutcome::Warning,
            format!(
                "PostGIS {version} works, but DHIS2's installation guide recommends PostGIS {recommended} for {to}: \
                 install {package} and run ALTER EXTENSION postgis UPDATE when convenient"
            ),
        )),
        _ => None,
    }
}

fn extension_checks(
    to: &Dhis2Version,
    target: &Requirements,
    facts: &DatabaseFacts,
) -> Vec<CheckResult> {
    let pg_major = facts.server_version_num / 10000;
    REQUIRED_EXTENSIONS
        .iter()
        .map(|&name| {
            let check = format!("extension {name}");
            let fact = facts.extension(name);
            let installed = fact.and_then(|f| f.installed_version.as_deref());
            let available = fact.and_then(|f| f.available_version.as_deref());
            let package = if name == "postgis" {
                format!("postgresql-{pg_major}-postgis-3")
            } else {
                "postgresql-contrib".to_string()
            };
            let postgis = |v: &str| {
                (name == "postgis")
                    .then(|| judge_postgis(v, to.major(), target, &package))
                    .flatten()
            };
            match (installed, available) {
                (Some(v), _) => match postgis(v) {
                    Some((outcome, detail)) => CheckResult::new(&check, outcome, detail),
                    None => CheckResult::new(&check, CheckOutcome::Passed, format!("installed ({v})")),
                },
                (None, Some(v)) => match postgis(v) {
                    Some((CheckOutcome::Blocked, detail)) => CheckResult::new(
                        &check,
                        CheckOutcome::Blocked,
                        format!("not installed, and the server offers only an old one: {detail}"),
                    ),
                    _ => CheckResult::new(
                        &check,
                        CheckOutcome::Warning,
                        format!(
                            "not installed in this database, but the server offers it ({v}): DHIS2 creates it at \
                             start-up only if its role may; to be sure, run CREATE EXTENSION {name}; as a superuser now"
                        ),
                    ),
                },
                (None, None) => CheckResult::new(
                    &check,
                    CheckOutcome::Blocked,
                    format!(
                        "not installed and not available on the database server, and DHIS2 does not start without \
                         it: install {package} there, then run CREATE EXTENSION {name}; as a superuser"
                    ),
                ),
            }
        })
        .collect()
}

fn runtime_check(from: Major, target: &Requirements) -> CheckResult {
    const NAME: &str = "java and tomcat";
    let needs = format!(
        "{} runs on Java {} and Tomcat {}",
        target.major, target.java, target.tomcat
    );
    match requirements_of(from) {
        Some(current)
            if current.major != target.major
                && (current.java != target.java || current.tomcat != target.tomcat) =>
        {
            CheckResult::new(
                NAME,
                CheckOutcome::Warning,
                format!(
                    "{needs} ({} ran on Java {} and Tomcat {}): the dhis2/core image brings them; on a plain \
                     server install them before starting {}",
                    current.major, current.java, current.tomcat, target.major
                ),
            )
        }
        _ => CheckResult::new(
            NAME,
            CheckOutcome::Passed,
            format!("{needs} (the dhis2/core image brings them)"),
        ),
    }
}

fn migrations_check(facts: &DatabaseFacts) -> CheckResult {
    const NAME: &str = "flyway migrations";
    if facts.failed_migrations.is_empty() {
        let schema = facts
            .schema_version
            .as_ref()
            .map(|v| format!(" (schema {v})"))
            .unwrap_or_default();
        return CheckResult::new(
            NAME,
            CheckOutcome::Passed,
            format!("no failed migration recorded{schema}"),
        );
    }
    CheckResult::new(
        NAME,
        CheckOutcome::Blocked,
        format!(
            "flyway_schema_history records failed migrations ({}), so DHIS2 will not start: restore the \
             backup taken before the failed upgrade, or fix the data the migration stumbled on and retry as \
             DHIS2's migration notes describe",
            facts.failed_migrations.join("; ")
        ),
    )
    .with_rows(facts.failed_migrations.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::facts::{
        CategoryOptionComboRow, DefaultCategoryOptionCombos, ExtensionFact,
    };
    use crate::upgrade::known_blockers::CANONICAL_DEFAULT_COC_UID;

    fn v(s: &str) -> Dhis2Version {
        Dhis2Version::parse(s).unwrap()
    }

    fn release(s: &str) -> CurrentVersion {
        CurrentVersion::Release(v(s))
    }

    fn ext(name: &str, installed: Option<&str>, available: Option<&str>) -> ExtensionFact {
        ExtensionFact {
            name: name.into(),
            installed_version: installed.map(Into::into),
            available_version: available.map(Into::into),
        }
    }

    /// A healthy 2.42 database on PostgreSQL 15 with PostGIS 3.
    fn healthy() -> DatabaseFacts {
        DatabaseFacts {
            server_version_num: 150018,
            extensions: vec![
                ext("postgis", Some("3.3.2"), Some("3.3.2")),
                ext("pg_trgm", Some("1.6"), Some("1.6")),
                ext("btree_gin", Some("1.3"), Some("1.3")),
            ],
            schema_version: Some(v("2.42.52")),
            failed_migrations: vec![],
            default_category_option_combos: Some(DefaultCategoryOptionCombos {
                count: 1,
                canonical_present: true,
                listed: vec![CategoryOptionComboRow {
                    id: 26,
                    uid: CANONICAL_DEFAULT_COC_UID.into(),
                    name: "default".into(),
                }],
            }),
            single_events_without_occurred_date: Some(0),
            tracker_associate_value_types: Some(Default::default()),
        }
    }

    fn result<'a>(check: &'a UpgradeCheck, name: &str) -> &'a CheckResult {
        check
            .checks
            .iter()
            .find(|c| c.check == name)
            .unwrap_or_else(|| panic!("no check {name}: {:#?}", check.checks))
    }

    #[test]
    fn a_healthy_2_42_database_is_ready_for_2_43() {
        let check = check_upgrade(&release("2.42.1"), &v("2.43.0"), &healthy());
        assert_eq!(check.verdict, Verdict::Ready, "{:#?}", check.checks);
        assert!(
            check
                .checks
                .iter()
                .all(|c| c.outcome == CheckOutcome::Passed)
        );
        assert!(result(&check, "target version").detail.contains("latest"));
        assert!(result(&check, "default category option combo").outcome == CheckOutcome::Passed);
    }

    #[test]
    fn a_downgrade_is_refused_and_names_the_way_back() {
        let check = check_upgrade(&release("2.43.1"), &v("2.42.3"), &healthy());
        assert_eq!(check.verdict, Verdict::Blocked);
        let d = result(&check, "direction");
        assert_eq!(d.outcome, CheckOutcome::Blocked);
        assert!(d.detail.contains("cannot be downgraded"), "{}", d.detail);
        assert!(
            d.detail
                .contains("restore the backup taken before the upgrade"),
            "{}",
            d.detail
        );
        // A patch downgrade is one too, when the running release is known.
        let check = check_upgrade(&release("2.42.3"), &v("2.42.1"), &healthy());
        assert_eq!(result(&check, "direction").outcome, CheckOutcome::Blocked);
        // From the schema version, an older line is recognised as a downgrade.
        let check = check_upgrade(
            &CurrentVersion::Schema(v("2.42.52")),
            &v("2.41.4"),
            &healthy(),
        );
        assert_eq!(check.verdict, Verdict::Blocked);
        let d = result(&check, "direction");
        assert!(
            d.detail.starts_with("2.41.4 is older than 2.42:"),
            "{}",
            d.detail
        );
        assert!(!check.checks.iter().any(|c| c.check == "java and tomcat"));
    }

    #[test]
    fn the_same_version_is_nothing_to_do() {
        let check = check_upgrade(&release("2.42.1"), &v("2.42.1"), &healthy());
        assert_eq!(check.verdict, Verdict::NothingToDo);
        assert!(result(&check, "direction").detail.contains("nothing to do"));
    }

    #[test]
    fn a_patch_upgrade_from_the_schema_version_passes() {
        let check = check_upgrade(
            &CurrentVersion::Schema(v("2.42.52")),
            &v("2.42.3"),
            &healthy(),
        );
        assert_eq!(check.verdict, Verdict::Ready, "{:#?}", check.checks);
        assert!(result(&check, "direction").detail.contains("--from"));
        assert_eq!(check.from_source, "schema");
    }

    #[test]
    fn versions_before_2_30_must_first_reach_2_30() {
        let check = check_upgrade(&release("2.29"), &v("2.41"), &healthy());
        assert_eq!(check.verdict, Verdict::Blocked);
        let p = result(&check, "upgrade path");
        assert!(
            p.detail.contains("first be upgraded to 2.30"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn skipping_release_lines_warns_to_read_their_notes() {
        let check = check_upgrade(&release("2.40.4"), &v("2.42.1"), &healthy());
        assert_eq!(
            check.verdict,
            Verdict::ReadyWithWarnings,
            "{:#?}",
            check.checks
        );
        let p = result(&check, "upgrade path");
        assert_eq!(p.outcome, CheckOutcome::Warning);
        assert!(p.detail.contains("skips 2.41"), "{}", p.detail);
        assert!(p.detail.contains("2.41, 2.42"), "{}", p.detail);
        let one = check_upgrade(&release("2.41"), &v("2.42"), &healthy());
        assert_eq!(result(&one, "upgrade path").outcome, CheckOutcome::Passed);
    }

    #[test]
    fn unknown_and_unsupported_targets() {
        let check = check_upgrade(&release("2.42"), &v("2.44"), &healthy());
        assert_eq!(check.verdict, Verdict::Blocked);
        let t = result(&check, "target version");
        assert!(
            t.detail.contains("2.44") && t.detail.contains("2.41, 2.42 or 2.43"),
            "{}",
            t.detail
        );
        let check = check_upgrade(&release("2.39"), &v("2.40"), &healthy());
        assert_eq!(
            result(&check, "target version").outcome,
            CheckOutcome::Warning
        );
        assert!(
            result(&check, "target version")
                .detail
                .contains("no longer gets fixes")
        );
    }

    #[test]
    fn postgres_older_than_the_target_needs_blocks() {
        let mut facts = healthy();
        facts.server_version_num = 120017;
        let check = check_upgrade(&release("2.40"), &v("2.41"), &facts);
        let p = result(&check, "postgresql");
        assert_eq!(p.outcome, CheckOutcome::Blocked);
        assert!(
            p.detail.contains("PostgreSQL 12.17") && p.detail.contains("13 or later"),
            "{}",
            p.detail
        );
        // 2.40 itself was fine on 12.
        let check = check_upgrade(&release("2.39"), &v("2.40"), &facts);
        assert_eq!(result(&check, "postgresql").outcome, CheckOutcome::Passed);
    }

    #[test]
    fn extensions_present_creatable_or_missing() {
        let mut facts = healthy();
        facts.extensions = vec![
            ext("postgis", Some("3.3.2"), Some("3.3.2")),
            ext("pg_trgm", None, Some("1.6")),
            ext("btree_gin", None, None),
        ];
        let check = check_upgrade(&release("2.42"), &v("2.43"), &facts);
        assert_eq!(
            result(&check, "extension postgis").outcome,
            CheckOutcome::Passed
        );
        let trgm = result(&check, "extension pg_trgm");
        assert_eq!(trgm.outcome, CheckOutcome::Warning);
        assert!(
            trgm.detail.contains("CREATE EXTENSION pg_trgm"),
            "{}",
            trgm.detail
        );
        let gin = result(&check, "extension btree_gin");
        assert_eq!(gin.outcome, CheckOutcome::Blocked);
        assert!(gin.detail.contains("postgresql-contrib"), "{}", gin.detail);
        assert_eq!(check.verdict, Verdict::Blocked);
    }

    #[test]
    fn postgis_older_than_2_2_blocks_and_postgis_2_warns_on_current_lines() {
        let mut facts = healthy();
        facts.extensions[0] = ext("postgis", Some("2.5.5"), Some("2.5.5"));
        let check = check_upgrade(&release("2.40"), &v("2.41"), &facts);
        let p = result(&check, "extension postgis");
        assert_eq!(p.outcome, CheckOutcome::Warning, "{}", p.detail);
        assert!(p.detail.contains("recommends PostGIS 3"), "{}", p.detail);
        assert!(p.detail.contains("postgresql-15-postgis-3"), "{}", p.detail);
        // 2.40's guide recommends no PostGIS major: 2.5 is fine there.
        let check = check_upgrade(&release("2.39"), &v("2.40"), &facts);
        assert_eq!(
            result(&check, "extension postgis").outcome,
            CheckOutcome::Passed
        );
        facts.extensions[0] = ext("postgis", Some("2.1.8"), Some("2.1.8"));
        let check = check_upgrade(&release("2.40"), &v("2.41"), &facts);
        let p = result(&check, "extension postgis");
        assert_eq!(p.outcome, CheckOutcome::Blocked);
        assert!(p.detail.contains("2.2 or later"), "{}", p.detail);
        facts.extensions[0] = ext("postgis", None, Some("2.1.8"));
        let check = check_upgrade(&release("2.40"), &v("2.41"), &facts);
        let p = result(&check, "extension postgis");
        assert_eq!(p.outcome, CheckOutcome::Blocked);
        assert!(
            p.detail
                .starts_with("not installed, and the server offers only an old one"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn a_new_tomcat_is_a_warning_for_plain_servers() {
        let check = check_upgrade(&release("2.41.5"), &v("2.42.1"), &healthy());
        let r = result(&check, "java and tomcat");
        assert_eq!(r.outcome, CheckOutcome::Warning);
        assert!(
            r.detail.contains("Tomcat 10.1") && r.detail.contains("Tomcat 9"),
            "{}",
            r.detail
        );
        let check = check_upgrade(&release("2.42.1"), &v("2.43"), &healthy());
        assert_eq!(
            result(&check, "java and tomcat").outcome,
            CheckOutcome::Passed
        );
    }

    #[test]
    fn a_failed_migration_blocks() {
        let mut facts = healthy();
        facts.failed_migrations = vec!["2.43.45 add enrollment categoryoptioncombo".into()];
        let check = check_upgrade(&release("2.42"), &v("2.43"), &facts);
        let m = result(&check, "flyway migrations");
        assert_eq!(m.outcome, CheckOutcome::Blocked);
        assert!(m.detail.contains("2.43.45"), "{}", m.detail);
        assert_eq!(check.blocked().count(), 1);
    }

    #[test]
    fn the_known_2_43_blocker_is_checked_from_the_schema_version() {
        let mut facts = healthy();
        facts.default_category_option_combos = Some(DefaultCategoryOptionCombos {
            count: 2,
            canonical_present: false,
            listed: vec![
                CategoryOptionComboRow {
                    id: 26,
                    uid: "AAAAAAAAAA1".into(),
                    name: "default".into(),
                },
                CategoryOptionComboRow {
                    id: 27,
                    uid: "AAAAAAAAAA2".into(),
                    name: "default".into(),
                },
            ],
        });
        let check = check_upgrade(&CurrentVersion::Schema(v("2.42.52")), &v("2.43"), &facts);
        assert!(check.is_blocked());
        let c = result(&check, "default category option combo");
        assert_eq!(c.rows.len(), 2);
        // Not an upgrade to 2.43: not checked.
        let check = check_upgrade(&CurrentVersion::Schema(v("2.41.9")), &v("2.42"), &facts);
        assert!(!check.is_blocked(), "{:#?}", check.checks);
    }

    #[test]
    fn a_database_migrated_past_the_target_is_a_downgrade_whatever_from_says() {
        // The schema says 2.42 ran; --from claims 2.40.
        let check = check_upgrade(&release("2.40.1"), &v("2.41"), &healthy());
        assert_eq!(check.verdict, Verdict::Blocked);
        let s = result(&check, "database schema");
        assert_eq!(s.outcome, CheckOutcome::Blocked);
        assert!(
            s.detail.contains("2.42.52") && s.detail.contains("restore a backup"),
            "{}",
            s.detail
        );
        // A --from on an older line than the schema, but a newer target: a warning.
        let check = check_upgrade(&release("2.41.2"), &v("2.43"), &healthy());
        assert_eq!(
            result(&check, "database schema").outcome,
            CheckOutcome::Warning
        );
        let check = check_upgrade(&release("2.42.1"), &v("2.43"), &healthy());
        assert_eq!(
            result(&check, "database schema").outcome,
            CheckOutcome::Passed
        );
    }
}
