//! `backup copy` into a second repository, against real SeaweedFS (a second bucket) and a local
//! directory: only complete sets are copied, a second copy rewrites nothing, damage is caught at
//! either end, a copy restores, and `list` with two `--repo` shows where each backup is.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use support::*;

/// Incompressible bytes, so the file store object is larger than one 8 MiB upload part and the
/// copy goes through a multipart upload.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn files_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upload.bin"), noise(20 * 1024 * 1024, 7)).unwrap();
    std::fs::write(dir.path().join("icon.png"), b"png").unwrap();
    dir
}

async fn backup(url: &str, repo: &str, files: &Path) -> String {
    let out = backup_run(
        url,
        repo,
        "hmis",
        &["--files-dir", files.to_str().unwrap(), "-o", "json"],
    )
    .await;
    assert_success(&out, "backup run");
    json(&out)["id"].as_str().unwrap().to_string()
}

async fn copy(from: &str, to: &str, which: &[&str]) -> std::process::Output {
    let mut args = vec![
        "backup",
        "copy",
        "--from",
        from,
        "--to",
        to,
        "--instance",
        "hmis",
        "-o",
        "json",
    ];
    args.extend_from_slice(which);
    dhis2ctl(&args).await
}

/// `(id, result)` of every set in a copy report.
fn results(out: &std::process::Output) -> Vec<(String, String)> {
    json(out)["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every object in a bucket with its ETag and modification time: what a rewrite would change.
async fn stamps(env: &Env, bucket: &str) -> BTreeMap<String, (String, i64, i64)> {
    let out = env
        .s3_client()
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .map(|o| {
            (
                o.key().unwrap().to_string(),
                (
                    o.e_tag().unwrap_or_default().to_string(),
                    o.last_modified().unwrap().secs(),
                    o.size().unwrap_or_default(),
                ),
            )
        })
        .collect()
}

async fn get(env: &Env, bucket: &str, key: &str) -> bytes::Bytes {
    env.s3_client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
}

async fn put(env: &Env, bucket: &str, key: &str, data: Vec<u8>) {
    env.s3_client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(data.into())
        .send()
        .await
        .unwrap();
}

async fn delete(env: &Env, bucket: &str, key: &str) {
    env.s3_client()
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
}

/// `backup list --repo A --repo B -o json`: id → the repositories holding it.
async fn where_listed(a: &str, b: &str) -> BTreeMap<String, Vec<String>> {
    let out = dhis2ctl(&[
        "backup",
        "list",
        "--repo",
        a,
        "--repo",
        b,
        "--instance",
        "hmis",
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "backup list with two repositories");
    json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_string(),
                b["repositories"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

async fn drop_database(env: &Env, name: &str) {
    env.client("postgres")
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_takes_complete_sets_only_rewrites_nothing_twice_and_list_shows_where() {
    let env = env();
    let (db, url) = env.seeded_database("copy_src").await;
    let (src_bucket, src) = env.create_bucket("copy-onsite").await;
    let (dst_bucket, dst) = env.create_bucket("copy-offsite").await;
    let files = files_dir();
    let first = backup(&url, &src, files.path()).await;
    let second = backup(&url, &src, files.path()).await;

    // An incomplete set at the source: objects, no manifest.
    let incomplete = "20200101T000000Z-0badc0de";
    let dump = get(
        &env,
        &src_bucket,
        &format!("dhis2/hmis/{first}/database.pgdump.zst"),
    )
    .await;
    put(
        &env,
        &src_bucket,
        &format!("dhis2/hmis/{incomplete}/database.pgdump.zst"),
        dump.to_vec(),
    )
    .await;
    let out = copy(&src, &dst, &[incomplete]).await;
    assert_clear_failure(&out, "not complete");
    assert_eq!(out.status.code(), Some(1));

    let out = copy(&src, &dst, &["--missing"]).await;
    assert_success(&out, "copy --missing");
    assert_eq!(
        results(&out),
        vec![
            (first.clone(), "copied".to_string()),
            (second.clone(), "copied".to_string())
        ],
        "oldest first, the incomplete set left out"
    );
    let report = json(&out);
    assert_eq!(report["readBack"], true);
    for set in report["sets"].as_array().unwrap() {
        assert!(set["sizeBytes"].as_u64().unwrap() > 20 * 1024 * 1024);
        assert_eq!(set["copiedBytes"], set["sizeBytes"]);
    }
    let copied = stamps(&env, &dst_bucket).await;
    assert!(copied.keys().all(|k| !k.contains(incomplete)), "{copied:?}");
    assert!(
        copied.keys().all(|k| !k.ends_with("lease.json")),
        "{copied:?}"
    );
    for id in [&first, &second] {
        for name in ["manifest.json", "database.pgdump.zst", "filestore.tar.zst"] {
            let key = format!("dhis2/hmis/{id}/{name}");
            assert!(copied.contains_key(&key), "{key} missing: {copied:?}");
            assert_eq!(
                get(&env, &dst_bucket, &key).await,
                get(&env, &src_bucket, &key).await,
                "{key} is a byte-for-byte copy"
            );
        }
    }

    // Idempotent: nothing is written again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let out = copy(&src, &dst, &["--missing"]).await;
    assert_success(&out, "second copy --missing");
    assert_eq!(
        results(&out),
        vec![
            (first.clone(), "skipped".to_string()),
            (second.clone(), "skipped".to_string())
        ]
    );
    assert!(
        json(&out)["sets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["copiedBytes"] == 0)
    );
    let out = copy(&src, &dst, &["latest"]).await;
    assert_eq!(results(&out), vec![(second.clone(), "skipped".to_string())]);
    assert_eq!(
        stamps(&env, &dst_bucket).await,
        copied,
        "a second copy rewrote an object"
    );

    let both = vec![src.clone(), dst.clone()];
    let listed = where_listed(&src, &dst).await;
    assert_eq!(listed[&first], both);
    assert_eq!(listed[&second], both);
    assert_eq!(listed.len(), 2, "the incomplete set is listed nowhere");

    // An interrupted copy (objects without a manifest) is finished by the next one.
    delete(
        &env,
        &dst_bucket,
        &format!("dhis2/hmis/{first}/manifest.json"),
    )
    .await;
    delete(
        &env,
        &dst_bucket,
        &format!("dhis2/hmis/{first}/database.pgdump.zst"),
    )
    .await;
    assert_eq!(where_listed(&src, &dst).await[&first], vec![src.clone()]);
    let out = copy(&src, &dst, &["--missing"]).await;
    assert_success(&out, "copy over a partial set");
    assert_eq!(
        results(&out),
        vec![
            (first.clone(), "copied".to_string()),
            (second.clone(), "skipped".to_string())
        ]
    );
    assert_eq!(json(&out)["sets"][0]["detail"], "finished a partial copy");
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        &dst,
        "--instance",
        "hmis",
        &first,
    ])
    .await;
    assert_success(&out, "verify the finished copy");

    // Retention per repository: prune the off-site copy alone.
    let out = dhis2ctl(&[
        "backup",
        "prune",
        "--repo",
        &dst,
        "--instance",
        "hmis",
        "--keep-last",
        "1",
    ])
    .await;
    assert_success(&out, "prune the destination");
    let listed = where_listed(&src, &dst).await;
    assert_eq!(listed[&first], vec![src.clone()]);
    assert_eq!(listed[&second], both);
    let out = dhis2ctl(&[
        "backup",
        "list",
        "--repo",
        &src,
        "--repo",
        &dst,
        "--instance",
        "hmis",
    ])
    .await;
    assert_success(&out, "list table");
    let table = stdout(&out);
    assert!(table.contains(&format!("REPO1: {src}")), "{table}");
    assert!(table.contains(&format!("REPO2: {dst}")), "{table}");
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not in {table}"))
            .split_whitespace()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
    };
    assert_eq!(row(&first), vec!["-", "yes"], "{table}");
    assert_eq!(row(&second), vec!["yes", "yes"], "{table}");

    env.delete_bucket(&src_bucket).await;
    env.delete_bucket(&dst_bucket).await;
    drop_database(&env, &db).await;
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn flip_byte(data: &mut [u8]) {
    let middle = data.len() / 2;
    data[middle] ^= 0x01;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_in_a_local_directory_restores_and_damage_is_caught_at_either_end() {
    let env = env();
    let (db, url) = env.seeded_database("copy_local").await;
    let (bucket, src) = env.create_bucket("copy-to-local").await;
    let files = files_dir();
    let id = backup(&url, &src, files.path()).await;
    let offsite = tempfile::tempdir().unwrap();
    let local = offsite.path().join("dhis2-offsite");
    let local_repo = local.to_str().unwrap().to_string();

    let out = copy(&src, &local_repo, &["latest"]).await;
    assert_success(&out, "copy into a new local repository");
    assert_eq!(results(&out), vec![(id.clone(), "copied".to_string())]);

    // Restoring from the copy gives back the database.
    let (restored, restored_url) = env.create_database("copy_restored").await;
    let out = dhis2ctl(&restore_args(&local_repo, &restored_url, &[])).await;
    assert_success(&out, "restore from the local copy");
    for table in ["datavalue", "organisationunit", "dataelement"] {
        assert_eq!(
            count(&env, &restored, table).await,
            count(&env, &db, table).await,
            "{table}"
        );
    }
    let known = "SELECT string_agg(name, '|' ORDER BY organisationunitid) FROM organisationunit";
    let name = |d: String| {
        let env = &env;
        async move {
            env.client(&d)
                .await
                .query_one(known, &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(name(restored.clone()).await, name(db.clone()).await);

    // A flipped byte in the copy: verify on the destination finds it.
    let dump = local.join("hmis").join(&id).join("database.pgdump.zst");
    let mut data = std::fs::read(&dump).unwrap();
    flip_byte(&mut data);
    std::fs::write(&dump, &data).unwrap();
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        &local_repo,
        "--instance",
        "hmis",
        &id,
    ])
    .await;
    assert_clear_failure(&out, "is damaged: database.pgdump.zst");

    // A flipped byte at the source: the copy checks the stream and stores nothing of the set.
    let key = format!("dhis2/hmis/{id}/filestore.tar.zst");
    let mut data = get(&env, &bucket, &key).await.to_vec();
    flip_byte(&mut data);
    put(&env, &bucket, &key, data).await;
    let second = offsite.path().join("second");
    let second_repo = second.to_str().unwrap().to_string();
    // Without reading back, the checksum of the stream alone stops it.
    let out = copy(&src, &second_repo, &["latest", "--no-read-back"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("SHA-256"), "{}", stderr(&out));
    assert_eq!(files_under(&second), Vec::<PathBuf>::new());
    let out = copy(&src, &second_repo, &["latest"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(results(&out), vec![(id.clone(), "failed".to_string())]);
    let err = stderr(&out);
    assert!(
        err.starts_with("error: 1 backup(s) could not be copied"),
        "{err}"
    );
    assert!(err.contains("filestore.tar.zst"), "{err}");
    assert!(err.contains("SHA-256"), "{err}");
    assert_eq!(
        files_under(&second),
        Vec::<PathBuf>::new(),
        "a failed copy leaves nothing behind"
    );
    let out = dhis2ctl(&["backup", "list", "--repo", &second_repo, "-o", "json"]).await;
    assert_success(&out, "list the second destination");
    assert_eq!(json(&out), serde_json::json!([]));

    env.delete_bucket(&bucket).await;
    drop_database(&env, &db).await;
    drop_database(&env, &restored).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_and_single_repository_verbs_refuse_bad_command_lines() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let a = a.to_str().unwrap();
    let b = dir.path().join("b");
    let b = b.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "backup",
                "copy",
                "--from",
                a,
                "--to",
                b,
                "--instance",
                "hmis",
            ],
            "required arguments were not provided",
        ),
        (
            vec![
                "backup",
                "copy",
                "--from",
                a,
                "--to",
                b,
                "--instance",
                "hmis",
                "latest",
                "--missing",
            ],
            "cannot be used with",
        ),
        (
            vec![
                "backup",
                "copy",
                "--from",
                a,
                "--to",
                a,
                "--instance",
                "hmis",
                "latest",
            ],
            "--to: ",
        ),
        (
            vec![
                "backup",
                "copy",
                "--from",
                "ftp://x",
                "--to",
                b,
                "--instance",
                "hmis",
                "latest",
            ],
            "--from: unknown repository scheme",
        ),
        (
            vec![
                "backup",
                "verify",
                "--repo",
                a,
                "--repo",
                b,
                "--instance",
                "hmis",
                "latest",
            ],
            "'--repo <REPO>' cannot be used multiple times",
        ),
        (
            vec![
                "backup",
                "prune",
                "--repo",
                a,
                "--repo",
                b,
                "--instance",
                "hmis",
                "--keep-last",
                "1",
            ],
            "'--repo <REPO>' cannot be used multiple times",
        ),
    ];
    for (args, needle) in cases {
        let out = dhis2ctl(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    assert!(
        !dir.path().join("b").exists(),
        "a refused copy created nothing"
    );
}

/// `--to-aws-profile` names the second store's own keys: they are used for --to even when
/// AWS_ACCESS_KEY_ID (the first store's keys) is set. Here the profile's keys are wrong, so the
/// copy must fail at --to, not quietly write with the first store's keys.
#[tokio::test]
async fn the_profile_of_the_second_repository_is_used_even_with_keys_in_the_environment() {
    let env = env();
    let (_db, url) = env.seeded_database("copy_profile").await;
    let (_, from) = env.create_bucket("copy-profile-a").await;
    let (to_bucket, to) = env.create_bucket("copy-profile-b").await;
    let files = tempfile::tempdir().unwrap();
    backup(&url, &from, files.path()).await;
    let aws = tempfile::tempdir().unwrap();
    let credentials = aws.path().join("credentials");
    std::fs::write(
        &credentials,
        "[offsite]\naws_access_key_id = AKIAOFFSITEWRONGKEY0\naws_secret_access_key = not-the-offsite-secret\n",
    )
    .unwrap();
    let credentials = credentials.display().to_string();
    let args = [
        "backup",
        "copy",
        "--from",
        &from,
        "--to",
        &to,
        "--instance",
        "hmis",
        "latest",
        "--to-aws-profile",
        "offsite",
    ];
    let profile_file = [("AWS_SHARED_CREDENTIALS_FILE", credentials.as_str())];
    let out = dhis2ctl_with_env(&args, &profile_file).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "the copy used other keys than the profile's:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        env.s3_keys(&to_bucket).await.is_empty(),
        "nothing written to --to with the environment's keys"
    );
    // The same profile with the store's real keys copies.
    std::fs::write(
        &credentials,
        format!(
            "[offsite]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            env.access_key, env.secret_key
        ),
    )
    .unwrap();
    let out = dhis2ctl_with_env(&args, &profile_file).await;
    assert_success(&out, "backup copy --to-aws-profile");
    assert!(!env.s3_keys(&to_bucket).await.is_empty());
}
