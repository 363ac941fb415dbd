//! Reconciles `Dhis2Instance`: validate → database → build → apply → prune → probe DHIS2 →
//! status. Children are owned by the instance and garbage-collected with it; the file store
//! volume and the database's data follow `deletionPolicy`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;

use crate::crd::dhis2_database::Dhis2Database;
use crate::crd::dhis2_instance::{
    Dhis2Instance, Dhis2InstanceStatus, InstanceBackupStatus, ReadOnlyCopyStatus,
};
use crate::crd::upgrade::{UpgradeRecord, UpgradeStatus};
use crate::crd::{Dhis2Backup, Dhis2BackupSchedule, Dhis2Drill};

use crate::operator::context::Context;
use crate::operator::database::connection::read_database_secret;
use crate::operator::database::connection_settings::DatabaseConnection;
use crate::operator::error::{Error, Result};
use crate::operator::instance::backup_summary::{BackupObservation, summarise_backups};
use crate::operator::instance::build::{
    APP, DHIS2_HTTP_PORT, build_dedicated_database, build_instance_children, dhis2_pod_selector,
    held_by_restore,
};
use crate::operator::instance::dhis_conf::ClusterSecrets;
use crate::operator::instance::health::{Dhis2Health, probe};
use crate::operator::instance::replaced_databases::drop_expired_replaced_databases;
use crate::operator::instance::status::{InstanceObservation, instance_phase_and_conditions};
use crate::operator::instance::validate::validate_instance;
use crate::operator::kit::apply::{Parent, apply_owned, prune_owned};
use crate::operator::kit::conditions::{condition, is_true, merge_conditions};
use crate::operator::kit::secret_values::secret_value;
use crate::operator::kit::status_patch::patch_status;
use crate::operator::upgrade::read_only_copy_reconcile::advance_read_only_copy;
use crate::operator::upgrade::reconcile::{UpgradeProgress, advance_upgrade};
use crate::rules::cron_schedule::Schedule;
use crate::rules::names::ENDPOINT_OVERRIDE_ANNOTATION;

pub const KIND: &str = "Dhis2Instance";

pub async fn reconcile(instance: Arc<Dhis2Instance>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if instance.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = instance.namespace().unwrap_or_else(|| "default".into());
    let result = reconcile_instance(&instance, &ctx, &ns).await;
    if result.is_ok() {
        ctx.reconcile_succeeded(KIND, &*instance);
    }
    match result {
        Err(e @ Error::Conflict { .. }) => {
            ctx.event(&*instance, true, "Conflict", "Apply", e.to_string())
                .await;
            write_status(
                &instance,
                &ctx,
                &ns,
                Some(("Conflict", vec![e.to_string()])),
                Err(String::new()),
                None,
            )
            .await?;
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        other => other,
    }
}

pub fn error_policy(instance: Arc<Dhis2Instance>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_failure(KIND, &*instance, error)
}

/// The database's connection settings, or why DHIS2 cannot connect yet.
async fn database_connection(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
) -> Result<std::result::Result<DatabaseConnection, String>> {
    let databases: Api<Dhis2Database> = ctx.api(ns);
    let db = match &instance.spec.database_ref {
        Some(name) => match databases
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading Dhis2Database {name}"), e))?
        {
            Some(db) => db,
            None => {
                return Ok(Err(format!(
                    "Dhis2Database {name} (spec.databaseRef) does not exist"
                )));
            }
        },
        None => {
            apply_owned(
                &databases,
                "Dhis2Database",
                &build_dedicated_database(instance),
                &Parent::of(instance),
            )
            .await?
        }
    };
    let db_name = db.name_any();
    let ready = db
        .status
        .as_ref()
        .is_some_and(|s| is_true(&s.conditions, "Ready"));
    if !ready {
        let why = db
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "not reconciled yet".into());
        return Ok(Err(format!("Dhis2Database {db_name} is not ready: {why}")));
    }
    Ok(read_database_secret(ctx, ns, &db)
        .await?
        .map(|found| found.connection))
}

async fn reconcile_instance(instance: &Dhis2Instance, ctx: &Context, ns: &str) -> Result<Action> {
    let name = instance.name_any();
    let problems: Vec<String> = validate_instance(&instance.spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    if !problems.is_empty() {
        let old_generation = instance.status.as_ref().and_then(|s| s.observed_generation);
        if old_generation != instance.metadata.generation {
            ctx.event(
                instance,
                true,
                "InvalidSpec",
                "Validate",
                problems.join("; "),
            )
            .await;
        }
        write_status(
            instance,
            ctx,
            ns,
            Some(("InvalidSpec", problems)),
            Err("not checked".into()),
            None,
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let connection = match database_connection(instance, ctx, ns).await? {
        Ok(c) => c,
        Err(why) => {
            write_status(instance, ctx, ns, None, Err(why), None).await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    let mut secrets = ClusterSecrets::default();
    if let Some(s3) = instance
        .spec
        .file_store
        .as_ref()
        .and_then(|f| f.s3.as_ref())
    {
        secrets.s3_access_key =
            secret_value(ctx, ns, &s3.credentials_secret_ref, "accessKey").await?;
        secrets.s3_secret_key =
            secret_value(ctx, ns, &s3.credentials_secret_ref, "secretKey").await?;
    }
    if let Some(secret) = instance
        .spec
        .redis
        .as_ref()
        .and_then(|r| r.password_secret_ref.as_ref())
    {
        secrets.redis_password = secret_value(ctx, ns, secret, "password").await?;
    }
    let deployments: Api<Deployment> = ctx.api(ns);
    let running = deployments
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading Deployment {name}"), e))?;
    let account = admin_account(instance, ctx, ns).await?;
    let health = probe_dhis2(
        instance,
        ctx,
        ns,
        ready_replicas_of(running.as_ref()),
        account.as_ref().ok(),
    )
    .await?;
    let progress =
        advance_upgrade(instance, ctx, ns, &connection, health.as_ref(), &account).await?;

    let copy =
        advance_read_only_copy(instance, ctx, ns, &connection, progress.upgrade.as_ref()).await;
    let serving_copy = copy
        .status
        .as_ref()
        .filter(|c| c.serving)
        .map(|c| c.instance.clone());
    let children = build_instance_children(
        instance,
        &connection,
        &secrets,
        &progress.plan,
        serving_copy.as_deref(),
    );
    let parent = Parent::of(instance);
    apply_owned(
        &ctx.api::<Secret>(ns),
        "Secret",
        &children.dhis_conf_secret,
        &parent,
    )
    .await?;
    if let Some(claim) = &children.file_store_claim {
        apply_owned(
            &ctx.api::<PersistentVolumeClaim>(ns),
            "PersistentVolumeClaim",
            claim,
            &parent,
        )
        .await?;
    }
    apply_owned(
        &ctx.api::<Service>(ns),
        "Service",
        &children.service,
        &parent,
    )
    .await?;
    let deployment = apply_owned(&deployments, "Deployment", &children.deployment, &parent).await?;
    let ingresses: Api<Ingress> = ctx.api(ns);
    let mut keep = vec![];
    if let Some(ingress) = &children.ingress {
        apply_owned(&ingresses, "Ingress", ingress, &parent).await?;
        keep.push(name.clone());
    }
    let selector = format!("app.kubernetes.io/name={APP},app.kubernetes.io/instance={name}");
    prune_owned(&ingresses, "Ingress", &selector, &keep, &parent).await?;

    let ready_replicas = ready_replicas_of(Some(&deployment));
    let requeue = [progress.requeue, copy.requeue].into_iter().flatten().min();
    // Never while a restore holds the instance or an upgrade (its rollback) may still need them.
    let settled = progress
        .upgrade
        .as_ref()
        .is_none_or(|u| u.phase.is_finished())
        && !held_by_restore(instance);
    write_status(
        instance,
        ctx,
        ns,
        None,
        Ok(()),
        Some(Running {
            ready_replicas,
            health: health.as_ref(),
            upgrade: progress,
            read_only_copy: copy.status,
        }),
    )
    .await?;
    if settled {
        drop_expired_replaced_databases(instance, ctx, &connection).await;
    }
    let ready =
        matches!(health, Some(Dhis2Health::Up { .. })) && ready_replicas >= instance.spec.replicas;
    // Probe DHIS2 every 30 s while healthy, sooner while it is coming up or upgrading.
    let every = Duration::from_secs(if ready { 30 } else { 15 });
    Ok(Action::requeue(requeue.map_or(every, |r| r.min(every))))
}

fn ready_replicas_of(deployment: Option<&Deployment>) -> i32 {
    deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// The DHIS2 account of `spec.adminSecretRef` (user, password), or why there is none and the fix.
async fn admin_account(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
) -> Result<std::result::Result<(String, String), String>> {
    let Some(secret) = &instance.spec.admin_secret_ref else {
        return Ok(Err(
            "spec.adminSecretRef is not set: create a Secret with the keys username and password of a DHIS2 superuser and name it in spec.adminSecretRef".into(),
        ));
    };
    Ok(
        match (
            secret_value(ctx, ns, secret, "username").await?,
            secret_value(ctx, ns, secret, "password").await?,
        ) {
            (Some(u), Some(p)) => Ok((u, p)),
            _ => Err(format!(
                "Secret {secret} (spec.adminSecretRef) does not exist or lacks the key username or password"
            )),
        },
    )
}

/// Asks DHIS2 how it is (at its Service, or the development override), when a pod is ready.
async fn probe_dhis2(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
    ready_replicas: i32,
    account: Option<&(String, String)>,
) -> Result<Option<Dhis2Health>> {
    let name = instance.name_any();
    let requested_override = instance.annotations().get(ENDPOINT_OVERRIDE_ANNOTATION);
    if requested_override.is_some() && !ctx.allow_endpoint_override {
        ctx.event(
            instance,
            true,
            "EndpointOverrideIgnored",
            "Probe",
            format!(
                "annotation {ENDPOINT_OVERRIDE_ANNOTATION} is ignored: it is honoured only by an operator started with --allow-endpoint-override (development); DHIS2 is probed at its Service"
            ),
        )
        .await;
    }
    let endpoint_override = requested_override.filter(|_| ctx.allow_endpoint_override);
    if ready_replicas == 0 && endpoint_override.is_none() {
        return Ok(None);
    }
    // While a read-only copy serves the instance's Service, the Service answers with the copy's
    // (old) version: what the upgrade waits for is this instance's own pods, so ask one of them.
    let copy_serves = instance
        .status
        .as_ref()
        .and_then(|s| s.read_only_copy.as_ref())
        .is_some_and(|c| c.serving);
    let endpoint = match endpoint_override {
        Some(url) => url.clone(),
        None if copy_serves => match ready_dhis2_pod_address(ctx, ns, &name).await? {
            Some(address) => format!("http://{address}"),
            None => return Ok(None),
        },
        None => format!("http://{name}.{ns}.svc"),
    };
    Ok(Some(
        probe(
            &ctx.http,
            &endpoint,
            account.map(|(u, p)| (u.as_str(), p.as_str())),
        )
        .await,
    ))
}

/// `IP:port` of a Ready DHIS2 pod of the instance (its own, never the read-only copy's).
async fn ready_dhis2_pod_address(ctx: &Context, ns: &str, name: &str) -> Result<Option<String>> {
    let pods = ctx
        .api::<Pod>(ns)
        .list(&ListParams::default().labels(&dhis2_pod_selector(name)))
        .await
        .map_err(|e| Error::kube(format!("listing the DHIS2 pods of {name}"), e))?;
    Ok(pods.items.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let ready = status
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let ip = status.pod_ip.as_deref().filter(|_| ready)?;
        Some(format!("{ip}:{DHIS2_HTTP_PORT}"))
    }))
}

/// The next run of the instance's drill schedule (none when absent, suspended or invalid: an
/// invalid one is reported by the drill schedule controller).
fn next_drill_time(instance: &Dhis2Instance, ctx: &Context) -> Option<String> {
    let drill = instance.spec.backup.as_ref()?.drill.as_ref()?;
    if drill.suspend {
        return None;
    }
    let schedule = Schedule::parse(&drill.schedule, &drill.time_zone, "spec.backup.drill").ok()?;
    schedule
        .next_after(ctx.clock.now())
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The instance's backups, drills and schedules, summarised (from the watched copies).
fn backup_summary(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
) -> (InstanceBackupStatus, Condition) {
    let name = instance.name_any();
    let backups = ctx.backups.backups_of(ns, &name);
    let drills = ctx.backups.drills_of(ns, &name);
    let schedules = ctx.backups.schedules_of(ns, &name);
    let backups: Vec<&Dhis2Backup> = backups.iter().map(AsRef::as_ref).collect();
    let drills: Vec<&Dhis2Drill> = drills.iter().map(AsRef::as_ref).collect();
    let schedules: Vec<&Dhis2BackupSchedule> = schedules.iter().map(AsRef::as_ref).collect();
    summarise_backups(&BackupObservation {
        backups: &backups,
        drills: &drills,
        schedules: &schedules,
        next_drill_time: next_drill_time(instance, ctx),
        generation: instance.metadata.generation,
    })
}

/// What a reconcile that got as far as DHIS2 saw and decided.
struct Running<'a> {
    ready_replicas: i32,
    health: Option<&'a Dhis2Health>,
    upgrade: UpgradeProgress,
    read_only_copy: Option<ReadOnlyCopyStatus>,
}

async fn write_status(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
    // What blocks progress, and why (`InvalidSpec`, `Conflict`).
    blocked: Option<(&'static str, Vec<String>)>,
    database: std::result::Result<(), String>,
    // DHIS2 as this reconcile found and left it (`None`: not looked at).
    running: Option<Running<'_>>,
) -> Result<()> {
    let (ready_replicas, health, upgrade) = match running {
        Some(r) => (
            r.ready_replicas,
            r.health,
            Some((r.upgrade, r.read_only_copy)),
        ),
        None => (0, None, None),
    };
    let (upgrade, read_only_copy) = match upgrade {
        Some((u, copy)) => (Some(u), copy),
        None => (
            None,
            instance
                .status
                .as_ref()
                .and_then(|s| s.read_only_copy.clone()),
        ),
    };
    let name = instance.name_any();
    let old = instance.status.clone().unwrap_or_default();
    let (problem_reason, problems) = blocked.unwrap_or(("InvalidSpec", Vec::new()));
    let (phase, conditions) = instance_phase_and_conditions(&InstanceObservation {
        generation: instance.metadata.generation,
        problems: &problems,
        problem_reason,
        database,
        desired_replicas: instance.spec.replicas,
        ready_replicas,
        health,
    });
    let (backup, backup_healthy) = backup_summary(instance, ctx, ns);
    let mut conditions = conditions;
    conditions.push(backup_healthy);
    let (deployed_version, deployed_image, upgrade_now, upgrade_history) = match upgrade {
        Some(p) => (
            Some(p.deployed.version),
            Some(p.deployed.image),
            p.upgrade,
            p.history,
        ),
        None => (
            old.deployed_version.clone(),
            old.deployed_image.clone(),
            old.upgrade.clone(),
            old.upgrade_history.clone(),
        ),
    };
    conditions.push(upgrade_condition(
        upgrade_now.as_ref(),
        upgrade_history.first(),
        instance.metadata.generation,
    ));
    let phase = match &upgrade_now {
        Some(u) if !u.phase.is_finished() => "Upgrading".to_string(),
        _ => phase,
    };
    let (version, revision) = match health {
        Some(Dhis2Health::Up {
            version, revision, ..
        }) => (version.clone(), revision.clone()),
        _ => (old.version.clone(), old.revision.clone()),
    };
    let status = Dhis2InstanceStatus {
        observed_generation: instance.metadata.generation,
        phase: Some(phase),
        conditions: merge_conditions(&old.conditions, conditions),
        version,
        revision,
        ready_replicas: Some(ready_replicas),
        last_health_check: health.map(Dhis2Health::summary).or(old.last_health_check),
        endpoint: instance
            .spec
            .hostname
            .as_ref()
            .map(|h| format!("http://{h}"))
            .or_else(|| Some(format!("http://{name}.{ns}.svc"))),
        backup: Some(backup),
        deployed_version,
        deployed_image,
        upgrade: upgrade_now,
        upgrade_history,
        read_only_copy,
    };
    // What has ended is written as null: a merge patch keeps what it does not name.
    patch_status(
        &ctx.api::<Dhis2Instance>(ns),
        &name,
        &status,
        &["upgrade", "upgradeHistory", "readOnlyCopy"],
    )
    .await
}

/// `Upgrading`: true while an upgrade runs (reason: its phase); false afterwards, with how the
/// last one ended.
fn upgrade_condition(
    upgrade: Option<&UpgradeStatus>,
    last: Option<&UpgradeRecord>,
    generation: Option<i64>,
) -> Condition {
    match (upgrade, last) {
        (Some(u), _) => {
            let reason = match (u.phase.is_finished(), u.outcome) {
                (true, Some(outcome)) => format!("{outcome:?}"),
                _ => format!("{:?}", u.phase),
            };
            condition(
                "Upgrading",
                !u.phase.is_finished(),
                &reason,
                u.message.clone().unwrap_or_default(),
                generation,
            )
        }
        (None, Some(r)) => condition(
            "Upgrading",
            false,
            &format!("{:?}", r.outcome),
            r.message.clone().unwrap_or_default(),
            generation,
        ),
        (None, None) => condition("Upgrading", false, "NoUpgrade", "", generation),
    }
}
