//! `--metrics-textfile`: on a plain server, `backup run` and `drill` write the backup and drill
//! metrics into one node_exporter textfile per instance, which `promtool check metrics` accepts;
//! a failed backup counts in it, and a file that cannot be written never fails a backup.

mod support;

use std::path::Path;

use support::prometheus::{assert_no_instance_label, assert_promtool_accepts_metrics};
use support::*;

/// `name{…dhis2_instance="INSTANCE"…} VALUE` in the file, as a number.
fn value(text: &str, metric: &str, instance: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| l.contains(&format!("dhis2_instance=\"{instance}\"")))
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
}

fn promtool_accepts(path: &Path) {
    let text = std::fs::read_to_string(path).expect("read the textfile");
    assert_promtool_accepts_metrics(&text, &path.display().to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_and_drills_share_one_textfile_that_promtool_accepts() {
    let env = env();
    let (_src, src_url) = env.seeded_database("textfile_src").await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let textfile = dir.path().join("dhis2_backup_hmis.prom");
    let textfile_arg = textfile.to_str().unwrap();

    // A successful backup writes the last-success series and the failure counter at 0.
    let out = backup_run(
        &src_url,
        repo_path,
        "hmis",
        &["--metrics-textfile", textfile_arg, "-o", "json"],
    )
    .await;
    assert_success(&out, "backup with --metrics-textfile");
    let manifest = json(&out);
    promtool_accepts(&textfile);
    let text = std::fs::read_to_string(&textfile).unwrap();
    let completed = chrono::DateTime::parse_from_rfc3339(manifest["completedAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0;
    assert_eq!(
        value(&text, "dhis2_backup_last_success_timestamp_seconds", "hmis"),
        Some(completed),
        "{text}"
    );
    let size = value(&text, "dhis2_backup_last_size_bytes", "hmis").expect("size");
    assert!(size > 0.0, "{text}");
    assert!(value(&text, "dhis2_backup_last_duration_seconds", "hmis").is_some());
    assert_eq!(
        value(&text, "dhis2_backup_failures_total", "hmis"),
        Some(0.0)
    );
    assert!(text.contains("# TYPE dhis2_backup_failures_total counter"));
    assert!(
        text.contains("{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"}"),
        "{text}"
    );
    assert_no_instance_label(&text, "the textfile");
    let id = manifest["id"].as_str().unwrap();
    assert!(!text.contains(id), "never a backup id in the file: {text}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() == 1,
        "no temporary file is left beside it"
    );

    // A failed backup (wrong password), given through the environment this time, counts one
    // failure and leaves the last success as it was.
    let wrong_pw = src_url.replacen("postgres:", "postgres:not-the-password", 1);
    let out = dhis2ctl_with_env(
        &[
            "backup",
            "run",
            "--database-url",
            &wrong_pw,
            "--repo",
            repo_path,
            "--instance",
            "hmis",
        ],
        &[("DHIS2_METRICS_TEXTFILE", textfile_arg)],
    )
    .await;
    assert_clear_failure(&out, "password authentication failed");
    promtool_accepts(&textfile);
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(
        value(&text, "dhis2_backup_failures_total", "hmis"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "dhis2_backup_last_success_timestamp_seconds", "hmis"),
        Some(completed),
        "{text}"
    );
    assert!(!text.contains("not-the-password") && !text.contains("authentication"));

    // A drill adds its series to the same file and keeps the backup's.
    let (_scratch, scratch_url) = env.create_database("textfile_scratch").await;
    let out = dhis2ctl(&[
        "drill",
        "--repo",
        repo_path,
        "--instance",
        "hmis",
        "--scratch-database-url",
        &scratch_url,
        "--metrics-textfile",
        textfile_arg,
        "--metrics-environment",
        "production",
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "drill with --metrics-textfile");
    let report = json(&out);
    promtool_accepts(&textfile);
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(
        value(&text, "dhis2_drill_last_success", "hmis"),
        Some(1.0),
        "{text}"
    );
    assert!(value(&text, "dhis2_drill_last_timestamp_seconds", "hmis").is_some());
    assert_eq!(
        value(&text, "dhis2_drill_last_rpo_seconds", "hmis"),
        report["rpoSeconds"].as_f64(),
        "{text}"
    );
    assert!(value(&text, "dhis2_drill_last_rto_seconds", "hmis").is_some_and(|s| s > 0.0));
    assert_eq!(
        value(&text, "dhis2_backup_failures_total", "hmis"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "dhis2_backup_last_success_timestamp_seconds", "hmis"),
        Some(completed),
        "{text}"
    );
    assert!(
        !text.contains("environment=\"\""),
        "--metrics-environment labels every series of the instance: {text}"
    );
    assert_eq!(
        text.matches("environment=\"production\"").count(),
        8,
        "{text}"
    );

    // A drill that fails before measuring (no such backup) records a failed drill without
    // the previous drill's RTO/RPO, and exits non-zero as before.
    let out = dhis2ctl(&[
        "drill",
        "--repo",
        repo_path,
        "--instance",
        "hmis",
        "--backup",
        "20000101T000000Z-nope",
        "--scratch-database-url",
        &scratch_url,
        "--metrics-textfile",
        textfile_arg,
    ])
    .await;
    assert!(!out.status.success(), "{}", stderr(&out));
    promtool_accepts(&textfile);
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(
        value(&text, "dhis2_drill_last_success", "hmis"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(value(&text, "dhis2_drill_last_rto_seconds", "hmis"), None);
    assert_eq!(value(&text, "dhis2_drill_last_rpo_seconds", "hmis"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_textfile_that_cannot_be_written_is_a_warning_not_a_failed_backup() {
    let env = env();
    let (_src, src_url) = env.seeded_database("textfile_unwritable").await;
    let repo = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir
        .path()
        .join("no-such-dir")
        .join("dhis2_backup_hmis.prom");
    let out = backup_run(
        &src_url,
        repo.path().to_str().unwrap(),
        "hmis",
        &["--metrics-textfile", missing.to_str().unwrap()],
    )
    .await;
    assert_success(&out, "backup with an unwritable textfile");
    let err = stderr(&out);
    assert!(err.contains("warning:"), "{err}");
    assert!(
        err.contains(missing.to_str().unwrap()),
        "names the path: {err}"
    );
    assert!(err.contains("mkdir -p"), "says how to fix it: {err}");
    assert!(!missing.exists());
    let out = dhis2ctl(&[
        "backup",
        "list",
        "--repo",
        repo.path().to_str().unwrap(),
        "-o",
        "json",
    ])
    .await;
    assert_eq!(
        json(&out).as_array().unwrap().len(),
        1,
        "the backup is there"
    );
}
