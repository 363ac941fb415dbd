//! Retention that really deletes, and restore drills that measure RPO/RTO and clean up after
//! themselves.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_the_policy_and_really_deletes_the_rest() {
    let env = env();
    let (_src, src_url) = env.seeded_database("prune_src").await;
    let (bucket, repo) = env.create_bucket("prune").await;
    let mut ids = vec![];
    for _ in 0..3 {
        let out = backup_run(&src_url, &repo, "hmis", &["-o", "json"]).await;
        assert_success(&out, "backup");
        ids.push(json(&out)["id"].as_str().unwrap().to_string());
    }
    // Another instance in the same repository is never touched.
    let out = backup_run(&src_url, &repo, "training", &[]).await;
    assert_success(&out, "backup of another instance");

    let out = dhis2ctl(&[
        "backup",
        "prune",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "--keep-last",
        "1",
        "--dry-run",
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "prune --dry-run");
    let report = json(&out);
    assert_eq!(report["deleted"].as_array().unwrap().len(), 2);
    assert_eq!(
        env.s3_keys(&bucket).await.len(),
        4 * 2,
        "dry run deletes nothing"
    );

    let out = dhis2ctl(&[
        "backup",
        "prune",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "--keep-last",
        "1",
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "prune");
    let report = json(&out);
    assert_eq!(report["kept"][0]["id"], ids[2].as_str());
    let mut deleted: Vec<String> = report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // Backups taken within one second share the time part of their ids: compare as sets.
    deleted.sort();
    let mut older = ids[..2].to_vec();
    older.sort();
    assert_eq!(deleted, older);
    let keys = env.s3_keys(&bucket).await;
    assert_eq!(
        keys.len(),
        2 * 2,
        "only the kept backup and the other instance remain: {keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| k.contains(&ids[2]) || k.contains("/training/")),
        "{keys:?}"
    );

    let out = dhis2ctl(&["backup", "list", "--repo", &repo, "-o", "json"]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_restores_checks_reports_and_wipes_the_scratch_database() {
    let env = env();
    let (_src, src_url) = env.seeded_database("drill_src").await;
    let (_bucket, repo) = env.create_bucket("drill").await;
    let backup_out = backup_run(&src_url, &repo, "hmis", &["-o", "json"]).await;
    assert_success(&backup_out, "backup");
    let id = json(&backup_out)["id"].as_str().unwrap().to_string();
    let (scratch, scratch_url) = env.create_database("drill_scratch").await;

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
    assert_eq!(report["backupId"], id.as_str());
    assert_eq!(report["passed"], true, "{report}");
    assert!(report["rpoSeconds"].as_i64().unwrap() >= 0);
    assert!(report["rtoSeconds"].as_f64().unwrap() > 0.0);
    let checks: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        vec![
            "tables present",
            "row counts",
            "regenerated tables empty",
            "extensions",
            "DHIS2 schema version"
        ]
    );
    assert!(
        report["checks"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("rows match the manifest"),
        "{report}"
    );

    let client = env.client(&scratch).await;
    let left: i64 = client
        .query_one("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the drill wipes its scratch database");
    let drill_databases: i64 = env
        .client("postgres")
        .await
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE $1",
            &[&format!("{scratch}\\_\\_%")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        drill_databases, 0,
        "the drill drops the database it restored into"
    );
    let report_rpo = report["rpoSeconds"].as_i64().unwrap();
    let started =
        chrono::DateTime::parse_from_rfc3339(report["startedAt"].as_str().unwrap()).unwrap();
    let backup_started =
        chrono::DateTime::parse_from_rfc3339(json(&backup_out)["startedAt"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        report_rpo,
        (started - backup_started).num_seconds(),
        "RPO counts from the backup's start, when its snapshot was taken"
    );

    // A scratch database that holds anything it did not make — a function, a type, an
    // extension, not only tables — is refused, untouched.
    for (object, check) in [
        (
            "CREATE FUNCTION someone_elses_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "SELECT to_regprocedure('someone_elses_fn()') IS NOT NULL",
        ),
        (
            "CREATE TYPE someone_elses_type AS ENUM ('a')",
            "SELECT to_regtype('someone_elses_type') IS NOT NULL",
        ),
        (
            "CREATE EXTENSION pg_trgm",
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')",
        ),
    ] {
        client.batch_execute(object).await.unwrap();
        let out = dhis2ctl(&[
            "drill",
            "--repo",
            &repo,
            "--instance",
            "hmis",
            "--scratch-database-url",
            &scratch_url,
        ])
        .await;
        assert_clear_failure(&out, "--scratch-database-url");
        let still: bool = client.query_one(check, &[]).await.unwrap().get(0);
        assert!(still, "{object} is left alone");
    }
    client
        .batch_execute("CREATE TABLE someone_elses (x int)")
        .await
        .unwrap();
    let out = dhis2ctl(&[
        "drill",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "--scratch-database-url",
        &scratch_url,
    ])
    .await;
    assert_clear_failure(&out, "--scratch-database-url");
    let still: bool = client
        .query_one(
            "SELECT to_regclass('public.someone_elses') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(still);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_fails_when_the_restored_data_differs() {
    // The manifest promises row counts; a backup whose manifest disagrees with its dump fails.
    let env = env();
    let (_src, src_url) = env.seeded_database("drillbad_src").await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    let out = backup_run(&src_url, repo_path, "hmis", &["-o", "json"]).await;
    assert_success(&out, "backup");
    let id = json(&out)["id"].as_str().unwrap().to_string();
    let manifest_path = repo.path().join("hmis").join(&id).join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for t in manifest["tables"].as_array_mut().unwrap() {
        if t["name"] == "datavalue" {
            t["rows"] = serde_json::json!(150_001);
        }
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (_scratch, scratch_url) = env.create_database("drillbad_scratch").await;
    let out = dhis2ctl(&[
        "drill",
        "--repo",
        repo_path,
        "--instance",
        "hmis",
        "--scratch-database-url",
        &scratch_url,
    ])
    .await;
    assert!(!out.status.success(), "a failed drill exits non-zero");
    let text = stdout(&out);
    assert!(text.contains("FAILED"), "{text}");
    assert!(
        text.contains("public.datavalue: 150000 rows, backup had 150001"),
        "{text}"
    );
}
