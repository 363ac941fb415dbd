//! DHIS2's real 2.42 database (`shared/testdata/dhis2-2.42-real.sql.gz`: the schema DHIS2's own
//! Flyway migrations build, with FK-valid data) for tests, and the comparisons that prove a copy
//! of it is identical.
//!
//! The file is loaded once per server into a template database named after the file's hash; each
//! test then gets a fast `CREATE DATABASE … TEMPLATE` copy of its own:
//! `env.real_dhis2_database("prefix")` → `(name, url)`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::{Env, unique};

/// Overrides where the real database dump is read from.
pub const REAL_DHIS2_SQL_VAR: &str = "DHIS2_TEST_REAL_DHIS2_SQL";

/// Serialises template creation across test processes (any fixed key; "dhis2rea" in ASCII).
const TEMPLATE_LOCK_KEY: i64 = 0x6468_6973_3272_6561;

/// The dump's path: `$DHIS2_TEST_REAL_DHIS2_SQL`, else `shared/testdata/` beside the repository,
/// as CI lays it out. A missing file fails the test: it must never pass by skipping.
pub fn real_dhis2_sql_path() -> PathBuf {
    let path = std::env::var_os(REAL_DHIS2_SQL_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/dhis2-2.42-real.sql.gz")
        });
    assert!(
        path.is_file(),
        "the real DHIS2 test database {} is missing: these tests need shared/testdata/ beside the \
         repository (../shared/testdata/dhis2-2.42-real.sql.gz from the repository root), or \
         {REAL_DHIS2_SQL_VAR} set to the file's path",
        path.display()
    );
    path
}

/// A PostgreSQL client tool: the newest `/usr/lib/postgresql/<major>/bin/<name>`, else `PATH`.
pub fn pg_client_tool(name: &str) -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let tool = e.path().join("bin").join(name);
            tool.is_file().then_some((major, tool))
        })
        .max_by_key(|(major, _)| *major);
    newest
        .map(|(_, tool)| tool)
        .unwrap_or_else(|| PathBuf::from(name))
}

impl Env {
    /// A fresh database holding DHIS2's real 2.42 database (from its template, created on first
    /// use); returns its name and URL. Connected to as the superuser of `DHIS2_TEST_PG_URL`.
    pub async fn real_dhis2_database(&self, prefix: &str) -> (String, String) {
        let template = self.real_dhis2_template().await;
        let name = unique(prefix).replace('-', "_");
        self.client("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .unwrap_or_else(|e| panic!("create {name} from {template}: {e}"));
        (name.clone(), self.url_for(&name))
    }

    /// The template database, loaded from the dump unless a complete one exists. Completeness is
    /// the database comment, set last; it names the server's start time too, because a crash
    /// empties the template's UNLOGGED analytics tables.
    async fn real_dhis2_template(&self) -> String {
        let path = real_dhis2_sql_path();
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let hash = hex::encode(Sha256::digest(&bytes));
        let template = format!("dhis2_real_template_{}", &hash[..16]);

        let admin = self.client("postgres").await;
        admin
            .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK_KEY])
            .await
            .expect("take the template lock");
        let started: String = admin
            .query_one(
                "SELECT extract(epoch FROM pg_postmaster_start_time())::text",
                &[],
            )
            .await
            .expect("read the server start time")
            .get(0);
        let complete = format!("complete: sha256 {hash}, server started {started}");
        let existing = admin
            .query_opt(
                "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = $1",
                &[&template],
            )
            .await
            .expect("look for the template")
            .map(|r| r.get::<_, String>(0));
        if existing.as_deref() != Some(complete.as_str()) {
            if existing.is_some() {
                // A load interrupted, or analytics emptied by a crash: start again.
                // Two queries: DROP DATABASE refuses to run inside a multi-statement one.
                for sql in [
                    format!("ALTER DATABASE {template} IS_TEMPLATE false"),
                    format!("DROP DATABASE {template} WITH (FORCE)"),
                ] {
                    admin
                        .batch_execute(&sql)
                        .await
                        .unwrap_or_else(|e| panic!("drop the stale {template}: {e}"));
                }
            }
            admin
                .batch_execute(&format!("CREATE DATABASE {template}"))
                .await
                .unwrap_or_else(|e| panic!("create {template}: {e}"));
            let url = self.url_for(&template);
            let loaded = tokio::task::spawn_blocking(move || load_sql_gz(&path, &url))
                .await
                .expect("load worker");
            if let Err(message) = loaded {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE {template} WITH (FORCE)"))
                    .await;
                panic!("loading the real DHIS2 database into {template} failed: {message}");
            }
            admin
                .batch_execute(&format!(
                    "COMMENT ON DATABASE {template} IS '{complete}';
                     ALTER DATABASE {template} IS_TEMPLATE true;"
                ))
                .await
                .unwrap_or_else(|e| panic!("mark {template} complete: {e}"));
        }
        admin
            .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK_KEY])
            .await
            .expect("release the template lock");
        template
    }
}

impl Env {
    /// A new login role (`NOSUPERUSER`, like DHIS2's usual `dhis`); returns its name and password.
    pub async fn create_login_role(&self, prefix: &str) -> (String, String) {
        let role = unique(prefix).replace('-', "_");
        let password = format!("{:032x}", rand::random::<u128>());
        self.client("postgres")
            .await
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN NOSUPERUSER PASSWORD '{password}'"
            ))
            .await
            .unwrap_or_else(|e| panic!("create role {role}: {e}"));
        (role, password)
    }

    /// Makes `role` own database `db` and every table, view and sequence in it, as on a server
    /// where DHIS2 runs as its own non-superuser role (extensions stay the DBA's).
    pub async fn give_database_to(&self, db: &str, role: &str) {
        self.client("postgres")
            .await
            .batch_execute(&format!("ALTER DATABASE {db} OWNER TO {role}"))
            .await
            .unwrap_or_else(|e| panic!("give {db} to {role}: {e}"));
        self.client(db)
            .await
            .batch_execute(&format!(
                "DO $$DECLARE r record; BEGIN
                   ALTER SCHEMA public OWNER TO {role};
                   FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c
                            JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                              AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                              WHERE d.classid = 'pg_class'::regclass
                                                AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
                   LOOP EXECUTE format('ALTER TABLE %s OWNER TO {role}', r.rel); END LOOP;
                 END$$;"
            ))
            .await
            .unwrap_or_else(|e| panic!("give the objects of {db} to {role}: {e}"));
    }

    /// The URL of `db` logged in as `role`.
    pub fn url_as(&self, db: &str, role: &str, password: &str) -> String {
        let url = self.url_for(db);
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let host = rest.split_once('@').map(|(_, h)| h).unwrap_or(rest);
        format!("{scheme}://{role}:{password}@{host}")
    }
}

impl Env {
    /// Deletes a bucket this test created, with its objects. SeaweedFS gives every bucket volumes
    /// of its own from a fixed number, so tests that pass give theirs back.
    pub async fn delete_bucket(&self, bucket: &str) {
        let s3 = self.s3_client();
        for key in self.s3_keys(bucket).await {
            s3.delete_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("delete {bucket}/{key}: {e}"));
        }
        s3.delete_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete bucket {bucket}: {e}"));
    }
}

/// `gunzip -c FILE | psql -X -q -v ON_ERROR_STOP=1 -d URL`; the error is psql's stderr (which
/// never shows the password).
fn load_sql_gz(path: &Path, url: &str) -> Result<(), String> {
    let mut gunzip = Command::new("gunzip")
        .arg("-c")
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running gunzip: {e}"))?;
    let sql = gunzip.stdout.take().ok_or("gunzip gave no stdout")?;
    let psql = Command::new(pg_client_tool("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
        .stdin(sql)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running psql: {e}"))?;
    let gunzipped = gunzip.wait().map_err(|e| format!("gunzip: {e}"))?;
    if !psql.status.success() {
        return Err(format!(
            "psql {}: {}",
            psql.status,
            String::from_utf8_lossy(&psql.stderr)
        ));
    }
    if !gunzipped.success() {
        return Err(format!("gunzip {gunzipped}"));
    }
    Ok(())
}

/// A table's own rows (`ONLY`, as `pg_dump` dumps them): count and a hash of every row's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFingerprint {
    pub rows: i64,
    pub md5: String,
}

impl Env {
    /// Every user table (`schema.name`) with its fingerprint; extension-owned tables left out.
    pub async fn table_fingerprints(&self, db: &str) -> BTreeMap<String, TableFingerprint> {
        let client = self.client(db).await;
        let tables = client
            .query(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p')
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE 'pg\\_%'
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                   AND d.objid = c.oid AND d.deptype = 'e')
                 ORDER BY 1",
                &[],
            )
            .await
            .expect("list tables");
        let mut out = BTreeMap::new();
        for row in tables {
            let table: String = row.get(0);
            let r = client
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')
                         FROM ONLY {table} t"
                    ),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("fingerprint {table}: {e}"));
            out.insert(
                table,
                TableFingerprint {
                    rows: r.get(0),
                    md5: r.get(1),
                },
            );
        }
        out
    }

    /// `last_value` and `is_called` of every sequence, by qualified name.
    pub async fn sequence_values(&self, db: &str) -> BTreeMap<String, (i64, bool)> {
        let client = self.client(db).await;
        let sequences = client
            .query(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename)
                 FROM pg_sequences ORDER BY 1",
                &[],
            )
            .await
            .expect("list sequences");
        let mut out = BTreeMap::new();
        for row in sequences {
            let seq: String = row.get(0);
            let r = client
                .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
                .await
                .unwrap_or_else(|e| panic!("read {seq}: {e}"));
            out.insert(seq, (r.get(0), r.get(1)));
        }
        out
    }

    /// `pg_dump --schema-only` of a database without what differs between two dumps of the same
    /// schema: comments, `SET`/`set_config` lines, `\restrict` keys, blank lines.
    pub async fn normalised_schema(&self, db: &str) -> String {
        let url = self.url_for(db);
        let out = tokio::process::Command::new(pg_client_tool("pg_dump"))
            .args(["--schema-only", "--no-password", "-d", &url])
            .output()
            .await
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump --schema-only of {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        normalise_schema_dump(&String::from_utf8_lossy(&out.stdout))
    }
}

pub fn normalise_schema_dump(dump: &str) -> String {
    dump.lines()
        .filter(|l| {
            !(l.trim().is_empty()
                || l.starts_with("--")
                || l.starts_with("SET ")
                || l.starts_with("SELECT pg_catalog.set_config(")
                || l.starts_with("\\restrict")
                || l.starts_with("\\unrestrict"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
