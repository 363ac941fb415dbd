//! What the backup reads from the live database: server version, extensions, user tables, the
//! DHIS2 schema version and exact row counts, all inside one exported snapshot shared with
//! `pg_dump`, so the manifest describes exactly the data in the dump.

use tokio_postgres::Client;

use crate::postgres::{DatabaseTarget, PostgresError, quote_ident};

use super::manifest::ExtensionRecord;
use super::schema_version::highest_schema_version;
use super::table_rules::TableName;

const USER_RELATIONS: &str = "
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')";

pub async fn server_version(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<(String, i32), PostgresError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
            &[],
        )
        .await
        .map_err(|e| db.query_error("reading the server version", e))?;
    let full: String = row.get(0);
    let short = full.split_whitespace().next().unwrap_or(&full).to_string();
    Ok((short, row.get(1)))
}

pub async fn extensions(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<Vec<ExtensionRecord>, PostgresError> {
    let rows = client
        .query(
            "SELECT extname::text, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| db.query_error("listing extensions", e))?;
    Ok(rows
        .iter()
        .map(|r| ExtensionRecord {
            name: r.get(0),
            version: r.get(1),
        })
        .collect())
}

/// Ordinary and partitioned tables in user schemas, without extension-owned ones.
pub async fn user_tables(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<Vec<TableName>, PostgresError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text {USER_RELATIONS} AND c.relkind IN ('r', 'p') ORDER BY 1, 2"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| db.query_error("listing tables", e))?;
    Ok(rows
        .iter()
        .map(|r| TableName::new(r.get(0), r.get(1)))
        .collect())
}

/// What restoring the database without the data of `skipped` takes, roughly: its size less
/// those tables (with their indexes and TOAST).
pub async fn restored_size(
    db: &DatabaseTarget,
    client: &Client,
    skipped: &[TableName],
) -> Result<u64, PostgresError> {
    let schemas: Vec<&str> = skipped.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = skipped.iter().map(|t| t.name.as_str()).collect();
    let row = client
        .query_one(
            "SELECT (pg_database_size(current_database()) - coalesce((
                 SELECT sum(pg_total_relation_size(c.oid))
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE (n.nspname::text, c.relname::text) IN
                       (SELECT * FROM unnest($1::text[], $2::text[]))), 0))::bigint",
            &[&schemas, &names],
        )
        .await
        .map_err(|e| db.query_error("measuring the database", e))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// How many user relations (tables, views, sequences, …) exist, with a few names as examples.
pub async fn user_relations(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<(i64, Vec<String>), PostgresError> {
    let sql = format!(
        "SELECT count(*) OVER (), n.nspname || '.' || c.relname {USER_RELATIONS}
           AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') ORDER BY 2 LIMIT 3"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| db.query_error("checking whether the database is empty", e))?;
    let count = rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0);
    Ok((count, rows.iter().map(|r| r.get::<_, String>(1)).collect()))
}

/// Every object a user made in the database — relations, functions, types, schemas, extensions
/// (but plpgsql), … — with a few names as examples. Extension members count as their extension.
pub async fn user_objects(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<(i64, Vec<String>), PostgresError> {
    // Objects with an oid at or above FirstNormalObjectId (16384) were made after initdb.
    let sql = "
        WITH objs(kind, name, classid, objid) AS (
            SELECT 'relation', n.nspname || '.' || c.relname, 'pg_class'::regclass, c.oid
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
            UNION ALL SELECT 'function', n.nspname || '.' || p.proname, 'pg_proc'::regclass, p.oid
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            UNION ALL SELECT 'type', n.nspname || '.' || t.typname, 'pg_type'::regclass, t.oid
              FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typrelid = 0
            UNION ALL SELECT 'schema', nspname, 'pg_namespace'::regclass, oid
              FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_temp%' AND nspname NOT LIKE 'pg\\_toast%'
            UNION ALL SELECT 'extension', extname, 'pg_extension'::regclass, oid FROM pg_extension
            UNION ALL SELECT 'operator', oprname, 'pg_operator'::regclass, oid FROM pg_operator
            UNION ALL SELECT 'collation', collname, 'pg_collation'::regclass, oid FROM pg_collation
            UNION ALL SELECT 'text search configuration', cfgname, 'pg_ts_config'::regclass, oid FROM pg_ts_config
            UNION ALL SELECT 'event trigger', evtname, 'pg_event_trigger'::regclass, oid FROM pg_event_trigger
        )
        SELECT count(*) OVER (), kind || ' ' || name FROM objs o
         WHERE o.objid >= 16384
           AND NOT EXISTS (SELECT 1 FROM pg_depend d
                           WHERE d.classid = o.classid AND d.objid = o.objid AND d.deptype = 'e')
         ORDER BY 2 LIMIT 3";
    let rows = client
        .query(sql, &[])
        .await
        .map_err(|e| db.query_error("checking whether the database is empty", e))?;
    let count = rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0);
    Ok((count, rows.iter().map(|r| r.get::<_, String>(1)).collect()))
}

pub async fn dhis2_schema_version(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<Option<String>, PostgresError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('public.flyway_schema_history') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| db.query_error("looking for flyway_schema_history", e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT version::text FROM public.flyway_schema_history WHERE success AND version IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| db.query_error("reading flyway_schema_history", e))?;
    Ok(highest_schema_version(
        rows.iter().map(|r| r.get::<_, String>(0)),
    ))
}

/// Exact row counts (`ONLY`: each table's own rows, as `pg_dump` dumps them), batched.
pub async fn row_counts(
    db: &DatabaseTarget,
    client: &Client,
    tables: &[TableName],
) -> Result<Vec<i64>, PostgresError> {
    let mut counts = Vec::with_capacity(tables.len());
    for batch in tables.chunks(200) {
        let sql = batch
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "SELECT {i} AS i, count(*) AS n FROM ONLY {}.{}",
                    quote_ident(&t.schema),
                    quote_ident(&t.name)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let rows = client
            .query(&format!("SELECT n FROM ({sql}) AS counts ORDER BY i"), &[])
            .await
            .map_err(|e| db.query_error("counting rows", e))?;
        counts.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    Ok(counts)
}

/// Starts a repeatable-read transaction and exports its snapshot for `pg_dump --snapshot`.
pub async fn export_snapshot(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<String, PostgresError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| db.query_error("starting the snapshot transaction", e))?;
    let row = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| db.query_error("exporting a snapshot", e))?;
    Ok(row.get(0))
}
