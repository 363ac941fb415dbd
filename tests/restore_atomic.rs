//! Atomic restore: the dump goes into a side database and is swapped in only when everything
//! matched; the previous database is kept aside; any failure leaves the target exactly as it was.

mod support;

use support::*;

/// A fingerprint of every user table's rows and of the schema, to prove a database unchanged.
async fn fingerprint(env: &Env, db: &str) -> Vec<(String, String)> {
    let client = env.client(db).await;
    let tables = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\\_toast%'
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut out = vec![];
    for t in tables {
        let name: String = t.get(0);
        let row = client
            .query_one(
                &format!("SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {name} t"),
                &[],
            )
            .await
            .unwrap();
        out.push((name, row.get(0)));
    }
    let schema: String = client
        .query_one(
            "SELECT coalesce(md5(string_agg(c.relname || ':' || a.attname || ':' || format_type(a.atttypid, a.atttypmod), '|' ORDER BY c.relname, a.attnum)), '')
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND a.attnum > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    out.push(("schema".into(), schema));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forced_restore_swaps_the_database_in_and_keeps_the_old_one() {
    let env = env();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    backed_up(&env, "atomic_src", repo_path, &[]).await;

    let (dst, dst_url) = env.create_database("atomic_dst").await;
    env.client(&dst)
        .await
        .batch_execute("CREATE TABLE precious (id int); INSERT INTO precious VALUES (1), (2);")
        .await
        .unwrap();
    // DHIS2 holding a session on the target: the swap closes it and says so.
    let dhis2_session = env.client(&dst).await;
    dhis2_session.query_one("SELECT 1", &[]).await.unwrap();

    let out = dhis2ctl(&restore_args(
        repo_path,
        &dst_url,
        &["--force", "-o", "json"],
    ))
    .await;
    assert_success(&out, "restore --force");
    let report = json(&out);
    assert!(
        report["closedConnections"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let replaced = report["replacedDatabase"].as_str().unwrap().to_string();
    assert!(
        replaced.starts_with(&format!("{dst}__replaced_")),
        "{replaced}"
    );
    assert!(
        report["nextSteps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains(&replaced)),
        "the output says where the old database is: {report}"
    );
    assert!(
        dhis2_session.query_one("SELECT 1", &[]).await.is_err(),
        "the old session was closed"
    );
    assert_eq!(count(&env, &dst, "datavalue").await, 150_000);
    assert_eq!(
        count(&env, &replaced, "precious").await,
        2,
        "the replaced database is kept as it was"
    );
    assert!(
        databases_like(&env, &format!("{dst}__restoring_%"))
            .await
            .is_empty()
    );
    // The restored database accepts connections again, and so does the kept one.
    env.client(&dst)
        .await
        .query_one("SELECT 1", &[])
        .await
        .unwrap();

    // Human output names the kept database too; --drop-replaced drops it at once.
    let out = dhis2ctl(&restore_args(
        repo_path,
        &dst_url,
        &["--force", "--drop-replaced"],
    ))
    .await;
    assert_success(&out, "restore --force --drop-replaced");
    assert!(
        stdout(&out).contains("previous database dropped"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        databases_like(&env, &format!("{dst}__replaced_%")).await,
        vec![replaced],
        "only the first restore's replaced database is left"
    );
    assert_eq!(count(&env, &dst, "datavalue").await, 150_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_damaged_late_leaves_a_populated_target_exactly_as_it_was() {
    let env = env();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    let id = backed_up(&env, "late_src", repo_path, &[]).await.id();
    let dump = repo
        .path()
        .join("hmis")
        .join(&id)
        .join("database.pgdump.zst");
    let late = std::fs::metadata(&dump).unwrap().len() as usize * 9 / 10;
    flip_byte(&dump, late, 0x20);

    let (dst, dst_url) = env.seeded_database("late_dst").await;
    env.client(&dst)
        .await
        .batch_execute(
            "UPDATE organisationunit SET name = name || ' (live)' WHERE organisationunitid % 7 = 0",
        )
        .await
        .unwrap();
    let before = fingerprint(&env, &dst).await;
    let out = dhis2ctl(&restore_args(repo_path, &dst_url, &["--force"])).await;
    assert_clear_failure(&out, "is damaged: database.pgdump.zst");
    assert_eq!(
        fingerprint(&env, &dst).await,
        before,
        "the target is unchanged"
    );
    assert!(
        databases_like(&env, &format!("{dst}\\_\\_%"))
            .await
            .is_empty(),
        "no side or replaced database is left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_never_takes_its_target_from_the_backup_source_variable() {
    let env = env();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    let src = backed_up(&env, "env_src", repo_path, &[]).await;
    let before = fingerprint(&env, &src.db).await;
    let out = dhis2ctl_with_env(
        &[
            "backup",
            "restore",
            "--repo",
            repo_path,
            "--instance",
            "hmis",
            "latest",
            "--force",
        ],
        &[("DHIS2_DATABASE_URL", &src.url)],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("--database-url"), "{err}");
    assert!(err.contains("DHIS2_RESTORE_DATABASE_URL"), "{err}");
    assert_eq!(fingerprint(&env, &src.db).await, before);

    let out = dhis2ctl_with_env(
        &["drill", "--repo", repo_path, "--instance", "hmis"],
        &[("DHIS2_DATABASE_URL", &src.url)],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--scratch-database-url"));

    let (dst, dst_url) = env.create_database("env_dst").await;
    let out = dhis2ctl_with_env(
        &[
            "backup",
            "restore",
            "--repo",
            repo_path,
            "--instance",
            "hmis",
            "latest",
        ],
        &[
            ("DHIS2_DATABASE_URL", &src.url),
            ("DHIS2_RESTORE_DATABASE_URL", &dst_url),
        ],
    )
    .await;
    assert_success(&out, "restore through DHIS2_RESTORE_DATABASE_URL");
    assert_eq!(count(&env, &dst, "datavalue").await, 150_000);
    assert_eq!(fingerprint(&env, &src.db).await, before);
}

/// The operator restores any backup into an instance with a file store volume: a backup without
/// a file store then restores its database alone, and the directory is left as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_without_files_restores_its_database_alone_when_files_are_optional() {
    let env = env();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    backed_up(&env, "nofiles_src", repo_path, &[]).await;
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("kept.txt"), "uploaded before").unwrap();
    let files_dir = files.path().to_str().unwrap();
    let (dst, dst_url) = env.create_database("nofiles_dst").await;

    let refused = dhis2ctl(&restore_args(
        repo_path,
        &dst_url,
        &["--files-dir", files_dir],
    ))
    .await;
    assert_clear_failure(&refused, "holds no file store");

    let out = dhis2ctl(&restore_args(
        repo_path,
        &dst_url,
        &["--files-dir", files_dir, "--skip-missing-file-store"],
    ))
    .await;
    assert_success(&out, "restore with --skip-missing-file-store");
    assert_eq!(count(&env, &dst, "datavalue").await, 150_000);
    let left: Vec<_> = std::fs::read_dir(files.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("kept.txt")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_pg_restore_is_a_tooling_error_not_a_damaged_backup() {
    let env = env();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    backed_up(&env, "tool_src", repo_path, &[]).await;
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        repo_path,
        "--instance",
        "hmis",
        "latest",
        "--pg-bin-dir",
        "/nonexistent/bin",
    ])
    .await;
    assert_clear_failure(&out, "cannot start /nonexistent/bin/pg_restore");
    assert!(!stderr(&out).contains("damaged"), "{}", stderr(&out));

    let (dst, dst_url) = env.create_database("tool_dst").await;
    let out = dhis2ctl(&restore_args(
        repo_path,
        &dst_url,
        &["--pg-bin-dir", "/nonexistent/bin"],
    ))
    .await;
    assert_clear_failure(&out, "cannot start /nonexistent/bin/pg_restore");
    assert!(!stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert!(
        databases_like(&env, &format!("{dst}\\_\\_%"))
            .await
            .is_empty(),
        "the side database was dropped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_store_comes_back_into_its_directory_with_the_old_contents_kept() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = env();
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("documents")).unwrap();
    let doc = files.path().join("documents/report.pdf");
    std::fs::write(&doc, "new report").unwrap();
    let tool = files.path().join("tool.sh");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("dhis.conf");
    std::fs::write(&conf, "encryption.password = abc\n").unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o664)).unwrap();
    let root = support_is_root();
    if root {
        std::os::unix::fs::chown(&doc, Some(4321), Some(4322)).unwrap();
        std::os::unix::fs::chown(&conf, Some(4321), Some(4322)).unwrap();
    }
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    backed_up(
        &env,
        "fs_src",
        repo_path,
        &[
            "--files-dir",
            files.path().to_str().unwrap(),
            "--dhis-conf",
            conf.to_str().unwrap(),
        ],
    )
    .await;

    // The target directory stands for a mount point: it must stay the same directory.
    let target_root = tempfile::tempdir().unwrap();
    let target = target_root.path().join("files");
    std::fs::create_dir_all(target.join("documents")).unwrap();
    std::fs::write(target.join("documents/old.pdf"), "old report").unwrap();
    let inode = std::fs::metadata(&target).unwrap().ino();
    let target_conf = target_root.path().join("dhis.conf");
    std::fs::write(&target_conf, "old conf").unwrap();
    let (_dst, dst_url) = env.create_database("fs_dst").await;
    let out = dhis2ctl(&restore_args(
        repo_path,
        &dst_url,
        &[
            "--files-dir",
            target.to_str().unwrap(),
            "--dhis-conf",
            target_conf.to_str().unwrap(),
            "--force",
            "-o",
            "json",
        ],
    ))
    .await;
    assert_success(&out, "restore with files");
    let report = json(&out);
    assert_eq!(std::fs::metadata(&target).unwrap().ino(), inode);
    assert_eq!(
        std::fs::read_to_string(target.join("documents/report.pdf")).unwrap(),
        "new report"
    );
    assert!(!target.join("documents/old.pdf").exists());
    let kept: Vec<String> = report["keptAside"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        kept.iter()
            .any(|k| std::path::Path::new(k).join("documents/old.pdf").exists()),
        "old contents kept aside: {kept:?}"
    );
    assert!(
        kept.iter()
            .any(|k| std::fs::read_to_string(k).ok().as_deref() == Some("old conf")),
        "old dhis.conf kept aside: {kept:?}"
    );
    let entries: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !entries.iter().any(|e| e.contains("restoring")),
        "no staging left: {entries:?}"
    );
    let tool_mode = std::fs::metadata(target.join("tool.sh")).unwrap().mode() & 0o7777;
    assert_eq!(tool_mode, 0o755, "setuid is never restored");
    let conf_meta = std::fs::metadata(&target_conf).unwrap();
    assert_eq!(
        conf_meta.mode() & 0o7777,
        0o640,
        "recorded 0664, capped at 0640"
    );
    if root {
        let doc_meta = std::fs::metadata(target.join("documents/report.pdf")).unwrap();
        assert_eq!((doc_meta.uid(), doc_meta.gid()), (4321, 4322));
        assert_eq!((conf_meta.uid(), conf_meta.gid()), (4321, 4322));
    }

    // A fresh ext4 volume holds only lost+found: that is an empty file store (no --force
    // needed), and lost+found stays where it is, never moved aside.
    let fresh = target_root.path().join("fresh");
    std::fs::create_dir_all(fresh.join("lost+found")).unwrap();
    let (_dst2, dst2_url) = env.create_database("fs_fresh").await;
    let out = dhis2ctl(&restore_args(
        repo_path,
        &dst2_url,
        &["--files-dir", fresh.to_str().unwrap(), "-o", "json"],
    ))
    .await;
    assert_success(&out, "restore into a fresh volume");
    assert!(
        fresh.join("lost+found").is_dir(),
        "lost+found left in place"
    );
    assert_eq!(
        std::fs::read_to_string(fresh.join("documents/report.pdf")).unwrap(),
        "new report"
    );
    assert_eq!(json(&out)["keptAside"], serde_json::json!([]));
}

fn support_is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// What a proxy in front of S3 does once `after` bytes of answers went through.
#[derive(Clone, Copy)]
enum Trouble {
    /// Closes that connection and refuses new ones: the network is cut.
    Cut,
    /// Holds every connection open without sending more: the restore is stuck half-way.
    Stall,
}

/// A TCP proxy to S3 that passes answers until `after` bytes came from the server, then cuts or
/// stalls as `trouble` says: the network going away, or hanging, in the middle of a download.
async fn troubled_proxy(upstream: String, after: u64, trouble: Trouble) -> String {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            if matches!(trouble, Trouble::Cut) && received.load(Ordering::SeqCst) >= after {
                return; // listener dropped: connection refused from now on
            }
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let received = received.clone();
            tokio::spawn(async move {
                let (mut client_r, mut client_w) = client.into_split();
                let (mut server_r, mut server_w) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_r, &mut server_w).await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match server_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if received.fetch_add(n as u64, Ordering::SeqCst) + n as u64 >= after {
                        match trouble {
                            Trouble::Cut => break,
                            Trouble::Stall => std::future::pending::<()>().await,
                        }
                    }
                    if client_w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_cut_mid_restore_leaves_the_target_as_it_was() {
    let env = env();
    let (_bucket, repo) = env.create_bucket("restorecut").await;
    let backup = backed_up(&env, "cut_src", &repo, &[]).await;
    let dump_size = backup.report["objects"][0]["sizeBytes"].as_u64().unwrap();
    assert!(dump_size > 1_000_000, "dump of {dump_size} bytes");

    let (dst, dst_url) = env.seeded_database("cut_dst").await;
    env.client(&dst)
        .await
        .batch_execute("DELETE FROM datavalue WHERE periodid % 3 = 0")
        .await
        .unwrap();
    let before = fingerprint(&env, &dst).await;
    let upstream = env.s3_endpoint.trim_start_matches("http://").to_string();
    let proxy = troubled_proxy(upstream, dump_size / 2, Trouble::Cut).await;
    let out = dhis2ctl(&restore_args(
        &repo,
        &dst_url,
        &["--force", "--s3-endpoint", &proxy],
    ))
    .await;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert_clear_failure(
        &out,
        "reading database.pgdump.zst from the backup repository",
    );
    assert_eq!(
        fingerprint(&env, &dst).await,
        before,
        "the target is unchanged"
    );
    assert!(
        databases_like(&env, &format!("{dst}\\_\\_%"))
            .await
            .is_empty(),
        "no side or replaced database is left"
    );
}

#[tokio::test]
async fn a_failure_after_the_swap_is_reported_as_swapped_not_as_left_as_it_was() {
    let env = env();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("report.pdf"), "new report").unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("dhis.conf");
    std::fs::write(&conf, "encryption.password = abc\n").unwrap();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    let src = backed_up(
        &env,
        "as_src",
        repo_path,
        &[
            "--files-dir",
            files.path().to_str().unwrap(),
            "--dhis-conf",
            conf.to_str().unwrap(),
        ],
    )
    .await;

    let (dst, dst_url) = env.create_database("as_dst").await;
    env.client(&dst)
        .await
        .batch_execute("CREATE TABLE before_restore (note text)")
        .await
        .unwrap();
    let target_root = tempfile::tempdir().unwrap();
    let target_files = target_root.path().join("files");
    std::fs::create_dir_all(&target_files).unwrap();
    // dhis.conf cannot be written (its directory is a file), even as root: the last step fails,
    // after the database and the file store were swapped in.
    let not_a_dir = target_root.path().join("not-a-dir");
    std::fs::write(&not_a_dir, "").unwrap();
    let target_conf = not_a_dir.join("dhis.conf");
    let report_file = target_root.path().join("report.json");
    let out = dhis2ctl(&restore_args(
        repo_path,
        &dst_url,
        &[
            "--files-dir",
            target_files.to_str().unwrap(),
            "--dhis-conf",
            target_conf.to_str().unwrap(),
            "--force",
            "--report-file",
            report_file.to_str().unwrap(),
        ],
    ))
    .await;
    assert!(!out.status.success(), "{}", stdout(&out));
    let error = stderr(&out);
    assert!(
        error.contains("the database was restored into")
            && error.contains("the file store was restored into"),
        "{error}"
    );
    // The report the operator reads says what was swapped.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report["kind"], "restore", "{report}");
    assert!(
        report["failure"].as_str().unwrap().contains("dhis.conf"),
        "{report}"
    );
    let replaced = report["replacedDatabase"]
        .as_str()
        .expect("replacedDatabase");
    assert!(
        replaced.starts_with(&format!("{dst}__replaced_")),
        "{report}"
    );
    assert_eq!(
        report["filesDir"].as_str(),
        Some(target_files.to_str().unwrap())
    );
    // As it says: the target holds the backup, the replaced database its old table.
    assert_eq!(
        count(&env, &dst, "datavalue").await,
        count(&env, &src.db, "datavalue").await
    );
    assert_eq!(
        databases_like(&env, replaced).await,
        vec![replaced.to_string()]
    );
    assert_eq!(
        std::fs::read_to_string(target_files.join("report.pdf")).unwrap(),
        "new report"
    );
}

#[tokio::test]
async fn a_restore_the_server_has_no_room_for_is_refused_before_anything_is_built() {
    let env = env();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    backed_up(&env, "room_src", repo_path, &[]).await;
    // The manifest records what a restore of it takes.
    let listed = json(&dhis2ctl(&["backup", "list", "--repo", repo_path, "-o", "json"]).await);
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.path().join(format!("hmis/{id}/manifest.json"))).unwrap(),
    )
    .unwrap();
    let restored_size = manifest["restoredSizeBytes"].as_u64().unwrap();
    assert!(restored_size > 1024 * 1024, "{manifest}");

    let (dst, dst_url) = env.create_database("room_dst").await;
    env.client(&dst)
        .await
        .batch_execute("CREATE TABLE precious (id int); INSERT INTO precious VALUES (1), (2);")
        .await
        .unwrap();
    // An earlier restore's replaced database: room that could be given back.
    let replaced = format!("{dst}__replaced_20200101t000000z");
    let admin = env.client("postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{replaced}\""))
        .await
        .unwrap();
    let before = fingerprint(&env, &dst).await;
    // A data volume that the databases already fill but for a megabyte.
    let used: i64 = admin
        .query_one("SELECT pg_tablespace_size('pg_default')", &[])
        .await
        .unwrap()
        .get(0);
    let volume = (used as u64 + 1024 * 1024).to_string();
    let out = dhis2ctl(&restore_args(
        repo_path,
        &dst_url,
        &["--force", "--database-volume-bytes", &volume],
    ))
    .await;
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("not enough room"), "{err}");
    assert!(err.contains(&replaced), "names what can be dropped: {err}");
    assert!(err.contains("--skip-space-check"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        fingerprint(&env, &dst).await,
        before,
        "the target is untouched"
    );
    assert!(
        databases_like(&env, &format!("{dst}__restoring_%"))
            .await
            .is_empty(),
        "no side database was begun"
    );
    // Measured on this machine (the server's data directory), there is room.
    let out = dhis2ctl(&restore_args(
        repo_path,
        &dst_url,
        &["--force", "-o", "json"],
    ))
    .await;
    assert_success(&out, "restore with room");
    let checked = json(&out)["spaceCheck"].as_str().unwrap().to_string();
    assert!(
        checked.starts_with("room for about") && checked.contains("data directory"),
        "{checked}"
    );
    assert_eq!(count(&env, &dst, "datavalue").await, 150_000);
}

/// A restore (an upgrade's rollback above all) whose server refuses connections for a moment —
/// starting, restarting, or behind a Service with no ready endpoint — waits for it.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_waits_for_a_server_that_refuses_connections_for_a_moment() {
    let env = env();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap().to_string();
    backed_up(&env, "refused_src", &repo_path, &[]).await;
    let (dst, dst_url) = env.create_database("refused_dst").await;
    // A port nobody listens on yet, which will forward to the server in a few seconds.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rest = dst_url.trim_start_matches("postgresql://");
    let (userinfo, hostpart) = rest.split_once('@').unwrap();
    let (server, path) = hostpart.split_once('/').unwrap();
    let late_url = format!("postgresql://{userinfo}@127.0.0.1:{port}/{path}");
    let upstream = server.to_string();
    let restore = tokio::spawn(async move {
        dhis2ctl(&restore_args(&repo_path, &late_url, &["-o", "json"])).await
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let out = restore.await.unwrap();
    assert_success(&out, "restore once the server answers");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trying again"),
        "says it waits: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&env, &dst, "datavalue").await, 150_000);
}

#[tokio::test]
async fn the_next_restore_drops_what_a_killed_restore_left_behind() {
    let env = env();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    backed_up(&env, "lo_src", repo_path, &[]).await;
    let (dst, dst_url) = env.create_database("lo_dst").await;
    // What a restore killed mid-way leaves: its half-filled side database.
    let leftover = format!("{dst}__restoring_20200101t000000z_dead");
    env.client("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE \"{leftover}\""))
        .await
        .unwrap();
    let out = dhis2ctl(&restore_args(repo_path, &dst_url, &["-o", "json"])).await;
    assert_success(&out, "restore");
    assert_eq!(
        json(&out)["droppedLeftovers"],
        serde_json::json!([leftover.clone()])
    );
    assert!(databases_like(&env, &leftover).await.is_empty());
    assert!(
        databases_like(&env, &format!("{dst}__restoring_%"))
            .await
            .is_empty()
    );
}

/// Stopped half-way (an operator at the terminal pressing Ctrl-C, a Job's pod deleted), a
/// restore drops its half-filled side database and leaves the target as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_stopped_by_sigterm_or_sigint_drops_its_side_database() {
    let env = env();
    let (_bucket, repo) = env.create_bucket("restoresig").await;
    let backup = backed_up(&env, "sig_src", &repo, &[]).await;
    let dump_size = backup.report["objects"][0]["sizeBytes"].as_u64().unwrap();
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let (dst, dst_url) = env.seeded_database("sig_dst").await;
        let before = fingerprint(&env, &dst).await;
        let upstream = env.s3_endpoint.trim_start_matches("http://").to_string();
        let proxy = troubled_proxy(upstream, dump_size / 2, Trouble::Stall).await;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dhis2ctl"))
            .args(restore_args(
                &repo,
                &dst_url,
                &["--force", "--s3-endpoint", &proxy],
            ))
            .env_remove("DHIS2_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let side = format!("{dst}\\_\\_restoring\\_%");
        support::kube_env::wait_for(60, "the side database to be filled", || async {
            (!databases_like(&env, &side).await.is_empty()).then_some(())
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        // SAFETY: kill(2) of the child this test started.
        unsafe {
            libc::kill(pid, signal);
        }
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
                .await
                .expect("dhis2ctl ends after the signal")
                .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert!(err.contains("interrupted by SIG"), "{err}");
        assert!(err.contains("dropped the side database"), "{err}");
        assert!(
            databases_like(&env, &side).await.is_empty(),
            "no side database is left"
        );
        assert_eq!(
            fingerprint(&env, &dst).await,
            before,
            "the target is unchanged"
        );
    }
}
