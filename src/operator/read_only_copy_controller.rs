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

use crate::crd::dhis2_instance::{Dhis2Instance, ReadOnlyCopyStatus};
use crate::crd::upgrade::UpgradeStatus;
use crate::crd::{Dhis2Database, Dhis2Restore};
use crate::postgres::quote_ident;

use super::apply::{Ownership, Parent, ownership};
use super::conditions::is_true;
use super::context::Context;
use super::database_connection::database_target;
use super::dhis_conf::DatabaseConnection;
use super::error::{Error, Result};
use super::read_only_copy::{
    CopyAction, CopyNames, CopySeen, copy_connection_secret, copy_database, copy_instance,
    copy_restore, copy_wanted, plan_copy,
};
use super::restore_steps::Phase as RestorePhase;
use super::scheduled_objects::create_once;

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
            (
                RestorePhase::parse(s.phase.as_deref()),
                s.failure_reason.or(s.message),
            )
        }),
    })
}

/// The copy's step for the instance's upgrade as this reconcile left it.
pub async fn advance_read_only_copy(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
    connection: &DatabaseConnection,
    upgrade: Option<&UpgradeStatus>,
) -> Result<CopyProgress> {
    let settings = instance.spec.upgrade.clone().unwrap_or_default();
    let recorded = instance
        .status
        .as_ref()
        .and_then(|s| s.read_only_copy.clone());
    let wanted = copy_wanted(&settings, upgrade)
        .then(|| CopyNames::of(&instance.name_any(), &connection.database));
    let names = match (&wanted, &recorded) {
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
    let from_version = upgrade.map(|u| u.from_version.as_str()).unwrap_or_default();
    let plan = plan_copy(
        wanted.as_ref(),
        recorded.as_ref(),
        &seen(ctx, ns, &names.instance).await?,
        from_version,
    );
    let parent = Parent::of(instance);
    match plan.action {
        None => {}
        Some(CopyAction::Create) => {
            let u = upgrade
                .ok_or_else(|| Error::Upgrade("read-only copy without an upgrade".into()))?;
            let backup = u.backup_name.as_deref().ok_or_else(|| {
                Error::Upgrade("read-only copy before the pre-upgrade backup".into())
            })?;
            create_copy_database(connection, &names.database).await?;
            create_once(
                &ctx.api::<Secret>(ns),
                "Secret",
                &copy_connection_secret(instance, &names, connection),
                &parent,
            )
            .await?;
            create_once(
                &ctx.api::<Dhis2Database>(ns),
                "Dhis2Database",
                &copy_database(instance, &names),
                &parent,
            )
            .await?;
            let copy = copy_instance(instance, &names, &u.from_version, u.from_image.as_deref());
            if create_once(
                &ctx.api::<Dhis2Instance>(ns),
                "Dhis2Instance",
                &copy,
                &parent,
            )
            .await?
            {
                tracing::info!(instance = %instance.name_any(), copy = %names.instance, "read-only copy created");
            }
            create_once(
                &ctx.api::<Dhis2Restore>(ns),
                "Dhis2Restore",
                &copy_restore(instance, &names, backup, &u.to_version),
                &parent,
            )
            .await?;
        }
        Some(CopyAction::Remove) => {
            delete_ours(&ctx.api::<Dhis2Restore>(ns), &names.instance, &parent).await?;
            delete_ours(&ctx.api::<Dhis2Instance>(ns), &names.instance, &parent).await?;
            delete_ours(&ctx.api::<Dhis2Database>(ns), &names.instance, &parent).await?;
            delete_ours(&ctx.api::<Secret>(ns), &names.secret(), &parent).await?;
            tracing::info!(instance = %instance.name_any(), copy = %names.instance, "read-only copy removed");
        }
        Some(CopyAction::DropDatabases) => {
            let dropped = drop_copy_databases(connection, &names).await?;
            tracing::info!(instance = %instance.name_any(), databases = ?dropped, "read-only copy's databases dropped");
        }
    }
    let requeue = plan.status.as_ref().map(|_| Duration::from_secs(3));
    Ok(CopyProgress {
        status: plan.status,
        requeue,
    })
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
/// only once it can connect; the restore then swaps the restored one in).
async fn create_copy_database(connection: &DatabaseConnection, database: &str) -> Result<()> {
    let client = admin_client(connection).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .map_err(|e| Error::Upgrade(format!("looking for the database {database}: {e}")))?
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
                Error::Upgrade(format!(
                    "creating the read-only copy's database {database} (the database account needs CREATEDB, as restores do): {e}"
                ))
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
    for name in rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|n| names.owns_database(n) && *n != connection.database)
    {
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&name)
            ))
            .await
            .map_err(|e| {
                Error::Upgrade(format!(
                    "dropping the read-only copy's database {name}: {e}"
                ))
            })?;
        dropped.push(name);
    }
    Ok(dropped)
}
