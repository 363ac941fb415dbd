//! `backup run --keep-*`: retention applied right after a successful backup (what a schedule's
//! backups do in the cluster), reported in the output and in the Job report.

mod support;

use support::*;

fn keys_of<'a>(keys: &'a [String], id: &str) -> Vec<&'a String> {
    keys.iter()
        .filter(|k| k.contains(&format!("/{id}/")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_run_with_a_policy_prunes_after_the_backup_and_reports_it() {
    let env = env();
    let (_src, src_url) = env.seeded_database("retain_src").await;
    let (bucket, repo) = env.create_bucket("retain").await;
    let mut ids = vec![];
    for _ in 0..3 {
        let out = backup_run(&src_url, &repo, "hmis", &["-o", "json"]).await;
        assert_success(&out, "backup");
        let report = json(&out);
        assert!(
            report.get("retention").is_none(),
            "no policy, no retention: {report}"
        );
        ids.push(report["id"].as_str().unwrap().to_string());
    }
    let out = backup_run(&src_url, &repo, "training", &[]).await;
    assert_success(&out, "backup of another instance");

    let dir = tempfile::tempdir().unwrap();
    let report_file = dir.path().join("report.json");
    let out = backup_run(
        &src_url,
        &repo,
        "hmis",
        &[
            "--keep-last",
            "2",
            "--time-zone",
            "Asia/Phnom_Penh",
            "--report-file",
            report_file.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await;
    assert_success(&out, "backup with retention");
    let printed = json(&out);
    let newest = printed["id"].as_str().unwrap().to_string();
    assert_eq!(printed["retention"], "kept 2, deleted 2", "{printed}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report["kind"], "backup");
    assert_eq!(report["id"], newest.as_str());
    assert_eq!(report["retention"], "kept 2, deleted 2");

    let keys = env.s3_keys(&bucket).await;
    assert!(
        keys_of(&keys, &ids[0]).is_empty(),
        "oldest deleted: {keys:?}"
    );
    assert!(
        keys_of(&keys, &ids[1]).is_empty(),
        "second oldest deleted: {keys:?}"
    );
    assert!(!keys_of(&keys, &ids[2]).is_empty(), "kept: {keys:?}");
    assert!(
        !keys_of(&keys, &newest).is_empty(),
        "the new backup: {keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.contains("/training/")),
        "another instance is never touched: {keys:?}"
    );

    // The human output says it too.
    let out = backup_run(&src_url, &repo, "hmis", &["--keep-last", "2"]).await;
    assert_success(&out, "backup with retention, human output");
    assert!(
        stdout(&out).contains("retention  kept 2, deleted 1"),
        "{}",
        stdout(&out)
    );
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

    // A policy that keeps nothing is refused before anything is backed up.
    let before = env.s3_keys(&bucket).await.len();
    let out = backup_run(&src_url, &repo, "hmis", &["--keep-last", "0"]).await;
    assert_clear_failure(&out, "--keep-last 0");
    assert_eq!(env.s3_keys(&bucket).await.len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retention_that_cannot_delete_is_a_warning_and_the_backup_stands() {
    let env = env();
    let (_src, src_url) = env.seeded_database("retain_fail_src").await;
    let (_bucket, repo) = env.create_bucket("retain-fail").await;
    for _ in 0..2 {
        assert_success(&backup_run(&src_url, &repo, "hmis", &[]).await, "backup");
    }
    // Append-only credentials: the backup is written, the deletions are refused.
    let proxy = support::proxy::AppendOnlyS3::start(env.s3_endpoint.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let report_file = dir.path().join("report.json");
    let out = backup_run(
        &src_url,
        &repo,
        "hmis",
        &[
            "--s3-endpoint",
            &proxy.endpoint,
            "--keep-last",
            "1",
            "--report-file",
            report_file.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await;
    assert_success(&out, "the backup itself");
    assert!(
        proxy.refused.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "retention tried to delete"
    );
    let printed = json(&out);
    let retention = printed["retention"].as_str().unwrap();
    assert!(retention.starts_with("retention failed: "), "{retention}");
    assert!(
        retention.contains("Access Denied") || retention.contains("AccessDenied"),
        "{retention}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(
        report["kind"], "backup",
        "a backup report, not a failure: {report}"
    );
    assert_eq!(report["id"], printed["id"]);
    assert_eq!(report["retention"], retention);
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains("retention after the backup failed"),
        "{err}"
    );

    // All three backups are listed and complete.
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
    let listed = json(&out);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == printed["id"])
    );
}
