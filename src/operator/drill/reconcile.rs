//! Reconciles `Dhis2Drill`: read what exists → decide the next step (drill_plan) → do it. The
//! objects come from drill_build; each is created once under a deterministic name and owned by
//! the drill. The instance's status is not written here: the drills are summarised there by the
//! instance's side.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::crd::backup_common::RepositorySpec;
use crate::crd::dhis2_database::{DatabaseProvider, Dhis2Database};
use crate::crd::dhis2_drill::{Dhis2Drill, Dhis2DrillStatus};
use crate::crd::dhis2_instance::Dhis2Instance;

use crate::operator::context::Context;
use crate::operator::database::connection::instance_database_name;
use crate::operator::database::credentials::random_password;
use crate::operator::drill::build::{
    build_drill_job, build_server_pod, build_server_secret, build_server_service, drill_names,
};
use crate::operator::drill::plan::{
    DrillObservation, DrillResult, DrillStep, ServerPod, failure_event, finished_status, next_step,
    running_status,
};
use crate::operator::error::{Error, Result};
use crate::operator::jobs::engine_job::repository_inputs;
use crate::operator::jobs::outcome::job_outcome;
use crate::operator::kit::apply::{Ownership, Parent, ownership};
use crate::operator::kit::create_once::create_once;
use crate::operator::kit::status_patch::patch_status;
use crate::rules::repository_protection::{RepositoryUse, check_protection};

pub const KIND: &str = "Dhis2Drill";

pub async fn reconcile(drill: Arc<Dhis2Drill>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if drill.metadata.deletion_timestamp.is_some() {
        // Everything it made is owned by it: garbage collection takes it.
        return Ok(Action::await_change());
    }
    let ns = drill.namespace().unwrap_or_else(|| "default".into());
    let result = reconcile_drill(&drill, &ctx, &ns).await;
    if result.is_ok() {
        ctx.reconcile_succeeded(KIND, &*drill);
    }
    result
}

pub fn error_policy(drill: Arc<Dhis2Drill>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_failure(KIND, &*drill, error)
}

/// One of the drill's objects, if it exists and is ours; someone else's is a conflict.
struct Found<K> {
    object: Option<K>,
    foreign: bool,
}

async fn find<K>(api: &Api<K>, kind: &str, name: &str, parent: &Parent) -> Result<Found<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading {kind} {name}"), e))?;
    Ok(match existing {
        Some(o) if ownership(o.meta(), parent) == Ownership::Foreign => Found {
            object: None,
            foreign: true,
        },
        object => Found {
            object,
            foreign: false,
        },
    })
}

fn server_pod_state(pod: Option<&Pod>) -> ServerPod {
    let Some(pod) = pod else {
        return ServerPod::Absent;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return ServerPod::Starting("being deleted".into());
    }
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        return ServerPod::Ready;
    }
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .map(|w| match &w.message {
            Some(m) => format!("{} ({m})", w.reason.clone().unwrap_or_default()),
            None => w.reason.clone().unwrap_or_default(),
        })
        .find(|w| !w.is_empty());
    ServerPod::Starting(match waiting {
        Some(w) => format!("pod {phase}, {w}"),
        None => format!("pod {phase}"),
    })
}

/// The repository to drill from: the drill's own, else the instance's; or why there is none.
fn repository(
    drill: &Dhis2Drill,
    instance: Option<&Dhis2Instance>,
) -> std::result::Result<RepositorySpec, String> {
    let repo = drill.spec.repository.clone().or_else(|| {
        instance
            .and_then(|i| i.spec.backup.as_ref())
            .and_then(|b| b.repository.clone())
    });
    let name = &drill.spec.instance_ref;
    let field = match &drill.spec.repository {
        Some(_) => "the drill's spec.repository".to_string(),
        None => format!("spec.backup.repository of Dhis2Instance {name}"),
    };
    match repo {
        Some(r) if repository_inputs(&r, true).is_some() => {
            check_protection(&r, &field, RepositoryUse::Read)?;
            Ok(r)
        }
        Some(_) => Err("the backup repository names neither s3 nor volume".into()),
        None if instance.is_none() => Err(format!(
            "no backup repository: the drill names none and instance {name} does not exist"
        )),
        None => Err(format!(
            "no backup repository: set spec.repository on the drill or spec.backup.repository on instance {name}"
        )),
    }
}

fn parse_time(t: Option<&str>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

async fn reconcile_drill(cached: &Dhis2Drill, ctx: &Context, ns: &str) -> Result<Action> {
    let name = cached.name_any();
    let drills: Api<Dhis2Drill> = ctx.api(ns);
    // The cache can lag behind the status just written: decide on the stored object.
    let Some(drill) = drills
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Drill {name}"), e))?
    else {
        return Ok(Action::await_change());
    };
    let status = drill.status.clone().unwrap_or_default();
    let names = drill_names(&name);
    let parent = Parent::of(&drill);
    let secrets: Api<Secret> = ctx.api(ns);
    let services: Api<Service> = ctx.api(ns);
    let pods: Api<Pod> = ctx.api(ns);
    let jobs: Api<Job> = ctx.api(ns);
    let secret = find(&secrets, "Secret", &names.secret, &parent).await?;
    let service = find(&services, "Service", &names.server, &parent).await?;
    let pod = find(&pods, "Pod", &names.server, &parent).await?;
    let job = find(&jobs, "Job", &names.job, &parent).await?;
    let job_pods = match &job.object {
        Some(_) => {
            pods.list(&ListParams::default().labels(&format!("job-name={}", names.job)))
                .await
                .map_err(|e| Error::kube(format!("listing the pods of Job {}", names.job), e))?
                .items
        }
        None => Vec::new(),
    };
    let instance = ctx
        .api::<Dhis2Instance>(ns)
        .get_opt(&drill.spec.instance_ref)
        .await
        .map_err(|e| {
            Error::kube(
                format!("reading Dhis2Instance {}", drill.spec.instance_ref),
                e,
            )
        })?;
    let repo = repository(&drill, instance.as_ref());
    let foreign: Vec<&str> = [
        (secret.foreign, names.secret.as_str()),
        (service.foreign, names.server.as_str()),
        (pod.foreign, names.server.as_str()),
        (job.foreign, names.job.as_str()),
    ]
    .into_iter()
    .filter_map(|(f, n)| f.then_some(n))
    .collect();
    let blocked = if foreign.is_empty() {
        repo.as_ref().err().cloned()
    } else {
        Some(format!(
            "{} exist and are not this drill's (not owned by it); rename the drill or delete them",
            foreign.join(", ")
        ))
    };
    let now = ctx.clock.now();
    let observation = DrillObservation {
        phase: status.phase,
        started_at: parse_time(status.started_at.as_deref()),
        job_recorded: status.job_name.is_some(),
        cleaned_up: status.cleaned_up == Some(true),
        blocked,
        secret: secret.object.is_some(),
        service: service.object.is_some(),
        pod: server_pod_state(pod.object.as_ref()),
        job: job_outcome(job.object.as_ref(), &job_pods),
        now,
    };
    let generation = drill.metadata.generation;
    let step = next_step(&observation);
    tracing::debug!(drill = %name, ?step, "drill step");
    match step {
        DrillStep::StartServer => {
            if observation.phase.is_none() || observation.started_at.is_none() {
                let running =
                    running_status(&status, drill.spec.backup_id.as_deref(), generation, now);
                write_status(&drills, &name, &running).await?;
                tracing::info!(drill = %name, instance = %drill.spec.instance_ref, "starting a throw-away PostGIS server for the drill");
            }
            if secret.object.is_none() {
                let s = build_server_secret(&drill, &names, &random_password());
                create_once(&secrets, &s, Some(&parent)).await?;
            }
            if service.object.is_none() {
                let s = build_server_service(&drill, &names);
                create_once(&services, &s, Some(&parent)).await?;
            }
            if pod.object.is_none() {
                let database_image = instance_database_image(ctx, ns, instance.as_ref()).await?;
                let p = build_server_pod(&drill, &names, database_image.as_deref());
                create_once(&pods, &p, Some(&parent)).await?;
            }
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        DrillStep::ReplaceServer => {
            tracing::warn!(drill = %name, "the throw-away server's Secret is gone; starting the server afresh");
            delete(&pods, "Pod", &names.server, false).await?;
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        DrillStep::WaitForServer => Ok(Action::requeue(Duration::from_secs(5))),
        DrillStep::StartJob => {
            let Ok(repo) = repo else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            let Some(job) = build_drill_job(&drill, &names, &repo, &ctx.engine_image) else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            create_once(&jobs, &job, Some(&parent)).await?;
            let recorded = Dhis2DrillStatus {
                job_name: Some(names.job.clone()),
                ..status
            };
            write_status(&drills, &name, &recorded).await?;
            tracing::info!(drill = %name, job = %names.job, "throw-away server ready; drill Job started");
            Ok(Action::requeue(Duration::from_secs(15)))
        }
        DrillStep::WaitForJob => Ok(Action::requeue(Duration::from_secs(15))),
        DrillStep::Record(result) => {
            record(&drill, instance.as_ref(), &result, ctx).await;
            let finished = finished_status(&status, &result, generation, now);
            write_status(&drills, &name, &finished).await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        DrillStep::CleanUp => {
            let mut left = false;
            if job.object.is_some() {
                // Foreground: the Job goes only after its pods.
                delete(&jobs, "Job", &names.job, true).await?;
                left = true;
            }
            if pod.object.is_some() {
                delete(&pods, "Pod", &names.server, false).await?;
                left = true;
            }
            if service.object.is_some() {
                delete(&services, "Service", &names.server, false).await?;
                left = true;
            }
            if secret.object.is_some() {
                delete(&secrets, "Secret", &names.secret, false).await?;
                left = true;
            }
            if left {
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            let cleaned = Dhis2DrillStatus {
                cleaned_up: Some(true),
                ..status
            };
            write_status(&drills, &name, &cleaned).await?;
            tracing::info!(drill = %name, "drill finished; its server, volume, Secret and Job are deleted");
            Ok(Action::await_change())
        }
        DrillStep::Done => Ok(Action::await_change()),
    }
}

/// The image of the instance's managed database (`spec.image` of its Dhis2Database), if it sets
/// one.
async fn instance_database_image(
    ctx: &Context,
    ns: &str,
    instance: Option<&Dhis2Instance>,
) -> Result<Option<String>> {
    let Some(instance) = instance else {
        return Ok(None);
    };
    let name = instance_database_name(instance);
    let db = ctx
        .api::<Dhis2Database>(ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading Dhis2Database {name}"), e))?;
    Ok(db
        .filter(|d| d.spec.provider == DatabaseProvider::Managed)
        .and_then(|d| d.spec.image))
}

/// Events for the outcome: a Warning on the drill and on its instance when it failed.
async fn record(
    drill: &Dhis2Drill,
    instance: Option<&Dhis2Instance>,
    result: &DrillResult,
    ctx: &Context,
) {
    match failure_event(result) {
        Some(note) => {
            tracing::warn!(drill = %drill.name_any(), %note, "restore drill failed");
            ctx.event(drill, true, "DrillFailed", "Drill", note.clone())
                .await;
            if let Some(instance) = instance {
                let note = format!("{note} (Dhis2Drill {})", drill.name_any());
                ctx.event(instance, true, "DrillFailed", "Drill", note)
                    .await;
            }
        }
        None => {
            if let DrillResult::Ran(r) = result {
                let note = format!(
                    "backup {} restored and checked in {:.1}s; RPO {}s",
                    r.backup_id, r.rto_seconds, r.rpo_seconds
                );
                ctx.event(drill, false, "DrillPassed", "Drill", note).await;
            }
        }
    }
}

async fn write_status(api: &Api<Dhis2Drill>, name: &str, status: &Dhis2DrillStatus) -> Result<()> {
    patch_status(api, name, status, &[]).await
}

async fn delete<K>(api: &Api<K>, kind: &str, name: &str, foreground: bool) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = if foreground {
        DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        }
    } else {
        DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting {kind} {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::dhis2_drill::Dhis2DrillSpec;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn the_server_pod_is_ready_only_when_kubernetes_says_so() {
        assert_eq!(server_pod_state(None), ServerPod::Absent);
        assert_eq!(
            server_pod_state(Some(&pod(json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"}]})))),
            ServerPod::Ready
        );
        let pulling = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "postgis", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}]}));
        assert_eq!(
            server_pod_state(Some(&pulling)),
            ServerPod::Starting("pod Pending, ImagePullBackOff (no such image)".into())
        );
    }

    #[test]
    fn the_repository_is_the_drills_own_or_the_instances() {
        let drill = Dhis2Drill::new(
            "weekly",
            Dhis2DrillSpec {
                instance_ref: "hmis".into(),
                backup_id: None,
                repository: None,
                postgis_image: None,
                deadline_seconds: 3600,
            },
        );
        let why = repository(&drill, None).unwrap_err();
        assert!(why.contains("instance hmis does not exist"), "{why}");
        let instance: Dhis2Instance = serde_json::from_value(json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
            "metadata": {"name": "hmis"},
            "spec": {"version": "2.41.3", "environment": "production"}
        }))
        .unwrap();
        let why = repository(&drill, Some(&instance)).unwrap_err();
        assert!(why.contains("spec.backup.repository"), "{why}");
        let mut with_repo = instance.clone();
        with_repo.spec.backup = serde_json::from_value(json!({"repository": {
            "s3": {"bucket": "moh-backups", "credentialsSecretRef": "s3"}}}))
        .unwrap();
        let repo = repository(&drill, Some(&with_repo)).unwrap();
        assert_eq!(repo.s3.unwrap().bucket, "moh-backups");
        let mut own = drill.clone();
        own.spec.repository =
            serde_json::from_value(json!({"volume": {"claimName": "nfs-backups"}})).unwrap();
        assert!(repository(&own, Some(&with_repo)).unwrap().volume.is_some());
    }
}
