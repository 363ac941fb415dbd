//! docs/emergency-restore.md promises a backup restores with standard tools alone (sha256sum, zstd,
//! pg_restore, tar). This test runs exactly those steps, without dhis2ctl.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restores_with_standard_tools_alone() {
    let env = env();
    let (src, src_url) = env.seeded_database("emerg_src").await;
    let repo = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("document")).unwrap();
    std::fs::write(files.path().join("document/report.txt"), "របាយការណ៍").unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("dhis.conf");
    std::fs::write(&conf, "encryption.password = abc123\n").unwrap();
    let out = backup_run(
        &src_url,
        repo.path().to_str().unwrap(),
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
    assert_success(&out, "backup");
    let id = json(&out)["id"].as_str().unwrap().to_string();
    let (dst, dst_url) = env.create_database("emerg_dst").await;
    let restored = tempfile::tempdir().unwrap();

    // The same steps as docs/emergency-restore.md, "Emergency restore with standard tools alone".
    let script = r#"
        set -euo pipefail
        cd "$BACKUP"
        jq -r '.objects[] | "\(.sha256)  \(.name)"' manifest.json | sha256sum -c --quiet
        psql -v ON_ERROR_STOP=1 -q "$TARGET" -c 'CREATE EXTENSION IF NOT EXISTS postgis'
        zstd -dc database.pgdump.zst | pg_restore --no-owner --no-privileges --exit-on-error -d "$TARGET"
        mkdir -p "$FILES" && zstd -dc filestore.tar.zst | tar -x -C "$FILES" --strip-components=1
        zstd -dc dhis.conf.zst > "$CONF" && chmod 600 "$CONF"
    "#;
    let backup = repo.path().join("hmis").join(&id);
    run_steps(script, &backup, &dst_url, &[], restored.path());
    assert_restored(&env, &src, &dst, restored.path()).await;
}

/// The same for an encrypted backup: `age -d -i key.txt` (Debian package age) in front of zstd.
#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_backup_restores_with_the_age_cli_and_standard_tools() {
    let env = env();
    let (src, src_url) = env.seeded_database("emerg_age_src").await;
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key.txt");
    let made = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("age-keygen (Debian package age)");
    assert!(made.success());
    let public = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .expect("age-keygen -y");
    let public = String::from_utf8(public.stdout).unwrap().trim().to_string();
    let repo = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("document")).unwrap();
    std::fs::write(files.path().join("document/report.txt"), "របាយការណ៍").unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("dhis.conf");
    std::fs::write(&conf, "encryption.password = abc123\n").unwrap();
    let out = backup_run(
        &src_url,
        repo.path().to_str().unwrap(),
        "hmis",
        &[
            "--encrypt-to",
            &public,
            "--files-dir",
            files.path().to_str().unwrap(),
            "--dhis-conf",
            conf.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await;
    assert_success(&out, "backup");
    let id = json(&out)["id"].as_str().unwrap().to_string();
    let (dst, dst_url) = env.create_database("emerg_age_dst").await;
    let restored = tempfile::tempdir().unwrap();

    // The same steps as docs/emergency-restore.md (encrypted backups).
    let script = r#"
        set -euo pipefail
        cd "$BACKUP"
        jq -r '.objects[] | "\(.sha256)  \(.name)"' manifest.json | sha256sum -c --quiet
        psql -v ON_ERROR_STOP=1 -q "$TARGET" -c 'CREATE EXTENSION IF NOT EXISTS postgis'
        age -d -i "$KEY" database.pgdump.zst.age | zstd -dc | pg_restore --no-owner --no-privileges --exit-on-error -d "$TARGET"
        mkdir -p "$FILES" && age -d -i "$KEY" filestore.tar.zst.age | zstd -dc | tar -x -C "$FILES" --strip-components=1
        age -d -i "$KEY" dhis.conf.zst.age | zstd -dc > "$CONF" && chmod 600 "$CONF"
    "#;
    let backup = repo.path().join("hmis").join(&id);
    run_steps(
        script,
        &backup,
        &dst_url,
        &[("KEY", key.as_os_str())],
        restored.path(),
    );
    assert_restored(&env, &src, &dst, restored.path()).await;
}

/// Runs the page's steps (`script`, bash) on one backup set into `target`, the file store and
/// dhis.conf into `restored`.
fn run_steps(
    script: &str,
    backup: &std::path::Path,
    target: &str,
    extra_env: &[(&str, &std::ffi::OsStr)],
    restored: &std::path::Path,
) {
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("BACKUP", backup)
        .env("TARGET", target)
        .envs(extra_env.iter().copied())
        .env("FILES", restored.join("files"))
        .env("CONF", restored.join("dhis.conf"))
        .status()
        .expect("bash");
    assert!(status.success(), "the emergency restore steps failed");
}

/// The restored database holds what the source held (data, geometries, sequences), the file
/// store its Khmer file, dhis.conf its `encryption.password`.
async fn assert_restored(env: &Env, src: &str, dst: &str, restored: &std::path::Path) {
    let src_client = env.client(src).await;
    let dst_client = env.client(dst).await;
    for sql in [
        "SELECT count(*) FROM datavalue",
        "SELECT count(*) FROM organisationunit WHERE geometry IS NOT NULL",
        "SELECT last_value FROM hibernate_sequence",
    ] {
        let a: i64 = src_client.query_one(sql, &[]).await.unwrap().get(0);
        let b: i64 = dst_client.query_one(sql, &[]).await.unwrap().get(0);
        assert_eq!(a, b, "{sql}");
    }
    assert_eq!(
        std::fs::read_to_string(restored.join("files/document/report.txt")).unwrap(),
        "របាយការណ៍"
    );
    assert_eq!(
        std::fs::read_to_string(restored.join("dhis.conf")).unwrap(),
        "encryption.password = abc123\n"
    );
}
