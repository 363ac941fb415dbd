//! DHIS2 versions: releases (`2.41`, `2.42.1`, image tags like `2.42.1.1`) and Flyway schema
//! versions (`2.42.52`: migration 52 of the 2.42 line). They compare part by part as numbers,
//! and `2.42.0` equals `2.42`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A DHIS2 release line such as `2.42`, held as its second number (42).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Major(pub u32);

impl fmt::Display for Major {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "2.{}", self.0)
    }
}

impl Serialize for Major {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A DHIS2 version: `2.<major>[.<part>…]`, or `<major>[.<part>…]` as DHIS2's newer documents
/// write it (`v42`, `42.1.0` = `2.42.1`). Displays as it was written.
#[derive(Debug, Clone)]
pub struct Dhis2Version {
    major: Major,
    /// The parts after the major with trailing zeros removed, so `2.42.0` == `2.42`.
    rest: Vec<u32>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{text}' is not a DHIS2 version: {reason} (write it like 2.42 or 2.42.1, as on the dhis2/core image tag)"
)]
pub struct BadVersion {
    pub text: String,
    pub reason: &'static str,
}

impl Dhis2Version {
    pub fn parse(text: &str) -> Result<Self, BadVersion> {
        let bad = |reason| BadVersion {
            text: text.to_string(),
            reason,
        };
        let trimmed = text.trim();
        let digits = trimmed.strip_prefix('v').unwrap_or(trimmed);
        if digits.is_empty() {
            return Err(bad("it is empty"));
        }
        let parts = digits
            .split('.')
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    Err(bad("every part must be a number"))
                } else {
                    p.parse::<u32>().map_err(|_| bad("a part is too large"))
                }
            })
            .collect::<Result<Vec<u32>, _>>()?;
        // `2.42.1`, or the newer notation without the `2.` (`v42`, `42.1.0`).
        let (major, rest) = match parts.as_slice() {
            [2, major, rest @ ..] => (*major, rest),
            [2] => return Err(bad("it names no release line")),
            [major, rest @ ..] if *major >= 30 && *major < 100 => (*major, rest),
            _ => {
                return Err(bad(
                    "DHIS2 versions start with 2. (or are the newer 42.1 notation)",
                ));
            }
        };
        let mut rest = rest.to_vec();
        while rest.last() == Some(&0) {
            rest.pop();
        }
        Ok(Self {
            major: Major(major),
            rest,
            text: digits.to_string(),
        })
    }

    /// The release line: `2.42.1` → `2.42`.
    pub fn major(&self) -> Major {
        self.major
    }

    /// Just the release line (`2.42`), as a version.
    pub fn is_major_only(&self) -> bool {
        self.rest.is_empty()
    }
}

impl From<Major> for Dhis2Version {
    fn from(major: Major) -> Self {
        Self {
            major,
            rest: Vec::new(),
            text: major.to_string(),
        }
    }
}

impl FromStr for Dhis2Version {
    type Err = BadVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl PartialEq for Dhis2Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Dhis2Version {}

impl PartialOrd for Dhis2Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dhis2Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, &self.rest).cmp(&(other.major, &other.rest))
    }
}

impl fmt::Display for Dhis2Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Dhis2Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Dhis2Version {
        Dhis2Version::parse(s).expect(s)
    }

    #[test]
    fn releases_schema_versions_and_image_tags_parse() {
        assert_eq!(v("2.41").major(), Major(41));
        assert_eq!(v("2.42.1.1").major(), Major(42));
        assert_eq!(v("2.42.52").major(), Major(42));
        assert_eq!(v("v2.43.0").to_string(), "2.43.0");
        assert_eq!(v("42.1.0"), v("2.42.1"));
        assert_eq!(v("v42").major(), Major(42));
        assert_eq!(Major(43).to_string(), "2.43");
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(v("2.42.38") > v("2.42.9"));
        assert!(v("2.9") < v("2.10"));
        assert!(v("2.42.1.1") > v("2.42.1"));
        assert!(v("2.43") > v("2.42.99"));
        assert_eq!(v("2.42.0"), v("2.42"));
        assert!(v("2.42").is_major_only());
        assert!(!v("2.42.1").is_major_only());
    }

    #[test]
    fn bad_versions_say_how_to_write_one() {
        for bad in [
            "",
            "latest",
            "29.1",
            "v",
            "2",
            "2.x",
            "2..1",
            "2.42-SNAPSHOT",
            "3.0",
        ] {
            let e = Dhis2Version::parse(bad).unwrap_err();
            assert!(e.to_string().contains("like 2.42"), "{bad}: {e}");
        }
        assert!(
            Dhis2Version::parse("2.42-rc1")
                .unwrap_err()
                .to_string()
                .starts_with("'2.42-rc1' is not a DHIS2 version")
        );
    }
}
