//! Reconciles `Dhis2Database`: validate → build → apply → status. A finalizer removes the data
//! volume and credentials only under `deletionPolicy: Delete`; under `Retain` they stay.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::crd::common::DeletionPolicy;
use crate::crd::dhis2_database::{DatabaseProvider, Dhis2Database, Dhis2DatabaseStatus};

use crate::operator::context::Context;
use crate::operator::database::build::{APP, build_database_children};
use crate::operator::database::cnpg::reconcile::apply_cnpg;
use crate::operator::database::connection::database_target;
use crate::operator::database::connection_settings::connection_from_secret;
use crate::operator::database::credentials::{
    CredentialsPlan, SecretFound, credentials_missing_message, credentials_plan, random_password,
};
use crate::operator::database::storage::{
    StoragePlan, VolumeShape, expansion_refused_message, storage_plan,
};
use crate::operator::error::{Error, Result};
use crate::operator::instance::status::{DatabaseObservation, database_phase_and_conditions};
use crate::operator::instance::validate::{provider_change, validate_database};
use crate::operator::kit::apply::{Ownership, Parent, apply_owned, ownership};
use crate::operator::kit::conditions::merge_conditions;
use crate::operator::kit::finalizers::{add_finalizer, has_finalizer, remove_finalizer};
use crate::operator::kit::status_patch::patch_status;
use crate::rules::names::{
    credentials_secret_name, database_data_claim_name, database_service_name,
};

pub const KIND: &str = "Dhis2Database";

pub async fn reconcile(db: Arc<Dhis2Database>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    let ns = db.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Dhis2Database> = ctx.api(&ns);
    let result = if db.meta().deletion_timestamp.is_some() {
        delete(&db, &ctx, &ns, &api).await
    } else if add_finalizer(&api, &*db).await? {
        apply(&db, &ctx, &ns).await
    } else {
        // Changed since it was read: the change brings it back.
        Ok(Action::await_change())
    };
    if result.is_ok() {
        ctx.reconcile_succeeded(KIND, &*db);
    }
    result
}

/// Being deleted: the data goes as `deletionPolicy` says, then the finalizer.
async fn delete(
    db: &Dhis2Database,
    ctx: &Context,
    ns: &str,
    api: &Api<Dhis2Database>,
) -> Result<Action> {
    if !has_finalizer(db) {
        return Ok(Action::await_change());
    }
    let action = cleanup(db, ctx, ns).await?;
    if remove_finalizer(api, db).await? {
        Ok(action)
    } else {
        Ok(Action::requeue(Duration::from_secs(1)))
    }
}

pub fn error_policy(db: Arc<Dhis2Database>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_failure(KIND, &*db, error)
}

/// The non-empty `password` of a Secret.
fn password_in(secret: &Secret) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("password"))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|p| !p.is_empty())
}

/// What reconciling found: (ready, reason, message) and a problem that needs a person.
struct Outcome {
    ready: bool,
    reason: &'static str,
    message: String,
    problem: Option<(&'static str, String)>,
}

impl Outcome {
    fn blocked(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message: message.clone(),
            problem: Some((reason, message)),
        }
    }
}

async fn apply(db: &Dhis2Database, ctx: &Context, ns: &str) -> Result<Action> {
    let name = db.name_any();
    let generation = db.metadata.generation;
    let old = db.status.clone().unwrap_or_default();
    let ready_with = old.provider.or_else(|| {
        // Ready before status.provider existed (managed and external only): its Secret says which.
        status_was_ready(db).then(|| {
            if old.credentials_secret.as_deref() == Some(credentials_secret_name(&name).as_str()) {
                DatabaseProvider::Managed
            } else {
                DatabaseProvider::External
            }
        })
    });
    let problems: Vec<String> = validate_database(&db.spec)
        .into_iter()
        .chain(provider_change(&db.spec, ready_with))
        .map(|p| p.to_string())
        .collect();
    let mut status = Dhis2DatabaseStatus {
        observed_generation: generation,
        ..Default::default()
    };
    let outcome = if !problems.is_empty() {
        Outcome::blocked("InvalidSpec", problems.join("; "))
    } else {
        match db.spec.provider {
            DatabaseProvider::Managed => apply_managed(db, ctx, ns, &name, &mut status).await?,
            DatabaseProvider::External => check_external(db, ctx, ns, &mut status).await?,
            DatabaseProvider::Cnpg => {
                let h = apply_cnpg(db, ctx, ns, &mut status).await?;
                Outcome {
                    ready: h.ready,
                    reason: h.reason,
                    message: h.message,
                    problem: h.problem,
                }
            }
        }
    };
    // One Event per new problem, not one per reconcile.
    if let Some((reason, message)) = &outcome.problem {
        let old_degraded = old
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True");
        if old.observed_generation != generation || old_degraded.is_none_or(|c| c.reason != *reason)
        {
            ctx.event(db, true, reason, "Reconcile", message.clone())
                .await;
        }
    }
    let ready = outcome.ready;
    status.provider = if ready && problems.is_empty() {
        Some(db.spec.provider)
    } else {
        ready_with
    };
    let (phase, conditions) = database_phase_and_conditions(&DatabaseObservation {
        generation,
        ready: outcome.ready,
        reason: outcome.reason,
        message: outcome.message,
        problem: outcome.problem,
    });
    status.phase = Some(phase);
    status.conditions = merge_conditions(&old.conditions, conditions);
    patch_status(&ctx.api::<Dhis2Database>(ns), &name, &status, &[]).await?;
    // CloudNativePG's clusters are not watched (its CRDs may be installed after the operator
    // starts): a failover is noticed at the next look.
    let every = match (db.spec.provider, ready) {
        (DatabaseProvider::Cnpg, _) => 15,
        (_, true) => 60,
        (_, false) => 20,
    };
    Ok(Action::requeue(Duration::from_secs(every)))
}

fn template_shape(sts: &StatefulSet) -> Option<VolumeShape> {
    let t = sts.spec.volume_claim_templates.as_ref()?.first()?;
    claim_shape(t)
}

fn claim_shape(claim: &PersistentVolumeClaim) -> Option<VolumeShape> {
    let spec = claim.spec.as_ref()?;
    Some(VolumeShape {
        size: spec
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")?
            .0
            .clone(),
        class: spec.storage_class_name.clone(),
    })
}

async fn apply_managed(
    db: &Dhis2Database,
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &mut Dhis2DatabaseStatus,
) -> Result<Outcome> {
    let parent = Parent::of(db);
    let secrets: Api<Secret> = ctx.api(ns);
    let claims: Api<PersistentVolumeClaim> = ctx.api(ns);
    let secret_name = credentials_secret_name(name);
    let claim_name = database_data_claim_name(name);
    let found = match secrets
        .get_opt(&secret_name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {secret_name}"), e))?
    {
        None => SecretFound::Absent,
        Some(s) if ownership(s.meta(), &parent) == Ownership::Foreign => SecretFound::Foreign,
        Some(s) => SecretFound::Ours {
            password: password_in(&s),
        },
    };
    let claim = claims
        .get_opt(&claim_name)
        .await
        .map_err(|e| Error::kube(format!("reading PersistentVolumeClaim {claim_name}"), e))?;
    // The volume exists, or existed: PostgreSQL has been initialised with a password.
    let initialised = claim.is_some() || status_was_ready(db);
    let password = match credentials_plan(found, initialised) {
        CredentialsPlan::Keep(p) => p,
        CredentialsPlan::Generate => random_password(),
        CredentialsPlan::Conflict => {
            let err = Error::Conflict {
                kind: "Secret".into(),
                name: secret_name,
            };
            return Ok(Outcome::blocked("Conflict", err.to_string()));
        }
        CredentialsPlan::Missing { secret_deleted } => {
            status.credentials_secret = Some(secret_name.clone());
            return Ok(Outcome::blocked(
                "CredentialsMissing",
                credentials_missing_message(ns, name, &secret_name, &claim_name, secret_deleted),
            ));
        }
    };
    let mut children = build_database_children(db, &password);
    let statefulsets: Api<StatefulSet> = ctx.api(ns);
    let existing = statefulsets
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading StatefulSet {name}"), e))?;
    // Volume claim templates are immutable: an existing StatefulSet keeps its own, and a size
    // change is made on the claim itself (or reported when it cannot be made).
    let mut storage_problem = None;
    if let Some(existing) = existing
        .as_ref()
        .filter(|s| ownership(s.meta(), &parent) == Ownership::Ours)
        && let Some(template) = template_shape(existing)
    {
        let desired = template_shape(&children.statefulset);
        children.statefulset.spec.volume_claim_templates =
            existing.spec.volume_claim_templates.clone();
        // Immutable too: a StatefulSet made before the Service was named `<db>-postgresql`
        // keeps its old serviceName (it only names the pods' DNS domain).
        children.statefulset.spec.service_name = existing.spec.service_name.clone();
        let current = claim.as_ref().and_then(claim_shape);
        if let Some(desired) = desired {
            match storage_plan(&template, current.as_ref(), &desired) {
                StoragePlan::Unchanged => {}
                StoragePlan::Refuse { reason, message } => {
                    storage_problem = Some((reason, message));
                }
                StoragePlan::Expand { to } => {
                    let from = current.map(|c| c.size).unwrap_or_default();
                    let patch = json!({"spec": {"resources": {"requests": {"storage": to}}}});
                    match claims
                        .patch(&claim_name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(database = %name, claim = %claim_name, %from, %to, "expanding the data volume");
                            ctx.event(
                                db,
                                false,
                                "VolumeExpanding",
                                "Resize",
                                format!("data volume {claim_name}: {from} → {to}"),
                            )
                            .await;
                        }
                        Err(kube::Error::Api(e)) if matches!(e.code, 403 | 422) => {
                            storage_problem = Some((
                                "VolumeNotExpandable",
                                expansion_refused_message(&claim_name, &from, &to, &e.message),
                            ));
                        }
                        Err(e) => {
                            return Err(Error::kube(
                                format!("expanding PersistentVolumeClaim {claim_name}"),
                                e,
                            ));
                        }
                    }
                }
            }
        }
    }
    let applied = async {
        apply_owned(&secrets, "Secret", &children.secret, &parent).await?;
        apply_owned(
            &ctx.api::<Service>(ns),
            "Service",
            &children.service,
            &parent,
        )
        .await?;
        apply_owned(&statefulsets, "StatefulSet", &children.statefulset, &parent).await
    }
    .await;
    let statefulset = match applied {
        Ok(s) => s,
        Err(e @ Error::Conflict { .. }) => return Ok(Outcome::blocked("Conflict", e.to_string())),
        Err(e) => return Err(e),
    };
    status.credentials_secret = Some(secret_name);
    status.endpoint = Some(format!("{}.{ns}.svc:5432", database_service_name(name)));
    let ready_replicas = statefulset
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let (ready, reason, message) = if ready_replicas >= 1 {
        (true, "Ready", "PostgreSQL is ready".to_string())
    } else {
        (
            false,
            "WaitingForPod",
            "waiting for the PostgreSQL pod to be ready".to_string(),
        )
    };
    Ok(Outcome {
        ready,
        reason,
        message,
        problem: storage_problem,
    })
}

/// True when the database has been reported ready before (its volume was initialised).
fn status_was_ready(db: &Dhis2Database) -> bool {
    db.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn check_external(
    db: &Dhis2Database,
    ctx: &Context,
    ns: &str,
    status: &mut Dhis2DatabaseStatus,
) -> Result<Outcome> {
    let (ready, reason, message) = external_connection(db, ctx, ns, status).await?;
    Ok(Outcome {
        ready,
        reason,
        message,
        problem: None,
    })
}

async fn external_connection(
    db: &Dhis2Database,
    ctx: &Context,
    ns: &str,
    status: &mut Dhis2DatabaseStatus,
) -> Result<(bool, &'static str, String)> {
    let secret_name = db.spec.external_secret_ref.clone().unwrap_or_default();
    let secret = ctx
        .api::<Secret>(ns)
        .get_opt(&secret_name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {secret_name}"), e))?;
    status.credentials_secret = Some(secret_name.clone());
    let Some(conn) = secret.as_ref().and_then(connection_from_secret) else {
        return Ok((
            false,
            "SecretMissing",
            format!(
                "Secret {secret_name} is missing or lacks host, database, username or password"
            ),
        ));
    };
    status.endpoint = Some(format!("{}:{}", conn.host, conn.port));
    let target = match database_target(&conn, "externalSecretRef") {
        Ok(t) => t,
        Err(e) => return Ok((false, "BadSecret", e)),
    };
    let connected = tokio::time::timeout(Duration::from_secs(10), target.connect()).await;
    match connected {
        Ok(Ok(client)) => {
            let version = client
                .query_one("SELECT current_setting('server_version')", &[])
                .await
                .ok()
                .map(|r| r.get::<_, String>(0))
                .map(|v| v.split_whitespace().next().unwrap_or_default().to_string());
            status.server_version = version.clone();
            // For dhis2_instance_database_size_bytes; a failure here is no reason to stop.
            status.size_bytes = client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await
                .ok()
                .and_then(|r| u64::try_from(r.get::<_, i64>(0)).ok());
            Ok((
                true,
                "Connected",
                format!("connected to PostgreSQL {}", version.unwrap_or_default()),
            ))
        }
        Ok(Err(e)) => Ok((false, "ConnectFailed", e.to_string())),
        Err(_) => Ok((
            false,
            "ConnectFailed",
            format!("no answer from {} within 10s", target),
        )),
    }
}

async fn cleanup(db: &Dhis2Database, ctx: &Context, ns: &str) -> Result<Action> {
    let name = db.name_any();
    if db.spec.deletion_policy == DeletionPolicy::Delete
        && db.spec.provider == DatabaseProvider::Managed
    {
        let parent = Parent::of(db);
        let claim_name = database_data_claim_name(&name);
        let claims: Api<PersistentVolumeClaim> = ctx.api(ns);
        // The StatefulSet's claim has no owner reference: it is ours when it carries the labels
        // of our pod template, which the StatefulSet (ours by UID) stamped on it.
        if let Some(claim) = claims
            .get_opt(&claim_name)
            .await
            .map_err(|e| Error::kube(format!("reading the volume of {name}"), e))?
            && claim
                .labels()
                .get("app.kubernetes.io/name")
                .map(String::as_str)
                == Some(APP)
            && claim.labels().get("app.kubernetes.io/instance") == Some(&name)
        {
            delete_if_present(&claims, &claim_name)
                .await
                .map_err(|e| Error::kube(format!("deleting the volume of {name}"), e))?;
        }
        let secrets: Api<Secret> = ctx.api(ns);
        let secret_name = credentials_secret_name(&name);
        if let Some(secret) = secrets
            .get_opt(&secret_name)
            .await
            .map_err(|e| Error::kube(format!("reading the credentials of {name}"), e))?
            && ownership(secret.meta(), &parent) == Ownership::Ours
        {
            delete_if_present(&secrets, &secret_name)
                .await
                .map_err(|e| Error::kube(format!("deleting the credentials of {name}"), e))?;
        }
        tracing::info!(database = %name, "deleted data volume and credentials (deletionPolicy: Delete)");
    } else {
        tracing::info!(database = %name, "kept data volume and credentials (deletionPolicy: Retain)");
    }
    Ok(Action::await_change())
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> std::result::Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}
