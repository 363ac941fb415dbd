//! Restore with DHIS2's usual database owner: a non-superuser role (`dhis`) that owns the
//! database, extensions created by a DBA. Every restored object ends up owned by that role, and
//! what a role cannot do is reported as exactly that, with the target untouched.

mod support;

use support::*;
use tokio_postgres::NoTls;

/// A LOGIN role unique to this test; returns (name, password).
async fn create_role(env: &Env, prefix: &str, options: &str) -> (String, String) {
    let name = unique(prefix).replace('-', "_");
    let password = format!("pw{}", unique("x").replace('-', ""));
    env.client("postgres")
        .await
        .batch_execute(&format!(
            "CREATE ROLE {name} LOGIN {options} PASSWORD '{password}'"
        ))
        .await
        .expect("create role");
    (name, password)
}

/// The test server's URL for another user and database.
fn url_as(env: &Env, user: &str, password: &str, db: &str) -> String {
    let (_, rest) = env.pg_url.split_once("://").unwrap();
    let (_, hostpart) = rest.rsplit_once('@').unwrap();
    let host = hostpart.split('/').next().unwrap();
    format!("postgresql://{user}:{password}@{host}/{db}")
}

async fn client_as(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("log in: {e}"));
    tokio::spawn(conn);
    client
}

/// A database a DBA prepared for DHIS2: owned by `owner`, extensions created by the superuser.
async fn dba_database(env: &Env, prefix: &str, owner: &str, extensions: &[&str]) -> String {
    let name = unique(prefix).replace('-', "_");
    env.client("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}"))
        .await
        .unwrap();
    let client = env.client(&name).await;
    for e in extensions {
        client
            .batch_execute(&format!("CREATE EXTENSION {e}"))
            .await
            .unwrap();
    }
    name
}

/// Logs in as `owner` and proves it can use every table as DHIS2 does: read, write, and alter
/// (Flyway migrates as the owner), all in a transaction that is rolled back.
async fn owner_can_use_everything(env: &Env, db: &str, owner: &str, password: &str) -> usize {
    let client = client_as(&url_as(env, owner, password, db)).await;
    let not_owned: Vec<String> = client
        .query(
            "SELECT kind || ' ' || name FROM (
                SELECT 'relation' AS kind, c.oid::regclass::text AS name, c.relowner AS owner,
                       'pg_class'::regclass AS classid, c.oid AS objid
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                UNION ALL SELECT 'function', p.oid::regprocedure::text, p.proowner, 'pg_proc'::regclass, p.oid
                  FROM pg_proc p WHERE p.oid >= 16384
                UNION ALL SELECT 'type', t.oid::regtype::text, t.typowner, 'pg_type'::regclass, t.oid
                  FROM pg_type t WHERE t.oid >= 16384 AND t.typtype IN ('d', 'e', 'r') ) o
              WHERE o.owner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = o.classid AND d.objid = o.objid AND d.deptype = 'e')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        not_owned.is_empty(),
        "objects not owned by {owner}: {not_owned:?}"
    );
    // (table, first column, every column DHIS2 may write: generated ones take no values)
    let tables: Vec<(String, String, String)> = client
        .query(
            "SELECT c.oid::regclass::text, quote_ident(a.attname),
                    (SELECT string_agg(quote_ident(w.attname), ', ' ORDER BY w.attnum)
                       FROM pg_attribute w
                      WHERE w.attrelid = c.oid AND w.attnum > 0 AND NOT w.attisdropped
                        AND w.attgenerated = '')
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = 1
              WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(!tables.is_empty());
    client.batch_execute("BEGIN").await.unwrap();
    for (table, column, writable) in &tables {
        // IF NOT EXISTS: an inheritance child already has the column its parent got.
        let sql = format!(
            "SELECT count(*) FROM {table};
             UPDATE {table} SET {column} = {column} WHERE ctid = (SELECT ctid FROM {table} LIMIT 1);
             INSERT INTO {table} ({writable}) SELECT {writable} FROM {table} LIMIT 0;
             ALTER TABLE {table} ADD COLUMN IF NOT EXISTS zz_flyway_probe int;"
        );
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{owner} cannot use {table}: {e:?}"));
    }
    let sequences: Vec<String> = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for s in &sequences {
        client
            .query_one(&format!("SELECT nextval('{s}')"), &[])
            .await
            .unwrap_or_else(|e| panic!("{owner} cannot use sequence {s}: {e:?}"));
    }
    client.batch_execute("ROLLBACK").await.unwrap();
    tables.len()
}

async fn table_count(env: &Env, db: &str) -> i64 {
    env.client(db)
        .await
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'spatial_ref_sys'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_superuser_restores_for_the_dhis_owner() {
    let env = env();
    let (_src, src_url) = env.seeded_database("own_src").await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    assert_success(
        &backup_run(&src_url, repo_path, "hmis", &[]).await,
        "backup",
    );
    let (dhis, password) = create_role(&env, "dhis", "").await;
    let target = dba_database(&env, "own_dst", &dhis, &["postgis"]).await;

    let out = dhis2ctl(&restore_args(
        repo_path,
        &env.url_for(&target),
        &["--owner", &dhis, "-o", "json"],
    ))
    .await;
    assert_success(&out, "restore --owner");
    let report = json(&out);
    assert_eq!(report["owner"], dhis.as_str());
    let tables = owner_can_use_everything(&env, &target, &dhis, &password).await;
    assert!(tables >= 10, "{tables} tables");
    let owner: String = env
        .client("postgres")
        .await
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
            &[&target],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, dhis);

    // A target that does not exist yet is created, owned by --owner.
    let fresh = unique("own_new").replace('-', "_");
    let out = dhis2ctl(&restore_args(
        repo_path,
        &env.url_for(&fresh),
        &["--owner", &dhis],
    ))
    .await;
    assert_success(&out, "restore into a new database");
    owner_can_use_everything(&env, &fresh, &dhis, &password).await;
    assert!(
        databases_like(&env, &format!("{fresh}\\_\\_%"))
            .await
            .is_empty(),
        "nothing was replaced"
    );
}

/// A backup whose extensions a non-superuser may create (trusted ones).
async fn trusted_source(env: &Env) -> String {
    let (src, src_url) = env.create_database("trusted_src").await;
    env.client(&src)
        .await
        .batch_execute(
            "CREATE EXTENSION pg_trgm; CREATE EXTENSION btree_gin;
             CREATE TYPE period_type AS ENUM ('Monthly', 'Yearly');
             CREATE TABLE organisationunit (organisationunitid bigserial PRIMARY KEY, name text NOT NULL, kind period_type);
             CREATE INDEX ou_name_trgm ON organisationunit USING gin (name gin_trgm_ops);
             INSERT INTO organisationunit (name, kind) SELECT 'ស្រុក ' || i, 'Monthly' FROM generate_series(1, 500) i;
             CREATE SEQUENCE hibernate_sequence START 5000000000;
             CREATE VIEW ou_names AS SELECT name FROM organisationunit;
             CREATE FUNCTION ou_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM organisationunit';",
        )
        .await
        .unwrap();
    src_url
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dhis_owner_restores_by_itself_when_it_may_create_databases() {
    let env = env();
    let src_url = trusted_source(&env).await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    assert_success(
        &backup_run(&src_url, repo_path, "hmis", &[]).await,
        "backup",
    );
    let (dhis, password) = create_role(&env, "dhis", "CREATEDB").await;
    let target = dba_database(&env, "self_dst", &dhis, &["pg_trgm", "btree_gin"]).await;
    let dhis_url = url_as(&env, &dhis, &password, &target);
    client_as(&dhis_url)
        .await
        .batch_execute("CREATE TABLE old_data (id int); INSERT INTO old_data VALUES (1);")
        .await
        .unwrap();

    // Without --owner, the target's owner (dhis itself) owns what is restored.
    let out = dhis2ctl(&restore_args(
        repo_path,
        &dhis_url,
        &["--force", "-o", "json"],
    ))
    .await;
    assert_success(&out, "restore as dhis");
    assert_eq!(json(&out)["owner"], dhis.as_str());
    owner_can_use_everything(&env, &target, &dhis, &password).await;
    let replaced = json(&out)["replacedDatabase"].as_str().unwrap().to_string();
    let kept: i64 = env
        .client(&replaced)
        .await
        .query_one("SELECT count(*) FROM old_data", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_role_cannot_do_is_said_and_nothing_changes() {
    let env = env();
    let (_src, src_url) = env.seeded_database("deny_src").await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    assert_success(
        &backup_run(&src_url, repo_path, "hmis", &[]).await,
        "backup",
    );
    let restore = |url: String, extra: Vec<String>| async move {
        let mut args = vec![
            "backup".to_string(),
            "restore".into(),
            "--repo".into(),
            repo_path.to_string(),
            "--instance".into(),
            "hmis".into(),
            "latest".into(),
            "--database-url".into(),
            url,
            "--force".into(),
        ];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dhis2ctl(&args).await
    };

    // The usual DBA setup: dhis owns the database but may not create databases.
    let (dhis, password) = create_role(&env, "dhis", "").await;
    let target = dba_database(&env, "deny_dst", &dhis, &["postgis"]).await;
    let dhis_url = url_as(&env, &dhis, &password, &target);
    client_as(&dhis_url)
        .await
        .batch_execute("CREATE TABLE live (id int); INSERT INTO live VALUES (1), (2), (3);")
        .await
        .unwrap();
    let out = restore(dhis_url.clone(), vec![]).await;
    assert_clear_failure(&out, "CREATEDB");
    assert!(
        stderr(&out).contains(&format!("--owner {dhis}")),
        "{}",
        stderr(&out)
    );

    // With CREATEDB, PostGIS is still something only a superuser may create: said as such.
    env.client("postgres")
        .await
        .batch_execute(&format!("ALTER ROLE {dhis} CREATEDB"))
        .await
        .unwrap();
    let out = restore(dhis_url.clone(), vec![]).await;
    assert_clear_failure(
        &out,
        &format!("needs extension postgis, which role {dhis} may not create"),
    );
    assert!(!stderr(&out).contains("postgresql-"), "{}", stderr(&out));

    // An owner that does not exist.
    let out = restore(
        env.url_for(&target),
        vec!["--owner".into(), "no_such_role_here".into()],
    )
    .await;
    assert_clear_failure(&out, "--owner: role no_such_role_here does not exist");

    assert_eq!(table_count(&env, &target).await, 1, "target unchanged");
    let rows: i64 = env
        .client(&target)
        .await
        .query_one("SELECT count(*) FROM live", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3);
    assert!(
        databases_like(&env, &format!("{target}\\_\\_%"))
            .await
            .is_empty(),
        "no side database left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_restore_failures_show_the_servers_error_line() {
    // An event trigger needs a superuser: the dhis owner's restore fails inside pg_restore.
    let env = env();
    let (src, src_url) = env.create_database("evt_src").await;
    env.client(&src)
        .await
        .batch_execute(
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1);
             CREATE FUNCTION noop() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$;
             CREATE EVENT TRIGGER audit_ddl ON ddl_command_start EXECUTE FUNCTION noop();",
        )
        .await
        .unwrap();
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    assert_success(
        &backup_run(&src_url, repo_path, "hmis", &[]).await,
        "backup",
    );
    let (dhis, password) = create_role(&env, "dhis", "CREATEDB").await;
    let target = dba_database(&env, "evt_dst", &dhis, &[]).await;
    let out = dhis2ctl(&restore_args(
        repo_path,
        &url_as(&env, &dhis, &password, &target),
        &[],
    ))
    .await;
    assert_clear_failure(
        &out,
        "ERROR: permission denied to create event trigger \"audit_ddl\"",
    );
    assert!(!stderr(&out).contains("Command was"), "{}", stderr(&out));
    assert!(
        databases_like(&env, &format!("{target}\\_\\_%"))
            .await
            .is_empty(),
        "the side database was dropped"
    );
    assert_eq!(table_count(&env, &target).await, 0);
}

/// The restore a ministry really does: DHIS2's own 2.42 database (its domain, generated column,
/// UNLOGGED analytics with inheritance, PostGIS) restored by a superuser into the database a DBA
/// prepared for the `dhis` owner, which can then use every table the moment DHIS2 starts.
#[tokio::test(flavor = "multi_thread")]
async fn the_real_dhis2_database_is_restored_for_its_dhis_owner() {
    let env = env();
    let (src, src_url) = env.real_dhis2_database("real_own_src").await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    assert_success(
        &backup_run(&src_url, repo_path, "hmis", &[]).await,
        "backup of the real DHIS2 database",
    );
    let (dhis, password) = create_role(&env, "dhis", "").await;
    let target = dba_database(
        &env,
        "real_own_dst",
        &dhis,
        &["postgis", "pg_trgm", "btree_gin"],
    )
    .await;
    let out = dhis2ctl(&restore_args(
        repo_path,
        &env.url_for(&target),
        &["--owner", &dhis, "-o", "json"],
    ))
    .await;
    assert_success(&out, "restore --owner of the real DHIS2 database");

    let source = env.table_fingerprints(&src).await;
    let restored = env.table_fingerprints(&target).await;
    assert_eq!(
        source.keys().collect::<Vec<_>>(),
        restored.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    // Identical except the tables DHIS2 regenerates (analytics, resource tables): their data is
    // not in the backup.
    let differing: Vec<&String> = source
        .iter()
        .filter(|(name, fp)| restored.get(*name) != Some(fp))
        .map(|(name, _)| name)
        .filter(|name| {
            let table = name.rsplit('.').next().unwrap_or(name);
            !(table == "analytics" || table.starts_with("analytics_") || table.starts_with('_'))
        })
        .collect();
    assert!(differing.is_empty(), "tables differ: {differing:?}");
    assert_eq!(
        env.sequence_values(&src).await,
        env.sequence_values(&target).await
    );
    // Last: the probe advances sequences (nextval is not rolled back).
    let tables = owner_can_use_everything(&env, &target, &dhis, &password).await;
    assert!(tables >= 309, "{tables} tables");
}
