//! The restore-drill schedule of an instance (`spec.backup.drill`): at each fire time one
//! `Dhis2Drill` of the latest backup, named after the fire time and owned by the instance; the
//! newest finished scheduled drills are kept, older ones deleted. The last fire time is kept in
//! an annotation on the instance (and on each drill), so a restarted operator neither doubles a
//! drill nor runs more than one catch-up. Running the drill is the `Dhis2Drill` controller's work.

use std::sync::Arc;

use chrono::DateTime;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use crate::crd::dhis2_drill::Dhis2Drill;
use crate::crd::dhis2_instance::Dhis2Instance;

use crate::operator::context::Context;
use crate::operator::error::{Error, Result};
use crate::operator::kit::apply::Parent;
use crate::operator::kit::create_once::create_once;
use crate::operator::kit::scheduled_objects::{delete_all, list_owned};
use crate::operator::schedule::build::{
    DRILL_SCHEDULE, DRILL_SCHEDULE_SINCE_ANNOTATION, SCHEDULED_DRILL_HISTORY,
    build_scheduled_drill, creation_time, parse_time, rfc3339, run_time, scheduled_time,
};
use crate::operator::schedule::plan::{MAX_SLEEP, decide, requeue_after};
use crate::operator::schedule::run_history::{FinishedRun, beyond_history_limit};
use crate::rules::cron_schedule::Schedule;
use crate::rules::names::{INSTANCE_LABEL, SCHEDULE_LABEL};

/// For metrics and logs (the reconciled kind is `Dhis2Instance`).
pub const KIND: &str = "Dhis2DrillSchedule";

pub async fn reconcile(instance: Arc<Dhis2Instance>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if instance.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = instance.namespace().unwrap_or_else(|| "default".into());
    let result = reconcile_drill_schedule(&instance, &ctx, &ns).await;
    if result.is_ok() {
        ctx.reconcile_succeeded(KIND, &*instance);
    }
    result
}

pub fn error_policy(instance: Arc<Dhis2Instance>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_failure(KIND, &*instance, error)
}

async fn reconcile_drill_schedule(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
) -> Result<Action> {
    let Some(spec) = instance.spec.backup.as_ref().and_then(|b| b.drill.as_ref()) else {
        return Ok(Action::await_change());
    };
    let name = instance.name_any();
    let plan = match Schedule::parse(&spec.schedule, &spec.time_zone, "spec.backup.drill") {
        Ok(plan) => plan,
        Err(problem) => {
            // Reconciled again only when the instance changes: one Event per change.
            ctx.event(
                instance,
                true,
                "InvalidDrillSchedule",
                "Validate",
                problem.to_string(),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let now = ctx.clock.now();
    let drills_api: Api<Dhis2Drill> = ctx.api(ns);
    let parent = Parent::of(instance);
    let selector = format!("{INSTANCE_LABEL}={name},{SCHEDULE_LABEL}={DRILL_SCHEDULE}");
    let mut drills = list_owned(&drills_api, "Dhis2Drill", &selector, &parent).await?;

    let recorded = instance
        .annotations()
        .get(DRILL_SCHEDULE_SINCE_ANNOTATION)
        .and_then(|t| parse_time(t));
    let newest_drill = drills
        .iter()
        .filter_map(|d| scheduled_time(&d.metadata))
        .max();
    let since = match recorded.into_iter().chain(newest_drill).max() {
        Some(t) => t,
        None => {
            let first_seen = creation_time(&instance.metadata).map_or(now, |c| c.min(now));
            record_since(instance, ctx, ns, first_seen).await?;
            first_seen
        }
    };

    let decision = decide(&plan, since, now, spec.suspend);
    if let Some(fire) = decision.run {
        let drill = build_scheduled_drill(instance, fire);
        if create_once(&drills_api, &drill, Some(&parent)).await? {
            let local = fire.with_timezone(&plan.zone()).format("%Y-%m-%d %H:%M %Z");
            tracing::info!(instance = %name, drill = %drill.name_any(), fire_time = %rfc3339(fire), "scheduled drill created");
            ctx.event(
                instance,
                false,
                "DrillScheduled",
                "CreateDrill",
                format!(
                    "created Dhis2Drill {} for {local} ({})",
                    drill.name_any(),
                    plan.zone()
                ),
            )
            .await;
            drills.push(drill);
        }
        record_since(instance, ctx, ns, fire).await?;
    }

    let finished: Vec<FinishedRun> = drills
        .iter()
        .filter(|d| {
            d.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished())
        })
        .map(|d| FinishedRun {
            name: d.name_any(),
            at: run_time(&d.metadata),
        })
        .collect();
    delete_all(
        &drills_api,
        "Dhis2Drill",
        &beyond_history_limit(&finished, SCHEDULED_DRILL_HISTORY),
    )
    .await?;
    Ok(Action::requeue(requeue_after(
        decision.next_run,
        now,
        MAX_SLEEP,
    )))
}

async fn record_since(
    instance: &Dhis2Instance,
    ctx: &Context,
    ns: &str,
    since: DateTime<chrono::Utc>,
) -> Result<()> {
    let name = instance.name_any();
    let value = rfc3339(since);
    if instance.annotations().get(DRILL_SCHEDULE_SINCE_ANNOTATION) == Some(&value) {
        return Ok(());
    }
    ctx.api::<Dhis2Instance>(ns)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {DRILL_SCHEDULE_SINCE_ANNOTATION: value}}}),
            ),
        )
        .await
        .map_err(|e| Error::kube(format!("annotating Dhis2Instance {name}"), e))?;
    Ok(())
}
