//! Reconciles a `provider: cnpg` `Dhis2Database`: the I/O around `cnpg_archive`, `cnpg_build`
//! and `cnpg_status`. Finds out whether CloudNativePG (and its Barman Cloud plugin) is installed,
//! which instance uses the database, applies the Cluster and its archive objects, and reads back
//! what CloudNativePG reports.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Resource, ResourceExt};

use crate::cnpg::{Cluster, ObjectStore, ScheduledBackup};
use crate::crd::dhis2_database::{Dhis2Database, Dhis2DatabaseStatus};
use crate::crd::dhis2_instance::Dhis2Instance;
use crate::crd::dhis2_restore::Dhis2Restore;

use crate::operator::context::Context;
use crate::operator::database::cnpg::archive::{Archive, NoArchive, resolve_archive};
use crate::operator::database::cnpg::build::{
    ClusterPlan, RecoveryPlan, app_secret_name, build_cnpg_children, default_instances,
    object_store_name, read_write_service_name, recovery_object_store_name, scheduled_backup_name,
};
use crate::operator::database::cnpg::inherited::inherited_settings;
use crate::operator::database::cnpg::status::{CnpgHealth, cnpg_health, cnpg_status_summary};
use crate::operator::database::cnpg::superuser::restore_needing_superuser;
use crate::operator::database::connection::instance_database_name;
use crate::operator::error::{Error, Result};
use crate::operator::kit::apply::{Ownership, Parent, apply_owned, ownership};

pub const CNPG_API: &str = "postgresql.cnpg.io/v1";
pub const BARMAN_CLOUD_API: &str = "barmancloud.cnpg.io/v1";

/// Said when `provider: cnpg` is asked of a cluster without CloudNativePG.
pub fn cnpg_missing_message() -> String {
    format!(
        "provider: cnpg needs CloudNativePG, but this Kubernetes cluster does not serve {CNPG_API}: install CloudNativePG 1.26 or later \
         (kubectl apply --server-side -f https://raw.githubusercontent.com/cloudnative-pg/cloudnative-pg/release-1.30/releases/cnpg-1.30.0.yaml) \
         and, for WAL archiving and point-in-time recovery, its Barman Cloud plugin (https://cloudnative-pg.io/plugin-barman-cloud/), \
         then this database is created within a minute; or use provider: managed"
    )
}

/// Whether the API server serves `kind` (plural resource name) in `api_version`.
async fn serves(ctx: &Context, api_version: &str, plural: &str) -> Result<bool> {
    match ctx.client.list_api_group_resources(api_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(Error::kube(
            format!("asking whether {api_version} is served"),
            e,
        )),
    }
}

/// The instances that use this database (by `databaseRef` or as their dedicated one).
async fn instances_using(ctx: &Context, ns: &str, database: &str) -> Result<Vec<Dhis2Instance>> {
    let mut users: Vec<Dhis2Instance> = ctx
        .api::<Dhis2Instance>(ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing Dhis2Instances".to_string(), e))?
        .items
        .into_iter()
        .filter(|i| instance_database_name(i) == database)
        .collect();
    users.sort_by_key(|i| i.name_any());
    Ok(users)
}

/// Deletes our object of that name, if there is one (an archive no longer wanted).
async fn delete_ours<K>(api: &Api<K>, kind: &str, name: &str, parent: &Parent) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading {kind} {name}"), e))?
        && ownership(existing.meta(), parent) == Ownership::Ours
    {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(%name, kind, "deleted: no longer wanted"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("deleting {kind} {name}"), e)),
        }
    }
    Ok(())
}

pub async fn apply_cnpg(
    db: &Dhis2Database,
    ctx: &Context,
    ns: &str,
    status: &mut Dhis2DatabaseStatus,
) -> Result<CnpgHealth> {
    let name = db.name_any();
    if !serves(ctx, CNPG_API, "clusters").await? {
        let message = cnpg_missing_message();
        return Ok(CnpgHealth {
            ready: false,
            reason: "CnpgNotInstalled",
            message: message.clone(),
            problem: Some(("CnpgNotInstalled", message)),
        });
    }
    let plugin = serves(ctx, BARMAN_CLOUD_API, "objectstores").await?;
    let users = instances_using(ctx, ns, &name).await?;
    let spec = db.spec.cnpg.clone().unwrap_or_default();
    // Taken from the instances using it, or kept from when one did (status.cnpg.inherited).
    let inherited = inherited_settings(
        &users,
        db.status
            .as_ref()
            .and_then(|s| s.cnpg.as_ref())
            .and_then(|c| c.inherited.as_ref()),
    );
    let instance_repository = inherited
        .repository
        .as_ref()
        .zip(inherited.repository_from.as_deref());
    let mut problem = None;
    let archive = match resolve_archive(spec.backup.as_ref(), instance_repository, plugin) {
        Ok(a) => Some(a),
        Err(NoArchive::Unusable { message, .. }) => {
            problem = Some(("ArchiveNotPossible", message));
            None
        }
        Err(NoArchive::Disabled | NoArchive::NoRepository) => None,
    };
    let recovery_archive: Option<(String, Archive)> = match &spec.recovery {
        None => None,
        Some(r) => {
            let own = spec
                .backup
                .as_ref()
                .and_then(|b| b.repository.as_ref())
                .map(|repo| (repo, "spec.cnpg.backup.repository"))
                .or(instance_repository);
            let from = r
                .repository
                .as_ref()
                .map(|repo| (repo, "spec.cnpg.recovery.repository"))
                .or(own);
            match resolve_archive(None, from, plugin) {
                Ok(a) => Some((r.source.clone(), a)),
                Err(no) => {
                    let why = match no {
                        NoArchive::Unusable { message, .. } => message,
                        _ => format!(
                            "spec.cnpg.recovery: no S3 repository holding the archive of {}: set spec.cnpg.recovery.repository",
                            r.source
                        ),
                    };
                    return Ok(CnpgHealth {
                        ready: false,
                        reason: "InvalidSpec",
                        message: why.clone(),
                        problem: Some(("InvalidSpec", why)),
                    });
                }
            }
        }
    };
    let instances = spec
        .instances
        .unwrap_or(default_instances(inherited.production));
    let restores = ctx
        .api::<Dhis2Restore>(ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing Dhis2Restores".to_string(), e))?
        .items;
    let superuser_for = restore_needing_superuser(&name, &restores, &users);
    let plan = ClusterPlan {
        instances,
        superuser_access: superuser_for.is_some(),
        archive: archive.as_ref(),
        recovery: recovery_archive.as_ref().map(|(source, a)| RecoveryPlan {
            source_cluster: source,
            source_archive: a,
            target_time: spec
                .recovery
                .as_ref()
                .and_then(|r| r.target_time.as_deref()),
        }),
    };
    let children = build_cnpg_children(db, &plan);
    let parent = Parent::of(db);
    let stores: Api<ObjectStore> = ctx.api(ns);
    let scheduled: Api<ScheduledBackup> = ctx.api(ns);
    let applied = async {
        for store in [&children.object_store, &children.recovery_object_store]
            .into_iter()
            .flatten()
        {
            apply_owned(&stores, "ObjectStore", store, &parent).await?;
        }
        let cluster = apply_owned(
            &ctx.api::<Cluster>(ns),
            "Cluster",
            &children.cluster,
            &parent,
        )
        .await?;
        match &children.scheduled_backup {
            Some(s) => {
                apply_owned(&scheduled, "ScheduledBackup", s, &parent).await?;
            }
            None => {
                delete_ours(
                    &scheduled,
                    "ScheduledBackup",
                    &scheduled_backup_name(&name),
                    &parent,
                )
                .await?;
            }
        }
        if plugin {
            if children.object_store.is_none() {
                delete_ours(&stores, "ObjectStore", &object_store_name(&name), &parent).await?;
            }
            if children.recovery_object_store.is_none() {
                delete_ours(
                    &stores,
                    "ObjectStore",
                    &recovery_object_store_name(&name),
                    &parent,
                )
                .await?;
            }
        }
        Ok::<_, Error>(cluster)
    }
    .await;
    let cluster = match applied {
        Ok(c) => c,
        Err(e @ Error::Conflict { .. }) => {
            return Ok(CnpgHealth {
                ready: false,
                reason: "Conflict",
                message: e.to_string(),
                problem: Some(("Conflict", e.to_string())),
            });
        }
        Err(e) => return Err(e),
    };
    let mut summary = cnpg_status_summary(&name, cluster.status.as_ref());
    summary.wal_archiving = Some(
        archive
            .as_ref()
            .map_or("none", |a| a.method.as_str())
            .to_string(),
    );
    summary.archive = archive
        .as_ref()
        .map(|a| format!("{}/{name}", a.destination_path));
    summary.inherited = Some(inherited);
    summary.superuser_for = superuser_for;
    status.cnpg = Some(summary);
    let secret_name = app_secret_name(&name);
    status.credentials_secret = Some(secret_name.clone());
    status.endpoint = Some(format!("{}.{ns}.svc:5432", read_write_service_name(&name)));
    let mut health = cnpg_health(&name, instances, archive.is_some(), cluster.status.as_ref());
    if health.ready
        && ctx
            .api::<Secret>(ns)
            .get_opt(&secret_name)
            .await
            .map_err(|e| Error::kube(format!("reading Secret {secret_name}"), e))?
            .is_none()
    {
        health.ready = false;
        health.reason = "WaitingForCnpg";
        health.message = format!(
            "waiting for CloudNativePG to write the application Secret {secret_name} of cluster {name}"
        );
    }
    if health.problem.is_none() {
        health.problem = problem;
    }
    Ok(health)
}
