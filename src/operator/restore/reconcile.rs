//! Reconciles `Dhis2Restore`: the I/O around `restore_steps`. Reads the target, its Deployment,
//! pods, database and the restore Job; records each decision in status before acting on it (so
//! a restarted operator resumes); holds the target (DHIS2 stops), runs the engine's Job, releases
//! the target (DHIS2 starts), asks DHIS2 to regenerate analytics. A finalizer is set only while
//! the restore holds a target: deleting the restore then stops its Job and starts DHIS2 again.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::backup::restore_plan::replaced_since;
use crate::backup::room_check::SpaceCheck;
use crate::crd::dhis2_backup::Dhis2Backup;
use crate::crd::dhis2_database::{DatabaseProvider, Dhis2Database};
use crate::crd::dhis2_instance::Dhis2Instance;
use crate::crd::dhis2_restore::{Dhis2Restore, Dhis2RestoreStatus};

use crate::crd::dhis2_restore::RestorePhase;
use crate::operator::backup::repository_scope::{check_repository_scope, namespace_instances};
use crate::operator::context::Context;
use crate::operator::database::build::data_volume_bytes;
use crate::operator::database::cnpg::archive::archive_destination;
use crate::operator::database::cnpg::build::superuser_secret_name;
use crate::operator::database::connection::{
    DatabaseSecret, instance_database_name, read_database_secret,
};
use crate::operator::database::connection_settings::DatabaseConnection;
use crate::operator::error::{Error, Result};
use crate::operator::instance::build::APP as DHIS2_APP;
use crate::operator::instance::replaced_databases::databases_on_server;
use crate::operator::jobs::outcome::{JobOutcome, job_outcome};
use crate::operator::kit::conditions::is_true;
use crate::operator::kit::create_once::create_once;
use crate::operator::kit::finalizers::{add_finalizer, has_finalizer, remove_finalizer};
use crate::operator::kit::status_patch::patch_status;
use crate::operator::restore::analytics::{dhis2_base_url, request_analytics};
use crate::operator::restore::build::{
    RestoreJobPlan, build_resolve_job, build_restore_job, resolve_job_name, restore_job_name,
};
use crate::operator::restore::plan::{
    Observed, RecoveryFacts, Resolution, ResolvedSource, SourceProblem, Step, SwapEvidence,
    TargetFacts, ended_without_report, new_target_instance, next_step, repository_location,
    resolution, resolve_source, restores_file_store,
};
use crate::operator::restore::point_in_time::{check_point_in_time, recovery_database};
use crate::operator::restore::status::{acting_spec, refused_change, restore_conditions};
use crate::rules::names::recovery_database_name;
use crate::rules::names::{
    RESTORE_IN_PROGRESS_ANNOTATION, dedicated_database_name, file_store_claim_name,
};
use crate::rules::restore_consent::{Consent, check_consent};

pub const KIND: &str = "Dhis2Restore";

pub async fn reconcile(restore: Arc<Dhis2Restore>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    let ns = restore.namespace().unwrap_or_else(|| "default".into());
    let result = if restore.metadata.deletion_timestamp.is_some() {
        cleanup(&restore, &ctx, &ns).await
    } else {
        reconcile_restore(&restore, &ctx, &ns).await
    };
    if result.is_ok() {
        ctx.reconcile_succeeded(KIND, &*restore);
    }
    result
}

pub fn error_policy(restore: Arc<Dhis2Restore>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_failure(KIND, &*restore, error)
}

fn held_by(instance: &Dhis2Instance) -> Option<String> {
    instance
        .annotations()
        .get(RESTORE_IN_PROGRESS_ANNOTATION)
        .cloned()
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

async fn reconcile_restore(restore: &Dhis2Restore, ctx: &Context, ns: &str) -> Result<Action> {
    let status = restore.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    if phase == RestorePhase::Pending {
        let target_name = restore.spec.target.instance.as_str();
        let target = ctx
            .api::<Dhis2Instance>(ns)
            .get_opt(target_name)
            .await
            .map_err(|e| Error::kube(format!("reading Dhis2Instance {target_name}"), e))?;
        return start(restore, ctx, ns, target.as_ref()).await;
    }
    // Started: only what it started with counts; a changed spec is refused, once, in status.
    let spec = acting_spec(&restore.spec, restore.status.as_ref());
    if status.observed_generation != restore.metadata.generation {
        if let Some(why) = refused_change(&status, &restore.spec) {
            ctx.event(restore, true, "SpecChangeRefused", "Restore", why)
                .await;
        }
        write_status(restore, ctx, ns, status.clone()).await?;
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let target_name = spec.target.instance.as_str();
    let instances: Api<Dhis2Instance> = ctx.api(ns);
    let target = instances
        .get_opt(target_name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Instance {target_name}"), e))?;
    let mut database = None;
    let mut facts = match &target {
        Some(t) if matches!(phase, RestorePhase::ScalingDown | RestorePhase::Starting) => {
            let (facts, db) = target_facts(restore, ctx, ns, t, phase).await?;
            database = db;
            Some(facts)
        }
        // Restoring and the finished phases only ask who holds the target.
        Some(t) => Some(TargetFacts {
            held_by: held_by(t),
            spec_replicas: t.spec.replicas,
            deployment_stopped: false,
            dhis2_pods: 0,
            database: Ok(()),
            file_store_claim: None,
            ready: false,
            instance_message: String::new(),
        }),
        None => None,
    };
    let overdue = status
        .started_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|started| {
            (ctx.clock.now() - started.with_timezone(&chrono::Utc)).num_seconds()
                > spec.deadline_seconds
        });
    let mut point_in_time = None;
    if let (Some(recovery_db), Some(t)) = (&status.recovery_database, &target)
        && phase == RestorePhase::ScalingDown
    {
        let (found, ready) = recovery_facts(ctx, ns, recovery_db, t, overdue).await?;
        point_in_time = Some(found);
        if let Some(f) = facts.as_mut() {
            f.database = ready;
            f.file_store_claim = None;
        }
    }
    let job_name = status
        .job_name
        .clone()
        .unwrap_or_else(|| restore_job_name(&restore.name_any()));
    let job = if phase == RestorePhase::Restoring {
        Some(read_job(ctx, ns, &job_name).await?)
    } else {
        None
    };
    let swap_evidence = match &target {
        Some(t) if ended_without_report(job.as_ref()) => {
            Some(swap_evidence(ctx, ns, t, status.started_at.as_deref()).await?)
        }
        _ => None,
    };
    let name = restore.name_any();
    let step = next_step(&Observed {
        phase,
        restore_name: &name,
        target_name,
        target_created: status.target_created.unwrap_or(false),
        target: facts,
        job,
        job_name: &job_name,
        regenerate_analytics: spec.regenerate_analytics,
        point_in_time,
        overdue,
        swap_evidence,
    });
    tracing::debug!(restore = %name, ?phase, ?step, "restore step");
    match step {
        Step::Done => {
            if !remove_finalizer(&ctx.api::<Dhis2Restore>(ns), restore).await? {
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
            // Seen, and deliberately not acted on: a finished restore never runs again.
            if status.observed_generation != restore.metadata.generation {
                write_status(restore, ctx, ns, status.clone()).await?;
            }
            Ok(Action::await_change())
        }
        Step::Wait(why) => {
            if status.message.as_deref() != Some(why.as_str()) {
                let mut next = status.clone();
                next.message = Some(why);
                write_status(restore, ctx, ns, next).await?;
            }
            let every = if phase == RestorePhase::Restoring {
                15
            } else {
                3
            };
            Ok(Action::requeue(Duration::from_secs(every)))
        }
        Step::CreateTarget => create_target(restore, ctx, ns).await,
        Step::HoldTarget => {
            let Some(t) = &target else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            hold(restore, ctx, ns, t).await
        }
        Step::StartJob => {
            let (Some(t), Some(db)) = (&target, database) else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            start_job(restore, ctx, ns, t, db, &status).await
        }
        Step::JobSucceeded(report) => {
            let mut next = status.clone();
            next.phase = Some(RestorePhase::Starting);
            let mut message = match &report {
                Some(r) => {
                    next.backup_id = Some(r.id.clone());
                    next.duration_seconds = Some(r.duration_seconds);
                    next.replaced_database = r.replaced_database.clone();
                    next.database_swapped = Some(true);
                    next.file_store_restored = Some(r.files_dir.is_some());
                    let mut m = format!(
                        "restored backup {} of {} into {target_name} in {:.1}s",
                        r.id, spec.source.instance, r.duration_seconds
                    );
                    if let Some(replaced) = &r.replaced_database {
                        m.push_str(&format!("; the previous database is kept as {replaced}"));
                    }
                    let files_expected = target
                        .as_ref()
                        .is_some_and(|t| restores_file_store(spec, &t.spec));
                    if files_expected && r.files_dir.is_none() {
                        m.push_str(
                            "; the backup holds no file store, files were left as they were",
                        );
                    }
                    m
                }
                None => format!("restored into {target_name} (the Job left no report)"),
            };
            ctx.event(restore, false, "Restored", "Restore", message.clone())
                .await;
            message.push_str("; starting DHIS2");
            next.message = Some(message);
            write_status(restore, ctx, ns, next).await?;
            if let Some(t) = &target {
                release(restore, ctx, ns, t).await?;
            }
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Step::CreateRecoveryDatabase => create_recovery_database(restore, ctx, ns).await,
        Step::SwitchDatabase => {
            let Some(t) = &target else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            switch_database(restore, ctx, ns, t, &status).await
        }
        Step::RecoveryFinished => {
            let mut next = status.clone();
            next.phase = Some(RestorePhase::Starting);
            let recovered = status.recovery_database.clone().unwrap_or_default();
            let mut message = format!(
                "{target_name} now uses Dhis2Database {recovered}, recovered by CloudNativePG to {}",
                spec.point_in_time.as_deref().unwrap_or("?")
            );
            if let Some(previous) = &status.replaced_database {
                message.push_str(&format!(
                    "; the database it used before, {previous}, is kept as it was"
                ));
            }
            if target
                .as_ref()
                .is_some_and(|t| restores_file_store(spec, &t.spec))
            {
                message.push_str(
                    "; uploaded files are not part of point-in-time recovery and were left as they were",
                );
            }
            ctx.event(restore, false, "Restored", "Restore", message.clone())
                .await;
            message.push_str("; starting DHIS2");
            next.message = Some(message);
            write_status(restore, ctx, ns, next).await?;
            if let Some(t) = &target {
                release(restore, ctx, ns, t).await?;
            }
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Step::JobFailed(reason) => {
            // Released next time (or first stopped, when this restore created the target).
            let mut next = status.clone();
            next.database_swapped = Some(false);
            next.file_store_restored = Some(false);
            fail(restore, ctx, ns, &next, &reason, true).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::JobFailedAfterSwap(r) => {
            let mut next = status.clone();
            next.backup_id = Some(r.id.clone());
            next.replaced_database = r.replaced_database.clone();
            next.database_swapped = Some(true);
            next.file_store_restored = Some(r.files_dir.is_some());
            let reason = r.failure.clone().unwrap_or_default();
            next.phase = Some(RestorePhase::Failed);
            next.failure_reason = Some(reason.clone());
            next.completed_at = Some(ctx.clock.now().to_rfc3339());
            let kept = match &r.replaced_database {
                Some(db) => format!("the database it had is kept as {db}"),
                None => "it had no database before".into(),
            };
            let files = if r.files_dir.is_some() {
                "its file store was restored"
            } else {
                "its file store was NOT restored (the files are as they were before)"
            };
            let message = format!(
                "the restore failed after the database was swapped: {target_name} now holds the database of backup {} ({kept}); {files}; DHIS2 starts again on the restored database: {reason}",
                r.id
            );
            next.message = Some(message.clone());
            write_status(restore, ctx, ns, next).await?;
            ctx.event(restore, true, "FailedAfterSwap", "Restore", message)
                .await;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::JobEndedUnreported { reason, evidence } => {
            let mut next = status.clone();
            let database = target
                .as_ref()
                .and_then(|t| t.spec.database_ref.clone())
                .unwrap_or_else(|| dedicated_database_name(target_name));
            let (reason_code, message) = match &evidence {
                SwapEvidence::Swapped { replaced } => {
                    next.replaced_database = Some(replaced.clone());
                    next.database_swapped = Some(true);
                    next.file_store_restored = None;
                    (
                        "FailedAfterSwap",
                        format!(
                            "the restore Job ended without a report after the database was swapped: {target_name} now holds the database of backup {} (the database it had is kept as {replaced}); whether its file store was restored too is unknown; DHIS2 starts again on the restored database: {reason}",
                            status.backup_id.as_deref().unwrap_or("?")
                        ),
                    )
                }
                _ => {
                    next.database_swapped = None;
                    next.file_store_restored = None;
                    let why = match &evidence {
                        SwapEvidence::Unknown(why) => why.as_str(),
                        _ => "",
                    };
                    (
                        "FailedUnknownSwap",
                        format!(
                            "the restore Job ended without a report and whether it swapped the restored database in could not be checked ({why}): if the server of Dhis2Database {database} holds a database named <database>__replaced_<time> stamped after {}, {target_name} holds the restored database; DHIS2 starts again: {reason}",
                            status
                                .started_at
                                .as_deref()
                                .unwrap_or("the restore's start")
                        ),
                    )
                }
            };
            next.phase = Some(RestorePhase::Failed);
            next.failure_reason = Some(reason.clone());
            next.completed_at = Some(ctx.clock.now().to_rfc3339());
            next.message = Some(message.clone());
            write_status(restore, ctx, ns, next).await?;
            ctx.event(restore, true, reason_code, "Restore", message)
                .await;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::StopCreatedTarget => {
            if let Some(t) = &target {
                stop_created_target(restore, ctx, ns, t).await?;
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::ReleaseTarget => {
            if let Some(t) = &target {
                release(restore, ctx, ns, t).await?;
            }
            if phase.is_finished() {
                // Done next time, when the finalizer goes.
                let _ = remove_finalizer(&ctx.api::<Dhis2Restore>(ns), restore).await?;
            }
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Step::RegenerateAnalytics => {
            let Some(t) = &target else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            let outcome = regenerate_analytics(ctx, ns, t).await?;
            let (summary, warning, note) = match outcome {
                Ok(said) => ("requested".to_string(), false, said),
                Err(why) => (format!("failed: {why}"), true, why),
            };
            ctx.event(
                restore,
                warning,
                if warning {
                    "AnalyticsNotRequested"
                } else {
                    "AnalyticsRequested"
                },
                "RegenerateAnalytics",
                note,
            )
            .await;
            complete(restore, ctx, ns, &status, summary).await
        }
        Step::Complete(why) => complete(restore, ctx, ns, &status, why).await,
        Step::Fail(reason) => {
            fail(restore, ctx, ns, &status, &reason, false).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
    }
}

/// Pending: may it start, from which backup? Records the decision in status, then starts.
async fn start(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    target: Option<&Dhis2Instance>,
) -> Result<Action> {
    let status = restore.status.clone().unwrap_or_default();
    let spec = &restore.spec;
    let (source_instance, backup) = read_source(restore, ctx, ns).await?;
    // What is restored: a backup (its id) from a repository, or the database at a moment.
    let (source, location, mut what) = if spec.point_in_time.is_some() {
        let source_db = source_database(ctx, ns, source_instance.as_ref()).await?;
        let point = match check_point_in_time(
            &restore.name_any(),
            spec,
            source_instance.as_ref(),
            source_db.as_ref(),
            ctx.clock.now(),
        ) {
            Ok(p) => p,
            Err(why) => return pending(restore, ctx, ns, why, Some("PointInTimeRefused")).await,
        };
        let location = point
            .repository
            .s3
            .as_ref()
            .map(archive_destination)
            .unwrap_or_default();
        let what = format!(
            "recovering the database of {} as it was at {} from the WAL archive {location}",
            spec.source.instance,
            point.target_time.to_rfc3339()
        );
        (None, location, what)
    } else {
        let source = match resolve_source(&spec.source, backup.as_ref(), source_instance.as_ref()) {
            Ok(s) => s,
            Err(SourceProblem::Blocked(why)) => return pending(restore, ctx, ns, why, None).await,
            Err(SourceProblem::Unusable(why)) => {
                fail(restore, ctx, ns, &status, &why, false).await?;
                return Ok(Action::await_change());
            }
        };
        if let Err(why) = check_repository_scope(
            &source.repository,
            "the restore's repository",
            &namespace_instances(ctx, ns).await?,
            ctx.allow_any_repository,
        ) {
            return pending(restore, ctx, ns, why, Some("RepositoryNotAllowed")).await;
        }
        let location = repository_location(&source.repository);
        let what = format!(
            "restoring backup {} of {} from {location}",
            source.backup_id, source.instance
        );
        (Some(source), location, what)
    };
    let consent = match check_consent(spec, target) {
        Ok(c) => c,
        Err(refusal) => {
            return pending(restore, ctx, ns, refusal.message, Some(refusal.reason)).await;
        }
    };
    let target_name = &spec.target.instance;
    let previous_replicas = match (consent, target, &source_instance) {
        (Consent::Overwrite, Some(t), _) => t.spec.replicas,
        (Consent::NewInstance, _, Some(s)) => s.spec.replicas,
        _ => {
            return pending(
                restore,
                ctx,
                ns,
                format!(
                    "Dhis2Instance {} (spec.source.instance) does not exist: a new instance is made from its spec; restore into an existing instance instead (spec.target.instance with spec.confirmOverwrite)",
                    spec.source.instance
                ),
                Some("SourceInstanceMissing"),
            )
            .await;
        }
    };
    // `latest` becomes a concrete backup now, before anything is stopped: a backup finishing
    // later never changes what is restored.
    let source = match source {
        Some(mut s) if s.backup_id == "latest" => {
            let job_name = resolve_job_name(&restore.name_any(), &s);
            let outcome = match ctx
                .api::<Job>(ns)
                .get_opt(&job_name)
                .await
                .map_err(|e| Error::kube(format!("reading Job {job_name}"), e))?
            {
                Some(_) => Some(read_job(ctx, ns, &job_name).await?),
                None => None,
            };
            match resolution(outcome.as_ref(), &s.instance) {
                Resolution::Found(id) => {
                    what = format!(
                        "restoring backup {id} (latest) of {} from {location}",
                        s.instance
                    );
                    s.backup_id = id;
                    Some(s)
                }
                Resolution::Looking => {
                    if outcome.is_none() {
                        create_resolve_job(restore, ctx, ns, &s).await?;
                    }
                    return pending(
                        restore,
                        ctx,
                        ns,
                        format!(
                            "finding the newest backup of {} in {location} (Job {job_name}); DHIS2 of {target_name} keeps running meanwhile",
                            s.instance
                        ),
                        None,
                    )
                    .await;
                }
                Resolution::NotFound(why) => {
                    let why = format!(
                        "no backup of {} to restore from {location}: {why}; nothing was stopped",
                        s.instance
                    );
                    fail(restore, ctx, ns, &status, &why, false).await?;
                    return Ok(Action::await_change());
                }
            }
        }
        other => other,
    };
    if !add_finalizer(&ctx.api::<Dhis2Restore>(ns), restore).await? {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let mut next = status.clone();
    next.phase = Some(RestorePhase::ScalingDown);
    next.recovery_database = spec
        .point_in_time
        .as_ref()
        .map(|_| recovery_database_name(&restore.name_any()));
    next.backup_id = source.as_ref().map(|s| s.backup_id.clone());
    next.repository = Some(location.clone());
    next.started_with = Some(spec.clone());
    next.source_repository = source.map(|s| s.repository);
    next.target_created = Some(consent == Consent::NewInstance);
    next.previous_replicas = Some(previous_replicas);
    next.job_name = spec
        .point_in_time
        .is_none()
        .then(|| restore_job_name(&restore.name_any()));
    next.started_at = Some(ctx.clock.now().to_rfc3339());
    next.failure_reason = None;
    next.message = Some(format!("stopping DHIS2 of {target_name}"));
    write_status(restore, ctx, ns, next).await?;
    let how = match consent {
        Consent::NewInstance => format!("into the new instance {target_name}"),
        Consent::Overwrite => match &spec.approved_by {
            Some(who) => format!("over {target_name} (approved by {who})"),
            None => format!("over {target_name}"),
        },
    };
    ctx.event(
        restore,
        false,
        "Started",
        "Restore",
        format!("{what} {how}"),
    )
    .await;
    Ok(Action::requeue(Duration::from_millis(500)))
}

/// Creates the Job that finds which backup `latest` is (the same Job after a restart: its name
/// is deterministic).
async fn create_resolve_job(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    source: &ResolvedSource,
) -> Result<()> {
    let Some(job) = build_resolve_job(
        &restore.name_any(),
        ns,
        restore.controller_owner_ref(&()),
        &restore.spec.target.instance,
        source,
        &ctx.engine_image,
    ) else {
        return Ok(());
    };
    create_once(&ctx.api::<Job>(ns), &job, None).await?;
    Ok(())
}

async fn read_source(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
) -> Result<(Option<Dhis2Instance>, Option<Dhis2Backup>)> {
    let source = &acting_spec(&restore.spec, restore.status.as_ref()).source;
    let source_instance = ctx
        .api::<Dhis2Instance>(ns)
        .get_opt(&source.instance)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Instance {}", source.instance), e))?;
    let backup = match &source.backup_ref {
        Some(name) => ctx
            .api::<Dhis2Backup>(ns)
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading Dhis2Backup {name}"), e))?,
        None => None,
    };
    Ok((source_instance, backup))
}

/// Stays Pending with the reason; a refusal is also a Warning Event (reason `refusal`; Events
/// of one reason are aggregated, so each kind of refusal has its own).
async fn pending(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    why: String,
    refusal: Option<&str>,
) -> Result<Action> {
    let status = restore.status.clone().unwrap_or_default();
    let changed = status.message.as_deref() != Some(why.as_str())
        || status.phase.is_none()
        || status.observed_generation != restore.metadata.generation;
    if changed {
        if let Some(reason) = refusal {
            ctx.event(restore, true, reason, "Restore", why.clone())
                .await;
        }
        let mut next = status;
        next.phase = Some(RestorePhase::Pending);
        next.message = Some(why);
        write_status(restore, ctx, ns, next).await?;
    }
    Ok(Action::requeue(Duration::from_secs(10)))
}

async fn fail(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    status: &Dhis2RestoreStatus,
    reason: &str,
    after_job: bool,
) -> Result<()> {
    let mut next = status.clone();
    next.phase = Some(RestorePhase::Failed);
    next.failure_reason = Some(reason.to_string());
    next.completed_at = Some(ctx.clock.now().to_rfc3339());
    let target = &acting_spec(&restore.spec, Some(status)).target.instance;
    next.message = Some(if after_job {
        format!("the restore failed and {target} was left as it was; DHIS2 starts again: {reason}")
    } else {
        reason.to_string()
    });
    write_status(restore, ctx, ns, next).await?;
    ctx.event(restore, true, "Failed", "Restore", reason.to_string())
        .await;
    Ok(())
}

async fn complete(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    status: &Dhis2RestoreStatus,
    analytics: String,
) -> Result<Action> {
    let spec = acting_spec(&restore.spec, Some(status));
    let target = &spec.target.instance;
    let mut next = status.clone();
    next.phase = Some(RestorePhase::Completed);
    next.completed_at = Some(ctx.clock.now().to_rfc3339());
    let what = match (&spec.point_in_time, &status.recovery_database) {
        (Some(time), Some(db)) => {
            format!("the database as it was at {time} (Dhis2Database {db}) restored")
        }
        _ => format!(
            "backup {} restored",
            status.backup_id.as_deref().unwrap_or("?")
        ),
    };
    next.message = Some(format!(
        "{what} into {target}; DHIS2 is up; analytics regeneration: {analytics}"
    ));
    next.analytics_regeneration = Some(analytics);
    write_status(restore, ctx, ns, next.clone()).await?;
    ctx.event(
        restore,
        false,
        "Completed",
        "Restore",
        next.message.unwrap_or_default(),
    )
    .await;
    // Done next: the finalizer goes once the restore is read again after this status write.
    Ok(Action::requeue(Duration::from_millis(500)))
}

async fn write_status(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    mut status: Dhis2RestoreStatus,
) -> Result<()> {
    let name = restore.name_any();
    status.observed_generation = restore.metadata.generation;
    let old = restore
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let refused = refused_change(&status, &restore.spec);
    status.conditions = restore_conditions(
        &old,
        &status,
        refused.as_deref(),
        restore.metadata.generation,
    );
    patch_status(&ctx.api::<Dhis2Restore>(ns), &name, &status, &[]).await
}

/// What the target looks like now, and its database connection once it is known.
async fn target_facts(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    target: &Dhis2Instance,
    phase: RestorePhase,
) -> Result<(TargetFacts, Option<TargetDatabase>)> {
    let name = target.name_any();
    let deployment = ctx
        .api::<Deployment>(ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading Deployment {name}"), e))?;
    let selector = format!(
        "app.kubernetes.io/name={DHIS2_APP},app.kubernetes.io/instance={name},app.kubernetes.io/component=dhis2"
    );
    let dhis2_pods = ctx
        .api::<Pod>(ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube(format!("listing the DHIS2 pods of {name}"), e))?
        .items
        .len();
    let deployment_status = deployment.as_ref().and_then(|d| d.status.clone());
    let deployment_stopped = deployment.as_ref().is_none_or(|d| {
        d.spec.replicas == Some(0)
            && deployment_status
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(0)
                == 0
    });
    let replicas = target.spec.replicas;
    let deployment_back = deployment.as_ref().is_some_and(|d| {
        let s = deployment_status.clone().unwrap_or_default();
        d.spec.replicas == Some(replicas)
            && s.ready_replicas.unwrap_or(0) >= replicas
            && s.observed_generation >= d.metadata.generation
    });
    let instance_status = target.status.clone().unwrap_or_default();
    let ready = deployment_back && is_true(&instance_status.conditions, "Ready");
    let instance_message = instance_status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .or(instance_status.phase.clone())
        .unwrap_or_else(|| "not reconciled yet".into());
    // A point-in-time recovery restores no Job into the target's database: its readiness is the
    // recovered database's (read by the caller).
    let point_in_time = restore
        .status
        .as_ref()
        .is_some_and(|s| s.recovery_database.is_some());
    let (database, connection) = if phase == RestorePhase::ScalingDown && !point_in_time {
        match target_database(ctx, ns, target).await? {
            Ok(c) => (Ok(()), Some(c)),
            Err(why) => (Err(why), None),
        }
    } else {
        (Ok(()), None)
    };
    let spec = acting_spec(&restore.spec, restore.status.as_ref());
    let file_store_claim = if restores_file_store(spec, &target.spec) {
        let claim = file_store_claim_name(&name);
        let exists = ctx
            .api::<PersistentVolumeClaim>(ns)
            .get_opt(&claim)
            .await
            .map_err(|e| Error::kube(format!("reading PersistentVolumeClaim {claim}"), e))?
            .is_some();
        Some((claim, exists))
    } else {
        None
    };
    Ok((
        TargetFacts {
            held_by: held_by(target),
            spec_replicas: replicas,
            deployment_stopped,
            dhis2_pods,
            database,
            file_store_claim,
            ready,
            instance_message,
        },
        connection,
    ))
}

/// How the restore Job logs in to the target's database, and who owns what it restores.
pub struct TargetDatabase {
    pub connection: DatabaseConnection,
    /// The Secret holding the login's password (key `password`).
    pub password_secret: String,
    /// The role DHIS2 connects as: everything restored is its (the login may be another).
    pub owner: String,
    /// The size of the volume the database server keeps its data on, where the operator made
    /// it (a managed or cnpg database: `spec.storage.size`).
    pub volume_bytes: Option<u64>,
}

/// The target's database connection and the Secret with its password, or why not yet.
async fn target_database(
    ctx: &Context,
    ns: &str,
    target: &Dhis2Instance,
) -> Result<std::result::Result<TargetDatabase, String>> {
    let db_name = target
        .spec
        .database_ref
        .clone()
        .unwrap_or_else(|| dedicated_database_name(&target.name_any()));
    let Some(db) = ctx
        .api::<Dhis2Database>(ns)
        .get_opt(&db_name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Database {db_name}"), e))?
    else {
        return Ok(Err(format!("Dhis2Database {db_name} does not exist yet")));
    };
    if !db
        .status
        .as_ref()
        .is_some_and(|s| is_true(&s.conditions, "Ready"))
    {
        return Ok(Err(format!("Dhis2Database {db_name} is not ready")));
    }
    let DatabaseSecret {
        secret_name,
        connection,
    } = match read_database_secret(ctx, ns, &db).await? {
        Ok(found) => found,
        Err(why) => return Ok(Err(why)),
    };
    let owner = connection.username.clone();
    let volume_bytes = data_volume_bytes(&db);
    if db.spec.provider != DatabaseProvider::Cnpg {
        return Ok(Ok(TargetDatabase {
            connection,
            password_secret: secret_name,
            owner,
            volume_bytes,
        }));
    }
    // CloudNativePG's application role cannot create or rename databases: the restore logs in
    // as its superuser, and the restored objects belong to the database's owner as before.
    let superuser = superuser_secret_name(&db_name);
    let secret = ctx
        .api::<Secret>(ns)
        .get_opt(&superuser)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {superuser}"), e))?;
    let login = |key: &str| {
        secret
            .as_ref()?
            .data
            .as_ref()?
            .get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    match (login("username"), login("password")) {
        (Some(username), Some(password)) => Ok(Ok(TargetDatabase {
            connection: DatabaseConnection {
                username,
                password,
                ..connection
            },
            password_secret: superuser,
            owner,
            volume_bytes,
        })),
        _ => Ok(Err(format!(
            "waiting for CloudNativePG's superuser Secret {superuser} (the operator turns the Cluster's superuser access on for this restore, and off after)"
        ))),
    }
}

/// Whether the target's database was swapped for the restored one since the restore started,
/// as its database server shows (`<database>__replaced_<time>`): asked when the Job ended
/// without the report that would say so.
async fn swap_evidence(
    ctx: &Context,
    ns: &str,
    target: &Dhis2Instance,
    started_at: Option<&str>,
) -> Result<SwapEvidence> {
    let Some(since) = started_at.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return Ok(SwapEvidence::Unknown(
            "the restore's start (status.startedAt) is not recorded".into(),
        ));
    };
    let db = match target_database(ctx, ns, target).await? {
        Ok(db) => db,
        Err(why) => return Ok(SwapEvidence::Unknown(why)),
    };
    let names = match databases_on_server(&db.connection).await {
        Ok((_, names)) => names,
        Err(why) => return Ok(SwapEvidence::Unknown(why)),
    };
    let replaced = replaced_since(
        &db.connection.database,
        &names,
        since.with_timezone(&chrono::Utc),
    );
    Ok(match replaced.into_iter().next() {
        Some(replaced) => SwapEvidence::Swapped { replaced },
        None => SwapEvidence::NotSwapped,
    })
}

async fn read_job(ctx: &Context, ns: &str, job_name: &str) -> Result<JobOutcome> {
    let job = ctx
        .api::<Job>(ns)
        .get_opt(job_name)
        .await
        .map_err(|e| Error::kube(format!("reading Job {job_name}"), e))?;
    let pods = ctx
        .api::<Pod>(ns)
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await
        .map_err(|e| Error::kube(format!("listing the pods of Job {job_name}"), e))?;
    Ok(job_outcome(job.as_ref(), &pods.items))
}

async fn create_target(restore: &Dhis2Restore, ctx: &Context, ns: &str) -> Result<Action> {
    let spec = acting_spec(&restore.spec, restore.status.as_ref());
    let Some(source) = ctx
        .api::<Dhis2Instance>(ns)
        .get_opt(&spec.source.instance)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Instance {}", spec.source.instance), e))?
    else {
        let status = restore.status.clone().unwrap_or_default();
        let why = format!(
            "Dhis2Instance {} (spec.source.instance) was deleted before the new instance could be made from its spec; nothing was restored",
            spec.source.instance
        );
        fail(restore, ctx, ns, &status, &why, false).await?;
        return Ok(Action::await_change());
    };
    // A point-in-time recovery's new instance uses the recovered database.
    let mut overrides = spec.target.new_instance.clone();
    if let Some(recovered) = restore
        .status
        .as_ref()
        .and_then(|s| s.recovery_database.clone())
    {
        overrides.get_or_insert_with(Default::default).database_ref = Some(recovered);
    }
    let instance = new_target_instance(
        &restore.name_any(),
        ns,
        &spec.target.instance,
        &source.spec,
        overrides.as_ref(),
    );
    // One that exists already is someone else's or ours from before a restart: the next step
    // tells them apart and refuses to take someone else's.
    if create_once(&ctx.api::<Dhis2Instance>(ns), &instance, None).await? {
        ctx.event(
            restore,
            false,
            "InstanceCreated",
            "Restore",
            format!(
                "created Dhis2Instance {} from the spec of {}, stopped until the restore is done",
                spec.target.instance, spec.source.instance
            ),
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Puts the restore's name on the target, unless it changed since it was read.
async fn hold(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    target: &Dhis2Instance,
) -> Result<Action> {
    let name = target.name_any();
    let patch = json!({"metadata": {
        "annotations": {RESTORE_IN_PROGRESS_ANNOTATION: restore.name_any()}
    }});
    if patch_target(ctx, ns, target, patch, "holding").await? {
        ctx.event(
            restore,
            false,
            "StoppingDhis2",
            "Restore",
            format!(
                "DHIS2 of {name} is stopped (0 replicas) until the restore is done; it ran {} replica(s)",
                target.spec.replicas
            ),
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Takes the restore's name off the target (only its own): DHIS2 starts again.
/// Sets `spec.replicas: 0` on the instance this failed restore created (its database holds no
/// restored data), over the version read, and says so.
async fn stop_created_target(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    target: &Dhis2Instance,
) -> Result<()> {
    let name = target.name_any();
    // Changed meanwhile (not patched): decided again on the next read.
    if patch_target(
        ctx,
        ns,
        target,
        json!({"spec": {"replicas": 0}}),
        "stopping",
    )
    .await?
    {
        ctx.event(
            restore,
            true,
            "CreatedInstanceStopped",
            "Restore",
            format!(
                "Dhis2Instance {name} was created by this restore, which failed: it is left stopped (spec.replicas: 0) because its database holds no restored data; delete it, or restore a good backup into it (spec.confirmOverwrite: {name})"
            ),
        )
        .await;
    }
    Ok(())
}

async fn release(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    target: &Dhis2Instance,
) -> Result<()> {
    if held_by(target).as_deref() != Some(restore.name_any().as_str()) {
        return Ok(());
    }
    let name = target.name_any();
    let patch = json!({"metadata": {
        "resourceVersion": target.resource_version(),
        "annotations": {RESTORE_IN_PROGRESS_ANNOTATION: null}
    }});
    match ctx
        .api::<Dhis2Instance>(ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            let replicas = target.spec.replicas;
            ctx.event(
                restore,
                false,
                "StartingDhis2",
                "Restore",
                if replicas == 0 {
                    format!("{name} is released; DHIS2 stays stopped (spec.replicas: 0)")
                } else {
                    format!("DHIS2 of {name} starts again ({replicas} replica(s))")
                },
            )
            .await;
            Ok(())
        }
        // Changed meanwhile: the next reconcile reads it again.
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(Error::kube(format!("releasing Dhis2Instance {name}"), e)),
    }
}

async fn start_job(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    target: &Dhis2Instance,
    target_database: TargetDatabase,
    status: &Dhis2RestoreStatus,
) -> Result<Action> {
    let spec = acting_spec(&restore.spec, Some(status));
    // The backup and repository chosen when the restore began (resolved again only for a
    // restore started before they were recorded).
    let recorded = match (&status.source_repository, &status.backup_id) {
        (Some(repository), Some(id)) => Some(ResolvedSource {
            instance: spec.source.instance.clone(),
            backup_id: id.clone(),
            repository: repository.clone(),
        }),
        _ => None,
    };
    let resolved = match recorded {
        Some(source) => Ok(source),
        None => {
            let (source_instance, backup) = read_source(restore, ctx, ns).await?;
            resolve_source(&spec.source, backup.as_ref(), source_instance.as_ref())
        }
    };
    let mut source: ResolvedSource = match resolved {
        Ok(s) => s,
        Err(SourceProblem::Blocked(why)) => {
            let mut next = status.clone();
            next.message = Some(why);
            write_status(restore, ctx, ns, next).await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        Err(SourceProblem::Unusable(why)) => {
            fail(restore, ctx, ns, status, &why, false).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    };
    // The backup chosen when the restore began.
    if let Some(id) = &status.backup_id {
        source.backup_id = id.clone();
    }
    let name = restore.name_any();
    let target_name = target.name_any();
    let file_store_claim =
        restores_file_store(spec, &target.spec).then(|| file_store_claim_name(&target_name));
    let Some(job) = build_restore_job(&RestoreJobPlan {
        restore_name: &name,
        namespace: ns,
        owner: restore.controller_owner_ref(&()),
        target: &target_name,
        source: &source,
        database: &target_database.connection,
        password_secret: &target_database.password_secret,
        restored_owner: &target_database.owner,
        overwrite: !status.target_created.unwrap_or(false),
        file_store_claim,
        deadline_seconds: spec.deadline_seconds,
        image: &ctx.engine_image,
        space: if spec.skip_space_check {
            SpaceCheck::Skip
        } else {
            target_database
                .volume_bytes
                .map_or(SpaceCheck::Measure, |capacity_bytes| SpaceCheck::Volume {
                    capacity_bytes,
                })
        },
    }) else {
        fail(
            restore,
            ctx,
            ns,
            status,
            "the backup repository names neither s3 nor volume",
            false,
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let job_name = job.name_any();
    // Created before an operator restart: the same Job, by its deterministic name.
    create_once(&ctx.api::<Job>(ns), &job, None).await?;
    let mut next = status.clone();
    next.phase = Some(RestorePhase::Restoring);
    next.job_name = Some(job_name.clone());
    next.message = Some(format!(
        "restoring backup {} of {} into {target_name} (Job {job_name})",
        source.backup_id, source.instance
    ));
    write_status(restore, ctx, ns, next.clone()).await?;
    ctx.event(
        restore,
        false,
        "Restoring",
        "Restore",
        next.message.unwrap_or_default(),
    )
    .await;
    Ok(Action::requeue(Duration::from_secs(15)))
}

/// Asks the target's DHIS2 to regenerate analytics with its admin account: `Ok` with what DHIS2
/// said, `Err` with why it was not asked or refused.
async fn regenerate_analytics(
    ctx: &Context,
    ns: &str,
    target: &Dhis2Instance,
) -> Result<std::result::Result<String, String>> {
    let name = target.name_any();
    let Some(secret_name) = &target.spec.admin_secret_ref else {
        return Ok(Err(format!(
            "Dhis2Instance {name} has no spec.adminSecretRef, so the operator cannot ask DHIS2; regenerate analytics in DHIS2 (Data Administration → Analytics Tables)"
        )));
    };
    let secret = ctx
        .api::<Secret>(ns)
        .get_opt(secret_name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {secret_name}"), e))?;
    let value = |key: &str| -> Option<String> {
        secret
            .as_ref()?
            .data
            .as_ref()?
            .get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let (Some(user), Some(password)) = (value("username"), value("password")) else {
        return Ok(Err(format!(
            "Secret {secret_name} (spec.adminSecretRef) is missing or has no username and password"
        )));
    };
    let base = dhis2_base_url(target, ctx.allow_endpoint_override);
    Ok(request_analytics(&ctx.http, &base, (&user, &password)).await)
}

/// The restore is being deleted while it holds its target: stop its Job, wait until the
/// engine's pod is gone (two writers never), then start DHIS2 again.
async fn cleanup(restore: &Dhis2Restore, ctx: &Context, ns: &str) -> Result<Action> {
    if !has_finalizer(restore) {
        return Ok(Action::await_change());
    }
    let name = restore.name_any();
    let target_name = &acting_spec(&restore.spec, restore.status.as_ref())
        .target
        .instance;
    let target = ctx
        .api::<Dhis2Instance>(ns)
        .get_opt(target_name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Instance {target_name}"), e))?;
    if let Some(t) = target.filter(|t| held_by(t).as_deref() == Some(name.as_str())) {
        let job_name = restore_job_name(&name);
        let jobs = ctx.api::<Job>(ns);
        if let Some(job) = jobs
            .get_opt(&job_name)
            .await
            .map_err(|e| Error::kube(format!("reading Job {job_name}"), e))?
        {
            if job.metadata.deletion_timestamp.is_none() {
                jobs.delete(&job_name, &DeleteParams::foreground())
                    .await
                    .map_err(|e| Error::kube(format!("deleting Job {job_name}"), e))?;
            }
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        let pods = ctx
            .api::<Pod>(ns)
            .list(&ListParams::default().labels(&format!("job-name={job_name}")))
            .await
            .map_err(|e| Error::kube(format!("listing the pods of Job {job_name}"), e))?;
        if !pods.items.is_empty() {
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        release(restore, ctx, ns, &t).await?;
        // Released only when the annotation is gone: read again next time.
        let still = ctx
            .api::<Dhis2Instance>(ns)
            .get_opt(target_name)
            .await
            .map_err(|e| Error::kube(format!("reading Dhis2Instance {target_name}"), e))?;
        if still.is_some_and(|t| held_by(&t).as_deref() == Some(name.as_str())) {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    // Its other Jobs (the one that looked for `latest`) go with it, not later by the garbage
    // collector: a deleted restore leaves nothing running.
    let jobs = ctx.api::<Job>(ns);
    let owned: Vec<Job> = jobs
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing Jobs".to_string(), e))?
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == restore.metadata.uid.as_ref())
        })
        .collect();
    if !owned.is_empty() {
        for job in owned
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
        {
            let job_name = job.name_any();
            match jobs.delete(&job_name, &DeleteParams::foreground()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(Error::kube(format!("deleting Job {job_name}"), e)),
            }
        }
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if !remove_finalizer(&ctx.api::<Dhis2Restore>(ns), restore).await? {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    Ok(Action::await_change())
}

/// The `Dhis2Database` of the source instance, if both exist.
async fn source_database(
    ctx: &Context,
    ns: &str,
    source: Option<&Dhis2Instance>,
) -> Result<Option<Dhis2Database>> {
    let Some(source) = source else {
        return Ok(None);
    };
    let name = instance_database_name(source);
    ctx.api::<Dhis2Database>(ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Database {name}"), e))
}

/// The recovered database as the cluster shows it, and whether it is ready (else why not, in
/// the database's own words: CloudNativePG's phase).
async fn recovery_facts(
    ctx: &Context,
    ns: &str,
    database: &str,
    target: &Dhis2Instance,
    overdue: bool,
) -> Result<(RecoveryFacts, std::result::Result<(), String>)> {
    let db = ctx
        .api::<Dhis2Database>(ns)
        .get_opt(database)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Database {database}"), e))?;
    let ready = match &db {
        None => Err(format!("Dhis2Database {database} does not exist yet")),
        Some(db) => {
            let conditions = db
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            if is_true(conditions, "Ready") {
                Ok(())
            } else {
                Err(conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| "not reconciled yet".into()))
            }
        }
    };
    Ok((
        RecoveryFacts {
            database: database.to_string(),
            exists: db.is_some(),
            target_uses_it: target.spec.database_ref.as_deref() == Some(database),
            overdue,
        },
        ready,
    ))
}

/// Creates the cnpg database CloudNativePG recovers into (checked again: the source may have
/// changed since the restore started).
async fn create_recovery_database(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
) -> Result<Action> {
    let status = restore.status.clone().unwrap_or_default();
    let (source_instance, _) = read_source(restore, ctx, ns).await?;
    let source_db = source_database(ctx, ns, source_instance.as_ref()).await?;
    let point = match check_point_in_time(
        &restore.name_any(),
        acting_spec(&restore.spec, Some(&status)),
        source_instance.as_ref(),
        source_db.as_ref(),
        ctx.clock.now(),
    ) {
        Ok(p) => p,
        Err(why) => {
            fail(restore, ctx, ns, &status, &why, false).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    };
    let (Some(source_db), Some(source_instance)) = (source_db, source_instance) else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let db = recovery_database(
        &restore.name_any(),
        ns,
        &source_db,
        source_instance.spec.environment,
        &point,
    );
    let name = db.name_any();
    if create_once(&ctx.api::<Dhis2Database>(ns), &db, None).await? {
        ctx.event(
            restore,
            false,
            "RecoveryDatabaseCreated",
            "Restore",
            format!(
                "Dhis2Database {name} created: CloudNativePG replays the archive of {} up to {}",
                source_db.name_any(),
                point.target_time.to_rfc3339()
            ),
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(2)))
}

/// Points the held, stopped target at the recovered database; records the one it used before
/// (kept as it was).
async fn switch_database(
    restore: &Dhis2Restore,
    ctx: &Context,
    ns: &str,
    target: &Dhis2Instance,
    status: &Dhis2RestoreStatus,
) -> Result<Action> {
    let Some(recovered) = status.recovery_database.clone() else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let previous = instance_database_name(target);
    let mut next = status.clone();
    next.replaced_database = Some(previous.clone());
    write_status(restore, ctx, ns, next).await?;
    let name = target.name_any();
    let patch = json!({"spec": {"databaseRef": recovered}});
    if patch_target(ctx, ns, target, patch, "pointing at the recovered database").await? {
        ctx.event(
            restore,
            false,
            "DatabaseSwitched",
            "Restore",
            format!(
                "Dhis2Instance {name} now uses Dhis2Database {recovered}; {previous} is kept as it was"
            ),
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Merge-patches the target over the version read (a concurrent change wins: 409, read again).
/// True when it was patched.
async fn patch_target(
    ctx: &Context,
    ns: &str,
    target: &Dhis2Instance,
    mut patch: serde_json::Value,
    doing: &str,
) -> Result<bool> {
    let name = target.name_any();
    patch["metadata"]["resourceVersion"] = json!(target.resource_version());
    match ctx
        .api::<Dhis2Instance>(ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(Error::kube(format!("{doing} Dhis2Instance {name}"), e)),
    }
}
