//! DHIS2's schema version: the highest successful version in `flyway_schema_history`, such as
//! `2.41.38`. Versions compare as numbers (`2.41.38` > `2.41.9`), never as strings: they are read
//! by [`Dhis2Version`], the one version parser.

use crate::upgrade::version::Dhis2Version;

/// The highest version among Flyway's applied migrations (repeatable migrations have none).
pub fn highest_schema_version<I, S>(versions: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    versions
        .into_iter()
        .map(|v| v.as_ref().trim().to_string())
        .filter(|v| !v.is_empty())
        .max_by_key(|v| Dhis2Version::parse(v).ok())
}

/// The DHIS2 release line a schema version belongs to: `2.41.38` → `2.41` (as written when it is
/// not a DHIS2 version).
pub fn release_line(schema_version: &str) -> String {
    Dhis2Version::parse(schema_version)
        .map(|v| v.major().to_string())
        .unwrap_or_else(|_| schema_version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_is_numeric_not_lexicographic() {
        let v = ["2.30.0", "2.41.9", "2.41.38", "2.39.12", ""];
        assert_eq!(highest_schema_version(v).as_deref(), Some("2.41.38"));
        assert_eq!(highest_schema_version(Vec::<String>::new()), None);
    }

    #[test]
    fn release_line_drops_the_migration_number() {
        assert_eq!(release_line("2.41.38"), "2.41");
        assert_eq!(release_line("2.40"), "2.40");
    }
}
