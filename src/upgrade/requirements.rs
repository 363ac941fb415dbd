//! What each DHIS2 release line needs from its database and runtime: the one table the upgrade
//! check reads.
//!
//! Sources: DHIS2's installation guide, "Software requirements" (current edition: PostgreSQL 13
//! or later, PostGIS 2.2 or later with 3 recommended, the JDK/Tomcat table up to 2.42; editions
//! before it: PostgreSQL 9.6 or later); 2.43's Java 17/Tomcat 10.1 from its `dhis2/core` image
//! (built from `tomcat:10.1-jre17`). The extensions are the ones DHIS2 creates at start-up and
//! aborts without.

use super::version::Major;

/// The PostgreSQL extensions DHIS2 creates at start-up.
pub const REQUIRED_EXTENSIONS: [&str; 3] = ["postgis", "pg_trgm", "btree_gin"];

/// The oldest line the upgrade guide lets you jump from; older ones must reach it first.
pub const OLDEST_DIRECT_UPGRADE: Major = Major(30);

/// The newest line this table knows.
pub const LATEST: Major = Major(43);

/// The lowest PostGIS DHIS2's installation guide accepts, (major, minor).
pub const MIN_POSTGIS: (u32, u32) = (2, 2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirements {
    pub major: Major,
    /// Lowest PostgreSQL as `server_version_num` (13 → 130000, 9.6 → 90600).
    pub min_postgres_num: u32,
    pub min_postgres: &'static str,
    /// The PostGIS major the guide recommends (older ones work, with a warning).
    pub recommended_postgis_major: Option<u32>,
    pub java: &'static str,
    pub tomcat: &'static str,
    /// Still gets fixes (DHIS2 supports the latest three lines).
    pub supported: bool,
}

const fn line(
    major: u32,
    (min_postgres_num, min_postgres): (u32, &'static str),
    recommended_postgis_major: Option<u32>,
    java: &'static str,
    tomcat: &'static str,
    supported: bool,
) -> Requirements {
    Requirements {
        major: Major(major),
        min_postgres_num,
        min_postgres,
        recommended_postgis_major,
        java,
        tomcat,
        supported,
    }
}

const PG_9_6: (u32, &str) = (90600, "9.6");
const PG_13: (u32, &str) = (130000, "13");

/// One row per release line, oldest first.
const TABLE: [Requirements; 14] = [
    line(30, PG_9_6, None, "8", "8.5.50 or 9", false),
    line(31, PG_9_6, None, "8", "8.5.50 or 9", false),
    line(32, PG_9_6, None, "8", "8.5.50 or 9", false),
    line(33, PG_9_6, None, "8", "8.5.50 or 9", false),
    line(34, PG_9_6, None, "8", "8.5.50 or 9", false),
    line(35, PG_9_6, None, "8 or later (11 recommended)", "9", false),
    line(36, PG_9_6, None, "8 or later (11 recommended)", "9", false),
    line(37, PG_9_6, None, "8 or later (11 recommended)", "9", false),
    line(38, PG_9_6, None, "11", "9", false),
    line(39, PG_9_6, None, "11", "9", false),
    line(40, PG_9_6, None, "11 or later (17 recommended)", "9", false),
    line(41, PG_13, Some(3), "17", "9", true),
    line(42, PG_13, Some(3), "17", "10.1", true),
    line(43, PG_13, Some(3), "17", "10.1", true),
];

/// The requirements of a release line; `None` for one this table does not know.
pub fn requirements_of(major: Major) -> Option<&'static Requirements> {
    TABLE.iter().find(|r| r.major == major)
}

/// The supported lines, oldest first (for messages: "choose 2.41, 2.42 or 2.43").
pub fn supported_lines() -> Vec<Major> {
    TABLE
        .iter()
        .filter(|r| r.supported)
        .map(|r| r.major)
        .collect()
}

/// The known lines strictly between two lines (the ones an upgrade skips).
pub fn lines_between(from: Major, to: Major) -> Vec<Major> {
    TABLE
        .iter()
        .map(|r| r.major)
        .filter(|m| *m > from && *m < to)
        .collect()
}

/// `server_version_num` as people write it: 150018 → `15.18`, 90624 → `9.6.24`.
pub fn postgres_version_label(server_version_num: u32) -> String {
    if server_version_num >= 100000 {
        format!(
            "{}.{}",
            server_version_num / 10000,
            server_version_num % 10000
        )
    } else {
        format!(
            "{}.{}.{}",
            server_version_num / 10000,
            (server_version_num / 100) % 100,
            server_version_num % 100
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_covers_2_30_to_the_latest_in_order() {
        let majors: Vec<u32> = TABLE.iter().map(|r| r.major.0).collect();
        assert_eq!(majors, (30..=LATEST.0).collect::<Vec<_>>());
        assert!(requirements_of(OLDEST_DIRECT_UPGRADE).is_some());
        assert!(requirements_of(Major(29)).is_none());
        assert!(requirements_of(Major(44)).is_none());
    }

    #[test]
    fn current_lines_need_postgres_13_java_17_and_recommend_postgis_3() {
        for m in [41, 42, 43] {
            let r = requirements_of(Major(m)).unwrap();
            assert_eq!(r.min_postgres_num, 130000);
            assert_eq!(r.recommended_postgis_major, Some(3));
            assert_eq!(r.java, "17");
            assert!(r.supported);
        }
        assert_eq!(requirements_of(Major(41)).unwrap().tomcat, "9");
        assert_eq!(requirements_of(Major(42)).unwrap().tomcat, "10.1");
        assert_eq!(requirements_of(Major(43)).unwrap().tomcat, "10.1");
        assert!(requirements_of(Major(40)).unwrap().java.starts_with("11"));
        assert_eq!(supported_lines(), vec![Major(41), Major(42), Major(43)]);
    }

    #[test]
    fn postgres_versions_read_like_people_write_them() {
        assert_eq!(postgres_version_label(150018), "15.18");
        assert_eq!(postgres_version_label(130000), "13.0");
        assert_eq!(postgres_version_label(90624), "9.6.24");
    }

    #[test]
    fn skipped_lines() {
        assert_eq!(
            lines_between(Major(40), Major(43)),
            vec![Major(41), Major(42)]
        );
        assert!(lines_between(Major(42), Major(43)).is_empty());
    }
}
