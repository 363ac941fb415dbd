//! `backup run --verify`: the backup is re-read from the repository after its manifest is
//! written, and a backup that does not read back as it was written fails, stays listed, and
//! makes no older backup expire.

mod support;

use std::sync::atomic::Ordering;

use support::proxy::CorruptingS3;
use support::*;

/// One bucket for this file's tests, each under its own prefix: the shared SeaweedFS spends a
/// volume per bucket and has few.
static BUCKET: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// `(bucket, s3://bucket/PREFIX, PREFIX)` for one test.
async fn s3_area(env: &Env, name: &str) -> (String, String, String) {
    let bucket = BUCKET
        .get_or_init(|| async { env.create_bucket("verify").await.0 })
        .await
        .clone();
    let prefix = unique(name);
    let repo = format!("s3://{bucket}/{prefix}");
    (bucket, repo, prefix)
}

/// Removes what one test stored under its prefix.
async fn drop_area(env: &Env, bucket: &str, prefix: &str) {
    let s3 = env.s3_client();
    for key in env.s3_keys(bucket).await {
        if key.starts_with(&format!("{prefix}/")) {
            let _ = s3.delete_object().bucket(bucket).key(key).send().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verified_backup_says_so_in_its_output_and_its_report() {
    let env = env();
    let (_db, url) = env.seeded_database("verify_ok").await;
    let (bucket, repo, prefix) = s3_area(&env, "verify-ok").await;
    let dir = tempfile::tempdir().unwrap();
    let report_file = dir.path().join("report.json");

    let out = backup_run(
        &url,
        &repo,
        "hmis",
        &[
            "--verify",
            "--report-file",
            report_file.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await;
    assert_success(&out, "backup run --verify");
    let printed = json(&out);
    assert_eq!(printed["verified"], true, "{printed}");
    assert_eq!(printed["contentsChecked"], true, "{printed}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report["kind"], "backup", "{report}");
    assert_eq!(report["id"], printed["id"]);
    assert_eq!(report["verified"], true, "{report}");

    // Without --verify nothing claims a verification.
    let out = backup_run(&url, &repo, "hmis", &["-o", "json"]).await;
    assert_success(&out, "backup run");
    assert!(json(&out).get("verified").is_none(), "{}", stdout(&out));

    // DHIS2_BACKUP_VERIFY, and an encrypted backup verified without its private key: sizes,
    // checksums and age headers.
    let (_identity, public_key) = support::age_keys::age_keygen(dir.path(), "key.txt");
    let out = dhis2ctl_with_env(
        &[
            "backup",
            "run",
            "--database-url",
            &url,
            "--repo",
            &repo,
            "--instance",
            "hmis",
            "--encrypt-to",
            &public_key,
        ],
        &[("DHIS2_BACKUP_VERIFY", "true")],
    )
    .await;
    assert_success(&out, "encrypted backup run with DHIS2_BACKUP_VERIFY=true");
    let text = stdout(&out);
    assert!(
        text.contains("verified   every object re-read, sizes, SHA-256 and age headers match")
            && text.contains("private key is not here"),
        "{text}"
    );

    // A passphrase backup is verified to its contents: the passphrase that wrote it opens it.
    let passphrase = format!("verify {:x}", rand::random::<u64>());
    let out = dhis2ctl_with_env(
        &[
            "backup",
            "run",
            "--database-url",
            &url,
            "--repo",
            &repo,
            "--instance",
            "hmis",
            "--verify",
        ],
        &[("DHIS2_BACKUP_PASSPHRASE", &passphrase)],
    )
    .await;
    assert_success(&out, "passphrase backup run --verify");
    let text = stdout(&out);
    assert!(
        text.contains("verified   every object re-read, sizes and SHA-256 match, contents decode"),
        "{text}"
    );
    assert!(!text.contains(&passphrase) && !stderr(&out).contains(&passphrase));
    drop_area(&env, &bucket, &prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_that_does_not_read_back_fails_verification_and_stays_listed() {
    let env = env();
    let (_db, url) = env.seeded_database("verify_bad").await;
    let (bucket, repo, prefix) = s3_area(&env, "verify-bad").await;
    // The store hands back the dump with one byte changed; what it stored is intact.
    let proxy = CorruptingS3::start(env.s3_endpoint.clone(), "database.pgdump.zst").await;
    let through_proxy = ["--s3-endpoint", proxy.endpoint.as_str()];

    // Writing through the proxy works: only reading the dump back is corrupted.
    let out = backup_run(&url, &repo, "hmis", &through_proxy).await;
    assert_success(&out, "a backup through the proxy, not verified");
    assert_eq!(proxy.corrupted.load(Ordering::SeqCst), 0);
    let first = listed_backup_ids(&repo, Some("hmis")).await;
    assert_eq!(first.len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let report_file = dir.path().join("report.json");
    let mut args = through_proxy.to_vec();
    let report_path = report_file.to_str().unwrap();
    args.extend(["--verify", "--keep-last", "1", "--report-file", report_path]);
    let out = backup_run(&url, &repo, "hmis", &args).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_clear_failure(&out, "failed verification and must not be relied on");
    let err = stderr(&out);
    assert!(
        err.contains("database.pgdump.zst: SHA-256 is ") && err.contains("the manifest says"),
        "{err}"
    );
    assert!(proxy.corrupted.load(Ordering::SeqCst) > 0);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report["kind"], "failed", "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("failed verification"),
        "{report}"
    );

    // Nothing was deleted: the unverified set stays listed, and retention (keep 1) did not run,
    // so the older backup is there too.
    let listed = listed_backup_ids(&repo, Some("hmis")).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&first[0]), "{listed:?}");
    let unverified = listed.iter().find(|id| **id != first[0]).unwrap();
    assert!(err.contains(unverified.as_str()), "{err}");

    // Read without the proxy, what the store holds is intact: `backup verify` says so.
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        unverified,
    ])
    .await;
    assert_success(&out, "backup verify of the stored set");
    drop_area(&env, &bucket, &prefix).await;
}
