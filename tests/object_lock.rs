//! Immutable backups with S3 Object Lock (`backup run --lock-days`), against SeaweedFS: what the
//! store really refuses, what prune does with a locked set, and the errors before any work.

mod support;

use std::collections::HashMap;
use std::io::Write;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use support::*;

/// A bucket created with object lock enabled (which turns versioning on); returns the bucket and
/// the repository URL.
async fn locked_bucket(env: &Env, prefix: &str) -> (String, String) {
    let bucket = unique(prefix);
    env.s3_client()
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("create bucket with object lock");
    (bucket.clone(), format!("s3://{bucket}/dhis2"))
}

/// A file store with 10 MiB that does not compress, so its object goes up as a multipart upload.
fn file_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("photo.bin")).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..10 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    f.write_all(&data).unwrap();
    dir
}

/// Every version (key, version id) under a prefix, and the delete markers.
async fn versions(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let out = client
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list object versions");
    let pair = |k: Option<&str>, v: Option<&str>| (k.unwrap().to_string(), v.unwrap().to_string());
    (
        out.versions()
            .iter()
            .map(|v| pair(v.key(), v.version_id()))
            .collect(),
        out.delete_markers()
            .iter()
            .map(|m| pair(m.key(), m.version_id()))
            .collect(),
    )
}

fn prune_args<'a>(repo: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "backup",
        "prune",
        "--repo",
        repo,
        "--instance",
        "hmis",
        "--keep-last",
        "1",
    ];
    args.extend_from_slice(extra);
    args
}

fn date(v: &serde_json::Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a date: {v}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_backup_survives_prune_and_deletion_with_the_repositorys_credentials() {
    let env = env();
    let s3 = env.s3_client();
    let (_src, src_url) = env.seeded_database("lock_src").await;
    let (bucket, repo) = locked_bucket(&env, "lock").await;
    let files = file_store();
    let files_dir = files.path().to_str().unwrap();

    let before = Utc::now();
    let out = backup_run(
        &src_url,
        &repo,
        "hmis",
        &["--lock-days", "1", "--files-dir", files_dir, "-o", "json"],
    )
    .await;
    assert_success(&out, "locked backup");
    let locked = json(&out);
    let locked_id = locked["id"].as_str().unwrap().to_string();
    assert_eq!(locked["objectLock"]["mode"], "governance", "{locked}");
    let until = date(&locked["objectLock"]["retainUntil"]);
    assert!(
        until >= before + chrono::Duration::days(1)
            && until <= Utc::now() + chrono::Duration::days(1) + chrono::Duration::seconds(1),
        "one day from the backup: {until}"
    );

    // The store itself holds the date on every object, the manifest included.
    let set_prefix = format!("dhis2/hmis/{locked_id}/");
    // The lease is no part of the set: written while the backup runs, unlocked, removed at the end.
    let not_lease = |(k, _): &(String, String)| !k.ends_with("/lease.json");
    let (set_versions, _) = versions(&s3, &bucket, &set_prefix).await;
    let set_versions: Vec<_> = set_versions.into_iter().filter(not_lease).collect();
    let names: Vec<&str> = set_versions
        .iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap())
        .collect();
    for name in ["manifest.json", "database.pgdump.zst", "filestore.tar.zst"] {
        assert!(names.contains(&name), "{name} stored: {names:?}");
    }
    for (key, version) in &set_versions {
        let retention = s3
            .get_object_retention()
            .bucket(&bucket)
            .key(key)
            .version_id(version)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key} has no retention: {e:?}"));
        let r = retention.retention().unwrap();
        assert_eq!(r.mode().map(|m| m.as_str()), Some("GOVERNANCE"), "{key}");
        assert_eq!(
            r.retain_until_date().map(|d| d.secs()),
            Some(until.timestamp()),
            "{key}"
        );
    }

    let out = backup_run(&src_url, &repo, "hmis", &["-o", "json"]).await;
    assert_success(&out, "unlocked backup");
    let newest = json(&out);
    assert!(newest.get("objectLock").is_none(), "{newest}");

    // list shows the date, in JSON and in the table.
    let out = dhis2ctl(&["backup", "list", "--repo", &repo, "-o", "json"]).await;
    assert_success(&out, "list");
    let listed = json(&out);
    let by_id: HashMap<&str, &serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap(), b))
        .collect();
    assert_eq!(date(&by_id[locked_id.as_str()]["lockedUntil"]), until);
    assert!(by_id[newest["id"].as_str().unwrap()]["lockedUntil"].is_null());
    let out = dhis2ctl(&["backup", "list", "--repo", &repo]).await;
    let table = stdout(&out);
    let shown = until.format("%Y-%m-%d %H:%M:%SZ").to_string();
    assert!(
        table.contains("LOCKED UNTIL") && table.contains(&shown),
        "{table}"
    );

    // Retention expires the locked set; prune skips it, says until when, and does not fail.
    let out = dhis2ctl(&prune_args(&repo, &["-o", "json"])).await;
    assert_success(&out, "prune");
    let report = json(&out);
    assert_eq!(report["deleted"], serde_json::json!([]), "{report}");
    assert_eq!(report["locked"][0]["id"], locked_id.as_str(), "{report}");
    assert_eq!(date(&report["locked"][0]["deletableAfter"]), until);
    let out = dhis2ctl(&prune_args(&repo, &[])).await;
    assert_success(&out, "prune, table");
    assert!(
        stdout(&out).contains(&format!("deletable after {shown}")),
        "{}",
        stdout(&out)
    );
    let out = dhis2ctl(&["backup", "list", "--repo", &repo, "-o", "json"]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 2, "prune kept both");

    // Someone with the repository's own credentials tries to destroy the set: deleting a
    // version is refused, for every object ...
    for (key, version) in &set_versions {
        let refused = s3
            .delete_object()
            .bucket(&bucket)
            .key(key)
            .version_id(version)
            .send()
            .await;
        assert!(refused.is_err(), "deleting {key} {version} was allowed");
    }
    // ... and a plain delete only hides the objects behind delete markers.
    for (key, _) in &set_versions {
        s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect("plain delete");
    }
    let out = dhis2ctl(&["backup", "list", "--repo", &repo, "-o", "json"]).await;
    assert_eq!(
        json(&out).as_array().unwrap().len(),
        1,
        "the hidden set is not listed"
    );

    // The bytes are all there, as the manifest recorded them.
    let manifest_version = set_versions
        .iter()
        .find(|(k, _)| k.ends_with("/manifest.json"))
        .unwrap();
    let manifest_body = s3
        .get_object()
        .bucket(&bucket)
        .key(&manifest_version.0)
        .version_id(&manifest_version.1)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_body).unwrap();
    for object in manifest["objects"].as_array().unwrap() {
        let name = object["name"].as_str().unwrap();
        let (key, version) = set_versions
            .iter()
            .find(|(k, _)| k.ends_with(&format!("/{name}")))
            .unwrap();
        let body = s3
            .get_object()
            .bucket(&bucket)
            .key(key)
            .version_id(version)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(
            hex::encode(Sha256::digest(&body)),
            object["sha256"].as_str().unwrap(),
            "{name} survived byte for byte"
        );
    }

    // Recovery: remove the delete markers (they are not locked); the backup is back, verifies
    // and restores.
    let (_, markers) = versions(&s3, &bucket, &set_prefix).await;
    let markers: Vec<_> = markers.into_iter().filter(not_lease).collect();
    assert_eq!(markers.len(), set_versions.len());
    for (key, marker) in &markers {
        s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .version_id(marker)
            .send()
            .await
            .expect("remove a delete marker");
    }
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        &locked_id,
    ])
    .await;
    assert_success(&out, "verify after recovery");
    let (target, target_url) = env.create_database("lock_restore").await;
    let restored_files = tempfile::tempdir().unwrap();
    let restored_dir = restored_files.path().join("files");
    let out = dhis2ctl(&[
        "backup",
        "restore",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        &locked_id,
        "--database-url",
        &target_url,
        "--files-dir",
        restored_dir.to_str().unwrap(),
    ])
    .await;
    assert_success(&out, "restore after recovery");
    assert_eq!(
        count(&env, &target, "organisationunit").await,
        count(&env, &_src, "organisationunit").await
    );
    assert_eq!(
        std::fs::read(restored_dir.join("photo.bin")).unwrap(),
        std::fs::read(files.path().join("photo.bin")).unwrap()
    );

    // Governance, not compliance: an administrator who asks for the bypass (these test
    // credentials may) can still remove the set, so the test leaves nothing behind.
    let (all, markers) = versions(&s3, &bucket, "").await;
    for (key, version) in all.iter().chain(&markers) {
        s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .version_id(version)
            .bypass_governance_retention(true)
            .send()
            .await
            .expect("governance bypass");
    }
    s3.delete_bucket().bucket(&bucket).send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_deletes_a_locked_backup_once_its_compliance_lock_has_passed() {
    let env = env();
    let s3 = env.s3_client();
    let (_src, src_url) = env.seeded_database("lock_expiry_src").await;
    let (bucket, repo) = locked_bucket(&env, "lock-expiry").await;
    let out = backup_run(
        &src_url,
        &repo,
        "hmis",
        &[
            "--lock-seconds-for-tests",
            "30",
            "--lock-mode",
            "compliance",
            "-o",
            "json",
        ],
    )
    .await;
    assert_success(&out, "locked backup");
    let locked = json(&out);
    let locked_id = locked["id"].as_str().unwrap().to_string();
    assert_eq!(locked["objectLock"]["mode"], "compliance");
    let until = date(&locked["objectLock"]["retainUntil"]);
    let out = backup_run(&src_url, &repo, "hmis", &["--keep-last", "1", "-o", "json"]).await;
    assert_success(&out, "newer backup with retention");
    assert_eq!(
        json(&out)["retention"],
        "kept 1, deleted 0, 1 expired but locked"
    );

    // Compliance: not even the bypass removes a version before the date.
    let (set_versions, _) = versions(&s3, &bucket, &format!("dhis2/hmis/{locked_id}/")).await;
    let (key, version) = set_versions
        .iter()
        .find(|(k, _)| k.ends_with("/manifest.json"))
        .unwrap();
    let refused = s3
        .delete_object()
        .bucket(&bucket)
        .key(key)
        .version_id(version)
        .bypass_governance_retention(true)
        .send()
        .await;
    assert!(
        refused.is_err(),
        "compliance lock bypassed on {key}: {refused:?}"
    );

    let wait = (until - Utc::now()).num_milliseconds() + 1500;
    if wait > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
    }
    let out = dhis2ctl(&prune_args(&repo, &["-o", "json"])).await;
    assert_success(&out, "prune after the lock passed");
    let report = json(&out);
    assert_eq!(
        report["deleted"],
        serde_json::json!([locked_id]),
        "{report}"
    );
    assert_eq!(report["locked"], serde_json::json!([]));
    let keys = env.s3_keys(&bucket).await;
    assert!(
        !keys.iter().any(|k| k.contains(&locked_id)),
        "deleted: {keys:?}"
    );
    // With the lock passed, the old versions can go for good too.
    let (set_versions, _) = versions(&s3, &bucket, &format!("dhis2/hmis/{locked_id}/")).await;
    for (key, version) in &set_versions {
        s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .version_id(version)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key} still locked: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_without_object_lock_is_refused_before_anything_is_written() {
    let env = env();
    let (_src, src_url) = env.seeded_database("lock_refused_src").await;
    let (plain, plain_repo) = env.create_bucket("lock-plain").await;
    // Versioning alone is not object lock.
    let (versioned, versioned_repo) = env.create_bucket("lock-versioned").await;
    env.s3_client()
        .put_bucket_versioning()
        .bucket(&versioned)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    for (bucket, repo) in [(&plain, &plain_repo), (&versioned, &versioned_repo)] {
        let out = backup_run(&src_url, repo, "hmis", &["--lock-days", "7"]).await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_clear_failure(
            &out,
            &format!("bucket {bucket} does not have it enabled (nothing was written)"),
        );
        assert!(stderr(&out).contains("put-object-lock-configuration"));
        let (all, markers) = versions(&env.s3_client(), bucket, "").await;
        assert!(
            all.is_empty() && markers.is_empty(),
            "nothing written: {all:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_flags_that_cannot_apply_are_usage_errors() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("repo");
    let local = local.to_str().unwrap();
    let run = |extra: &'static [&'static str]| {
        let mut args = vec![
            "backup",
            "run",
            "--database-url",
            &env.pg_url,
            "--repo",
            local,
            "--instance",
            "hmis",
        ];
        args.extend_from_slice(extra);
        args
    };

    let out = dhis2ctl(&run(&["--lock-days", "7"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_clear_failure(&out, "a local repository cannot be made immutable");
    assert!(stderr(&out).contains("second repository in an S3 bucket with Object Lock"));
    assert!(
        !dir.path().join("repo").exists(),
        "no repository was created"
    );

    // The same from the environment, as the operator's Jobs will pass it.
    let out = dhis2ctl_with_env(&run(&[]), &[("DHIS2_BACKUP_LOCK_DAYS", "7")]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_clear_failure(&out, "--lock-days: a local repository");

    let out = dhis2ctl(&run(&["--lock-mode", "compliance"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_clear_failure(&out, "--lock-mode: only means something with --lock-days");

    for bad in [
        &["--lock-days", "0"][..],
        &["--lock-days", "7", "--lock-mode", "forever"],
    ] {
        let mut args = run(&[]);
        args.extend_from_slice(bad);
        let out = dhis2ctl(&args).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--lock-"), "{}", stderr(&out));
    }
    assert!(!dir.path().join("repo").exists());
}
