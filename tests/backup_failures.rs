//! Damage, interruption and bad input: a damaged backup is caught before it changes anything, a
//! killed or cut-off backup never appears, and every mistake gets one clear line.

mod support;

use std::time::Duration;

use support::proxy::CuttableProxy;
use support::*;

/// Adds ~40 MB of poorly compressible text so the dump spans several multipart parts.
async fn bulk_up(env: &Env, db: &str) {
    env.client(db)
        .await
        .batch_execute(
            "CREATE TABLE fileresource_blob (id int PRIMARY KEY, content text);
             INSERT INTO fileresource_blob
             SELECT i, md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text) || md5((i * 17)::text)
             FROM generate_series(1, 300000) AS i;",
        )
        .await
        .expect("bulk data");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_any_object_fails_verify_and_restore() {
    let env = env();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("a.txt"), "file store content").unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("dhis.conf");
    std::fs::write(&conf, "encryption.password = abc\n").unwrap();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    let id = backed_up(
        &env,
        "dmg_src",
        repo_path,
        &[
            "--files-dir",
            files.path().to_str().unwrap(),
            "--dhis-conf",
            conf.to_str().unwrap(),
        ],
    )
    .await
    .id();
    let dir = repo.path().join("hmis").join(&id);

    for (object, at) in [
        ("database.pgdump.zst", 5000),
        ("filestore.tar.zst", 20),
        ("dhis.conf.zst", 10),
    ] {
        let path = dir.join(object);
        let original = std::fs::read(&path).unwrap();
        flip_byte(&path, at, 0x01);
        let out = dhis2ctl(&[
            "backup",
            "verify",
            "--repo",
            repo_path,
            "--instance",
            "hmis",
            &id,
        ])
        .await;
        assert_clear_failure(&out, &format!("is damaged: {object}"));

        // A restore reads what it restores (once): the damaged object is among it.
        let (target, target_url) = env.create_database("dmg_dst").await;
        let restore_to = tempfile::tempdir().unwrap();
        let files_to = restore_to.path().join("files");
        let conf_to = restore_to.path().join("dhis.conf");
        let mut args = vec![
            "backup",
            "restore",
            "--repo",
            repo_path,
            "--instance",
            "hmis",
            &id,
            "--database-url",
            &target_url,
        ];
        match object {
            "filestore.tar.zst" => args.extend(["--files-dir", files_to.to_str().unwrap()]),
            "dhis.conf.zst" => args.extend(["--dhis-conf", conf_to.to_str().unwrap()]),
            _ => {}
        }
        let out = dhis2ctl(&args).await;
        assert_clear_failure(&out, object);
        assert!(
            std::fs::read_dir(&files_to).map_or(true, |mut d| d.next().is_none()),
            "a damaged backup must not touch the file store ({object})"
        );
        assert!(!conf_to.exists(), "nor dhis.conf ({object})");
        let tables: i64 = env
            .client(&target)
            .await
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            tables, 0,
            "a damaged backup must not touch the target ({object})"
        );
        std::fs::write(&path, original).unwrap();
    }
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        repo_path,
        "--instance",
        "hmis",
        &id,
    ])
    .await;
    assert_success(&out, "verify after repair");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_object_in_s3_is_caught() {
    let env = env();
    let (bucket, repo) = env.create_bucket("damage").await;
    let id = backed_up(&env, "dmgs3_src", &repo, &[]).await.id();
    let key = format!("dhis2/hmis/{id}/database.pgdump.zst");
    let s3 = env.s3_client();
    let body = s3
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    let mut data = body.into_bytes().to_vec();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    s3.put_object()
        .bucket(&bucket)
        .key(&key)
        .body(data.into())
        .send()
        .await
        .unwrap();
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "latest",
    ])
    .await;
    assert_clear_failure(&out, "database.pgdump.zst");
    let (_dst, dst_url) = env.create_database("dmgs3_dst").await;
    let out = dhis2ctl(&[
        "drill",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "--scratch-database-url",
        &dst_url,
        "-o",
        "json",
    ])
    .await;
    assert!(!out.status.success(), "a drill of a damaged backup fails");
    let report = json(&out);
    assert_eq!(report["passed"], false);
    assert!(
        report["failures"][0].as_str().unwrap().contains("damaged"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backup_never_appears_and_the_next_one_succeeds() {
    let env = env();
    let (src, src_url) = env.seeded_database("kill_src").await;
    bulk_up(&env, &src).await;
    let (bucket, repo) = env.create_bucket("killed").await;
    let first = backup_run(&src_url, &repo, "hmis", &["-o", "json"]).await;
    assert_success(&first, "first backup");

    let mut child = tokio::process::Command::new(bin())
        .args([
            "backup",
            "run",
            "--database-url",
            &src_url,
            "--repo",
            &repo,
            "--instance",
            "hmis",
        ])
        .env("DHIS2_S3_ENDPOINT", &env.s3_endpoint)
        .spawn()
        .unwrap();
    // Kill it once a multipart upload is under way: mid-stream.
    let s3 = env.s3_client();
    let mut in_flight = false;
    for _ in 0..400 {
        let uploads = s3
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        if !uploads.uploads().is_empty() {
            in_flight = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(in_flight, "the backup never started a multipart upload");
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success());

    let out = dhis2ctl(&[
        "backup",
        "list",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "list");
    let list = json(&out);
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only the complete backup is listed: {list}"
    );
    assert_eq!(list[0]["id"], json(&first)["id"]);

    let out = backup_run(&src_url, &repo, "hmis", &[]).await;
    assert_success(&out, "backup after a killed one");
    let out = dhis2ctl(&[
        "backup",
        "list",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(json(&out).as_array().unwrap().len(), 2);
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "latest",
    ])
    .await;
    assert_success(&out, "verify the backup after the killed one");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backup_in_a_local_repo_never_appears() {
    let env = env();
    let (src, src_url) = env.seeded_database("killl_src").await;
    bulk_up(&env, &src).await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap().to_string();
    let mut child = tokio::process::Command::new(bin())
        .args([
            "backup",
            "run",
            "--database-url",
            &src_url,
            "--repo",
            &repo_path,
            "--instance",
            "hmis",
        ])
        .spawn()
        .unwrap();
    let mut partial = false;
    for _ in 0..400 {
        let found = walk(repo.path()).iter().any(|p| p.ends_with(".partial"));
        if found {
            partial = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(partial, "the backup never started writing");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let out = dhis2ctl(&["backup", "list", "--repo", &repo_path, "-o", "json"]).await;
    assert_success(&out, "list");
    assert_eq!(json(&out).as_array().unwrap().len(), 0);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_server_going_away_mid_backup_gives_a_clear_error_and_no_backup() {
    let env = env();
    let (src, src_url) = env.seeded_database("cut_src").await;
    bulk_up(&env, &src).await;
    let (_bucket, repo) = env.create_bucket("cut").await;
    let upstream = env.s3_endpoint.trim_start_matches("http://").to_string();
    // Cut after ~12 MB: the first part is through, the second is not.
    let proxy = CuttableProxy::start(upstream, 12 * 1024 * 1024).await;
    let out = backup_run(&src_url, &repo, "hmis", &["--s3-endpoint", &proxy.endpoint]).await;
    assert!(proxy.is_cut(), "the proxy never cut the connection");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("error: backup repository s3://"), "{err}");
    assert!(
        err.lines().filter(|l| l.starts_with("error:")).count() == 1,
        "{err}"
    );
    let out = dhis2ctl(&["backup", "list", "--repo", &repo, "-o", "json"]).await;
    assert_success(&out, "list through the real endpoint");
    assert_eq!(
        json(&out).as_array().unwrap().len(),
        0,
        "no backup is listed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_one_clear_line() {
    let env = env();
    let (_db, url) = env.seeded_database("bad_src").await;
    let (_bucket, repo) = env.create_bucket("bad").await;
    let local = tempfile::tempdir().unwrap();
    let local = local.path().to_str().unwrap();

    let out = backup_run("mysql://root@db/dhis2", local, "hmis", &[]).await;
    assert_clear_failure(&out, "--database-url");
    let out = backup_run(&url, "ftp://host/x", "hmis", &[]).await;
    assert_clear_failure(&out, "unknown repository scheme 'ftp://'");
    let out = backup_run(&url, local, "HMIS Prod", &[]).await;
    assert_clear_failure(&out, "--instance");
    let out = dhis2ctl(&["backup", "list", "--repo", "s3://no-such-bucket-here/x"]).await;
    assert_clear_failure(&out, "bucket does not exist");
    let out = dhis2ctl_with_env(
        &["backup", "list", "--repo", &repo],
        &[("AWS_SECRET_ACCESS_KEY", "wrong-secret-key")],
    )
    .await;
    assert_clear_failure(&out, "credentials were refused");
    let out = dhis2ctl(&[
        "backup",
        "restore",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "20200101T000000Z-0000",
        "--database-url",
        &url,
    ])
    .await;
    assert_clear_failure(&out, "no complete backup '20200101T000000Z-0000'");
    let wrong_pw = url.replacen("postgres:", "postgres:not-the-password", 1);
    let out = backup_run(&wrong_pw, local, "hmis", &[]).await;
    assert_clear_failure(&out, "password authentication failed");
    assert!(!stderr(&out).contains("not-the-password"));
    let out = backup_run(&url, local, "hmis", &["--files-dir", "/nonexistent/files"]).await;
    assert_clear_failure(&out, "--files-dir");
    let out = backup_run(&url, local, "hmis", &["--zstd-level", "25"]).await;
    assert_clear_failure(&out, "--zstd-level");
    let out = dhis2ctl(&["backup", "prune", "--repo", local, "--instance", "hmis"]).await;
    assert_clear_failure(&out, "--keep-last");
    let out = dhis2ctl(&[
        "backup",
        "prune",
        "--repo",
        local,
        "--instance",
        "hmis",
        "--keep-daily",
        "3",
        "--time-zone",
        "Mars/Olympus",
    ])
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("IANA time zone"), "{}", stderr(&out));
}
