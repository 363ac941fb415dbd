//! Reconciles `Dhis2Database`: validate → build → apply → status. A finalizer removes the data
//! volume and credentials only under `deletionPolicy: Delete`; under `Retain` they stay.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::json;

use crate::crd::common::DeletionPolicy;
use crate::crd::dhis2_database::{DatabaseProvider, Dhis2Database, Dhis2DatabaseStatus};
use crate::postgres::DatabaseTarget;

use super::apply::{apply_owned, is_ours};
use super::conditions::{condition, merge_conditions};
use super::context::Context;
use super::database_build::{APP, build_database_children};
use super::dhis_conf::DatabaseConnection;
use super::error::{Error, Result};
use super::labels::{FINALIZER, credentials_secret_name};
use super::validate::validate_database;

pub const KIND: &str = "Dhis2Database";

pub async fn reconcile(db: Arc<Dhis2Database>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    let ns = db.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Dhis2Database> = ctx.api(&ns);
    finalizer(&api, FINALIZER, db, |event| async {
        match event {
            Finalizer::Apply(db) => apply(&db, &ctx, &ns).await,
            Finalizer::Cleanup(db) => cleanup(&db, &ctx, &ns).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

pub fn error_policy(db: Arc<Dhis2Database>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(database = %db.name_any(), %error, "reconcile failed");
    ctx.metrics.reconcile_failed(KIND, error.metric_label());
    Action::requeue(Duration::from_secs(15))
}

fn random_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Reads host/port/database/username/password from a Secret.
pub fn connection_from_secret(secret: &Secret) -> Option<DatabaseConnection> {
    let get = |k: &str| -> Option<String> {
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(k)) {
            return String::from_utf8(v.0.clone()).ok();
        }
        secret.string_data.as_ref().and_then(|d| d.get(k)).cloned()
    };
    Some(DatabaseConnection {
        host: get("host")?,
        port: get("port").unwrap_or_else(|| "5432".into()),
        database: get("database")?,
        username: get("username")?,
        password: get("password")?,
    })
}

async fn apply(db: &Dhis2Database, ctx: &Context, ns: &str) -> Result<Action> {
    let name = db.name_any();
    let generation = db.metadata.generation;
    let old = db.status.clone().unwrap_or_default();
    let problems: Vec<String> = validate_database(&db.spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut status = Dhis2DatabaseStatus {
        observed_generation: generation,
        ..Default::default()
    };
    let (ready, reason, message) = if !problems.is_empty() {
        let message = problems.join("; ");
        if old.observed_generation != generation || old.phase.as_deref() != Some("Degraded") {
            ctx.event(db, true, "InvalidSpec", "Validate", message.clone())
                .await;
        }
        status.phase = Some("Degraded".into());
        (false, "InvalidSpec", message)
    } else {
        match db.spec.provider {
            DatabaseProvider::Managed => apply_managed(db, ctx, ns, &name, &mut status).await?,
            DatabaseProvider::External => check_external(db, ctx, ns, &mut status).await?,
        }
    };
    if status.phase.is_none() {
        status.phase = Some(if ready { "Ready" } else { "Provisioning" }.into());
    }
    let degraded = reason == "InvalidSpec" || reason == "Conflict";
    status.conditions = merge_conditions(
        &old.conditions,
        vec![
            condition("Ready", ready, reason, message.clone(), generation),
            condition(
                "Progressing",
                !ready && !degraded,
                reason,
                message.clone(),
                generation,
            ),
            condition(
                "Degraded",
                degraded,
                reason,
                if degraded { message } else { String::new() },
                generation,
            ),
        ],
    );
    let api: Api<Dhis2Database> = ctx.api(ns);
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|e| Error::kube(format!("writing the status of Dhis2Database {name}"), e))?;
    Ok(Action::requeue(Duration::from_secs(if ready {
        120
    } else {
        20
    })))
}

async fn apply_managed(
    db: &Dhis2Database,
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &mut Dhis2DatabaseStatus,
) -> Result<(bool, &'static str, String)> {
    let secrets: Api<Secret> = ctx.api(ns);
    let secret_name = credentials_secret_name(name);
    // Keep the password of an existing Secret: the data volume was initialised with it.
    let password = match secrets
        .get_opt(&secret_name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {secret_name}"), e))?
    {
        Some(s) if !is_ours(s.labels()) => {
            status.phase = Some("Degraded".into());
            let err = Error::Conflict {
                kind: "Secret",
                name: secret_name,
            };
            ctx.event(db, true, "Conflict", "Apply", err.to_string())
                .await;
            return Ok((false, "Conflict", err.to_string()));
        }
        Some(s) => connection_from_secret(&s)
            .map(|c| c.password)
            .unwrap_or_else(random_password),
        None => random_password(),
    };
    let children = build_database_children(db, &password);
    let applied = async {
        apply_owned(&secrets, "Secret", &children.secret).await?;
        apply_owned(&ctx.api::<Service>(ns), "Service", &children.service).await?;
        apply_owned(
            &ctx.api::<StatefulSet>(ns),
            "StatefulSet",
            &children.statefulset,
        )
        .await
    }
    .await;
    let statefulset = match applied {
        Ok(s) => s,
        Err(e @ Error::Conflict { .. }) => {
            status.phase = Some("Degraded".into());
            ctx.event(db, true, "Conflict", "Apply", e.to_string())
                .await;
            return Ok((false, "Conflict", e.to_string()));
        }
        Err(e) => return Err(e),
    };
    status.credentials_secret = Some(secret_name);
    status.endpoint = Some(format!("{name}.{ns}.svc:5432"));
    let ready_replicas = statefulset
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    Ok(if ready_replicas >= 1 {
        (true, "Ready", "PostgreSQL is ready".to_string())
    } else {
        (
            false,
            "WaitingForPod",
            "waiting for the PostgreSQL pod to be ready".to_string(),
        )
    })
}

async fn check_external(
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
    let url = format!(
        "postgresql://{}@{}:{}/{}",
        urlencode(&conn.username),
        conn.host,
        conn.port,
        urlencode(&conn.database)
    );
    let target = match DatabaseTarget::parse(&url, "externalSecretRef") {
        Ok(t) => t.with_password(&conn.password),
        Err(e) => return Ok((false, "BadSecret", e.to_string())),
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

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn cleanup(db: &Dhis2Database, ctx: &Context, ns: &str) -> Result<Action> {
    let name = db.name_any();
    if db.spec.deletion_policy == DeletionPolicy::Delete
        && db.spec.provider == DatabaseProvider::Managed
    {
        let selector = format!("app.kubernetes.io/name={APP},app.kubernetes.io/instance={name}");
        let claims: Api<PersistentVolumeClaim> = ctx.api(ns);
        claims
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&selector),
            )
            .await
            .map_err(|e| Error::kube(format!("deleting the volumes of {name}"), e))?;
        let secrets: Api<Secret> = ctx.api(ns);
        if let Err(e) = secrets
            .delete(&credentials_secret_name(&name), &DeleteParams::default())
            .await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404)
        {
            return Err(Error::kube(
                format!("deleting the credentials of {name}"),
                e,
            ));
        }
        tracing::info!(database = %name, "deleted data volume and credentials (deletionPolicy: Delete)");
    } else {
        tracing::info!(database = %name, "kept data volume and credentials (deletionPolicy: Retain)");
    }
    Ok(Action::await_change())
}
