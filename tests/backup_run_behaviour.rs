//! How a backup run behaves towards the database and the person running it: the exported
//! snapshot's transaction ends as soon as pg_dump has its own, usage errors exit 2, read-only verbs
//! never create a repository, and warnings carry no colour codes into files and pipes.

mod support;

use std::time::Duration;

use support::*;

/// ~40 MB of poorly compressible text, so the dump streams for a while.
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
async fn the_snapshot_transaction_ends_once_pg_dump_has_its_own() {
    let env = env();
    let (src, src_url) = env.seeded_database("snap_src").await;
    bulk_up(&env, &src).await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap().to_string();
    // A high zstd level slows the consumer, so pg_dump's COPY runs long enough to be watched.
    let backup = tokio::spawn(async move {
        backup_run(&src_url, &repo_path, "hmis", &["--zstd-level", "12"]).await
    });
    let watcher = env.client("postgres").await;
    // While pg_dump copies data, is any other session on the source database still holding a
    // transaction open (the exporting one, before the fix)?
    let mut copying = 0;
    let mut held_open = Vec::new();
    while !backup.is_finished() {
        let row = watcher
            .query_one(
                "SELECT count(*) FILTER (WHERE query LIKE 'COPY %' AND state = 'active'),
                        count(*) FILTER (WHERE query NOT LIKE 'COPY %' AND state = 'idle in transaction')
                 FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&src],
            )
            .await
            .unwrap();
        let (copy, idle_in_tx): (i64, i64) = (row.get(0), row.get(1));
        if copy > 0 {
            copying += 1;
            held_open.push(idle_in_tx > 0);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = backup.await.unwrap();
    assert_success(&out, "backup");
    assert!(
        copying >= 4,
        "pg_dump was seen copying only {copying} times"
    );
    // The COMMIT may race the first COPY by a moment; after that the exporter must be gone.
    let late = &held_open[held_open.len() / 2..];
    assert!(
        late.iter().all(|open| !open),
        "the exporting session stayed idle in transaction during the dump: {held_open:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2_and_failures_exit_1() {
    let env = env();
    let (_db, url) = env.create_database("usage_src").await;
    let local = tempfile::tempdir().unwrap();
    let local = local.path().to_str().unwrap();
    let prune = |extra: &'static [&'static str]| {
        let mut args = vec!["backup", "prune", "--repo", local, "--instance", "hmis"];
        args.extend_from_slice(extra);
        args
    };
    for (args, needle) in [
        (prune(&[]), "--keep-last"),
        (prune(&["--keep-last", "0"]), "--keep-last 0"),
        (
            prune(&["--keep-daily", "7", "--keep-weekly", "0"]),
            "--keep-weekly 0",
        ),
        (
            vec!["backup", "list", "--repo", "ftp://host/x"],
            "unknown repository scheme",
        ),
        (
            vec!["backup", "list", "--repo", local, "--instance", "HMIS"],
            "--instance",
        ),
    ] {
        let out = dhis2ctl(&args).await;
        assert_clear_failure(&out, needle);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    for out in [
        backup_run("mysql://root@db/dhis2", local, "hmis", &[]).await,
        backup_run(&url, local, "hmis", &["--zstd-level", "25"]).await,
        backup_run(&url, local, "hmis", &["--files-dir", "/nonexistent/files"]).await,
    ] {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    }
    // clap's own errors: unknown flag, missing value, bad time zone.
    for args in [
        vec!["backup", "list", "--no-such-flag"],
        vec![
            "backup",
            "prune",
            "--repo",
            local,
            "--instance",
            "hmis",
            "--keep-last",
            "x",
        ],
        vec![
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
        ],
    ] {
        let out = dhis2ctl(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // A failure met while working is 1.
    let wrong_pw = url.replacen("postgres:", "postgres:not-the-password", 1);
    let out = backup_run(&wrong_pw, local, "hmis", &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_verbs_never_create_a_repository() {
    let env = env();
    let (_db, url) = env.create_database("noreposcratch").await;
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("bakups");
    let repo = missing.to_str().unwrap();
    for args in [
        vec!["backup", "list", "--repo", repo],
        vec![
            "backup",
            "verify",
            "--repo",
            repo,
            "--instance",
            "hmis",
            "latest",
        ],
        vec![
            "backup",
            "prune",
            "--repo",
            repo,
            "--instance",
            "hmis",
            "--keep-last",
            "3",
        ],
        vec![
            "backup",
            "restore",
            "--repo",
            repo,
            "--instance",
            "hmis",
            "latest",
            "--database-url",
            &url,
        ],
        vec![
            "drill",
            "--repo",
            repo,
            "--instance",
            "hmis",
            "--scratch-database-url",
            &url,
        ],
    ] {
        let out = dhis2ctl(&args).await;
        assert_clear_failure(&out, &format!("no repository at {repo}"));
        assert!(!missing.exists(), "{args:?} created {repo}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_without_dhis2_tables_warns_without_colour_codes() {
    let env = env();
    let (name, url) = env.create_database("notdhis2").await;
    env.client(&name)
        .await
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1);")
        .await
        .unwrap();
    let repo = tempfile::tempdir().unwrap();
    let out = backup_run(&url, repo.path().to_str().unwrap(), "shop", &[]).await;
    assert_success(&out, "backup of a non-DHIS2 database still succeeds");
    let err = stderr(&out);
    assert!(err.contains("no DHIS2 tables"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");

    // Any warning: a set with an unreadable manifest is skipped with one.
    let broken = repo.path().join("shop").join("20200101T000000Z-0001");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("manifest.json"), "{").unwrap();
    let out = dhis2ctl(&["backup", "list", "--repo", repo.path().to_str().unwrap()]).await;
    assert_success(&out, "list");
    let err = stderr(&out);
    assert!(err.contains("WARN"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");

    // A DHIS2 database does not warn.
    let (_src, src_url) = env.seeded_database("isdhis2").await;
    let out = backup_run(&src_url, repo.path().to_str().unwrap(), "hmis", &[]).await;
    assert_success(&out, "backup");
    assert!(
        !stderr(&out).contains("no DHIS2 tables"),
        "{}",
        stderr(&out)
    );
}
