//! What a repository may hold and show: a full disk is a failure and never a backup, a set with a
//! missing or short object is not a backup, prune never touches a running backup, ids do not
//! collide, and a local repository is private whatever the umask.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dhis2_operator::backup::repo::{RepoError, RepoLocation, Repository, S3Options};
use support::*;

/// A small tmpfs mounted for one test; unmounted when dropped, also when the test panics.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount (the tests run as root)");
        assert!(status.success(), "mounting a tmpfs failed (needs root)");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// One bucket for this file's tests, each under its own prefix: the shared SeaweedFS spends a
/// volume per bucket and has few.
static BUCKET: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// `(bucket, s3://bucket/PREFIX, PREFIX)` for one test.
async fn s3_area(env: &Env, name: &str) -> (String, String, String) {
    let bucket = BUCKET
        .get_or_init(|| async { env.create_bucket("integrity").await.0 })
        .await
        .clone();
    let prefix = unique(name);
    let repo = format!("s3://{bucket}/{prefix}");
    (bucket, repo, prefix)
}

/// Removes what one test stored under its prefix.
async fn drop_area(env: &Env, bucket: &str, prefix: &str) {
    let s3 = env.s3_client();
    let uploads = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .unwrap();
    for u in uploads.uploads() {
        s3.abort_multipart_upload()
            .bucket(bucket)
            .key(u.key().unwrap())
            .upload_id(u.upload_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    for key in env.s3_keys(bucket).await {
        if key.starts_with(&format!("{prefix}/")) {
            s3.delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(p.clone());
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    walk(dir).into_iter().filter(|p| p.is_file()).collect()
}

/// A database with one small table: a dump of a few kilobytes.
async fn tiny_database(env: &Env, prefix: &str) -> String {
    let (name, url) = env.create_database(prefix).await;
    env.client(&name)
        .await
        .batch_execute(
            "CREATE TABLE organisationunit (id int PRIMARY KEY, name text);
             INSERT INTO organisationunit VALUES (1, 'Cambodia'), (2, 'Phnom Penh');",
        )
        .await
        .unwrap();
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_the_backup_and_leaves_nothing_listed() {
    let env = env();
    let (_src, src_url) = env.seeded_database("full_src").await;
    let disk = Tmpfs::mount("256k");
    let repo = disk.path().join("repo");
    let repo = repo.to_str().unwrap();

    let out = backup_run(&src_url, repo, "hmis", &[]).await;
    assert_clear_failure(&out, "the disk is full");
    assert!(stderr(&out).contains(repo), "says where: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(1));
    assert!(listed_backup_ids(repo, None).await.is_empty());
    assert_eq!(
        files(disk.path()),
        Vec::<PathBuf>::new(),
        "the failed backup tidied what it wrote"
    );
    let out = dhis2ctl(&[
        "backup",
        "prune",
        "--repo",
        repo,
        "--instance",
        "hmis",
        "--keep-last",
        "1",
    ])
    .await;
    assert_success(&out, "prune after a full disk");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_does_not_fit_on_the_disk_fails_the_backup() {
    let env = env();
    let src_url = tiny_database(&env, "fullm_src").await;
    // Lease and dump take one 4 KiB page each; the manifest finds no room.
    let disk = Tmpfs::mount("8k");
    let repo = disk.path().join("repo");
    let repo = repo.to_str().unwrap();

    let out = backup_run(&src_url, repo, "hmis", &[]).await;
    assert_clear_failure(&out, "the disk is full");
    assert!(stderr(&out).contains("manifest.json"), "{}", stderr(&out));
    assert!(listed_backup_ids(repo, None).await.is_empty());
    assert_eq!(files(disk.path()), Vec::<PathBuf>::new());
}

/// Two backups, then the newer one is damaged by `damage`: it must vanish from list, `latest`,
/// verify and retention, and prune must not count it.
async fn damaged_set_is_not_a_backup(repo: &str, damage: impl AsyncFnOnce(&str)) {
    let env = env();
    let (_src, src_url) = env.seeded_database("incomplete_src").await;
    let mut ids = vec![];
    for _ in 0..2 {
        let out = backup_run(&src_url, repo, "hmis", &["-o", "json"]).await;
        assert_success(&out, "backup");
        ids.push(json(&out)["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        listed_backup_ids(repo, None).await,
        vec![ids[1].clone(), ids[0].clone()]
    );
    damage(&ids[1]).await;

    assert_eq!(
        listed_backup_ids(repo, None).await,
        vec![ids[0].clone()],
        "only the whole one"
    );
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        repo,
        "--instance",
        "hmis",
        "latest",
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "verify latest");
    assert_eq!(json(&out)["id"], ids[0].as_str(), "latest is the whole one");
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        repo,
        "--instance",
        "hmis",
        &ids[1],
    ])
    .await;
    // The error, after a warning that says why the set does not count.
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .starts_with("error: no complete backup"),
        "{err}"
    );
    assert!(err.contains("ignoring incomplete backup"), "{err}");

    let (_scratch, scratch_url) = env.create_database("incomplete_drill").await;
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
    assert_success(&out, "drill of latest");
    assert_eq!(
        json(&out)["backupId"],
        ids[0].as_str(),
        "drill takes the whole one"
    );

    let out = dhis2ctl(&[
        "backup",
        "prune",
        "--repo",
        repo,
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
    assert_eq!(report["kept"][0]["id"], ids[0].as_str(), "{report}");
    assert_eq!(report["deleted"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(listed_backup_ids(repo, None).await, vec![ids[0].clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_set_with_a_missing_or_short_object_is_not_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let repo = root.to_str().unwrap().to_string();
    // Only manifest.json left.
    let r = root.clone();
    damaged_set_is_not_a_backup(&repo, async move |id: &str| {
        std::fs::remove_file(r.join("hmis").join(id).join("database.pgdump.zst")).unwrap();
    })
    .await;

    // A short object.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let repo = root.to_str().unwrap().to_string();
    let r = root.clone();
    damaged_set_is_not_a_backup(&repo, async move |id: &str| {
        let path = r.join("hmis").join(id).join("database.pgdump.zst");
        let data = std::fs::read(&path).unwrap();
        std::fs::write(&path, &data[..data.len() - 1]).unwrap();
    })
    .await;

    // A manifest naming an object outside its set.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let repo = root.to_str().unwrap().to_string();
    let r = root.clone();
    damaged_set_is_not_a_backup(&repo, async move |id: &str| {
        let set = r.join("hmis").join(id);
        let path = set.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        m["objects"][0]["name"] = serde_json::json!("../database.pgdump.zst");
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        std::fs::copy(
            set.join("database.pgdump.zst"),
            r.join("hmis").join("database.pgdump.zst"),
        )
        .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_set_with_a_missing_or_short_object_is_not_a_backup() {
    let env = env();
    let (bucket, repo, prefix) = s3_area(&env, "incomplete").await;
    let s3 = env.s3_client();
    let (b, s, p) = (bucket.clone(), s3.clone(), prefix.clone());
    damaged_set_is_not_a_backup(&repo, async move |id: &str| {
        s.delete_object()
            .bucket(&b)
            .key(format!("{p}/hmis/{id}/database.pgdump.zst"))
            .send()
            .await
            .unwrap();
    })
    .await;
    drop_area(&env, &bucket, &prefix).await;

    let (bucket, repo, prefix) = s3_area(&env, "incomplete").await;
    let (b, s, p) = (bucket.clone(), s3.clone(), prefix.clone());
    damaged_set_is_not_a_backup(&repo, async move |id: &str| {
        let key = format!("{p}/hmis/{id}/database.pgdump.zst");
        let body = s.get_object().bucket(&b).key(&key).send().await.unwrap();
        let data = body.body.collect().await.unwrap().into_bytes();
        s.put_object()
            .bucket(&b)
            .key(&key)
            .body(data.slice(..data.len() - 1).into())
            .send()
            .await
            .unwrap();
    })
    .await;
    drop_area(&env, &bucket, &prefix).await;
}

fn set_age(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

fn lease_json(id: &str, started_ago: chrono::Duration, beat_ago: chrono::Duration) -> String {
    let now = chrono::Utc::now();
    serde_json::json!({
        "backupId": id,
        "startedAt": now - started_ago,
        "heartbeatAt": now - beat_ago,
        "host": "db1",
        "pid": 4242,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_spares_a_running_backup_and_removes_abandoned_debris() {
    let env = env();
    let src_url = tiny_database(&env, "lease_src").await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let out = backup_run(&src_url, repo, "hmis", &["-o", "json"]).await;
    assert_success(&out, "backup");
    let done = json(&out)["id"].as_str().unwrap().to_string();
    assert!(
        files(dir.path()).iter().all(|p| !p.ends_with("lease.json")),
        "a finished backup leaves no lease"
    );
    let hour = chrono::Duration::hours(1);

    // Started 30 hours ago, still dumping: its partial object was last written long ago (a
    // huge table is being read), but its lease was refreshed a few minutes ago.
    let running = "20200101T000000Z-0a0a0a0a";
    let set = dir.path().join("hmis").join(running);
    std::fs::create_dir_all(&set).unwrap();
    std::fs::write(
        set.join("lease.json"),
        lease_json(running, hour * 30, hour / 12),
    )
    .unwrap();
    set_age(&set.join("lease.json"), Duration::from_secs(300));
    std::fs::write(set.join("database.pgdump.zst.partial"), vec![1u8; 1000]).unwrap();
    set_age(
        &set.join("database.pgdump.zst.partial"),
        Duration::from_secs(30 * 3600),
    );

    // Died three hours ago: its lease stopped beating.
    let dead = "20200101T000000Z-0d0d0d0d";
    let dead_set = dir.path().join("hmis").join(dead);
    std::fs::create_dir_all(&dead_set).unwrap();
    std::fs::write(
        dead_set.join("lease.json"),
        lease_json(dead, hour * 5, hour * 3),
    )
    .unwrap();
    set_age(&dead_set.join("lease.json"), Duration::from_secs(3 * 3600));
    std::fs::write(
        dead_set.join("database.pgdump.zst.partial"),
        vec![1u8; 1000],
    )
    .unwrap();
    set_age(
        &dead_set.join("database.pgdump.zst.partial"),
        Duration::from_secs(3 * 3600),
    );

    let out = dhis2ctl(&[
        "backup",
        "prune",
        "--repo",
        repo,
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
    assert_eq!(
        report["incompleteDeleted"],
        serde_json::json!([dead]),
        "{report}"
    );
    assert!(set.join("database.pgdump.zst.partial").exists());
    assert!(set.join("lease.json").exists());
    assert!(
        !dead_set.exists(),
        "abandoned debris is gone, directory too"
    );
    assert_eq!(listed_backup_ids(repo, None).await, vec![done]);
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_spares_the_unfinished_upload_of_a_running_s3_backup() {
    let env = env();
    let src_url = tiny_database(&env, "leases3_src").await;
    let (bucket, repo, prefix) = s3_area(&env, "lease").await;
    let out = backup_run(&src_url, &repo, "hmis", &[]).await;
    assert_success(&out, "backup");
    let s3 = env.s3_client();
    let running = "20200101T000000Z-0b0b0b0b";
    let hour = chrono::Duration::hours(1);
    s3.put_object()
        .bucket(&bucket)
        .key(format!("{prefix}/hmis/{running}/lease.json"))
        .body(
            lease_json(running, hour * 30, hour / 12)
                .into_bytes()
                .into(),
        )
        .send()
        .await
        .unwrap();
    let upload = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key(format!("{prefix}/hmis/{running}/database.pgdump.zst"))
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap().to_string();

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
    assert_eq!(report["abortedUploads"], 0, "{report}");
    assert_eq!(
        report["incompleteDeleted"],
        serde_json::json!([]),
        "{report}"
    );
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        uploads
            .uploads()
            .iter()
            .any(|u| u.upload_id() == Some(upload_id.as_str())),
        "the running backup's upload is still there"
    );
    assert!(
        env.s3_keys(&bucket)
            .await
            .contains(&format!("{prefix}/hmis/{running}/lease.json"))
    );
    drop_area(&env, &bucket, &prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_backup_refreshes_its_lease_and_removes_it_when_done() {
    let env = env();
    let (src, src_url) = env.create_database("beat_src").await;
    env.client(&src)
        .await
        .batch_execute(
            "CREATE TABLE organisationunit (id int PRIMARY KEY, content text);
             INSERT INTO organisationunit
             SELECT i, md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text) || md5((i * 17)::text)
             FROM generate_series(1, 300000) AS i;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let args = [
        "backup",
        "run",
        "--database-url",
        &src_url,
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "--zstd-level",
        "15",
    ];
    let backup = tokio::spawn({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            dhis2ctl_with_env(&args, &[("DHIS2_LEASE_HEARTBEAT_SECONDS", "1")]).await
        }
    });
    let mut beats = std::collections::BTreeSet::new();
    while !backup.is_finished() {
        for lease in files(dir.path())
            .into_iter()
            .filter(|p| p.ends_with("lease.json"))
        {
            if let Ok(body) = std::fs::read(&lease)
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
            {
                beats.insert(v["heartbeatAt"].as_str().unwrap_or_default().to_string());
                assert_eq!(mode(&lease), 0o600);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = backup.await.unwrap();
    assert_success(&out, "backup");
    assert!(
        beats.len() >= 2,
        "the lease was never refreshed during the backup: {beats:?}"
    );
    assert!(
        files(dir.path()).iter().all(|p| !p.ends_with("lease.json")),
        "the finished backup removed its lease"
    );
}

async fn open(location: &str) -> Repository {
    let env = env();
    let options = S3Options {
        endpoint: Some(env.s3_endpoint.clone()),
        path_style: Some(true),
        ..Default::default()
    };
    Repository::open(RepoLocation::parse(location).unwrap(), &options, true)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_or_manifest_is_created_only_if_absent() {
    dhis2_operator::install_crypto_provider();
    let env = env();
    let (bucket, s3_repo, prefix) = s3_area(&env, "ifabsent").await;
    let dir = tempfile::tempdir().unwrap();
    for location in [s3_repo.as_str(), dir.path().to_str().unwrap()] {
        let repo = open(location).await;
        let key = "hmis/20260101T000000Z-00000001/lease.json";
        repo.put_bytes_if_absent(key, "first".into()).await.unwrap();
        let second = repo.put_bytes_if_absent(key, "second".into()).await;
        assert!(
            matches!(second, Err(RepoError::AlreadyExists { .. })),
            "{location}: {second:?}"
        );
        assert_eq!(&repo.get_bytes(key).await.unwrap()[..], b"first");
    }
    drop_area(&env, &bucket, &prefix).await;
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_repository_is_private_whatever_the_umask() {
    let env = env();
    let src_url = tiny_database(&env, "private_src").await;
    let files_dir = tempfile::tempdir().unwrap();
    std::fs::write(files_dir.path().join("a.txt"), "x").unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("dhis.conf");
    std::fs::write(&conf, "encryption.password = abc\n").unwrap();
    for umask in ["022", "000"] {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("backups").join("dhis2");
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(bin())
            .args(["backup", "run", "--database-url", &src_url, "--repo"])
            .arg(&repo)
            .args(["--instance", "hmis", "--files-dir"])
            .arg(files_dir.path())
            .arg("--dhis-conf")
            .arg(&conf)
            .output()
            .await
            .unwrap();
        assert_success(&out, "backup");
        let all = walk(&dir.path().join("backups"));
        assert!(all.len() >= 6, "{all:?}");
        for p in all {
            let expected = if p.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(
                mode(&p),
                expected,
                "umask {umask}: {} is {:o}",
                p.display(),
                mode(&p)
            );
        }
    }
}
