//! Reconciles `Dhis2Promotion`: reads the staging and production instances, judges the gates
//! (src/operator/promotion/plan.rs), sets production's version once they all pass, and follows production's
//! upgrade to its end.

use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use crate::crd::dhis2_instance::Dhis2Instance;
use crate::crd::dhis2_promotion::{Dhis2Promotion, Dhis2PromotionStatus};

use crate::operator::context::Context;
use crate::operator::error::{Error, Result};
use crate::operator::kit::conditions::{condition, merge_conditions};
use crate::operator::kit::status_patch::patch_status;
use crate::operator::promotion::plan::{PromotionObserved, PromotionStep, next_step};

pub const KIND: &str = "Dhis2Promotion";

fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(a) if a.code == 403)
}

pub async fn reconcile(promotion: Arc<Dhis2Promotion>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if promotion.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = promotion.namespace().unwrap_or_else(|| "default".into());
    let result = reconcile_promotion(&promotion, &ctx, &ns).await;
    if result.is_ok() {
        ctx.reconcile_succeeded(KIND, &*promotion);
    }
    result
}

pub fn error_policy(promotion: Arc<Dhis2Promotion>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_failure(KIND, &*promotion, error)
}

async fn instance(ctx: &Context, ns: &str, name: &str) -> Result<Option<Dhis2Instance>> {
    ctx.api::<Dhis2Instance>(ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Instance {name}"), e))
}

async fn reconcile_promotion(
    promotion: &Dhis2Promotion,
    ctx: &Context,
    ns: &str,
) -> Result<Action> {
    let name = promotion.name_any();
    let staging_ns = promotion.spec.from_namespace.as_deref().unwrap_or(ns);
    let (staging, staging_unreadable) = match instance(ctx, staging_ns, &promotion.spec.from).await
    {
        Ok(found) => (found, None),
        Err(Error::Kube { source, .. }) if is_forbidden(&source) => (
            None,
            Some(format!(
                "the operator may not read Dhis2Instance {} in namespace {staging_ns} (spec.fromNamespace): an operator installed for its own namespace needs get on dhis2instances there (a Role and RoleBinding for its ServiceAccount), or run staging in namespace {ns}",
                promotion.spec.from
            )),
        ),
        Err(e) => return Err(e),
    };
    let production = instance(ctx, ns, &promotion.spec.to).await?;
    let old = promotion.status.clone().unwrap_or_default();
    let now = ctx.clock.now();
    let step = next_step(&PromotionObserved {
        spec: &promotion.spec,
        status: &old,
        staging: staging.as_ref(),
        staging_unreadable: staging_unreadable.as_deref(),
        production: production.as_ref(),
        now,
    });
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut status = Dhis2PromotionStatus {
        observed_generation: promotion.metadata.generation,
        ..old.clone()
    };
    let (event, requeue) = match step {
        PromotionStep::Done => return Ok(Action::await_change()),
        PromotionStep::Blocked {
            version,
            gates,
            message,
        } => {
            let changed = old.phase.as_deref() != Some("Blocked") || old.gates != gates;
            status.phase = Some("Blocked".into());
            status.version = version;
            status.gates = gates;
            status.message = Some(message.clone());
            let event = changed.then_some((false, "PromotionBlocked", message));
            (event, Duration::from_secs(30))
        }
        PromotionStep::Promote {
            version,
            image,
            gates,
        } => {
            let who = promotion.spec.approved_by.clone().unwrap_or_default();
            let mut patch = json!({"spec": {"version": version, "upgrade": {
                "approvedBy": format!("{who} (Dhis2Promotion {name})"),
                "approvedVersion": version,
            }}});
            if let Some(image) = image {
                patch["spec"]["image"] = json!(image);
            }
            ctx.api::<Dhis2Instance>(ns)
                .patch(
                    &promotion.spec.to,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|e| {
                    Error::kube(
                        format!("setting the version of Dhis2Instance {}", promotion.spec.to),
                        e,
                    )
                })?;
            let message = format!(
                "every gate passed: {} upgrades to {version} (approved by {who})",
                promotion.spec.to
            );
            status.phase = Some("Upgrading".into());
            status.version = Some(version);
            status.gates = gates;
            status.started_at = Some(stamp.clone());
            status.message = Some(message.clone());
            (Some((false, "Promoting", message)), Duration::from_secs(10))
        }
        PromotionStep::Wait(message) => {
            status.message = Some(message);
            (None, Duration::from_secs(10))
        }
        PromotionStep::Succeeded { backup_id, message } => {
            status.phase = Some("Succeeded".into());
            status.backup_id = backup_id;
            status.completed_at = Some(stamp.clone());
            status.message = Some(message.clone());
            (
                Some((false, "PromotionSucceeded", message)),
                Duration::from_secs(300),
            )
        }
        PromotionStep::Failed(message) => {
            status.phase = Some("Failed".into());
            status.completed_at = Some(stamp.clone());
            status.message = Some(message.clone());
            (
                Some((true, "PromotionFailed", message)),
                Duration::from_secs(300),
            )
        }
    };
    let g = promotion.metadata.generation;
    let phase = status.phase.clone().unwrap_or_default();
    let message = status.message.clone().unwrap_or_default();
    status.conditions = merge_conditions(
        &old.conditions,
        vec![
            condition("Ready", phase == "Succeeded", &phase, message.clone(), g),
            condition("Blocked", phase == "Blocked", &phase, message, g),
        ],
    );
    patch_status(&ctx.api::<Dhis2Promotion>(ns), &name, &status, &[]).await?;
    if let Some((warning, reason, message)) = event {
        ctx.event(promotion, warning, reason, "Promote", message)
            .await;
    }
    Ok(Action::requeue(requeue))
}
