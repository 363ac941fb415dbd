//! Backup, restore and drill on DHIS2's real 2.42 database (built by DHIS2's own Flyway
//! migrations: UNLOGGED analytics tables with inheritance children, `analytics_rs_*`, legacy `_*`
//! resource tables, a domain, a generated column, PostGIS), through S3 and a local repository:
//! everything comes back identical except the tables DHIS2 regenerates, which come back empty.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::process::{Command, Stdio};

use support::real_dhis2::{TableFingerprint, real_dhis2_sql_path};
use support::*;

/// The tables of the real database whose rows DHIS2 regenerates (read from the dump: every
/// `analytics`/`_` table in it), and no other.
const REGENERATED: [&str; 11] = [
    "public._orgunitstructure",
    "public._periodstructure",
    "public.analytics",
    "public.analytics_2024",
    "public.analytics_2025",
    "public.analytics_event_malcaseinv1",
    "public.analytics_event_malcaseinv1_2024",
    "public.analytics_event_malcaseinv1_2025",
    "public.analytics_rs_categoryoptioncomboname",
    "public.analytics_rs_orgunitstructure",
    "public.analytics_rs_periodstructure",
];

const SCHEMA_VERSION: &str = "2.42.52";

fn regenerated() -> BTreeSet<String> {
    REGENERATED.iter().map(|s| s.to_string()).collect()
}

/// Tables the dump creates whose names say "analytics" or start with `_`, read from the file.
fn analytics_like_tables_in_dump() -> BTreeSet<String> {
    let mut gunzip = Command::new("gunzip")
        .arg("-c")
        .arg(real_dhis2_sql_path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gunzip");
    let reader = std::io::BufReader::new(gunzip.stdout.take().unwrap());
    let mut found = BTreeSet::new();
    for line in reader.lines() {
        let line = line.expect("read the dump");
        let name = line
            .strip_prefix("CREATE TABLE ")
            .or_else(|| line.strip_prefix("CREATE UNLOGGED TABLE "))
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(name) = name
            && let Some(table) = name.strip_prefix("public.")
            && (table.contains("analytics") || table.starts_with('_'))
        {
            found.insert(name.to_string());
        }
    }
    assert!(gunzip.wait().unwrap().success());
    found
}

/// DHIS2 can leave rows in the `analytics` parent's own storage; they are regenerated like the
/// yearly children's. The copy of the real database holds one, so the test sees it skipped.
async fn put_a_row_in_the_analytics_parent(env: &Env, db: &str) {
    env.client(db)
        .await
        .batch_execute("INSERT INTO analytics SELECT * FROM analytics_2024 LIMIT 1")
        .await
        .expect("insert into the analytics parent");
}

fn manifest_skipped(manifest: &serde_json::Value) -> BTreeSet<String> {
    manifest["skippedTableData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The first line where two schema dumps differ, with a little context.
fn first_difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = at.saturating_sub(3);
    format!(
        "line {at}:\nsource:   {:#?}\nrestored: {:#?}",
        &a[from..(at + 3).min(a.len())],
        &b[from..(at + 3).min(b.len())]
    )
}

async fn scalar(env: &Env, db: &str, sql: &str) -> i64 {
    env.client(db)
        .await
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn round_trip(repo: &str) {
    let env = env();
    let (src, src_url) = env.real_dhis2_database("real_src").await;
    put_a_row_in_the_analytics_parent(&env, &src).await;

    let out = backup_run(&src_url, repo, "hmis", &["-o", "json"]).await;
    assert_success(&out, "backup run");
    let manifest = json(&out);
    assert_eq!(manifest["dhis2SchemaVersion"], SCHEMA_VERSION);
    assert_eq!(
        manifest_skipped(&manifest),
        regenerated(),
        "exactly the regenerated tables' data is skipped, the analytics parent included"
    );
    let out = dhis2ctl(&["backup", "list", "--repo", repo, "-o", "json"]).await;
    assert_success(&out, "backup list");
    let list = json(&out);
    assert_eq!(list[0]["dhis2SchemaVersion"], SCHEMA_VERSION, "{list}");
    assert_eq!(list[0]["dhis2Version"], "2.42", "{list}");

    let (dst, dst_url) = env.create_database("real_dst").await;
    let out = dhis2ctl(&[
        "backup",
        "restore",
        "--repo",
        repo,
        "--instance",
        "hmis",
        "latest",
        "--database-url",
        &dst_url,
    ])
    .await;
    assert_success(&out, "backup restore");

    // Every table: identical rows, except the regenerated ones, which are present and empty.
    let before = env.table_fingerprints(&src).await;
    let after = env.table_fingerprints(&dst).await;
    assert!(
        before.len() >= 300,
        "the real schema: {} tables",
        before.len()
    );
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    let regenerated = regenerated();
    let mut differences = vec![];
    for (table, source) in &before {
        let restored = &after[table];
        if regenerated.contains(table) {
            // Only the event table's parent is empty in the dump: its rows are in its children.
            assert!(
                source.rows > 0 || table == "public.analytics_event_malcaseinv1",
                "{table} had rows in the source"
            );
            if restored.rows != 0 {
                differences.push(format!("{table}: {} rows, should be empty", restored.rows));
            }
        } else if restored != source {
            differences.push(format!("{table}: {restored:?}, source {source:?}"));
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");
    assert_eq!(
        scalar(&env, &dst, "SELECT count(*) FROM analytics").await,
        0,
        "the analytics parent and its children are empty"
    );
    let flyway = "public.flyway_schema_history";
    assert!(before[flyway].rows > 300, "{:?}", before[flyway]);
    assert_eq!(after[flyway], before[flyway]);
    assert!(
        scalar(
            &env,
            &dst,
            "SELECT count(*) FROM organisationunit WHERE name LIKE 'មណ្ឌលសុខភាព%' AND geometry IS NOT NULL"
        )
        .await
            > 0,
        "Khmer names and geometries are back"
    );

    // The schema, UNLOGGED tables, inheritance, domain and generated column included.
    let (schema_before, schema_after) = (
        env.normalised_schema(&src).await,
        env.normalised_schema(&dst).await,
    );
    assert!(schema_before.contains("CREATE UNLOGGED TABLE public.analytics_2024"));
    assert!(schema_before.contains("INHERITS (public.analytics)"));
    assert!(schema_before.contains("CREATE DOMAIN public.uid_type"));
    assert!(schema_before.contains("GENERATED ALWAYS AS"));
    assert!(
        schema_before == schema_after,
        "pg_dump --schema-only differs at {}",
        first_difference(&schema_before, &schema_after)
    );

    let sequences = env.sequence_values(&src).await;
    assert_eq!(
        sequences.get("public.hibernate_sequence"),
        Some(&(1_987_654_321, true))
    );
    assert_eq!(env.sequence_values(&dst).await, sequences);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_dhis2_database_round_trips_through_s3() {
    let env = env();
    let (bucket, repo) = env.create_bucket("real-rt").await;
    round_trip(&repo).await;
    env.delete_bucket(&bucket).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_dhis2_database_round_trips_through_a_local_repository() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(&format!("file://{}", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_regenerated_tables_of_the_real_database_lose_their_data() {
    assert_eq!(
        analytics_like_tables_in_dump(),
        regenerated(),
        "the expected set is every analytics/resource table of the dump, and no metadata table"
    );
    let env = env();
    let (src, src_url) = env.real_dhis2_database("real_skip").await;
    put_a_row_in_the_analytics_parent(&env, &src).await;
    let repo = tempfile::tempdir().unwrap();
    let out = backup_run(
        &src_url,
        repo.path().to_str().unwrap(),
        "hmis",
        &["-o", "json"],
    )
    .await;
    assert_success(&out, "backup run");
    let manifest = json(&out);
    let source: BTreeMap<String, TableFingerprint> = env.table_fingerprints(&src).await;
    let mut skipped = BTreeSet::new();
    for table in manifest["tables"].as_array().unwrap() {
        let name = format!(
            "{}.{}",
            table["schema"].as_str().unwrap(),
            table["name"].as_str().unwrap()
        );
        if table["dataIncluded"].as_bool().unwrap() {
            assert_eq!(table["rows"], source[&name].rows, "{name}");
        } else {
            skipped.insert(name);
        }
    }
    assert_eq!(skipped, regenerated());
    assert_eq!(manifest_skipped(&manifest), regenerated());
    assert_eq!(
        manifest["tables"].as_array().unwrap().len(),
        source.len(),
        "every table is in the manifest"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_of_the_real_dhis2_database_passes() {
    let env = env();
    let (src, src_url) = env.real_dhis2_database("real_drill_src").await;
    put_a_row_in_the_analytics_parent(&env, &src).await;
    let (bucket, repo) = env.create_bucket("real-drill").await;
    let out = backup_run(&src_url, &repo, "hmis", &[]).await;
    assert_success(&out, "backup run");
    let (_scratch, scratch_url) = env.create_database("real_drill_scratch").await;
    let out = dhis2ctl(&[
        "drill",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "--scratch-database-url",
        &scratch_url,
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "drill");
    let report = json(&out);
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.len() >= 5, "{report}");
    for check in checks {
        assert_eq!(check["passed"], true, "{check}");
    }
    let regenerated_check = checks
        .iter()
        .find(|c| c["name"] == "regenerated tables empty")
        .expect("the drill checks the regenerated tables");
    assert!(
        regenerated_check["detail"]
            .as_str()
            .unwrap()
            .starts_with("11 "),
        "{regenerated_check}"
    );
    env.delete_bucket(&bucket).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_non_superuser_owner_backs_up_the_real_database() {
    // DHIS2 usually runs as its own role (`dhis`) owning the database; the DBA created the
    // extensions. That role takes the backup; a drill proves it whole.
    let env = env();
    let (src, _) = env.real_dhis2_database("real_owned").await;
    let (role, password) = env.create_login_role("real_dhis").await;
    env.give_database_to(&src, &role).await;
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path().to_str().unwrap();
    let out = backup_run(
        &env.url_as(&src, &role, &password),
        repo,
        "hmis",
        &["-o", "json"],
    )
    .await;
    assert_success(&out, "backup run as the database owner");
    let manifest = json(&out);
    assert_eq!(manifest["dhis2SchemaVersion"], SCHEMA_VERSION);
    assert_eq!(manifest_skipped(&manifest), regenerated());
    assert!(
        !format!("{}{}", stdout(&out), stderr(&out)).contains(&password),
        "the owner's password is never printed"
    );

    let (_scratch, scratch_url) = env.create_database("real_owned_scratch").await;
    let out = dhis2ctl(&[
        "drill",
        "--repo",
        repo,
        "--instance",
        "hmis",
        "--scratch-database-url",
        &scratch_url,
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "drill");
    assert_eq!(json(&out)["passed"], true, "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn include_analytics_restores_the_real_analytics_tables_whole() {
    // UNLOGGED parents and their INHERITS children, each with its own rows.
    let env = env();
    let (src, src_url) = env.real_dhis2_database("real_ia_src").await;
    put_a_row_in_the_analytics_parent(&env, &src).await;
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path().to_str().unwrap();
    let out = backup_run(
        &src_url,
        repo,
        "hmis",
        &["--include-analytics", "-o", "json"],
    )
    .await;
    assert_success(&out, "backup run --include-analytics");
    assert_eq!(manifest_skipped(&json(&out)), BTreeSet::new());
    let (dst, dst_url) = env.create_database("real_ia_dst").await;
    let out = dhis2ctl(&[
        "backup",
        "restore",
        "--repo",
        repo,
        "--instance",
        "hmis",
        "latest",
        "--database-url",
        &dst_url,
    ])
    .await;
    assert_success(&out, "backup restore");
    let (before, after) = (
        env.table_fingerprints(&src).await,
        env.table_fingerprints(&dst).await,
    );
    assert_eq!(before["public.analytics"].rows, 1);
    assert!(before["public.analytics_2024"].rows > 0);
    assert_eq!(after, before, "every table identical, analytics included");
}
