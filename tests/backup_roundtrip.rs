//! Backup → list → verify → restore against real PostgreSQL+PostGIS and real SeaweedFS: what was
//! backed up comes back, Khmer text, geometries, sequences and materialized views included.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use support::*;

const FINGERPRINTS: &[(&str, &str)] = &[
    (
        "khmer names",
        "SELECT md5(string_agg(name, '|' ORDER BY organisationunitid)) FROM organisationunit",
    ),
    (
        "geometries",
        "SELECT md5(string_agg(ST_AsEWKT(geometry), '|' ORDER BY organisationunitid)) FROM organisationunit WHERE geometry IS NOT NULL",
    ),
    (
        "data values",
        "SELECT md5(string_agg(value || coalesce(comment, ''), '|' ORDER BY dataelementid, periodid, sourceid)) FROM datavalue",
    ),
    (
        "hibernate_sequence",
        "SELECT last_value::text FROM hibernate_sequence",
    ),
    (
        "audit sequence",
        "SELECT last_value::text FROM datavalueaudit_sequence",
    ),
    (
        "materialized view",
        "SELECT md5(string_agg(province || data_values || total, '|' ORDER BY province)) FROM _view_province_reporting",
    ),
    (
        "table hooks",
        "SELECT md5(string_agg(sql, '|' ORDER BY analyticstablehookid)) FROM analyticstablehook",
    ),
    ("flyway", "SELECT count(*)::text FROM flyway_schema_history"),
];

async fn fingerprint(env: &Env, db: &str) -> Vec<(String, String)> {
    let client = env.client(db).await;
    let mut out = vec![];
    for (name, sql) in FINGERPRINTS {
        let row = client
            .query_one(*sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((
            name.to_string(),
            row.get::<_, Option<String>>(0).unwrap_or_default(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_backup_restores_everything_dhis2_needs() {
    let env = env();
    let (src, src_url) = env.seeded_database("rt_src").await;
    let (bucket, repo) = env.create_bucket("roundtrip").await;
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("documents/2024")).unwrap();
    std::fs::write(
        files.path().join("documents/2024/របាយការណ៍.pdf"),
        vec![42u8; 300_000],
    )
    .unwrap();
    std::fs::write(files.path().join("icon.png"), b"png").unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("dhis.conf");
    std::fs::write(
        &conf,
        "connection.url = jdbc:postgresql://db/dhis2\nencryption.password = xK93-very-secret\n",
    )
    .unwrap();
    // The restore keeps dhis.conf's recorded mode (capped at 0640).
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();

    let out = backup_run(
        &src_url,
        &repo,
        "hmis",
        &[
            "--files-dir",
            files.path().to_str().unwrap(),
            "--dhis-conf",
            conf.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await;
    assert_success(&out, "backup run");
    let manifest = json(&out);
    let id = manifest["id"].as_str().unwrap().to_string();
    assert_eq!(
        manifest["dhis2SchemaVersion"], "2.41.38",
        "numeric max of flyway versions"
    );
    assert_eq!(
        manifest["postgresVersion"]
            .as_str()
            .unwrap()
            .split('.')
            .next(),
        Some("15")
    );
    assert!(
        manifest["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "postgis")
    );
    let skipped: BTreeSet<&str> = manifest["skippedTableData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        BTreeSet::from([
            "public._orgunitstructure",
            "public._periodstructure",
            "public.analytics_2021",
            "public.analytics_event_hmisprog01",
            "public.analytics_rs_dataelementstructure",
        ]),
        "exactly the regenerated tables; analyticstablehook is kept"
    );
    let objects: Vec<&str> = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        objects,
        vec!["database.pgdump.zst", "filestore.tar.zst", "dhis.conf.zst"]
    );
    let datavalue = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "datavalue")
        .unwrap();
    assert_eq!(datavalue["rows"], 150_000);
    // Nothing but the backup's objects, manifest among them, landed in the bucket.
    let keys = env.s3_keys(&bucket).await;
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.starts_with(&format!("dhis2/hmis/{id}/"))),
        "{keys:?}"
    );

    let out = dhis2ctl(&["backup", "list", "--repo", &repo, "-o", "json"]).await;
    assert_success(&out, "backup list");
    let list = json(&out);
    assert_eq!(list.as_array().unwrap().len(), 1);
    for field in [
        "id",
        "instance",
        "startedAt",
        "completedAt",
        "sizeBytes",
        "dhis2Version",
        "postgresVersion",
    ] {
        assert!(
            !list[0][field].is_null(),
            "list -o json lacks {field}: {list}"
        );
    }
    assert_eq!(list[0]["dhis2Version"], "2.41");

    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        &id,
    ])
    .await;
    assert_success(&out, "backup verify");
    assert!(stdout(&out).contains("is intact"), "{}", stdout(&out));

    let (dst, dst_url) = env.create_database("rt_dst").await;
    let restored_files = tempfile::tempdir().unwrap();
    let restored_dir = restored_files.path().join("files");
    let restored_conf = restored_files.path().join("conf/dhis.conf");
    let out = dhis2ctl(&[
        "backup",
        "restore",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "latest",
        "--database-url",
        &dst_url,
        "--files-dir",
        restored_dir.to_str().unwrap(),
        "--dhis-conf",
        restored_conf.to_str().unwrap(),
    ])
    .await;
    assert_success(&out, "backup restore");
    assert!(
        stdout(&out).contains("POST /api/resourceTables/analytics"),
        "tells the user to regenerate analytics"
    );

    // Every table whose data was kept has the same rows; regenerated ones exist, empty.
    for table in manifest["tables"].as_array().unwrap() {
        let name = format!(
            "{}.{}",
            table["schema"].as_str().unwrap(),
            table["name"].as_str().unwrap()
        );
        let restored = count(&env, &dst, &name).await;
        if table["dataIncluded"].as_bool().unwrap() {
            assert_eq!(restored, table["rows"].as_i64().unwrap(), "{name}");
            assert_eq!(restored, count(&env, &src, &name).await, "{name}");
        } else {
            assert_eq!(restored, 0, "{name} data should be skipped");
            assert!(
                count(&env, &src, &name).await > 0,
                "{name} had data in the source"
            );
        }
    }
    assert_eq!(fingerprint(&env, &src).await, fingerprint(&env, &dst).await);
    assert_eq!(
        std::fs::read(restored_dir.join("documents/2024/របាយការណ៍.pdf")).unwrap(),
        vec![42u8; 300_000]
    );
    assert_eq!(
        std::fs::read(restored_dir.join("icon.png")).unwrap(),
        b"png"
    );
    assert_eq!(
        std::fs::read(&restored_conf).unwrap(),
        std::fs::read(&conf).unwrap()
    );
    let mode = std::fs::metadata(&restored_conf)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "dhis.conf holds secrets");
}

#[tokio::test(flavor = "multi_thread")]
async fn include_analytics_keeps_generated_data_in_a_local_repo() {
    let env = env();
    let (src, src_url) = env.seeded_database("ia_src").await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    let out = backup_run(
        &src_url,
        repo_path,
        "hmis",
        &["--include-analytics", "-o", "json"],
    )
    .await;
    assert_success(&out, "backup run");
    assert_eq!(json(&out)["skippedTableData"].as_array().unwrap().len(), 0);
    let (dst, dst_url) = env.create_database("ia_dst").await;
    let out = dhis2ctl(&[
        "backup",
        "restore",
        "--repo",
        &format!("file://{repo_path}"),
        "--instance",
        "hmis",
        "latest",
        "--database-url",
        &dst_url,
    ])
    .await;
    assert_success(&out, "restore");
    for t in [
        "analytics_2021",
        "_orgunitstructure",
        "analytics_event_hmisprog01",
    ] {
        assert_eq!(
            count(&env, &src, t).await,
            count(&env, &dst, t).await,
            "{t}"
        );
        assert!(count(&env, &dst, t).await > 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_never_overwrites_without_force() {
    let env = env();
    let (_src, src_url) = env.seeded_database("nf_src").await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    let src_files = tempfile::tempdir().unwrap();
    std::fs::write(src_files.path().join("doc.txt"), "ឯកសារ").unwrap();
    assert_success(
        &backup_run(
            &src_url,
            repo_path,
            "hmis",
            &["--files-dir", src_files.path().to_str().unwrap()],
        )
        .await,
        "backup",
    );
    let (dst, dst_url) = env.create_database("nf_dst").await;
    let client = env.client(&dst).await;
    client
        .batch_execute("CREATE TABLE precious (id int); INSERT INTO precious VALUES (1), (2);")
        .await
        .unwrap();
    let out = dhis2ctl(&[
        "backup",
        "restore",
        "--repo",
        repo_path,
        "--instance",
        "hmis",
        "latest",
        "--database-url",
        &dst_url,
    ])
    .await;
    assert_clear_failure(&out, "pass --force");
    // The refusal says what --force would do: nothing is overwritten, the old database is kept.
    assert!(
        stderr(&out).contains(&format!("kept, renamed to {dst}__replaced_")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        count(&env, &dst, "precious").await,
        2,
        "refused restore touched nothing"
    );

    // A non-empty file store directory is refused the same way, before any database work.
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("keep.txt"), "x").unwrap();
    let empty_db = env.create_database("nf_empty").await.1;
    let out = dhis2ctl(&[
        "backup",
        "restore",
        "--repo",
        repo_path,
        "--instance",
        "hmis",
        "latest",
        "--database-url",
        &empty_db,
        "--files-dir",
        files.path().to_str().unwrap(),
    ])
    .await;
    assert_clear_failure(&out, "refusing to restore the file store");
    assert_eq!(
        std::fs::read_to_string(files.path().join("keep.txt")).unwrap(),
        "x"
    );

    let out = dhis2ctl(&[
        "backup",
        "restore",
        "--repo",
        repo_path,
        "--instance",
        "hmis",
        "latest",
        "--database-url",
        &dst_url,
        "--force",
    ])
    .await;
    assert_success(&out, "restore --force");
    assert_eq!(count(&env, &dst, "datavalue").await, 150_000);
    // The swap closed the session that was open on the old database.
    let gone = env
        .client(&dst)
        .await
        .query_one("SELECT to_regclass('public.precious') IS NULL", &[])
        .await
        .unwrap();
    assert!(gone.get::<_, bool>(0), "--force replaces the contents");
    let replaced = stdout(&out)
        .lines()
        .find_map(|l| l.trim().strip_prefix("previous database kept as "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("the output names the kept database: {}", stdout(&out)));
    assert_eq!(
        count(&env, &replaced, "precious").await,
        2,
        "the replaced contents are kept, not lost"
    );
}
