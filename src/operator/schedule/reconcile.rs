//! Reconciles `Dhis2BackupSchedule`: at each fire time (the operator's clock, `ctx.clock`) it
//! creates one `Dhis2Backup`, named after the fire time so a restart never doubles it; deletes
//! its finished backups beyond the history limits; reports status; and sleeps until the next
//! fire time (capped, so a changed clock is noticed). Running the backup, one at a time per
//! instance, is the `Dhis2Backup` controller's work.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use crate::crd::backup_common::RunPhase;
use crate::crd::dhis2_backup::Dhis2Backup;
use crate::crd::dhis2_backup_schedule::Dhis2BackupSchedule;
use crate::crd::dhis2_instance::Dhis2Instance;

use crate::operator::context::Context;
use crate::operator::error::{Error, Result};
use crate::operator::kit::apply::Parent;
use crate::operator::kit::create_once::create_once;
use crate::operator::kit::scheduled_objects::{delete_all, list_owned};
use crate::operator::kit::status_patch::patch_status;
use crate::operator::schedule::build::{
    SCHEDULE_SINCE_ANNOTATION, build_scheduled_backup, creation_time, parse_time, rfc3339,
    run_time, schedule_label_value, scheduled_time,
};
use crate::operator::schedule::plan::{
    MAX_SLEEP, decide, requeue_after, why_scheduled_backup_waits,
};
use crate::operator::schedule::run_history::{FinishedRun, beyond_history_limit};
use crate::operator::schedule::status::{ScheduleObservation, backup_schedule_status};
use crate::rules::cron_schedule::Schedule;
use crate::rules::names::SCHEDULE_LABEL;

/// How soon a backup postponed by an upgrade or a restore looks again.
const POSTPONED_LOOK_AGAIN: std::time::Duration = std::time::Duration::from_secs(20);

pub const KIND: &str = "Dhis2BackupSchedule";

pub async fn reconcile(schedule: Arc<Dhis2BackupSchedule>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if schedule.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = schedule.namespace().unwrap_or_else(|| "default".into());
    let result = reconcile_schedule(&schedule, &ctx, &ns).await;
    if result.is_ok() {
        ctx.reconcile_succeeded(KIND, &*schedule);
    }
    result
}

pub fn error_policy(
    schedule: Arc<Dhis2BackupSchedule>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.retry_after_failure(KIND, &*schedule, error)
}

async fn reconcile_schedule(
    schedule: &Dhis2BackupSchedule,
    ctx: &Context,
    ns: &str,
) -> Result<Action> {
    let name = schedule.name_any();
    let now = ctx.clock.now();
    let backups_api: Api<Dhis2Backup> = ctx.api(ns);
    let parent = Parent::of(schedule);
    let selector = format!("{SCHEDULE_LABEL}={}", schedule_label_value(&name));
    let mut backups = list_owned(&backups_api, "Dhis2Backup", &selector, &parent).await?;
    let old = schedule.status.clone().unwrap_or_default();

    let parsed = Schedule::parse(&schedule.spec.schedule, &schedule.spec.time_zone, "spec");
    let plan = match &parsed {
        Ok(s) => s,
        Err(problem) => {
            if old.observed_generation != schedule.metadata.generation {
                ctx.event(
                    schedule,
                    true,
                    "InvalidSpec",
                    "Validate",
                    problem.to_string(),
                )
                .await;
            }
            write_status(
                schedule,
                ctx,
                ns,
                ScheduleObservation {
                    generation: schedule.metadata.generation,
                    invalid: Some(problem.to_string()),
                    suspended: schedule.spec.suspend,
                    zone: None,
                    last_schedule_time: None,
                    next_run: None,
                    backups: &backups,
                },
            )
            .await?;
            // A spec change wakes the controller; nothing else can fix it.
            return Ok(Action::await_change());
        }
    };

    // Fire times after `since` are due: the newest one already run (status, or the newest
    // backup's annotation should a status write have been lost), else when the schedule was
    // first seen (recorded once, on the operator's clock, which tests move).
    let last_run = [
        old.last_schedule_time.as_deref().and_then(parse_time),
        backups
            .iter()
            .filter_map(|b| scheduled_time(&b.metadata))
            .max(),
    ]
    .into_iter()
    .flatten()
    .max();
    let recorded_since = schedule
        .annotations()
        .get(SCHEDULE_SINCE_ANNOTATION)
        .and_then(|t| parse_time(t));
    let since = match last_run.or(recorded_since) {
        Some(t) => t,
        None => {
            let first_seen = creation_time(&schedule.metadata).map_or(now, |c| c.min(now));
            record_since(schedule, ctx, ns, first_seen).await?;
            first_seen
        }
    };

    let decision = decide(plan, since, now, schedule.spec.suspend);
    let mut last_schedule_time = last_run;
    let instance_ref = &schedule.spec.instance_ref;
    let waits = match decision.run {
        Some(_) => ctx
            .api::<Dhis2Instance>(ns)
            .get_opt(instance_ref)
            .await
            .map_err(|e| Error::kube(format!("reading Dhis2Instance {instance_ref}"), e))?
            .as_ref()
            .and_then(why_scheduled_backup_waits),
        None => None,
    };
    if let (Some(fire), Some(why)) = (decision.run, &waits) {
        let local = fire.with_timezone(&plan.zone()).format("%Y-%m-%d %H:%M %Z");
        ctx.event(
            schedule,
            false,
            "Postponed",
            "CreateBackup",
            format!("the backup for {local} waits: {why}"),
        )
        .await;
    }
    if let Some(fire) = decision.run.filter(|_| waits.is_none()) {
        let backup = build_scheduled_backup(schedule, fire);
        let created = create_once(&backups_api, &backup, Some(&parent)).await?;
        if created {
            let local = fire.with_timezone(&plan.zone()).format("%Y-%m-%d %H:%M %Z");
            let catch_up = if decision.skipped_earlier {
                " (catch-up after downtime: earlier missed fire times are not run)"
            } else {
                ""
            };
            tracing::info!(schedule = %name, backup = %backup.name_any(), fire_time = %rfc3339(fire), "scheduled backup created");
            ctx.event(
                schedule,
                false,
                "Scheduled",
                "CreateBackup",
                format!(
                    "created Dhis2Backup {} for {local} ({}){catch_up}",
                    backup.name_any(),
                    plan.zone()
                ),
            )
            .await;
            backups.push(backup);
        }
        last_schedule_time = Some(fire);
    }

    let expired = expired_backups(schedule, &backups);
    delete_all(&backups_api, "Dhis2Backup", &expired).await?;
    backups.retain(|b| !expired.contains(&b.name_any()));

    write_status(
        schedule,
        ctx,
        ns,
        ScheduleObservation {
            generation: schedule.metadata.generation,
            invalid: None,
            suspended: schedule.spec.suspend,
            zone: Some(plan.zone()),
            last_schedule_time,
            next_run: decision.next_run,
            backups: &backups,
        },
    )
    .await?;
    if waits.is_some() {
        // The instance's changes do not wake a schedule: look again soon.
        return Ok(Action::requeue(POSTPONED_LOOK_AGAIN));
    }
    Ok(Action::requeue(requeue_after(
        decision.next_run,
        now,
        MAX_SLEEP,
    )))
}

/// Finished backups beyond the schedule's history limits, oldest first.
fn expired_backups(schedule: &Dhis2BackupSchedule, backups: &[Dhis2Backup]) -> Vec<String> {
    let finished = |want: RunPhase| -> Vec<FinishedRun> {
        backups
            .iter()
            .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(want))
            .map(|b| FinishedRun {
                name: b.name_any(),
                at: run_time(&b.metadata),
            })
            .collect()
    };
    let mut expired = beyond_history_limit(
        &finished(RunPhase::Completed),
        schedule.spec.successful_backups_history_limit as usize,
    );
    expired.extend(beyond_history_limit(
        &finished(RunPhase::Failed),
        schedule.spec.failed_backups_history_limit as usize,
    ));
    expired
}

async fn record_since(
    schedule: &Dhis2BackupSchedule,
    ctx: &Context,
    ns: &str,
    since: DateTime<Utc>,
) -> Result<()> {
    let name = schedule.name_any();
    ctx.api::<Dhis2BackupSchedule>(ns)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {SCHEDULE_SINCE_ANNOTATION: rfc3339(since)}}}),
            ),
        )
        .await
        .map_err(|e| Error::kube(format!("annotating Dhis2BackupSchedule {name}"), e))?;
    Ok(())
}

async fn write_status(
    schedule: &Dhis2BackupSchedule,
    ctx: &Context,
    ns: &str,
    seen: ScheduleObservation<'_>,
) -> Result<()> {
    let name = schedule.name_any();
    let old = schedule.status.clone().unwrap_or_default();
    let status = backup_schedule_status(&old, &seen);
    if schedule.status.as_ref() == Some(&status) {
        return Ok(());
    }
    // A suspended schedule's next run is cleared.
    patch_status(
        &ctx.api::<Dhis2BackupSchedule>(ns),
        &name,
        &status,
        &["nextRunTime"],
    )
    .await
}
