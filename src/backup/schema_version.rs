//! DHIS2's schema version: the highest successful version in `flyway_schema_history`, such as
//! `2.41.38`. Versions compare as numbers (`2.41.38` > `2.41.9`), never as strings.

use std::cmp::Ordering;

/// Compares dotted version strings part by part, numerically where both parts are numbers.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut left = a.split(['.', '_']);
    let mut right = b.split(['.', '_']);
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

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
        .max_by(|a, b| compare_versions(a, b))
}

/// The DHIS2 release line a schema version belongs to: `2.41.38` → `2.41`.
pub fn release_line(schema_version: &str) -> String {
    schema_version
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(compare_versions("2.41.38", "2.41.9"), Ordering::Greater);
        assert_eq!(compare_versions("2.9", "2.10"), Ordering::Less);
        assert_eq!(compare_versions("2.40.1.1", "2.40.1"), Ordering::Greater);
        assert_eq!(compare_versions("2.41", "2.41"), Ordering::Equal);
    }

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
