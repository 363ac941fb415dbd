//! What a restore does, in which order (pure). The target database is never written to: the dump
//! is restored into a side database on the same server, checked, and only then swapped in; the
//! old target is renamed aside, never dropped unless asked. The I/O lives in `restore.rs`.

use sha2::{Digest, Sha256};

use super::error::BackupError;

/// PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// What the restore learned about the server, the roles and the targets before doing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFacts {
    pub target: String,
    /// The target's owner when it exists.
    pub target_owner: Option<String>,
    /// User relations in the target (tables, views, sequences, …), with a few names.
    pub target_relations: i64,
    pub target_examples: Vec<String>,
    pub role: RoleFacts,
    /// The role that will own everything restored (`--owner`, else the target's owner, else the
    /// connecting role) and whether it exists.
    pub owner: String,
    pub owner_exists: bool,
    /// Whether the connecting role may act as the owner (superuser, the owner, or a member).
    pub role_acts_as_owner: bool,
    /// Whether the connecting role may rename the target (superuser, or member of its owner).
    pub role_acts_as_target_owner: bool,
    pub extensions: Vec<ExtensionFacts>,
    /// The file store directory and dhis.conf path as given, with what is there now.
    pub files_dir: Option<(String, PathState)>,
    pub dhis_conf: Option<(String, PathState)>,
    /// Databases already on the server whose names a side or replaced database could take.
    pub taken_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFacts {
    pub name: String,
    pub superuser: bool,
    pub createdb: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionFacts {
    pub name: String,
    /// Installed on the server (listed in `pg_available_extensions`).
    pub available: bool,
    /// Marked trusted: a non-superuser with CREATE on the database may create it.
    pub trusted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    Missing,
    Empty,
    NotEmpty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    pub force: bool,
    pub drop_replaced: bool,
    /// The backup has a file store / dhis.conf and the user asked for it.
    pub restore_files: bool,
    pub restore_conf: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreStep {
    /// Read dhis.conf from the backup and check its checksum (nothing written yet).
    ReadDhisConf,
    /// Extract the file store into a staging directory inside the target directory.
    StageFileStore,
    /// `CREATE DATABASE side OWNER owner TEMPLATE template0` (settings copied from the target).
    CreateSideDatabase {
        name: String,
        owner: String,
    },
    /// Stream the dump once into pg_restore, checking its SHA-256 on the way.
    RestoreDump {
        database: String,
    },
    /// Give every restored object (but extensions) to the owner.
    HandOverOwnership {
        database: String,
        to: String,
    },
    /// Compare every table's row count with the manifest.
    CheckRowCounts {
        database: String,
    },
    /// Close the sessions on the target (DHIS2's among them), saying so.
    TerminateConnections {
        database: String,
    },
    /// In one transaction: target → replaced (when it exists), side → target.
    SwapDatabases {
        target: String,
        side: String,
        replaced: Option<String>,
    },
    DropReplaced {
        name: String,
    },
    /// Move the directory's current entries aside and the staged ones in.
    SwapFileStoreContents,
    WriteDhisConf,
}

impl RestoreStep {
    /// Steps after this one change what the user sees; a failure before it changes nothing.
    pub fn is_commit(&self) -> bool {
        matches!(self, RestoreStep::TerminateConnections { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    pub side: String,
    pub replaced: Option<String>,
    pub owner: String,
    pub steps: Vec<RestoreStep>,
}

impl RestorePlan {
    /// Refuses what must not happen (overwriting without consent, a role that cannot do the job)
    /// before anything is read or written; otherwise the ordered steps.
    pub fn for_request(
        facts: &RestoreFacts,
        options: &RestoreOptions,
        backup_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self, BackupError> {
        check_consent(facts, options)?;
        check_roles(facts)?;
        check_extensions(facts)?;
        let side = free_name(&facts.target, "restoring", backup_id, &facts.taken_names);
        let replaced = facts.target_owner.as_ref().map(|_| {
            let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
            free_name(&facts.target, "replaced", &stamp, &facts.taken_names)
        });
        let mut steps = Vec::new();
        if options.restore_conf {
            steps.push(RestoreStep::ReadDhisConf);
        }
        if options.restore_files {
            steps.push(RestoreStep::StageFileStore);
        }
        steps.push(RestoreStep::CreateSideDatabase {
            name: side.clone(),
            owner: facts.owner.clone(),
        });
        steps.push(RestoreStep::RestoreDump {
            database: side.clone(),
        });
        if facts.owner != facts.role.name {
            steps.push(RestoreStep::HandOverOwnership {
                database: side.clone(),
                to: facts.owner.clone(),
            });
        }
        steps.push(RestoreStep::CheckRowCounts {
            database: side.clone(),
        });
        if facts.target_owner.is_some() {
            steps.push(RestoreStep::TerminateConnections {
                database: facts.target.clone(),
            });
        }
        steps.push(RestoreStep::SwapDatabases {
            target: facts.target.clone(),
            side: side.clone(),
            replaced: replaced.clone(),
        });
        if let (true, Some(name)) = (options.drop_replaced, &replaced) {
            steps.push(RestoreStep::DropReplaced { name: name.clone() });
        }
        if options.restore_files {
            steps.push(RestoreStep::SwapFileStoreContents);
        }
        if options.restore_conf {
            steps.push(RestoreStep::WriteDhisConf);
        }
        Ok(Self {
            side,
            replaced,
            owner: facts.owner.clone(),
            steps,
        })
    }
}

fn check_consent(facts: &RestoreFacts, options: &RestoreOptions) -> Result<(), BackupError> {
    if options.force {
        return Ok(());
    }
    if facts.target_relations > 0 {
        return Err(BackupError::TargetNotEmpty {
            target: facts.target.clone(),
            count: facts.target_relations,
            examples: facts.target_examples.join(", "),
        });
    }
    if let (true, Some((dir, PathState::NotEmpty))) = (options.restore_files, &facts.files_dir) {
        return Err(BackupError::FilesDirNotEmpty { dir: dir.clone() });
    }
    if let (true, Some((path, state))) = (options.restore_conf, &facts.dhis_conf)
        && *state != PathState::Missing
    {
        return Err(BackupError::Input(format!(
            "--dhis-conf: {path} exists; refusing to overwrite it without --force (the current file is then kept as {path}.replaced-<time>)"
        )));
    }
    Ok(())
}

fn check_roles(facts: &RestoreFacts) -> Result<(), BackupError> {
    let role = &facts.role;
    if !facts.owner_exists {
        return Err(BackupError::Input(format!(
            "--owner: role {} does not exist on the server; name an existing role (the one DHIS2 connects as, e.g. dhis) or create it first (CREATE ROLE {} LOGIN)",
            facts.owner, facts.owner
        )));
    }
    if !facts.role_acts_as_owner {
        return Err(BackupError::Input(format!(
            "--owner: role {} cannot create objects owned by {}: connect as {}, as a superuser, or GRANT {} TO {}",
            role.name, facts.owner, facts.owner, facts.owner, role.name
        )));
    }
    if !role.superuser && !role.createdb {
        return Err(BackupError::Input(format!(
            "role {} may not create databases (no CREATEDB), and a restore builds the new database beside {} before swapping it in; run the restore as a superuser or DBA role with --owner {} (everything restored still belongs to {}), or ALTER ROLE {} CREATEDB",
            role.name, facts.target, facts.owner, facts.owner, role.name
        )));
    }
    if facts.target_owner.is_some() && !facts.role_acts_as_target_owner {
        return Err(BackupError::Input(format!(
            "role {} does not own database {} (owner: {}), so it cannot swap the restored database in; connect as {} or as a superuser",
            role.name,
            facts.target,
            facts.target_owner.as_deref().unwrap_or("?"),
            facts.target_owner.as_deref().unwrap_or("?"),
        )));
    }
    Ok(())
}

fn check_extensions(facts: &RestoreFacts) -> Result<(), BackupError> {
    for ext in &facts.extensions {
        if !ext.available {
            return Err(BackupError::Input(format!(
                "the backup needs extension {}, which is not installed on the server; install it there first (for PostGIS on Debian: postgresql-<version>-postgis-3)",
                ext.name
            )));
        }
        if !facts.role.superuser && !ext.trusted {
            return Err(BackupError::Input(format!(
                "the backup needs extension {}, which role {} may not create (only a superuser may) in the new database the restore builds; run the restore as a superuser or DBA role with --owner {} (everything restored still belongs to {})",
                ext.name, facts.role.name, facts.owner, facts.owner
            )));
        }
    }
    Ok(())
}

/// `<target>__<kind>_<stamp>` in lowercase, cut to PostgreSQL's identifier limit
/// deterministically: the target part is shortened and a hash of the full name keeps it unique.
/// The side databases an earlier restore into `target` left behind when it was killed before
/// it could drop them (`<target>__restoring_*`; a target name too long to carry the suffix is
/// hashed and not recognised).
pub fn leftover_side_databases(target: &str, names: &[String]) -> Vec<String> {
    let prefix = format!("{target}__restoring_");
    names
        .iter()
        .filter(|n| n.starts_with(&prefix))
        .cloned()
        .collect()
}

/// When a restore into `target` replaced the database `name`, read from its name
/// (`<target>__replaced_<UTC time>[_N]`); `None` for any other database.
fn replaced_at(target: &str, name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let stamp = name
        .strip_prefix(target)?
        .strip_prefix("__replaced_")?
        .get(..16)?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dt%H%M%Sz")
        .ok()
        .map(|replaced| replaced.and_utc())
}

/// The databases restores into `target` replaced that are older than `keep` at `now`: the room
/// they hold can be given back.
pub fn expired_replaced_databases(
    target: &str,
    names: &[String],
    now: chrono::DateTime<chrono::Utc>,
    keep: chrono::Duration,
) -> Vec<String> {
    names
        .iter()
        .filter(|name| replaced_at(target, name).is_some_and(|replaced| now - replaced > keep))
        .cloned()
        .collect()
}

/// The databases a restore into `target` replaced at or after `since` (their names carry the
/// moment of the swap, to the second): what a restore that started at `since` and ended without
/// a report did.
pub fn replaced_since(
    target: &str,
    names: &[String],
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let since = chrono::Timelike::with_nanosecond(&since, 0).unwrap_or(since);
    names
        .iter()
        .filter(|name| replaced_at(target, name).is_some_and(|replaced| replaced >= since))
        .cloned()
        .collect()
}

pub fn side_database_name(target: &str, kind: &str, stamp: &str) -> String {
    let stamp: String = stamp
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let suffix = format!("__{kind}_{stamp}");
    let full = format!("{target}{suffix}");
    if full.len() <= MAX_IDENTIFIER_BYTES {
        return full;
    }
    let hash = &hex::encode(Sha256::digest(full.as_bytes()))[..8];
    let room = MAX_IDENTIFIER_BYTES.saturating_sub(suffix.len() + hash.len() + 1);
    if room > 0 {
        format!("{}_{hash}{suffix}", truncate_at_char(target, room))
    } else {
        format!(
            "{}_{hash}",
            truncate_at_char(&full, MAX_IDENTIFIER_BYTES - hash.len() - 1)
        )
    }
}

/// `side_database_name`, with `_2`, `_3`, … appended to the stamp while the name is taken (an
/// earlier restore in the same second, a leftover of a killed one).
pub fn free_name(target: &str, kind: &str, stamp: &str, taken: &[String]) -> String {
    let mut name = side_database_name(target, kind, stamp);
    let mut n = 2;
    while taken.contains(&name) {
        name = side_database_name(target, kind, &format!("{stamp}_{n}"));
        n += 1;
    }
    name
}

fn truncate_at_char(s: &str, max_bytes: usize) -> &str {
    let mut end = max_bytes.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The role that owns what is restored: `--owner`, else the target's owner, else the connecting role.
pub fn resolve_owner(flag: Option<&str>, target_owner: Option<&str>, connecting: &str) -> String {
    flag.or(target_owner).unwrap_or(connecting).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn facts() -> RestoreFacts {
        RestoreFacts {
            target: "dhis2".into(),
            target_owner: Some("dhis".into()),
            target_relations: 0,
            target_examples: vec![],
            role: RoleFacts {
                name: "postgres".into(),
                superuser: true,
                createdb: true,
            },
            owner: "dhis".into(),
            owner_exists: true,
            role_acts_as_owner: true,
            role_acts_as_target_owner: true,
            extensions: vec![ExtensionFacts {
                name: "postgis".into(),
                available: true,
                trusted: false,
            }],
            files_dir: None,
            dhis_conf: None,
            taken_names: vec![],
        }
    }

    fn options() -> RestoreOptions {
        RestoreOptions {
            force: false,
            drop_replaced: false,
            restore_files: false,
            restore_conf: false,
        }
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 10, 15, 0)
            .unwrap()
    }

    #[test]
    fn the_target_is_only_touched_after_everything_was_checked() {
        let plan =
            RestorePlan::for_request(&facts(), &options(), "20261125T101500Z-3f9a", now()).unwrap();
        assert_eq!(plan.side, "dhis2__restoring_20261125t101500z_3f9a");
        assert_eq!(
            plan.replaced.as_deref(),
            Some("dhis2__replaced_20261125t101500z")
        );
        let kinds: Vec<String> = plan
            .steps
            .iter()
            .map(|s| {
                format!("{s:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "CreateSideDatabase",
                "RestoreDump",
                "HandOverOwnership",
                "CheckRowCounts",
                "TerminateConnections",
                "SwapDatabases",
            ]
        );
        let commit = plan.steps.iter().position(RestoreStep::is_commit).unwrap();
        assert!(
            plan.steps[..commit]
                .iter()
                .all(|s| !matches!(s, RestoreStep::SwapDatabases { .. }))
        );
    }

    #[test]
    fn files_are_staged_before_and_swapped_after_the_database() {
        let mut o = options();
        o.restore_files = true;
        o.restore_conf = true;
        o.drop_replaced = true;
        let mut f = facts();
        f.owner = "postgres".into();
        let plan = RestorePlan::for_request(&f, &o, "x", now()).unwrap();
        assert_eq!(plan.steps[0], RestoreStep::ReadDhisConf);
        assert_eq!(plan.steps[1], RestoreStep::StageFileStore);
        assert!(
            !plan
                .steps
                .iter()
                .any(|s| matches!(s, RestoreStep::HandOverOwnership { .. })),
            "the connecting role is the owner: nothing to hand over"
        );
        let tail: Vec<&RestoreStep> = plan.steps.iter().rev().take(3).collect();
        assert_eq!(tail[0], &RestoreStep::WriteDhisConf);
        assert_eq!(tail[1], &RestoreStep::SwapFileStoreContents);
        assert!(matches!(tail[2], RestoreStep::DropReplaced { .. }));
    }

    #[test]
    fn a_missing_target_is_created_by_renaming_the_side_database() {
        let mut f = facts();
        f.target_owner = None;
        let plan = RestorePlan::for_request(&f, &options(), "x", now()).unwrap();
        assert_eq!(plan.replaced, None);
        assert!(
            !plan
                .steps
                .iter()
                .any(|s| matches!(s, RestoreStep::TerminateConnections { .. }))
        );
        assert!(plan.steps.contains(&RestoreStep::SwapDatabases {
            target: "dhis2".into(),
            side: plan.side.clone(),
            replaced: None
        }));
    }

    #[test]
    fn refusals_name_the_way_out() {
        let mut f = facts();
        f.target_relations = 3;
        let e = RestorePlan::for_request(&f, &options(), "x", now()).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        let mut o = options();
        o.force = true;
        assert!(RestorePlan::for_request(&f, &o, "x", now()).is_ok());

        let mut f = facts();
        f.owner_exists = false;
        let e = RestorePlan::for_request(&f, &options(), "x", now()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--owner: role dhis does not exist")
        );

        let mut f = facts();
        f.role = RoleFacts {
            name: "dhis".into(),
            superuser: false,
            createdb: false,
        };
        let e = RestorePlan::for_request(&f, &options(), "x", now()).unwrap_err();
        assert!(e.to_string().contains("CREATEDB"), "{e}");
        assert!(e.to_string().contains("--owner dhis"), "{e}");

        f.role.createdb = true;
        let e = RestorePlan::for_request(&f, &options(), "x", now()).unwrap_err();
        assert!(
            e.to_string()
                .contains("needs extension postgis, which role dhis may not create"),
            "{e}"
        );
        f.extensions[0].trusted = true;
        assert!(RestorePlan::for_request(&f, &options(), "x", now()).is_ok());
        f.extensions[0].available = false;
        let e = RestorePlan::for_request(&f, &options(), "x", now()).unwrap_err();
        assert!(e.to_string().contains("not installed on the server"), "{e}");
    }

    #[test]
    fn side_names_fit_postgres_identifiers() {
        assert_eq!(
            side_database_name("dhis2", "restoring", "20261125T101500Z-3f9a"),
            "dhis2__restoring_20261125t101500z_3f9a"
        );
        let long = "ឃ".repeat(20); // 60 bytes
        let a = side_database_name(&long, "restoring", "20261125T101500Z-3f9a");
        let b = side_database_name(&long, "restoring", "20261125T101500Z-3f9b");
        assert!(a.len() <= MAX_IDENTIFIER_BYTES, "{a}");
        assert!(a.ends_with("__restoring_20261125t101500z_3f9a"), "{a}");
        assert_ne!(a, b);
        assert_eq!(
            a,
            side_database_name(&long, "restoring", "20261125T101500Z-3f9a")
        );
        let huge_stamp = "x".repeat(80);
        assert!(side_database_name("db", "restoring", &huge_stamp).len() <= MAX_IDENTIFIER_BYTES);
    }

    #[test]
    fn replaced_databases_expire_after_the_days_kept_and_only_the_targets() {
        let names: Vec<String> = [
            "dhis2__replaced_20261125t101500z",
            "dhis2__replaced_20261201t101500z_2",
            "dhis2__replaced_20261206t101500z",
            "dhis2_old__replaced_20261101t101500z",
            "dhis2__restoring_20261101t101500z_3f9a",
            "dhis2__replaced_garbage",
            "dhis2",
        ]
        .map(String::from)
        .to_vec();
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T10:15:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            expired_replaced_databases("dhis2", &names, now, chrono::Duration::days(5)),
            vec![
                "dhis2__replaced_20261125t101500z",
                "dhis2__replaced_20261201t101500z_2"
            ]
        );
        assert_eq!(
            expired_replaced_databases("dhis2", &names, now, chrono::Duration::days(7)),
            vec!["dhis2__replaced_20261125t101500z"]
        );
    }

    #[test]
    fn a_restore_that_started_at_a_moment_replaced_the_databases_stamped_since() {
        let names: Vec<String> = [
            "dhis2__replaced_20261207t101459z",
            "dhis2__replaced_20261207t101500z",
            "dhis2__replaced_20261207t102000z_2",
            "dhis2_old__replaced_20261207t103000z",
            "dhis2__restoring_20261207t103000z_3f9a",
            "dhis2__replaced_garbage",
        ]
        .map(String::from)
        .to_vec();
        let started = chrono::DateTime::parse_from_rfc3339("2026-12-07T10:15:00.730Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            replaced_since("dhis2", &names, started),
            vec![
                "dhis2__replaced_20261207t101500z",
                "dhis2__replaced_20261207t102000z_2"
            ]
        );
    }

    #[test]
    fn leftovers_are_the_targets_own_side_databases_only() {
        let names: Vec<String> = [
            "dhis2",
            "dhis2__restoring_20261125t101500z_3f9a",
            "dhis2__replaced_20261125t101500z",
            "dhis2_old__restoring_20261125t101500z_3f9a",
            "dhis2x__restoring_1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            leftover_side_databases("dhis2", &names),
            vec!["dhis2__restoring_20261125t101500z_3f9a".to_string()]
        );
    }

    #[test]
    fn taken_names_are_never_reused() {
        let mut f = facts();
        f.taken_names = vec![
            "dhis2__replaced_20261125t101500z".into(),
            "dhis2__restoring_x".into(),
        ];
        let plan = RestorePlan::for_request(&f, &options(), "x", now()).unwrap();
        assert_eq!(plan.side, "dhis2__restoring_x_2");
        assert_eq!(
            plan.replaced.as_deref(),
            Some("dhis2__replaced_20261125t101500z_2")
        );
    }

    #[test]
    fn the_owner_defaults_to_the_targets_owner() {
        assert_eq!(resolve_owner(Some("dhis"), Some("x"), "postgres"), "dhis");
        assert_eq!(resolve_owner(None, Some("x"), "postgres"), "x");
        assert_eq!(resolve_owner(None, None, "postgres"), "postgres");
    }
}
