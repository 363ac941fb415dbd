//! The one duration grammar of every flag and field (`--timeout`, `--min-soak`,
//! `--max-backup-age`, `spec.minSoak`, `spec.maxBackupAge`): humantime's notation (`90s`, `30m`,
//! `2h`, `1h30m`, `3d`, `1w`), and a bare number of seconds (`90`).

use std::time::Duration;

/// `text` as a duration, or one line that names `field` (a flag or a spec field) and shows how
/// to write one.
pub fn parse_duration(text: &str, field: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if let Ok(seconds) = trimmed.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!(
            "{field}: '{text}' is not a duration ({e}): write it like 90s, 30m, 2h, 1h30m or 3d (a bare number is seconds)"
        )
    })
}

/// A duration as people read it: `3days 2h`, `1h 30m`.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_reads_the_same_notation() {
        for (text, seconds) in [
            ("90", 90),
            ("90s", 90),
            ("30m", 1800),
            ("1h30m", 5400),
            ("2h", 7200),
            ("1d", 86_400),
            ("3d", 259_200),
            (" 72h ", 259_200),
        ] {
            assert_eq!(
                parse_duration(text, "--timeout").unwrap().as_secs(),
                seconds,
                "{text}"
            );
        }
    }

    #[test]
    fn a_bad_duration_names_the_field_and_shows_the_notation() {
        for text in ["soon", "5x", "12m3", "", "-5m"] {
            let e = parse_duration(text, "spec.minSoak").unwrap_err();
            assert!(e.starts_with("spec.minSoak: "), "{e}");
            assert!(e.contains("90s, 30m, 2h"), "{e}");
        }
    }
}
