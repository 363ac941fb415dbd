//! `dhis2ctl upgrade check` against DHIS2's real 2.42 database: the real state, a refused
//! downgrade, usage errors before any connection, and the data DHIS2's 2.43 migration fails on
//! (duplicate default category option combos), added the way DHIS2's migration notes describe.

mod support;

use support::*;

async fn drop_database(env: &Env, name: &str) {
    env.client("postgres")
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap_or_else(|e| panic!("drop {name}: {e}"));
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_check_on_the_real_2_42_database() {
    let env = env();
    let (db, url) = env.real_dhis2_database("upg_check").await;

    // The real database as it is: 2.42 → 2.43 passes, every check read from the database.
    let out = dhis2ctl(&[
        "upgrade",
        "check",
        "--database-url",
        &url,
        "--to",
        "2.43",
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "upgrade check 2.42 → 2.43");
    let report = json(&out);
    assert_eq!(report["from"], "2.42.52", "{report:#}");
    assert_eq!(report["fromSource"], "schema");
    assert_eq!(report["verdict"], "Ready", "{report:#}");
    for name in [
        "postgresql",
        "extension postgis",
        "extension pg_trgm",
        "extension btree_gin",
    ] {
        assert_eq!(check(&report, name)["outcome"], "Passed", "{report:#}");
    }
    assert!(
        check(&report, "extension postgis")["detail"]
            .as_str()
            .unwrap()
            .starts_with("installed (3."),
        "{report:#}"
    );
    assert_eq!(
        check(&report, "default category option combo")["outcome"],
        "Passed"
    );

    // The table: one row per check.
    let out = dhis2ctl(&["upgrade", "check", "--database-url", &url, "--to", "2.43.1"]).await;
    assert_success(&out, "upgrade check as a table");
    let text = stdout(&out);
    assert!(
        text.starts_with("DHIS2 2.42 (schema 2.42.52) → 2.43.1"),
        "{text}"
    );
    assert!(
        text.contains("CHECK") && text.contains("RESULT") && text.contains("DETAIL"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("direction") && l.contains("passed")),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("ready: nothing blocks the upgrade"),
        "{text}"
    );

    // A downgrade is refused, with the way back.
    let out = dhis2ctl(&["upgrade", "check", "--database-url", &url, "--to", "2.41.4"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("direction") && l.contains("blocked")),
        "{text}"
    );
    assert!(text.contains("cannot be downgraded"), "{text}");
    assert!(
        text.contains("restore the backup taken before the upgrade"),
        "{text}"
    );
    // …and so is a patch downgrade when the running release is given.
    let out = dhis2ctl(&[
        "upgrade",
        "check",
        "--database-url",
        &url,
        "--from",
        "2.42.3",
        "--to",
        "2.42.1",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(check(&json(&out), "direction")["outcome"], "Blocked");

    // --from cannot talk a database migrated by 2.42 into going back to 2.41.
    let out = dhis2ctl(&[
        "upgrade",
        "check",
        "--database-url",
        &url,
        "--from",
        "2.40.1",
        "--to",
        "2.41",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(check(&json(&out), "database schema")["outcome"], "Blocked");

    // Duplicate default category option combos, none with DHIS2's uid: 2.43's migration
    // V2_43_45 fails on them.
    env.client(&db)
        .await
        .batch_execute(
            "UPDATE categoryoptioncombo SET uid = 'UpgDefault1' WHERE uid = 'HllvX50cXC0';
             INSERT INTO categoryoptioncombo (categoryoptioncomboid, uid, name, created, lastupdated)
             SELECT max(categoryoptioncomboid) + 1, 'UpgDefault2', 'default', now(), now()
             FROM categoryoptioncombo;",
        )
        .await
        .expect("add a duplicate default category option combo");
    let out = dhis2ctl(&[
        "upgrade",
        "check",
        "--database-url",
        &url,
        "--to",
        "2.43",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report = json(&out);
    assert_eq!(report["verdict"], "Blocked");
    let coc = check(&report, "default category option combo");
    assert_eq!(coc["outcome"], "Blocked", "{report:#}");
    let detail = coc["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("2 category option combos are named 'default'"),
        "{detail}"
    );
    assert!(
        detail.contains("UpgDefault1") && detail.contains("UpgDefault2"),
        "{detail}"
    );
    assert_eq!(coc["rows"].as_array().unwrap().len(), 2);
    let blocked: Vec<_> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "Blocked")
        .collect();
    assert_eq!(blocked.len(), 1, "only that check blocks: {report:#}");

    // A data element of the value type 2.43 dropped: its upgrade fails on it too.
    let uid: String = env
        .client(&db)
        .await
        .query_one(
            "UPDATE dataelement SET valuetype = 'TRACKER_ASSOCIATE'
             WHERE dataelementid = (SELECT min(dataelementid) FROM dataelement) RETURNING uid",
            &[],
        )
        .await
        .expect("give a data element the TRACKER_ASSOCIATE value type")
        .get(0);
    let out = dhis2ctl(&["upgrade", "check", "--database-url", &url, "--to", "2.43"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("tracker associate value type"))
        .unwrap_or_else(|| panic!("no tracker associate row: {text}"));
    assert!(
        row.contains("blocked") && row.contains(&format!("data element {uid}")),
        "{row}"
    );
    assert!(
        text.trim_end()
            .ends_with("blocked: fix the 2 blocked check(s) before upgrading"),
        "{text}"
    );

    // A patch upgrade within 2.42 runs no 2.43 migration: not blocked by them.
    let out = dhis2ctl(&["upgrade", "check", "--database-url", &url, "--to", "2.42.3"]).await;
    assert_success(&out, "a patch upgrade within 2.42");

    // A failed migration left in the history blocks any upgrade.
    env.client(&db)
        .await
        .batch_execute(
            "INSERT INTO flyway_schema_history
               (installed_rank, version, description, type, script, checksum, installed_by, execution_time, success)
             SELECT max(installed_rank) + 1, '2.43.45', 'add enrollment categoryoptioncombo', 'SQL',
                    'V2_43_45__add_enrollment_categoryoptioncombo.sql', 0, 'dhis', 10, false
             FROM flyway_schema_history;",
        )
        .await
        .expect("record a failed migration");
    let out = dhis2ctl(&[
        "upgrade",
        "check",
        "--database-url",
        &url,
        "--to",
        "2.42.3",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report = json(&out);
    let flyway = check(&report, "flyway migrations");
    assert_eq!(flyway["outcome"], "Blocked");
    assert!(
        flyway["detail"]
            .as_str()
            .unwrap()
            .contains("2.43.45 add enrollment"),
        "{report:#}"
    );

    drop_database(&env, &db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2_before_connecting() {
    // Nothing listens on port 1: a connection attempt would fail with exit 1, not 2.
    let nowhere = "postgresql://dhis@127.0.0.1:1/dhis2";
    let out = dhis2ctl(&[
        "upgrade",
        "check",
        "--database-url",
        nowhere,
        "--to",
        "latest",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert_clear_failure(&out, "--to: 'latest' is not a DHIS2 version");
    let out = dhis2ctl(&[
        "upgrade",
        "check",
        "--database-url",
        nowhere,
        "--to",
        "2.43",
        "--from",
        "2.x",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert_clear_failure(&out, "--from: '2.x' is not a DHIS2 version");
    let out = dhis2ctl(&[
        "upgrade",
        "check",
        "--database-url",
        "mysql://x@y/z",
        "--to",
        "2.43",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert_clear_failure(&out, "--database-url");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_without_flyway_history_needs_from() {
    let env = env();
    let (db, url) = env.create_database("upg_empty").await;
    let out = dhis2ctl(&["upgrade", "check", "--database-url", &url, "--to", "2.43"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_clear_failure(&out, "give the running version with --from VERSION");
    // With --from it checks what it can: the extensions are not installed in it, but the server
    // offers them, so DHIS2 could create them.
    let out = dhis2ctl(&[
        "upgrade",
        "check",
        "--database-url",
        &url,
        "--from",
        "2.42.1",
        "--to",
        "2.43",
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "upgrade check with --from");
    let report = json(&out);
    assert_eq!(report["verdict"], "ReadyWithWarnings", "{report:#}");
    assert_eq!(check(&report, "extension btree_gin")["outcome"], "Warning");
    assert_eq!(
        check(&report, "default category option combo")["outcome"],
        "Warning"
    );
    drop_database(&env, &db).await;
}
