//! TLS to PostgreSQL (`sslmode`, `sslrootcert`, the libpq environment) against the test server,
//! which runs with `ssl=on`, a throw-away CA (`DHIS2_TEST_PG_CA`) and a pg_hba rule that refuses
//! members of `tls_required` any connection without TLS.

mod support;

use support::*;

/// A superuser that may connect only over TLS; returns its URL prefix `postgresql://u:pw@host:port`.
async fn tls_only_role(env: &Env) -> String {
    let role = unique("tls").replace('-', "_");
    let password = format!("pw{:016x}", rand_u64());
    env.client("postgres")
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}' IN ROLE tls_required"
        ))
        .await
        .expect("create role");
    let host_port = env
        .pg_url
        .split_once('@')
        .and_then(|(_, rest)| rest.rsplit_once('/'))
        .map(|(hp, _)| hp.to_string())
        .expect("host:port in DHIS2_TEST_PG_URL");
    format!("postgresql://{role}:{password}@{host_port}")
}

fn rand_u64() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    (t as u64) ^ (u64::from(std::process::id()) << 32)
}

fn test_ca() -> String {
    std::env::var("DHIS2_TEST_PG_CA")
        .expect("DHIS2_TEST_PG_CA is not set: run the tests with scripts/test.sh")
}

/// A CA that did not sign the server's certificate.
fn wrong_ca(dir: &std::path::Path) -> String {
    let key = dir.join("wrong-ca.key");
    let crt = dir.join("wrong-ca.crt");
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=not the server's CA", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl failed");
    crt.display().to_string()
}

#[tokio::test]
async fn require_encrypts_every_connection_and_disable_is_refused() {
    let env = env();
    let (source, _) = env.seeded_database("tls_src").await;
    let (target, _) = env.create_database("tls_dst").await;
    let base = tls_only_role(&env).await;
    let repo = tempfile::tempdir().expect("tempdir");
    let repo = repo.path().to_str().expect("utf-8 path");

    // Without TLS the server refuses this role: proves sslmode reaches the connection.
    let out = backup_run(
        &format!("{base}/{source}?sslmode=disable"),
        repo,
        "hmis",
        &[],
    )
    .await;
    assert_clear_failure(&out, "no encryption");

    // require: our own connection, pg_dump and pg_restore all get TLS.
    let out = backup_run(
        &format!("{base}/{source}?sslmode=require"),
        repo,
        "hmis",
        &[],
    )
    .await;
    assert_success(&out, "backup with sslmode=require");
    let target_url = format!("{base}/{target}?sslmode=require");
    let out = dhis2ctl(&restore_args(repo, &target_url, &[])).await;
    assert_success(&out, "restore with sslmode=require");
    let restored: i64 = env
        .client(&target)
        .await
        .query_one("SELECT count(*) FROM organisationunit", &[])
        .await
        .expect("count")
        .get(0);
    assert!(restored > 1000, "restored {restored} org units");
}

#[tokio::test]
async fn verify_full_trusts_only_the_right_ca() {
    let env = env();
    let (source, _) = env.seeded_database("tls_vf").await;
    let base = tls_only_role(&env).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let repo = repo.to_str().expect("utf-8 path");

    // The right CA, in the URL.
    let url = format!(
        "{base}/{source}?sslmode=verify-full&sslrootcert={}",
        test_ca()
    );
    assert_success(
        &backup_run(&url, repo, "hmis", &[]).await,
        "backup with verify-full and the right CA",
    );

    // The right CA, from the libpq environment (URL without parameters).
    let out = dhis2ctl_with_env(
        &[
            "backup",
            "run",
            "--database-url",
            &format!("{base}/{source}"),
            "--repo",
            repo,
            "--instance",
            "hmis",
        ],
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &test_ca())],
    )
    .await;
    assert_success(&out, "backup with PGSSLMODE=verify-full");

    // A CA that did not sign the server certificate: refused, nothing stored.
    let before = dhis2ctl(&["backup", "list", "--repo", repo, "-o", "json"]).await;
    let before = json(&before).as_array().map(Vec::len);
    let wrong = wrong_ca(dir.path());
    let out = backup_run(
        &format!("{base}/{source}?sslmode=verify-full&sslrootcert={wrong}"),
        repo,
        "hmis",
        &[],
    )
    .await;
    assert_clear_failure(&out, "certificate");
    let after = dhis2ctl(&["backup", "list", "--repo", repo, "-o", "json"]).await;
    assert_eq!(json(&after).as_array().map(Vec::len), before);

    // verify-full without a CA: told what to add.
    let out = backup_run(
        &format!("{base}/{source}?sslmode=verify-full"),
        repo,
        "hmis",
        &[],
    )
    .await;
    assert_clear_failure(&out, "sslrootcert");
}
