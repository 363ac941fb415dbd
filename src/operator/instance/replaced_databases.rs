//! Gives back the room restores leave behind: a restore keeps what the instance held as
//! `<database>__replaced_<time>`, which nothing ever drops by itself, so a few refreshes fill the
//! database volume. The operator drops those older than `spec.keepReplacedDatabasesDays`, at
//! most hourly per instance, and never while a restore or an upgrade is under way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::backup::restore_plan::expired_replaced_databases;
use crate::crd::dhis2_instance::Dhis2Instance;
use crate::postgres::quote_ident;

use crate::operator::context::Context;
use crate::operator::database::connection::database_target;
use crate::operator::database::connection_settings::DatabaseConnection;

const EVERY: Duration = Duration::from_secs(3600);

/// When each instance (`namespace/name`) was last looked at.
static LOOKED_AT: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);

fn due(key: &str) -> bool {
    let mut looked = LOOKED_AT.lock().unwrap_or_else(|e| e.into_inner());
    let map = looked.get_or_insert_with(HashMap::new);
    match map.get(key) {
        Some(at) if at.elapsed() < EVERY => false,
        _ => {
            map.insert(key.to_string(), Instant::now());
            true
        }
    }
}

/// Drops the instance's expired replaced databases; a failure is logged and tried again in an
/// hour (the room is wanted, but DHIS2 runs without it).
pub async fn drop_expired_replaced_databases(
    instance: &Dhis2Instance,
    ctx: &Context,
    connection: &DatabaseConnection,
) {
    let key = format!(
        "{}/{}",
        instance.namespace().unwrap_or_default(),
        instance.name_any()
    );
    if !due(&key) {
        return;
    }
    let keep = chrono::Duration::days(i64::from(instance.spec.keep_replaced_databases_days));
    let dropped = match drop_expired(connection, ctx.clock.now(), keep).await {
        Ok(dropped) => dropped,
        Err(why) => {
            tracing::warn!(instance = %key, "replaced databases not dropped: {why}");
            return;
        }
    };
    for (name, result) in dropped {
        let (warning, reason, message) = match result {
            Ok(()) => (
                false,
                "ReplacedDatabaseDropped",
                format!(
                    "dropped {name}, the database a restore replaced, kept {} day(s) (spec.keepReplacedDatabasesDays)",
                    instance.spec.keep_replaced_databases_days
                ),
            ),
            Err(why) => (
                true,
                "ReplacedDatabaseNotDropped",
                format!(
                    "{name} is past spec.keepReplacedDatabasesDays but could not be dropped: {why}"
                ),
            ),
        };
        ctx.event(instance, warning, reason, "Cleanup", message)
            .await;
    }
}

async fn drop_expired(
    connection: &DatabaseConnection,
    now: chrono::DateTime<chrono::Utc>,
    keep: chrono::Duration,
) -> Result<Vec<(String, Result<(), String>)>, String> {
    let (client, names) = databases_on_server(connection).await?;
    let mut dropped = Vec::new();
    for name in expired_replaced_databases(&connection.database, &names, now, keep) {
        let result = client
            .batch_execute(&format!("DROP DATABASE {}", quote_ident(&name)))
            .await
            .map_err(|e| e.to_string());
        dropped.push((name, result));
    }
    Ok(dropped)
}

/// Every database on the server `connection` reaches (and the connection that listed them).
pub async fn databases_on_server(
    connection: &DatabaseConnection,
) -> Result<(tokio_postgres::Client, Vec<String>), String> {
    let target = database_target(connection, "the database's connection Secret")?;
    let client = tokio::time::timeout(Duration::from_secs(30), target.connect())
        .await
        .map_err(|_| format!("no answer from {target} within 30 s"))?
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = client
        .query("SELECT datname FROM pg_database", &[])
        .await
        .map_err(|e| format!("listing databases: {e}"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok((client, names))
}
