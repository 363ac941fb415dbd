//! Reconciles `Dhis2Backup`: find the Job → (not started: check what it needs, wait for the
//! instance's other backup, create the Job) → follow the Job → final status and Events. The
//! instance's summary of its backups is the instance controller's (from the backup objects).
//! Decisions are in backup_step / backup_build / backup_status; this file reads and writes.
//!
//! What a backup waits for (the instance, its database's Secret, the instance's dhis.conf
//! Secret, the repository's credentials, the file store claim, another backup of the instance)
//! keeps it `Pending` with the reason; if it cannot start within `spec.deadlineSeconds` of its
//! creation it is `Failed`. A spec that cannot work (no repository anywhere) fails at once.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;

use crate::crd::backup_common::RunPhase;
use crate::crd::dhis2_backup::{Dhis2Backup, Dhis2BackupStatus};
use crate::crd::dhis2_database::Dhis2Database;
use crate::crd::dhis2_instance::Dhis2Instance;
use crate::job_report::BackupJobReport;
use crate::output::human_bytes;

use crate::operator::backup::build::{
    BackupJobPlan, COMPONENT, backs_up_file_store, backup_job_name, build_backup_job,
};
use crate::operator::backup::plan::{Progress, Readiness, StartStep, job_progress, start_step};
use crate::operator::backup::repository_scope::{check_repository_scope, namespace_instances};
use crate::operator::backup::status::{
    completed_status, failed_status, pending_status, running_status,
};
use crate::operator::context::Context;
use crate::operator::database::connection::{
    DatabaseSecret, instance_database_name, read_database_secret,
};
use crate::operator::error::{Error, Result};
use crate::operator::instance::build::dhis2_pod_selector;
use crate::operator::jobs::outcome::job_outcome;
use crate::operator::kit::apply::{Ownership, Parent, ownership};
use crate::operator::kit::create_once::create_once;
use crate::operator::kit::status_patch::patch_status;
use crate::rules::names::{INSTANCE_LABEL, dhis_conf_secret_name, file_store_claim_name};
use crate::rules::repository::{backup_repository, describe_repository};

pub const KIND: &str = "Dhis2Backup";

/// Held from "is another backup of this instance running?" until this one's Job exists and its
/// status says Running, so two backups reconciled at once never both start. One operator acts at
/// a time (two replicas, but only the Lease holder reconciles: src/operator/kit/leadership.rs); after a restart or
/// a takeover the Jobs themselves are checked.
static START: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn reconcile(backup: Arc<Dhis2Backup>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if backup.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = backup.namespace().unwrap_or_else(|| "default".into());
    let result = reconcile_backup(&backup, &ctx, &ns).await;
    if result.is_ok() {
        ctx.reconcile_succeeded(KIND, &*backup);
    }
    result
}

pub fn error_policy(backup: Arc<Dhis2Backup>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_failure(KIND, &*backup, error)
}

async fn reconcile_backup(backup: &Dhis2Backup, ctx: &Context, ns: &str) -> Result<Action> {
    let old = backup.status.clone().unwrap_or_default();
    // Completed and Failed are final: never re-run, the Job is never made again.
    if old.phase.is_some_and(RunPhase::is_finished) {
        return Ok(Action::await_change());
    }
    let name = backup.name_any();
    let job_name = backup_job_name(&name);
    let jobs: Api<Job> = ctx.api(ns);
    let job = jobs
        .get_opt(&job_name)
        .await
        .map_err(|e| Error::kube(format!("reading Job {job_name}"), e))?;
    if let Some(job) = &job
        && ownership(&job.metadata, &Parent::of(backup)) == Ownership::Foreign
    {
        let reason = format!(
            "Job {job_name} exists and does not belong to this Dhis2Backup; delete it or name the backup differently"
        );
        return finish_failed(backup, ctx, ns, &old, &reason, None).await;
    }
    let pods = match &job {
        Some(_) => {
            ctx.api::<Pod>(ns)
                .list(&ListParams::default().labels(&format!("job-name={job_name}")))
                .await
                .map_err(|e| Error::kube(format!("listing the pods of Job {job_name}"), e))?
                .items
        }
        None => Vec::new(),
    };
    let deleting = job
        .as_ref()
        .is_some_and(|j| j.metadata.deletion_timestamp.is_some());
    let outcome = job_outcome(job.as_ref(), &pods);
    match job_progress(&job_name, old.job_name.is_some(), deleting, outcome) {
        Progress::NotStarted => start(backup, ctx, ns, &old, &job_name).await,
        Progress::Running => {
            let status = running_status(
                &old,
                backup.metadata.generation,
                &job_name,
                None,
                ctx.clock.now(),
            );
            write_status(backup, ctx, ns, &old, &status).await?;
            // The Job's changes wake the controller; this is only a safety net.
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Progress::Completed(report) => finish_completed(backup, ctx, ns, &old, &report).await,
        Progress::Failed { reason, report } => {
            finish_failed(backup, ctx, ns, &old, &reason, report.as_ref()).await
        }
    }
}

/// What the backup needs to start, read from the cluster.
struct StartInputs {
    instance: Dhis2Instance,
    database: DatabaseSecret,
}

async fn start(
    backup: &Dhis2Backup,
    ctx: &Context,
    ns: &str,
    old: &Dhis2BackupStatus,
    job_name: &str,
) -> Result<Action> {
    let instance_name = backup.spec.instance_ref.clone();
    let (readiness, inputs) = match gather(backup, ctx, ns).await? {
        Ok(inputs) => (Readiness::Ready, Some(inputs)),
        Err(readiness) => (readiness, None),
    };
    let repository = inputs.as_ref().and_then(|i| {
        backup_repository(&backup.spec, &i.instance.spec)
            .ok()
            .map(describe_repository)
    });
    let now = ctx.clock.now();
    // In real time, like the Job's own deadline (the injected clock moves schedules, not this).
    let waited = backup
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| chrono::Utc::now().timestamp() - t.0.as_second())
        .unwrap_or_default();
    let deadline = backup.spec.deadline_seconds;

    let _one_at_a_time = START.lock().await;
    let busy_with = match &inputs {
        Some(_) => other_backup_running(backup, ctx, ns, job_name).await?,
        None => None,
    };
    match start_step(
        &readiness,
        busy_with.as_deref(),
        &instance_name,
        waited,
        deadline,
    ) {
        StartStep::CreateJob => {
            let Some(inputs) = inputs else {
                return Ok(Action::requeue(Duration::from_secs(5)));
            };
            let Ok(repo) = backup_repository(&backup.spec, &inputs.instance.spec) else {
                return Ok(Action::requeue(Duration::from_secs(5)));
            };
            let dhis2_pods = existing_dhis2_pods(ctx, ns, &instance_name).await?;
            let job = build_backup_job(&BackupJobPlan {
                backup,
                instance: &inputs.instance,
                repository: repo,
                database: &inputs.database,
                image: &ctx.engine_image,
                dhis2_pods,
            });
            // One made by an earlier reconcile whose status write did not happen is adopted.
            create_once(&ctx.api::<Job>(ns), &job, None).await?;
            let status = running_status(old, backup.metadata.generation, job_name, repository, now);
            write_status(backup, ctx, ns, old, &status).await?;
            tracing::info!(backup = %backup.name_any(), instance = %instance_name, job = %job_name, "backup started");
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        StartStep::Wait(why) => {
            let status = pending_status(old, backup.metadata.generation, repository, &why);
            write_status(backup, ctx, ns, old, &status).await?;
            // Soon again: what it waits for is not watched (another backup, Secrets).
            let left = (deadline - waited).clamp(1, 5);
            Ok(Action::requeue(Duration::from_secs(left as u64)))
        }
        StartStep::Fail(why) => finish_failed(backup, ctx, ns, old, &why, None).await,
    }
}

/// Reads what a backup needs; `Err` says what is missing or wrong.
/// The instance's DHIS2 pods that exist now and are not finished (the ones holding, or about
/// to hold, its file store volume).
async fn existing_dhis2_pods(ctx: &Context, ns: &str, instance: &str) -> Result<usize> {
    let pods = ctx
        .api::<Pod>(ns)
        .list(&ListParams::default().labels(&dhis2_pod_selector(instance)))
        .await
        .map_err(|e| Error::kube(format!("listing the DHIS2 pods of {instance}"), e))?;
    Ok(pods
        .items
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .count())
}

async fn gather(
    backup: &Dhis2Backup,
    ctx: &Context,
    ns: &str,
) -> Result<std::result::Result<StartInputs, Readiness>> {
    let instance_name = &backup.spec.instance_ref;
    let Some(instance) = ctx
        .api::<Dhis2Instance>(ns)
        .get_opt(instance_name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Instance {instance_name}"), e))?
    else {
        return Ok(Err(Readiness::Missing(format!(
            "Dhis2Instance {instance_name} (spec.instanceRef) does not exist"
        ))));
    };
    let repository = match backup_repository(&backup.spec, &instance.spec) {
        Ok(r) => r.clone(),
        Err(why) => return Ok(Err(Readiness::Invalid(why))),
    };
    if let Some(named) = &backup.spec.repository
        && let Err(why) = check_repository_scope(
            named,
            "spec.repository",
            &namespace_instances(ctx, ns).await?,
            ctx.allow_any_repository,
        )
    {
        return Ok(Err(Readiness::Invalid(why)));
    }
    if let Some(s3) = &repository.s3
        && !secret_exists(ctx, ns, &s3.credentials_secret_ref).await?
    {
        return Ok(Err(Readiness::Missing(format!(
            "Secret {} (the repository's credentialsSecretRef) does not exist",
            s3.credentials_secret_ref
        ))));
    }
    let db_name = instance_database_name(&instance);
    let Some(db) = ctx
        .api::<Dhis2Database>(ns)
        .get_opt(&db_name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Database {db_name}"), e))?
    else {
        return Ok(Err(Readiness::Missing(format!(
            "Dhis2Database {db_name} of instance {instance_name} does not exist"
        ))));
    };
    let database = match read_database_secret(ctx, ns, &db).await? {
        Ok(d) => d,
        Err(why) => return Ok(Err(Readiness::Missing(why))),
    };
    let conf = dhis_conf_secret_name(instance_name);
    if !secret_exists(ctx, ns, &conf).await? {
        return Ok(Err(Readiness::Missing(format!(
            "Secret {conf} (the instance's dhis.conf) does not exist yet; the operator writes it once the instance's database is ready"
        ))));
    }
    if backs_up_file_store(&backup.spec, &instance.spec) {
        let claim = file_store_claim_name(instance_name);
        let found = ctx
            .api::<PersistentVolumeClaim>(ns)
            .get_opt(&claim)
            .await
            .map_err(|e| Error::kube(format!("reading PersistentVolumeClaim {claim}"), e))?;
        if found.is_none() {
            return Ok(Err(Readiness::Missing(format!(
                "the instance's file store claim {claim} does not exist yet (or set spec.includeFileStore: false)"
            ))));
        }
    }
    Ok(Ok(StartInputs { instance, database }))
}

async fn secret_exists(ctx: &Context, ns: &str, name: &str) -> Result<bool> {
    Ok(ctx
        .api::<Secret>(ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {name}"), e))?
        .is_some())
}

/// Another backup of the same instance that is running: by its status, or by a Job that has not
/// finished (its status may not say so yet, e.g. right after an operator restart).
async fn other_backup_running(
    backup: &Dhis2Backup,
    ctx: &Context,
    ns: &str,
    own_job: &str,
) -> Result<Option<String>> {
    let instance = &backup.spec.instance_ref;
    let name = backup.name_any();
    let backups = ctx
        .api::<Dhis2Backup>(ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing Dhis2Backups", e))?;
    if let Some(other) = backups.items.iter().find(|b| {
        b.name_any() != name
            && &b.spec.instance_ref == instance
            && b.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Running)
    }) {
        return Ok(Some(other.name_any()));
    }
    let selector = format!("{INSTANCE_LABEL}={instance},app.kubernetes.io/component={COMPONENT}");
    let jobs = ctx
        .api::<Job>(ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("listing backup Jobs", e))?;
    Ok(jobs
        .items
        .iter()
        .filter(|j| j.name_any() != own_job && j.metadata.deletion_timestamp.is_none())
        .find(|j| {
            let finished = j
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                    })
                });
            !finished
        })
        .map(|j| {
            j.owner_references()
                .iter()
                .find(|o| o.kind == KIND)
                .map(|o| o.name.clone())
                .unwrap_or_else(|| j.name_any())
        }))
}

async fn finish_completed(
    backup: &Dhis2Backup,
    ctx: &Context,
    ns: &str,
    old: &Dhis2BackupStatus,
    report: &BackupJobReport,
) -> Result<Action> {
    let status = completed_status(old, backup.metadata.generation, report);
    write_status(backup, ctx, ns, old, &status).await?;
    let instance_name = &backup.spec.instance_ref;
    let note = format!(
        "backup {} of {instance_name}: {} in {:.0}s, stored in {}",
        report.id,
        human_bytes(report.size_bytes),
        status.duration_seconds.unwrap_or_default(),
        status.repository.as_deref().unwrap_or("the repository"),
    );
    ctx.event(backup, false, "BackupCompleted", "Backup", note.clone())
        .await;
    if let Some(instance) = ctx
        .api::<Dhis2Instance>(ns)
        .get_opt(instance_name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Instance {instance_name}"), e))?
    {
        ctx.event(&instance, false, "BackupCompleted", "Backup", note)
            .await;
    }
    tracing::info!(backup = %backup.name_any(), id = %report.id, "backup completed");
    Ok(Action::await_change())
}

async fn finish_failed(
    backup: &Dhis2Backup,
    ctx: &Context,
    ns: &str,
    old: &Dhis2BackupStatus,
    reason: &str,
    report: Option<&BackupJobReport>,
) -> Result<Action> {
    let status = failed_status(
        old,
        backup.metadata.generation,
        reason,
        report,
        ctx.clock.now(),
    );
    write_status(backup, ctx, ns, old, &status).await?;
    let instance_name = &backup.spec.instance_ref;
    let note = format!(
        "backup {} of {instance_name} failed: {reason}",
        backup.name_any()
    );
    ctx.event(backup, true, "BackupFailed", "Backup", note.clone())
        .await;
    if let Some(instance) = ctx
        .api::<Dhis2Instance>(ns)
        .get_opt(instance_name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Instance {instance_name}"), e))?
    {
        ctx.event(&instance, true, "BackupFailed", "Backup", note)
            .await;
    }
    tracing::warn!(backup = %backup.name_any(), %reason, "backup failed");
    Ok(Action::await_change())
}

async fn write_status(
    backup: &Dhis2Backup,
    ctx: &Context,
    ns: &str,
    old: &Dhis2BackupStatus,
    status: &Dhis2BackupStatus,
) -> Result<()> {
    if status == old {
        return Ok(());
    }
    let name = backup.name_any();
    patch_status(&ctx.api::<Dhis2Backup>(ns), &name, status, &[]).await
}
