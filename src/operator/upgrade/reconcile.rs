//! The I/O of an upgrade, run by the instance's reconcile: gathers what the current phase needs
//! (DHIS2's pods, the pre-upgrade backup, the rollback's restore, the database's facts), lets
//! `upgrade_steps::decide` choose, carries out its one action, and hands back the status to
//! record and the Deployment to run.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Resource, ResourceExt};

use crate::crd::backup_common::default_deadline_seconds;
use crate::crd::dhis2_backup::{Dhis2Backup, Dhis2BackupSpec};
use crate::crd::dhis2_instance::Dhis2Instance;
use crate::crd::dhis2_restore::{Dhis2Restore, Dhis2RestoreSpec, RestoreSource, RestoreTarget};
use crate::crd::upgrade::{UPGRADE_HISTORY_LIMIT, UpgradeRecord, UpgradeStatus};
use crate::postgres::quote_ident;
use crate::upgrade::{
    CurrentVersion, Dhis2Version, UpgradeCheck, check_upgrade, read_database_facts,
};

use crate::crd::dhis2_restore::RestorePhase;
use crate::operator::context::Context;
use crate::operator::database::connection::database_target;
use crate::operator::database::connection_settings::DatabaseConnection;
use crate::operator::error::{Error, Result};
use crate::operator::instance::build::APP;
use crate::operator::instance::health::Dhis2Health;
use crate::operator::kit::apply::Parent;
use crate::operator::kit::create_once::create_once;
use crate::operator::kit::labels::{child_meta, labels};
use crate::operator::kit::secret_values::secret_value;
use crate::operator::upgrade::plan::{
    Action, BackupSeen, Confirmation, DeploymentPlan, RestoreSeen, Safeguards, UpgradeObserved,
    awaits_recovery, decide, deployment_plan, needs_check,
};
use crate::rules::deployed_version::{Deployed, same_version};
use crate::rules::deployed_version::{deployed_of, dhis2_image};
use crate::rules::names::ACCEPT_MIGRATED_DATABASE_ANNOTATION;
use crate::rules::repository::backup_repository;
use crate::rules::repository_protection::{RepositoryUse, check_protection};

/// What the reconcile records and runs after this step of the upgrade.
pub struct UpgradeProgress {
    pub upgrade: Option<UpgradeStatus>,
    pub history: Vec<UpgradeRecord>,
    pub deployed: Deployed,
    pub plan: DeploymentPlan,
    pub requeue: Option<Duration>,
}

/// DHIS2's pods of the instance and the restarts of their containers.
async fn dhis2_pods(ctx: &Context, ns: &str, name: &str) -> Result<(usize, i32)> {
    let selector = format!(
        "app.kubernetes.io/name={APP},app.kubernetes.io/instance={name},app.kubernetes.io/component=dhis2"
    );
    let pods = ctx
        .api::<Pod>(ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube(format!("listing the DHIS2 pods of {name}"), e))?
        .items;
    let restarts = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    Ok((pods.len(), restarts))
}

async fn backup_seen(ctx: &Context, ns: &str, name: &str) -> Result<Option<BackupSeen>> {
    let backup = ctx
        .api::<Dhis2Backup>(ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Backup {name}"), e))?;
    Ok(backup.map(|b| {
        let s = b.status.unwrap_or_default();
        BackupSeen {
            phase: s.phase,
            backup_id: s.backup_id,
            verified: s.verified == Some(true),
            failure_reason: s.failure_reason,
        }
    }))
}

async fn restore_seen(ctx: &Context, ns: &str, name: &str) -> Result<Option<RestoreSeen>> {
    let restore = ctx
        .api::<Dhis2Restore>(ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Restore {name}"), e))?;
    Ok(restore.map(|r| {
        let s = r.status.unwrap_or_default();
        RestoreSeen {
            phase: s.phase.unwrap_or_default(),
            message: s.failure_reason.or(s.message),
            replaced_database: s.replaced_database,
            database_swapped: s.database_swapped == Some(true),
        }
    }))
}

/// Whether the new version's answer could be confirmed, from the account and DHIS2's answer now.
fn confirmation(
    account: &std::result::Result<(String, String), String>,
    secret: Option<&str>,
    health: Option<&Dhis2Health>,
) -> Confirmation {
    if let Err(why) = account {
        return Confirmation::Unusable(why.clone());
    }
    let secret = secret.unwrap_or("-");
    match health {
        None => Confirmation::NoAnswer("no DHIS2 pod is ready".into()),
        Some(Dhis2Health::Up {
            version: Some(_), ..
        }) => Confirmation::Confirmed,
        Some(Dhis2Health::Up {
            info_status: Some(status @ (401 | 403)),
            ..
        }) => Confirmation::Unusable(format!(
            "DHIS2 refused the account in Secret {secret} (spec.adminSecretRef) at /api/system/info (HTTP {status}): correct its username and password (a DHIS2 superuser)"
        )),
        Some(Dhis2Health::Up { info_status, .. }) => Confirmation::NoAnswer(format!(
            "/api/system/info answered {} without a version",
            info_status.map_or("nothing".into(), |s| format!("HTTP {s}"))
        )),
        Some(other) => Confirmation::NoAnswer(other.summary()),
    }
}

/// Whether a restore Job could read the pre-upgrade backup back: the repository's settings, and
/// the private key or passphrase it decrypts with present in the cluster.
async fn way_back(
    ctx: &Context,
    ns: &str,
    instance: &Dhis2Instance,
) -> Result<std::result::Result<(), String>> {
    let backup = pre_upgrade_backup(instance, "pre-upgrade");
    let repository = match backup_repository(&backup.spec, &instance.spec) {
        Ok(r) => r,
        Err(why) => return Ok(Err(why)),
    };
    let field = "the Dhis2Instance's spec.backup.repository";
    if let Err(why) = check_protection(repository, field, RepositoryUse::Read) {
        return Ok(Err(why));
    }
    let Some(encryption) = &repository.encryption else {
        return Ok(Ok(()));
    };
    let (secret, key, setting) = match (
        &encryption.passphrase_secret_ref,
        &encryption.identity_secret_ref,
    ) {
        (Some(s), _) => (s, "passphrase", "passphraseSecretRef"),
        (None, Some(s)) => (s, "identity", "identitySecretRef"),
        (None, None) => return Ok(Ok(())),
    };
    Ok(match secret_value(ctx, ns, secret, key).await? {
        Some(v) if !v.trim().is_empty() => Ok(()),
        _ => Err(format!(
            "Secret {secret} ({field}.encryption.{setting}) does not exist or lacks the key {key}, so a restore could not decrypt the pre-upgrade backup: create it before upgrading (it may be removed again afterwards)"
        )),
    })
}

/// After a failed rollback: a restore over the instance that restored its database since.
async fn recovery_restore(
    ctx: &Context,
    ns: &str,
    instance: &str,
    since: Option<&str>,
) -> Result<Option<String>> {
    let since = since.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let restores = ctx
        .api::<Dhis2Restore>(ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing Dhis2Restores".to_string(), e))?;
    Ok(restores.items.into_iter().find_map(|r| {
        let s = r.status.as_ref()?;
        let restored = matches!(
            s.phase.unwrap_or_default(),
            RestorePhase::Starting | RestorePhase::Completed
        );
        let started = s
            .started_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let after = match (since, started) {
            (Some(since), Some(started)) => started >= since,
            _ => false,
        };
        (r.spec.target.instance == instance && restored && after).then(|| r.name_any())
    }))
}

/// The upgrade check against the instance's database, or why it could not be read.
async fn check_database(
    connection: &DatabaseConnection,
    from: &str,
    to: &str,
) -> std::result::Result<UpgradeCheck, String> {
    let from = Dhis2Version::parse(from).map_err(|e| e.to_string())?;
    let to = Dhis2Version::parse(to).map_err(|e| e.to_string())?;
    let target = database_target(connection, "the database's connection Secret")?;
    let facts = tokio::time::timeout(Duration::from_secs(60), read_database_facts(&target))
        .await
        .map_err(|_| format!("no answer from {target} within 60 s"))?
        .map_err(|e| e.to_string())?;
    Ok(check_upgrade(&CurrentVersion::Release(from), &to, &facts))
}

/// Drops DHIS2's materialized SQL views (`_view_*`), as its upgrade guide asks before the new
/// version migrates; DHIS2 creates them again. Their names, dropped now or before.
async fn drop_materialized_views(connection: &DatabaseConnection) -> Result<Vec<String>> {
    let target = database_target(connection, "the database's connection Secret")
        .map_err(|why| Error::Upgrade(format!("connecting to drop materialized views: {why}")))?;
    let failed = |what: &str, e: String| Error::Upgrade(format!("{what}: {e}"));
    let client = tokio::time::timeout(Duration::from_secs(30), target.connect())
        .await
        .map_err(|_| {
            failed(
                "dropping materialized SQL views",
                format!("no answer from {target}"),
            )
        })?
        .map_err(|e| failed("dropping materialized SQL views", e.to_string()))?;
    let rows = client
        .query(
            r"SELECT schemaname, matviewname FROM pg_matviews
              WHERE matviewname LIKE '\_view\_%' ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| failed("listing materialized SQL views", e.to_string()))?;
    let mut dropped = Vec::new();
    for row in rows {
        let (schema, view): (String, String) = (row.get(0), row.get(1));
        client
            .batch_execute(&format!(
                "DROP MATERIALIZED VIEW IF EXISTS {}.{}",
                quote_ident(&schema),
                quote_ident(&view)
            ))
            .await
            .map_err(|e| {
                failed(
                    &format!("dropping the materialized view {view}"),
                    e.to_string(),
                )
            })?;
        dropped.push(view);
    }
    Ok(dropped)
}

fn pre_upgrade_backup(instance: &Dhis2Instance, name: &str) -> Dhis2Backup {
    let instance_name = instance.name_any();
    let mut backup = Dhis2Backup::new(
        name,
        Dhis2BackupSpec {
            instance_ref: instance_name.clone(),
            include_file_store: true,
            // A read-only copy restored from it serves dashboards while DHIS2 migrates.
            include_analytics: instance
                .spec
                .upgrade
                .as_ref()
                .is_some_and(|u| u.read_only_during_upgrade),
            repository: None,
            retention: None,
            retention_time_zone: None,
            deadline_seconds: default_deadline_seconds(),
            // The way back: re-read in full before the database is touched.
            verify: true,
            purpose: crate::crd::dhis2_backup::BackupPurpose::PreUpgrade,
        },
    );
    backup.metadata = child_meta(
        name.to_string(),
        instance.namespace(),
        &labels(APP, &instance_name, "pre-upgrade-backup"),
        instance.controller_owner_ref(&()),
        &format!("Dhis2Instance/{instance_name}"),
    );
    backup
}

fn rollback_restore(instance: &Dhis2Instance, name: &str, backup: &str, to: &str) -> Dhis2Restore {
    let instance_name = instance.name_any();
    let mut restore = Dhis2Restore::new(
        name,
        Dhis2RestoreSpec {
            source: RestoreSource {
                instance: instance_name.clone(),
                backup_ref: Some(backup.to_string()),
                backup_id: None,
                repository: None,
            },
            target: RestoreTarget {
                instance: instance_name.clone(),
                new_instance: None,
            },
            confirm_overwrite: Some(instance_name.clone()),
            approved_by: Some(format!(
                "dhis2-operator: automatic rollback of the upgrade to {to}"
            )),
            regenerate_analytics: true,
            include_file_store: true,
            point_in_time: None,
            deadline_seconds: default_deadline_seconds(),
            skip_space_check: false,
        },
    );
    restore.metadata = child_meta(
        name.to_string(),
        instance.namespace(),
        &labels(APP, &instance_name, "upgrade-rollback"),
        instance.controller_owner_ref(&()),
        &format!("Dhis2Instance/{instance_name}"),
    );
    restore
}

/// One step of the instance's upgrade (none when `spec.version` runs already).
pub async fn advance_upgrade(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
    connection: &DatabaseConnection,
    health: Option<&Dhis2Health>,
    account: &std::result::Result<(String, String), String>,
) -> Result<UpgradeProgress> {
    let reported_version = match health {
        Some(Dhis2Health::Up { version, .. }) => version.as_deref(),
        _ => None,
    };
    let name = instance.name_any();
    let status = instance.status.clone().unwrap_or_default();
    let deployed = deployed_of(instance);
    let settings = instance.spec.upgrade.clone().unwrap_or_default();
    let upgrade = status.upgrade.clone();
    let (pods, restarts) = dhis2_pods(ctx, ns, &name).await?;
    let backup = match upgrade.as_ref().and_then(|u| u.backup_name.as_deref()) {
        Some(b) => backup_seen(ctx, ns, b).await?,
        None => None,
    };
    let restore = match upgrade.as_ref().and_then(|u| u.restore_name.as_deref()) {
        Some(r) => restore_seen(ctx, ns, r).await?,
        None => None,
    };
    let check = match upgrade.as_ref().filter(|u| needs_check(Some(u))) {
        Some(u) => Some(check_database(connection, &u.from_version, &u.to_version).await),
        None => None,
    };
    let safeguards = match needs_check(upgrade.as_ref()) {
        true => Some(Safeguards {
            confirmation: confirmation(account, instance.spec.admin_secret_ref.as_deref(), health),
            way_back: way_back(ctx, ns, instance).await?,
        }),
        false => None,
    };
    let recovery = match upgrade.as_ref().filter(|u| awaits_recovery(Some(u))) {
        Some(u) => recovery_restore(ctx, ns, &name, u.phase_started_at.as_deref()).await?,
        None => None,
    };
    let spec_image = dhis2_image(instance);
    let decision = decide(&UpgradeObserved {
        instance: &name,
        spec_version: &instance.spec.version,
        spec_image: &spec_image,
        deployed: &deployed,
        upgrade: upgrade.as_ref(),
        settings: &settings,
        now: ctx.clock.now(),
        check: check.as_ref(),
        dhis2_pods: pods,
        dhis2_restarts: restarts,
        reported_version,
        backup: backup.as_ref(),
        restore: restore.as_ref(),
        safeguards: safeguards.as_ref(),
        dhis2_answering: matches!(health, Some(Dhis2Health::Up { .. })),
        recovery_restore: recovery.as_deref(),
        accepted_migrated_database: instance
            .annotations()
            .get(ACCEPT_MIGRATED_DATABASE_ANNOTATION)
            .map(String::as_str),
        job_deadline_seconds: default_deadline_seconds(),
    });
    let parent = Parent::of(instance);
    let mut next = decision.upgrade.clone();
    let to = next
        .as_ref()
        .or(upgrade.as_ref())
        .map(|u| u.to_version.clone())
        .unwrap_or_default();
    match &decision.action {
        None => {}
        Some(Action::CreateBackup { name: backup }) => {
            let obj = pre_upgrade_backup(instance, backup);
            if create_once(&ctx.api::<Dhis2Backup>(ns), &obj, Some(&parent)).await? {
                tracing::info!(instance = %name, backup = %backup, "pre-upgrade backup created");
            }
        }
        Some(Action::DropMaterializedViews) => {
            let dropped = drop_materialized_views(connection).await?;
            if let Some(u) = next.as_mut() {
                for view in dropped {
                    if !u.dropped_views.contains(&view) {
                        u.dropped_views.push(view);
                    }
                }
            }
        }
        Some(Action::CreateRestore {
            name: restore_name,
            backup_name,
        }) => {
            let obj = rollback_restore(instance, restore_name, backup_name, &to);
            if create_once(&ctx.api::<Dhis2Restore>(ns), &obj, Some(&parent)).await? {
                tracing::warn!(instance = %name, restore = %restore_name, "upgrade rolling back");
            }
        }
    }
    if let Some(event) = &decision.event {
        ctx.event(
            instance,
            event.warning,
            event.reason,
            "Upgrade",
            event.message.clone(),
        )
        .await;
    }
    let mut history = status.upgrade_history.clone();
    if let Some(done) = decision.finished.clone() {
        history.insert(0, done);
        history.truncate(UPGRADE_HISTORY_LIMIT);
    }
    let mut now_deployed = decision.deployed.clone().unwrap_or(deployed);
    if next.is_none() && same_version(&instance.spec.version, &now_deployed.version) {
        // Outside an upgrade the spec's image runs (a new tag of the same version, a mirror).
        now_deployed = Deployed {
            version: instance.spec.version.clone(),
            image: spec_image.clone(),
        };
    }
    let plan = deployment_plan(
        &instance.spec.version,
        &spec_image,
        instance.spec.replicas,
        &now_deployed,
        next.as_ref(),
        restore.as_ref(),
    );
    Ok(UpgradeProgress {
        upgrade: next,
        history,
        deployed: now_deployed,
        plan,
        requeue: decision.requeue,
    })
}
