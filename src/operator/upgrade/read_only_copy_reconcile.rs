//! The I/O of the read-only copy (`spec.upgrade.readOnlyDuringUpgrade`), run by the instance's
//! reconcile after the upgrade's step: reads the copy, lets `read_only_copy::plan_copy` choose,
//! carries out its one action and hands back the status to record (whose `serving` decides
//! where the instance's Service sends users).

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_postgres::error::SqlState;

use crate::crd::dhis2_instance::{Dhis2Instance, ReadOnlyCopyStatus};
use crate::crd::upgrade::UpgradeStatus;
use crate::crd::{Dhis2Database, Dhis2Restore};
use crate::postgres::quote_ident;

use crate::operator::context::Context;
use crate::operator::database::connection::database_target;
use crate::operator::database::connection_settings::DatabaseConnection;
use crate::operator::error::{Error, Result};
use crate::operator::kit::apply::{Ownership, Parent, ownership};
use crate::operator::kit::conditions::is_true;
use crate::operator::kit::create_once::create_once;
use crate::operator::upgrade::read_only_copy::{
    CopyAction, CopyNames, CopySeen, copy_connection_secret, copy_database, copy_failed,
    copy_impossible, copy_instance, copy_restore, copy_wanted, create_database_failure,
    drop_database_statements, plan_copy,
};
use crate::rules::names::dedicated_database_name;

/// The copy's status after this step, and how soon to look again.
pub struct CopyProgress {
    pub status: Option<ReadOnlyCopyStatus>,
    pub requeue: Option<Duration>,
}

async fn seen(ctx: &Context, ns: &str, name: &str) -> Result<CopySeen> {
    let copy = ctx
        .api::<Dhis2Instance>(ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Instance {name}"), e))?;
    let restore = ctx
        .api::<Dhis2Restore>(ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Restore {name}"), e))?;
    Ok(CopySeen {
        instance_exists: copy.is_some(),
        ready: copy
            .and_then(|c| c.status)
            .is_some_and(|s| is_true(&s.conditions, "Ready")),
        restore: restore.map(|r| {
            let s = r.status.unwrap_or_default();
            (s.phase.unwrap_or_default(), s.failure_reason.or(s.message))
        }),
    })
}

/// The copy's step for the instance's upgrade as this reconcile left it. Never fails the
/// reconcile: a copy that cannot be made is reported in its status and the upgrade goes on; a
/// failure to read or remove it is logged and looked at again.
pub async fn advance_read_only_copy(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
    connection: &DatabaseConnection,
    upgrade: Option<&UpgradeStatus>,
) -> CopyProgress {
    let recorded = instance
        .status
        .as_ref()
        .and_then(|s| s.read_only_copy.clone());
    match step(instance, ctx, ns, connection, upgrade, recorded.as_ref()).await {
        Ok(progress) => progress,
        Err(e) => {
            tracing::warn!(instance = %instance.name_any(), error = %e, "read-only copy: looking again shortly");
            CopyProgress {
                status: recorded.map(|r| ReadOnlyCopyStatus {
                    message: Some(format!("{e}; trying again")),
                    ..r
                }),
                requeue: Some(Duration::from_secs(30)),
            }
        }
    }
}

async fn step(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
    connection: &DatabaseConnection,
    upgrade: Option<&UpgradeStatus>,
    recorded: Option<&ReadOnlyCopyStatus>,
) -> Result<CopyProgress> {
    let settings = instance.spec.upgrade.clone().unwrap_or_default();
    let wanted = copy_wanted(&settings, upgrade)
        .then(|| CopyNames::of(&instance.name_any(), &connection.database));
    let names = match (&wanted, recorded) {
        (Some(n), _) => n.clone(),
        (None, Some(r)) => CopyNames {
            instance: r.instance.clone(),
            database: r.database.clone(),
        },
        (None, None) => {
            return Ok(CopyProgress {
                status: None,
                requeue: None,
            });
        }
    };
    let impossible = match &wanted {
        Some(_) => impossible_on_server(instance, ctx, ns).await?,
        None => None,
    };
    let from_version = upgrade.map(|u| u.from_version.as_str()).unwrap_or_default();
    let plan = plan_copy(
        wanted.as_ref(),
        recorded,
        &seen(ctx, ns, &names.instance).await?,
        from_version,
        impossible.as_deref(),
    );
    let parent = Parent::of(instance);
    let mut status = plan.status.clone();
    match plan.action {
        None => {}
        Some(CopyAction::Create) => {
            if let Err(why) = create_copy(instance, ctx, ns, connection, upgrade, &names).await {
                let failed = copy_failed(&names, &why);
                tracing::warn!(instance = %instance.name_any(), copy = %names.instance, failure = %why, "read-only copy could not be made; the upgrade goes on without it");
                ctx.event(
                    instance,
                    true,
                    "ReadOnlyCopyFailed",
                    "ReadOnlyCopy",
                    format!("{why}; the upgrade goes on without a read-only copy"),
                )
                .await;
                status = Some(failed);
            }
        }
        Some(CopyAction::Remove) => {
            delete_ours(&ctx.api::<Dhis2Restore>(ns), &names.instance, &parent).await?;
            delete_ours(&ctx.api::<Dhis2Instance>(ns), &names.instance, &parent).await?;
            delete_ours(&ctx.api::<Dhis2Database>(ns), &names.instance, &parent).await?;
            delete_ours(&ctx.api::<Secret>(ns), &names.secret(), &parent).await?;
            tracing::info!(instance = %instance.name_any(), copy = %names.instance, "read-only copy removed");
        }
        Some(CopyAction::DropDatabases) => match drop_copy_databases(connection, &names).await {
            Ok(dropped) => {
                tracing::info!(instance = %instance.name_any(), databases = ?dropped, "read-only copy's databases dropped");
            }
            Err(e) => {
                // Kept in status (and tried again) so the leftover is not forgotten; it holds
                // nothing up.
                tracing::warn!(instance = %instance.name_any(), error = %e, "read-only copy's databases not dropped");
                return Ok(CopyProgress {
                    status: recorded.map(|r| ReadOnlyCopyStatus {
                        serving: false,
                        failure: None,
                        message: Some(format!(
                            "{e}; trying again (or drop the databases {}* yourself)",
                            names.database
                        )),
                        ..r.clone()
                    }),
                    requeue: Some(Duration::from_secs(300)),
                });
            }
        },
    }
    let requeue = status
        .as_ref()
        .filter(|s| s.failure.is_none())
        .map(|_| Duration::from_secs(3));
    Ok(CopyProgress { status, requeue })
}

/// Why the instance's database server cannot hold a copy (`copy_impossible`), or `None`.
async fn impossible_on_server(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
) -> Result<Option<String>> {
    let name = instance
        .spec
        .database_ref
        .clone()
        .unwrap_or_else(|| dedicated_database_name(&instance.name_any()));
    let db = ctx
        .api::<Dhis2Database>(ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Database {name}"), e))?;
    Ok(db.and_then(|db| copy_impossible(db.spec.provider, &name)))
}

/// Creates the copy's database, connection, `Dhis2Database`, instance and restore; why not, in
/// one line with the fix.
async fn create_copy(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
    connection: &DatabaseConnection,
    upgrade: Option<&UpgradeStatus>,
    names: &CopyNames,
) -> std::result::Result<(), String> {
    let parent = Parent::of(instance);
    let u = upgrade.ok_or("read-only copy without an upgrade")?;
    let backup = u
        .backup_name
        .as_deref()
        .ok_or("read-only copy before the pre-upgrade backup")?;
    create_copy_database(connection, &names.database).await?;
    let made = async {
        create_once(
            &ctx.api::<Secret>(ns),
            &copy_connection_secret(instance, names, connection),
            Some(&parent),
        )
        .await?;
        create_once(
            &ctx.api::<Dhis2Database>(ns),
            &copy_database(instance, names),
            Some(&parent),
        )
        .await?;
        let copy = copy_instance(instance, names, &u.from_version, u.from_image.as_deref());
        if create_once(&ctx.api::<Dhis2Instance>(ns), &copy, Some(&parent))
        .await?
        {
            tracing::info!(instance = %instance.name_any(), copy = %names.instance, "read-only copy created");
        }
        create_once(
            &ctx.api::<Dhis2Restore>(ns),
            &copy_restore(instance, names, backup, &u.to_version),
            Some(&parent),
        )
        .await?;
        Ok::<_, Error>(())
    }
    .await;
    made.map_err(|e| e.to_string())
}

/// Deletes the object when it exists and is the instance's.
async fn delete_ours<K>(api: &Api<K>, name: &str, parent: &Parent) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let kind = K::kind(&()).to_string();
    let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading {kind} {name}"), e))?
    else {
        return Ok(());
    };
    if ownership(existing.meta(), parent) == Ownership::Foreign {
        return Ok(());
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting {kind} {name}"), e)),
    }
}

async fn admin_client(connection: &DatabaseConnection) -> Result<tokio_postgres::Client> {
    let target = database_target(connection, "the database's connection Secret")
        .map_err(|why| Error::Upgrade(format!("connecting for the read-only copy: {why}")))?;
    tokio::time::timeout(Duration::from_secs(30), target.connect())
        .await
        .map_err(|_| Error::Upgrade(format!("no answer from {target} within 30 s")))?
        .map_err(|e| Error::Upgrade(format!("connecting to {target}: {e}")))
}

/// The copy's empty database, owned by the instance's account (its `Dhis2Database` is ready
/// only once it can connect; the restore then swaps the restored one in); why not, with the fix.
async fn create_copy_database(
    connection: &DatabaseConnection,
    database: &str,
) -> std::result::Result<(), String> {
    let client = admin_client(connection).await.map_err(|e| e.to_string())?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .map_err(|e| format!("looking for the database {database}: {e}"))?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'",
                quote_ident(database),
                quote_ident(&connection.username)
            ))
            .await
            .map_err(|e| {
                let denied = e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE);
                let error = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string());
                create_database_failure(database, &connection.username, &error, denied)
            })?;
    }
    Ok(())
}

/// Drops the copy's database and those its restore replaced; their names.
async fn drop_copy_databases(
    connection: &DatabaseConnection,
    names: &CopyNames,
) -> Result<Vec<String>> {
    let client = admin_client(connection).await?;
    let rows = client
        .query("SELECT datname FROM pg_database ORDER BY 1", &[])
        .await
        .map_err(|e| Error::Upgrade(format!("listing databases: {e}")))?;
    let mut dropped = Vec::new();
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| Error::Upgrade(format!("reading the server's version: {e}")))?
        .get(0);
    for name in rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|n| names.owns_database(n) && *n != connection.database)
    {
        for statement in drop_database_statements(&name, u32::try_from(version).unwrap_or(0)) {
            client.batch_execute(&statement).await.map_err(|e| {
                Error::Upgrade(format!(
                    "dropping the read-only copy's database {name}: {e}"
                ))
            })?;
        }
        dropped.push(name);
    }
    Ok(dropped)
}
