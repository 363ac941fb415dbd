//! The database work of an atomic restore: facts about roles and the target, the side database
//! (create, hand over, drop) and the swap. CREATE/DROP DATABASE cannot run in a transaction and
//! a database cannot be renamed from a session connected to it, so all of this runs on the
//! maintenance database (`postgres`, else `template1`).

use std::time::Duration;

use tokio_postgres::Client;

use crate::postgres::{DatabaseTarget, PostgresError, describe_pg_error, quote_ident};

use super::error::BackupError;
use super::restore_plan::{ExtensionFacts, RoleFacts};

/// How long a restore waits for a server that refuses connections.
pub const REFUSED_PATIENCE: Duration = Duration::from_secs(90);

/// A session on the server's maintenance database.
pub struct Maintenance {
    pub db: DatabaseTarget,
    pub client: Client,
}

impl Maintenance {
    /// A server that refuses connections is starting, restarting, or (behind a Kubernetes
    /// Service) briefly not ready: a restore — an upgrade's rollback above all — waits up to
    /// [`REFUSED_PATIENCE`] for it instead of failing at once.
    pub async fn connect(any: &DatabaseTarget) -> Result<Self, BackupError> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_secs(1);
        loop {
            match Self::connect_once(any).await {
                Err(BackupError::Postgres(e))
                    if e.is_connection_refused() && started.elapsed() < REFUSED_PATIENCE =>
                {
                    tracing::warn!("{e}; trying again for up to {REFUSED_PATIENCE:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                other => return other,
            }
        }
    }

    async fn connect_once(any: &DatabaseTarget) -> Result<Self, BackupError> {
        let mut last = None;
        for name in ["postgres", "template1"] {
            let db = any.with_dbname(name);
            match db.connect().await {
                Ok(client) => return Ok(Self { db, client }),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .map(BackupError::from)
            .unwrap_or_else(|| BackupError::Input("no maintenance database".into())))
    }

    fn err(&self, what: &'static str, e: tokio_postgres::Error) -> BackupError {
        BackupError::Postgres(self.db.query_error(what, e))
    }

    pub async fn role(&self) -> Result<RoleFacts, BackupError> {
        let row = self
            .client
            .query_one(
                "SELECT current_user::text, rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| self.err("reading the connecting role", e))?;
        Ok(RoleFacts {
            name: row.get(0),
            superuser: row.get(1),
            createdb: row.get(2),
        })
    }

    /// The owner of a database, or None when it does not exist.
    pub async fn database_owner(&self, name: &str) -> Result<Option<String>, BackupError> {
        let row = self
            .client
            .query_opt(
                "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.err("looking up the target database", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// What the databases in the default tablespace take (allowed to every role: it is the
    /// default tablespace of the database this session is on).
    pub async fn default_tablespace_bytes(&self) -> Result<u64, BackupError> {
        let row = self
            .client
            .query_one("SELECT pg_tablespace_size('pg_default')", &[])
            .await
            .map_err(|e| self.err("measuring the default tablespace", e))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// What the WAL takes, where the role may see it (a superuser or `pg_monitor`).
    pub async fn wal_bytes(&self) -> Option<u64> {
        let row = self
            .client
            .query_one(
                "SELECT coalesce(sum(size), 0)::bigint FROM pg_ls_waldir()",
                &[],
            )
            .await
            .ok()?;
        Some(row.get::<_, i64>(0).max(0) as u64)
    }

    /// The server's data directory, where the role may read it (a superuser or
    /// `pg_read_all_settings`).
    pub async fn data_directory(&self) -> Option<String> {
        let row = self
            .client
            .query_one("SELECT current_setting('data_directory')", &[])
            .await
            .ok()?;
        Some(row.get(0))
    }

    /// The size of each of `names` that exists.
    pub async fn database_sizes(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, u64)>, BackupError> {
        let rows = self
            .client
            .query(
                "SELECT datname::text, pg_database_size(oid) FROM pg_database WHERE datname = ANY($1) ORDER BY 1",
                &[&names],
            )
            .await
            .map_err(|e| self.err("measuring replaced databases", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }

    /// Names of databases that start with `prefix`.
    pub async fn databases_starting_with(&self, prefix: &str) -> Result<Vec<String>, BackupError> {
        let rows = self
            .client
            .query(
                "SELECT datname::text FROM pg_database WHERE left(datname, length($1)) = $1",
                &[&prefix],
            )
            .await
            .map_err(|e| self.err("listing databases", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// How many sessions are connected to `database` (a side database being filled has one).
    pub async fn sessions_on(&self, database: &str) -> Result<i64, BackupError> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&database],
            )
            .await
            .map_err(|e| self.err("counting the sessions on a database", e))?;
        Ok(row.get(0))
    }

    pub async fn role_exists(&self, role: &str) -> Result<bool, BackupError> {
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
                &[&role],
            )
            .await
            .map_err(|e| self.err("looking up the owner role", e))?;
        Ok(row.get(0))
    }

    /// Whether the connecting role holds the privileges of `role` (superusers hold all).
    pub async fn acts_as(&self, role: &str) -> Result<bool, BackupError> {
        let row = self
            .client
            .query_one(
                "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                     OR (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
                         AND pg_has_role(current_user, $1::text, 'MEMBER'))",
                &[&role],
            )
            .await
            .map_err(|e| self.err("checking role membership", e))?;
        Ok(row.get(0))
    }

    pub async fn extensions(&self, names: &[String]) -> Result<Vec<ExtensionFacts>, BackupError> {
        let rows = self
            .client
            .query(
                "SELECT e.name::text, coalesce(v.trusted, false)
                   FROM pg_available_extensions e
                   LEFT JOIN pg_available_extension_versions v
                     ON v.name = e.name AND v.version = e.default_version
                  WHERE e.name = ANY($1)",
                &[&names],
            )
            .await
            .map_err(|e| self.err("listing the server's extensions", e))?;
        Ok(names
            .iter()
            .map(|name| {
                let row = rows.iter().find(|r| r.get::<_, String>(0) == *name);
                ExtensionFacts {
                    name: name.clone(),
                    available: row.is_some(),
                    trusted: row.map(|r| r.get::<_, bool>(1)).unwrap_or(false),
                }
            })
            .collect())
    }

    /// `CREATE DATABASE side OWNER owner TEMPLATE template0`, with the encoding and locale of
    /// `like` (the target) when it exists.
    pub async fn create_database(
        &self,
        name: &str,
        owner: &str,
        like: Option<&str>,
    ) -> Result<(), BackupError> {
        let mut sql = format!(
            "CREATE DATABASE {} OWNER {} TEMPLATE template0",
            quote_ident(name),
            quote_ident(owner)
        );
        if let Some(like) = like {
            let row = self
                .client
                .query_opt(
                    "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text,
                            to_jsonb(d) ->> 'datlocprovider',
                            coalesce(to_jsonb(d) ->> 'daticulocale', to_jsonb(d) ->> 'datlocale')
                       FROM pg_database d WHERE datname = $1",
                    &[&like],
                )
                .await
                .map_err(|e| self.err("reading the target's encoding", e))?;
            if let Some(row) = row {
                let (encoding, collate, ctype): (String, String, String) =
                    (row.get(0), row.get(1), row.get(2));
                sql.push_str(&format!(
                    " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
                    quote_literal(&encoding),
                    quote_literal(&collate),
                    quote_literal(&ctype)
                ));
                let provider: Option<String> = row.get(3);
                let locale: Option<String> = row.get(4);
                match (provider.as_deref(), locale) {
                    (Some("i"), Some(l)) => sql.push_str(&format!(
                        " LOCALE_PROVIDER icu ICU_LOCALE {}",
                        quote_literal(&l)
                    )),
                    (Some("b"), Some(l)) => sql.push_str(&format!(
                        " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                        quote_literal(&l)
                    )),
                    _ => {}
                }
            }
        }
        self.client.batch_execute(&sql).await.map_err(|e| {
            BackupError::Input(format!(
                "cannot create the side database {name} for the restore: {}",
                describe_pg_error(&e)
            ))
        })
    }

    pub async fn drop_database(&self, name: &str) -> Result<(), BackupError> {
        // Our own sessions on it may take a moment to end.
        let mut last = None;
        for _ in 0..20 {
            match self
                .client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(name)))
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(BackupError::Input(format!(
            "could not drop database {name}: {}; drop it by hand (DROP DATABASE \"{name}\")",
            last.map(|e| describe_pg_error(&e)).unwrap_or_default()
        )))
    }

    /// Closes every other session on `database`; returns how many there were. Nothing is
    /// changed on the database itself, so a restore killed now leaves it usable.
    pub async fn close_connections(&self, database: &str) -> Result<u64, BackupError> {
        let row = self
            .client
            .query_one(TERMINATE_SESSIONS, &[&database])
            .await
            .map_err(|e| self.err("closing the target's connections", e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// In one transaction: close the target's sessions that came back, target → replaced, side
    /// → target (without a target: side → target). Retried while sessions reconnect; returns
    /// how many sessions it closed.
    pub async fn swap(
        &self,
        target: &str,
        side: &str,
        replaced: Option<&str>,
    ) -> Result<u64, BackupError> {
        let mut renames = String::new();
        if let Some(replaced) = replaced {
            renames.push_str(&format!(
                "ALTER DATABASE {} RENAME TO {};",
                quote_ident(target),
                quote_ident(replaced)
            ));
        }
        renames.push_str(&format!(
            "ALTER DATABASE {} RENAME TO {};COMMIT;",
            quote_ident(side),
            quote_ident(target)
        ));
        let mut last = None;
        for _ in 0..10 {
            let attempt = async {
                self.client.batch_execute("BEGIN").await?;
                let n: i64 = self
                    .client
                    .query_one(TERMINATE_SESSIONS, &[&target])
                    .await?
                    .get(0);
                self.client.batch_execute(&renames).await?;
                Ok::<_, tokio_postgres::Error>(n as u64)
            };
            match attempt.await {
                Ok(n) => return Ok(n),
                Err(e) => {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    last = Some(e);
                }
            }
            // Terminated sessions (and the side database's last ones, ours and pg_restore's)
            // take a moment to end.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(BackupError::Input(format!(
            "could not swap the restored database in as {target}: {}; {target} is unchanged",
            last.map(|e| describe_pg_error(&e)).unwrap_or_default()
        )))
    }
}

const TERMINATE_SESSIONS: &str = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                                   WHERE datname = $1 AND pid <> pg_backend_pid()";

/// Gives every object the connecting role owns in `db` — schemas, tables, views, sequences,
/// types, functions, … but not extensions and their members — to `owner`.
pub async fn hand_over_ownership(db: &DatabaseTarget, owner: &str) -> Result<u64, BackupError> {
    let client = db.connect().await?;
    let rows = client
        .query(OWNED_OBJECTS, &[])
        .await
        .map_err(|e| db.query_error("listing the restored objects", e))?;
    let mut sql = String::from("BEGIN;");
    let mut count = 0u64;
    for row in &rows {
        let (kind, identity): (String, String) = (row.get(0), row.get(1));
        match alter_owner_statement(&kind, &identity, owner) {
            Some(stmt) => {
                sql.push_str(&stmt);
                count += 1;
            }
            None if SKIPPED_KINDS.contains(&kind.as_str()) => {}
            None => {
                return Err(BackupError::Input(format!(
                    "cannot hand {kind} {identity} over to --owner {owner}: this kind of object is not supported; restore with the owner's own role instead"
                )));
            }
        }
    }
    sql.push_str("COMMIT;");
    client.batch_execute(&sql).await.map_err(|e| {
        BackupError::Input(format!(
            "cannot give the restored objects to --owner {owner}: {}",
            describe_pg_error(&e)
        ))
    })?;
    Ok(count)
}

/// Objects of the connecting role made after initdb, without extension members and without
/// what follows its parent (indexes, column-owned sequences, row and array types).
const OWNED_OBJECTS: &str = "
    WITH me AS (SELECT oid FROM pg_roles WHERE rolname = current_user),
    objs(classid, objid) AS (
        SELECT 'pg_namespace'::regclass, oid FROM pg_namespace WHERE nspowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_class'::regclass, c.oid FROM pg_class c
         WHERE c.relowner = (SELECT oid FROM me) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
           AND NOT EXISTS (SELECT 1 FROM pg_depend d
                            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
        UNION ALL SELECT 'pg_type'::regclass, t.oid FROM pg_type t
         WHERE t.typowner = (SELECT oid FROM me) AND t.typrelid = 0
           AND t.typtype IN ('b', 'd', 'e', 'r') AND NOT (t.typtype = 'b' AND t.typelem <> 0)
        UNION ALL SELECT 'pg_proc'::regclass, oid FROM pg_proc WHERE proowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_collation'::regclass, oid FROM pg_collation WHERE collowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_conversion'::regclass, oid FROM pg_conversion WHERE conowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_operator'::regclass, oid FROM pg_operator WHERE oprowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_opclass'::regclass, oid FROM pg_opclass WHERE opcowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_opfamily'::regclass, oid FROM pg_opfamily WHERE opfowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_ts_dict'::regclass, oid FROM pg_ts_dict WHERE dictowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_ts_config'::regclass, oid FROM pg_ts_config WHERE cfgowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_statistic_ext'::regclass, oid FROM pg_statistic_ext WHERE stxowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_foreign_data_wrapper'::regclass, oid FROM pg_foreign_data_wrapper WHERE fdwowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_foreign_server'::regclass, oid FROM pg_foreign_server WHERE srvowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_event_trigger'::regclass, oid FROM pg_event_trigger WHERE evtowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_publication'::regclass, oid FROM pg_publication WHERE pubowner = (SELECT oid FROM me)
        UNION ALL SELECT 'pg_largeobject_metadata'::regclass, oid FROM pg_largeobject_metadata WHERE lomowner = (SELECT oid FROM me)
    )
    SELECT i.type, i.identity
      FROM objs o, LATERAL pg_identify_object(o.classid, o.objid, 0) i
     WHERE o.objid >= 16384
       AND NOT EXISTS (SELECT 1 FROM pg_depend e
                        WHERE e.classid = o.classid AND e.objid = o.objid AND e.deptype = 'e')";

/// Kinds that follow their parent's owner and are never altered directly.
const SKIPPED_KINDS: &[&str] = &["index", "partitioned index", "toast table"];

/// `ALTER <kind> <identity> OWNER TO <owner>;` for an object described by `pg_identify_object`.
pub fn alter_owner_statement(kind: &str, identity: &str, owner: &str) -> Option<String> {
    let keyword = match kind {
        "table" | "partitioned table" => "TABLE",
        "view" => "VIEW",
        "materialized view" => "MATERIALIZED VIEW",
        "sequence" => "SEQUENCE",
        "foreign table" => "FOREIGN TABLE",
        "composite type" | "type" => "TYPE",
        "domain" => "DOMAIN",
        "schema" => "SCHEMA",
        "function" => "FUNCTION",
        "procedure" => "PROCEDURE",
        "aggregate" => "AGGREGATE",
        "collation" => "COLLATION",
        "conversion" => "CONVERSION",
        "operator" => "OPERATOR",
        "operator class" => "OPERATOR CLASS",
        "operator family" => "OPERATOR FAMILY",
        "text search dictionary" => "TEXT SEARCH DICTIONARY",
        "text search configuration" => "TEXT SEARCH CONFIGURATION",
        "statistics object" => "STATISTICS",
        "foreign-data wrapper" => "FOREIGN DATA WRAPPER",
        "server" => "SERVER",
        "event trigger" => "EVENT TRIGGER",
        "publication" => "PUBLICATION",
        "large object" => "LARGE OBJECT",
        _ => return None,
    };
    Some(format!(
        "ALTER {keyword} {identity} OWNER TO {};",
        quote_ident(owner)
    ))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The row counts of `tables` in `db`.
pub async fn count_rows(
    db: &DatabaseTarget,
    tables: &[super::table_rules::TableName],
) -> Result<Vec<i64>, PostgresError> {
    let client = db.connect().await?;
    super::inventory::row_counts(db, &client, tables).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_statements_follow_the_object_kind() {
        assert_eq!(
            alter_owner_statement("table", "public.datavalue", "dhis").unwrap(),
            "ALTER TABLE public.datavalue OWNER TO \"dhis\";"
        );
        assert_eq!(
            alter_owner_statement("operator class", "public.ops USING btree", "d\"x").unwrap(),
            "ALTER OPERATOR CLASS public.ops USING btree OWNER TO \"d\"\"x\";"
        );
        assert_eq!(
            alter_owner_statement("function", "public.uid()", "dhis").unwrap(),
            "ALTER FUNCTION public.uid() OWNER TO \"dhis\";"
        );
        assert!(alter_owner_statement("index", "public.i", "dhis").is_none());
        assert!(SKIPPED_KINDS.contains(&"index"));
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("en_US.UTF-8"), "'en_US.UTF-8'");
        assert_eq!(quote_literal("a'b"), "'a''b'");
    }
}
