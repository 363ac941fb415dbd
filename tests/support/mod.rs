//! Test harness: real PostgreSQL and real SeaweedFS, started by scripts/test.sh (which exports
//! DHIS2_TEST_PG_URL, DHIS2_TEST_S3_ENDPOINT and AWS credentials). Tests drive the real
//! `dhis2ctl` binary the way an administrator would.
#![allow(dead_code)]

pub mod age_keys;
pub mod cluster_objects;
pub mod cnpg;
pub mod drill_server;
pub mod fixtures;
pub mod job_kubelet;
pub mod kube_env;
pub mod migrating_dhis2;
pub mod prometheus;
pub mod proxy;
pub mod real_dhis2;
pub mod real_node;
pub mod runbook;
pub mod world;

use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use tokio::process::Command;
use tokio_postgres::NoTls;

static COUNTER: AtomicU32 = AtomicU32::new(0);

#[derive(Clone)]
pub struct Env {
    pub pg_url: String,
    pub s3_endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

pub fn env() -> Env {
    let get = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the tests with scripts/test.sh, which starts PostgreSQL and SeaweedFS")
        })
    };
    Env {
        pg_url: get("DHIS2_TEST_PG_URL"),
        s3_endpoint: get("DHIS2_TEST_S3_ENDPOINT"),
        access_key: get("AWS_ACCESS_KEY_ID"),
        secret_key: get("AWS_SECRET_ACCESS_KEY"),
    }
}

/// A name unique to this test run: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        run_tag()
    )
}

/// Four hex digits fixed for one test process: a re-used pid on a long-lived test server (earlier
/// runs' databases and buckets are still there) does not give the same names again.
fn run_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        format!("{:04x}", (nanos >> 10) & 0xffff)
    })
}

impl Env {
    /// The server URL with another database name.
    pub fn url_for(&self, db: &str) -> String {
        let base = self
            .pg_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&self.pg_url);
        format!("{base}/{db}")
    }

    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url_for(db), NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        client
    }

    /// A fresh, empty database; returns its URL.
    pub async fn create_database(&self, prefix: &str) -> (String, String) {
        let name = unique(prefix).replace('-', "_");
        let admin = self.client("postgres").await;
        static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        SWEPT
            .get_or_init(|| drop_databases_of_finished_runs(&admin))
            .await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        (name.clone(), self.url_for(&name))
    }

    /// A fresh database filled by `dhis2ctl demo seed --scale small`.
    pub async fn seeded_database(&self, prefix: &str) -> (String, String) {
        let (name, url) = self.create_database(prefix).await;
        let out = dhis2ctl(&["demo", "seed", "--database-url", &url]).await;
        assert_success(&out, "demo seed");
        (name, url)
    }

    pub fn s3_client(&self) -> Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.s3_endpoint)
            .force_path_style(true)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "test",
            ))
            .build();
        Client::from_conf(config)
    }

    /// A fresh bucket; returns `s3://bucket/prefix`.
    pub async fn create_bucket(&self, prefix: &str) -> (String, String) {
        let bucket = unique(prefix);
        self.s3_client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create bucket");
        (bucket.clone(), format!("s3://{bucket}/dhis2"))
    }

    pub async fn s3_keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .s3_client()
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list bucket");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// Every secret the tests use: none may ever appear in dhis2ctl's output.
    pub fn secrets(&self) -> Vec<String> {
        let pg_password = self
            .pg_url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, pw)| pw.to_string());
        let mut secrets = vec![self.secret_key.clone()];
        secrets.extend(pg_password);
        secrets
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_dhis2ctl")
}

/// Runs dhis2ctl with the S3 endpoint of the test environment; checks no secret leaks.
pub async fn dhis2ctl(args: &[&str]) -> Output {
    dhis2ctl_with_env(args, &[]).await
}

/// `dhis2ctl backup run --database-url URL --repo REPO --instance INSTANCE EXTRA…`
pub async fn backup_run(url: &str, repo: &str, instance: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "backup",
        "run",
        "--database-url",
        url,
        "--repo",
        repo,
        "--instance",
        instance,
    ];
    args.extend_from_slice(extra);
    dhis2ctl(&args).await
}

/// A seeded source database and its one backup (see [`backed_up`]).
pub struct BackedUp {
    /// The source database's name and URL.
    pub db: String,
    pub url: String,
    /// What `backup run -o json` reported.
    pub report: serde_json::Value,
}

impl BackedUp {
    /// The backup's id.
    pub fn id(&self) -> String {
        self.report["id"]
            .as_str()
            .expect("the backup's id")
            .to_string()
    }
}

/// A fresh database named after `prefix`, filled by `demo seed`, backed up once as instance
/// `hmis` into `repo` (`backup run … EXTRA -o json`, which must succeed): what a test then
/// breaks or restores.
pub async fn backed_up(env: &Env, prefix: &str, repo: &str, extra: &[&str]) -> BackedUp {
    let (db, url) = env.seeded_database(prefix).await;
    let mut args = extra.to_vec();
    args.extend(["-o", "json"]);
    let out = backup_run(&url, repo, "hmis", &args).await;
    assert_success(&out, "backup");
    BackedUp {
        db,
        url,
        report: json(&out),
    }
}

/// Flips the bits of `mask` in the byte at `at` of a file (the last byte if `at` is past the
/// end): damage a backup's checksums must catch.
pub fn flip_byte(path: &std::path::Path, at: usize, mask: u8) {
    let mut data = std::fs::read(path).unwrap();
    let i = at.min(data.len() - 1);
    data[i] ^= mask;
    std::fs::write(path, data).unwrap();
}

/// `SELECT count(*) FROM table` in database `db`.
pub async fn count(env: &Env, db: &str, table: &str) -> i64 {
    env.client(db)
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"))
        .get(0)
}

/// `backup restore --repo REPO --instance hmis latest --database-url URL EXTRA…`
pub fn restore_args<'a>(repo: &'a str, url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "backup",
        "restore",
        "--repo",
        repo,
        "--instance",
        "hmis",
        "latest",
        "--database-url",
        url,
    ];
    args.extend_from_slice(extra);
    args
}

/// Databases whose names match a LIKE pattern (side and replaced databases of a restore).
pub async fn databases_like(env: &Env, pattern: &str) -> Vec<String> {
    env.client("postgres")
        .await
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1 ORDER BY 1",
            &[&pattern],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub async fn dhis2ctl_with_env(args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let env = env();
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("DHIS2_S3_ENDPOINT", &env.s3_endpoint)
        .env_remove("DHIS2_LOG");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run dhis2ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in env.secrets() {
        assert!(
            !text.contains(&secret),
            "dhis2ctl {args:?} printed a secret:\n{text}"
        );
    }
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// A failure with exactly one line on stderr containing `needle`.
pub fn assert_clear_failure(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        stdout(out)
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "expected one line of error, got:\n{err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

/// The ids `dhis2ctl backup list --repo REPO [--instance NAME] -o json` lists, in its order
/// (newest first); the listing must succeed.
pub async fn listed_backup_ids(repo: &str, instance: Option<&str>) -> Vec<String> {
    let mut args = vec!["backup", "list", "--repo", repo, "-o", "json"];
    if let Some(name) = instance {
        args.extend(["--instance", name]);
    }
    let out = dhis2ctl(&args).await;
    assert_success(&out, "backup list");
    json(&out)
        .as_array()
        .unwrap_or_else(|| panic!("backup list -o json: {}", stdout(&out)))
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect()
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(out), stderr(out)))
}

/// Drops the databases earlier test processes left behind (named by [`unique`]: `…_<pid>_<n>_<tag>`)
/// whose process has ended, once per test process: on a long-lived test server they would
/// otherwise fill the disk (SeaweedFS then turns its volumes read-only). A database of a process
/// still running, and any template, is left alone. Best effort: a failure only leaves them.
async fn drop_databases_of_finished_runs(admin: &tokio_postgres::Client) {
    let Ok(rows) = admin
        .query(
            "SELECT datname FROM pg_database WHERE NOT datistemplate \
             AND datname ~ '_[0-9]+_[0-9]+_[0-9a-f]{4}$'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let mut parts = name.rsplit('_');
        let (_tag, _n, pid) = (parts.next(), parts.next(), parts.next());
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
}
