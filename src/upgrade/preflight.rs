//! Reads the facts the upgrade check needs from a real database: server version, extensions,
//! Flyway history, and the data DHIS2's migrations are known to fail on. Read-only.

use tokio_postgres::Client;

use crate::postgres::DatabaseTarget;

use super::error::UpgradeError;
use super::facts::{
    CategoryOptionComboRow, DatabaseFacts, DefaultCategoryOptionCombos, ExtensionFact, FoundRows,
};
use super::known_blockers::{CANONICAL_DEFAULT_COC_UID, LISTED_ROWS};
use super::requirements::REQUIRED_EXTENSIONS;
use super::version::Dhis2Version;

/// Connects to `db` and reads its facts.
pub async fn read_database_facts(db: &DatabaseTarget) -> Result<DatabaseFacts, UpgradeError> {
    let client = db.connect().await?;
    // Only reads: make sure of it, whatever the connecting role may do.
    client
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .map_err(|e| db.query_error("starting a read-only session", e))?;
    let server_version_num = server_version_num(db, &client).await?;
    let extensions = extensions(db, &client).await?;
    let (schema_version, failed_migrations) = flyway_history(db, &client).await?;
    let default_category_option_combos = default_category_option_combos(db, &client).await?;
    let single_events_without_occurred_date =
        single_events_without_occurred_date(db, &client).await?;
    let tracker_associate_value_types = tracker_associate_value_types(db, &client).await?;
    Ok(DatabaseFacts {
        server_version_num,
        extensions,
        schema_version,
        failed_migrations,
        default_category_option_combos,
        single_events_without_occurred_date,
        tracker_associate_value_types,
    })
}

async fn server_version_num(db: &DatabaseTarget, client: &Client) -> Result<u32, UpgradeError> {
    let n: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| db.query_error("reading the server version", e))?
        .get(0);
    Ok(u32::try_from(n).unwrap_or(0))
}

async fn extensions(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<Vec<ExtensionFact>, UpgradeError> {
    let names: Vec<String> = REQUIRED_EXTENSIONS.iter().map(|s| s.to_string()).collect();
    let rows = client
        .query(
            "SELECT n.name, e.extversion, a.default_version
             FROM unnest($1::text[]) AS n(name)
             LEFT JOIN pg_extension e ON e.extname = n.name
             LEFT JOIN pg_available_extensions a ON a.name = n.name",
            &[&names],
        )
        .await
        .map_err(|e| db.query_error("reading the installed and available extensions", e))?;
    Ok(rows
        .iter()
        .map(|r| ExtensionFact {
            name: r.get(0),
            installed_version: r.get(1),
            available_version: r.get(2),
        })
        .collect())
}

async fn table_exists(
    db: &DatabaseTarget,
    client: &Client,
    table: &str,
) -> Result<bool, UpgradeError> {
    Ok(client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("public.{table}")],
        )
        .await
        .map_err(|e| db.query_error("looking for a table", e))?
        .get(0))
}

/// The highest successful version (compared as versions, not text) and the failed ones.
async fn flyway_history(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<(Option<Dhis2Version>, Vec<String>), UpgradeError> {
    if !table_exists(db, client, "flyway_schema_history").await? {
        return Ok((None, Vec::new()));
    }
    let rows = client
        .query(
            "SELECT version::text, success, coalesce(description, '')
             FROM public.flyway_schema_history WHERE version IS NOT NULL ORDER BY installed_rank",
            &[],
        )
        .await
        .map_err(|e| db.query_error("reading flyway_schema_history", e))?;
    let mut highest: Option<Dhis2Version> = None;
    let mut failed = Vec::new();
    for row in rows {
        let version: String = row.get(0);
        let success: bool = row.get(1);
        if !success {
            failed.push(format!("{version} {}", row.get::<_, String>(2)));
            continue;
        }
        // Versions that are no DHIS2 version (a hand-made baseline `1`) say nothing here.
        if let Ok(v) = Dhis2Version::parse(&version)
            && highest.as_ref().is_none_or(|h| v > *h)
        {
            highest = Some(v);
        }
    }
    Ok((highest, failed))
}

async fn default_category_option_combos(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<Option<DefaultCategoryOptionCombos>, UpgradeError> {
    if !table_exists(db, client, "categoryoptioncombo").await? {
        return Ok(None);
    }
    let what = "looking for duplicate default category option combos";
    let summary = client
        .query_one(
            "SELECT count(*), coalesce(bool_or(uid = $1), false)
             FROM public.categoryoptioncombo WHERE name = 'default'",
            &[&CANONICAL_DEFAULT_COC_UID],
        )
        .await
        .map_err(|e| db.query_error(what, e))?;
    let rows = client
        .query(
            "SELECT categoryoptioncomboid, uid, name FROM public.categoryoptioncombo
             WHERE name = 'default' ORDER BY categoryoptioncomboid LIMIT $1",
            &[&(LISTED_ROWS as i64)],
        )
        .await
        .map_err(|e| db.query_error(what, e))?;
    Ok(Some(DefaultCategoryOptionCombos {
        count: summary.get(0),
        canonical_present: summary.get(1),
        listed: rows
            .iter()
            .map(|r| CategoryOptionComboRow {
                id: r.get(0),
                uid: r.get(1),
                name: r.get(2),
            })
            .collect(),
    }))
}

/// DHIS2's 2.43 migration notes give these queries: `event` since 2.41, `programstageinstance`
/// before. A database already on 2.43 has neither shape.
async fn single_events_without_occurred_date(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<Option<i64>, UpgradeError> {
    let column_exists = |table: &'static str, column: &'static str| async move {
        client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                                WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2)",
                &[&table, &column],
            )
            .await
            .map(|r| r.get::<_, bool>(0))
            .map_err(|e| db.query_error("looking for the event table", e))
    };
    let sql = if column_exists("event", "occurreddate").await? {
        "SELECT count(*) FROM public.event e
         JOIN public.programstage ps ON e.programstageid = ps.programstageid
         JOIN public.program p ON ps.programid = p.programid
         WHERE e.occurreddate IS NULL AND p.type = 'WITHOUT_REGISTRATION'"
    } else if column_exists("programstageinstance", "executiondate").await? {
        "SELECT count(*) FROM public.programstageinstance psi
         JOIN public.programstage ps ON psi.programstageid = ps.programstageid
         JOIN public.program p ON ps.programid = p.programid
         WHERE psi.executiondate IS NULL AND p.type = 'WITHOUT_REGISTRATION'"
    } else {
        return Ok(None);
    };
    let count: i64 = client
        .query_one(sql, &[])
        .await
        .map_err(|e| db.query_error("counting single events without an occurred date", e))?
        .get(0);
    Ok(Some(count))
}

/// What DHIS2's `tracker_associate_is_deprecated` integrity check looks at: data elements and
/// tracked entity attributes of that value type.
async fn tracker_associate_value_types(
    db: &DatabaseTarget,
    client: &Client,
) -> Result<Option<FoundRows>, UpgradeError> {
    if !(table_exists(db, client, "dataelement").await?
        && table_exists(db, client, "trackedentityattribute").await?)
    {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT kind || ' ' || uid || ' (' || name || ')', count(*) OVER ()
             FROM (SELECT 'data element' AS kind, uid, name FROM public.dataelement
                   WHERE valuetype = 'TRACKER_ASSOCIATE'
                   UNION ALL
                   SELECT 'tracked entity attribute', uid, name FROM public.trackedentityattribute
                   WHERE valuetype = 'TRACKER_ASSOCIATE') found
             ORDER BY kind, uid LIMIT $1",
            &[&(LISTED_ROWS as i64)],
        )
        .await
        .map_err(|e| db.query_error("looking for the TRACKER_ASSOCIATE value type", e))?;
    Ok(Some(FoundRows {
        count: rows.first().map(|r| r.get::<_, i64>(1)).unwrap_or(0),
        listed: rows.iter().map(|r| r.get(0)).collect(),
    }))
}
