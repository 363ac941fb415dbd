//! Starts the operator: checks the CRDs are installed, serves health and metrics, and runs the
//! controllers (databases, instances, backups, backup schedules, drills, drill schedules,
//! restores) until SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};

use crate::crd::{
    Dhis2Backup, Dhis2BackupSchedule, Dhis2Database, Dhis2Drill, Dhis2Instance, Dhis2Restore,
};

use super::backup_index::BackupIndex;
use super::clock::{FileClock, SystemClock};
use super::context::{Context, scoped_api as api};
use super::labels::MANAGED_BY;
use super::labels::SCHEDULE_LABEL;
use super::metrics::Metrics;
use super::{
    backup_controller, backup_schedule_controller, database_controller, drill_controller,
    drill_schedule_controller, instance_controller, restore_controller, server,
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach the Kubernetes API (kubeconfig or in-cluster config): {0}")]
    Client(String),
    #[error(
        "the dhis2operator.io CRDs are not installed ({0}); run: dhis2-operator crd | kubectl apply -f -"
    )]
    CrdsMissing(String),
    #[error("cannot serve metrics on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How the operator was started.
pub struct RunOptions {
    /// Watch one namespace (namespaced mode, a Role there suffices), or all when `None`.
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    /// Honour the `dhis2operator.io/endpoint-override` annotation. Development and tests only:
    /// it lets whoever can annotate a Dhis2Instance point the operator's HTTP client (and the
    /// admin password it sends) at any address.
    pub allow_endpoint_override: bool,
    /// Read "now" from this file (tests only); the system clock otherwise.
    pub clock_file: Option<std::path::PathBuf>,
    /// The image of the engine's Jobs.
    pub engine_image: String,
}

pub async fn run(options: RunOptions) -> Result<(), StartError> {
    let RunOptions {
        namespace,
        metrics_addr,
        allow_endpoint_override,
        clock_file,
        engine_image,
    } = options;
    let client = Client::try_default()
        .await
        .map_err(|e| StartError::Client(e.to_string()))?;
    let ns = namespace.as_deref();
    for check in [
        api::<Dhis2Instance>(&client, ns)
            .list(&ListParams::default().limit(1))
            .await
            .map(|_| ()),
        api::<Dhis2Database>(&client, ns)
            .list(&ListParams::default().limit(1))
            .await
            .map(|_| ()),
        api::<Dhis2Restore>(&client, ns)
            .list(&ListParams::default().limit(1))
            .await
            .map(|_| ()),
    ] {
        check.map_err(|e| StartError::CrdsMissing(e.to_string()))?;
    }
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener_check = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .map_err(|source| StartError::Serve {
            addr: metrics_addr,
            source,
        })?;
    drop(listener_check);
    tokio::spawn(server::serve(metrics_addr, metrics.clone(), ready.clone()));

    if allow_endpoint_override {
        tracing::warn!(
            "--allow-endpoint-override: the dhis2operator.io/endpoint-override annotation is honoured (development only)"
        );
    }
    let backups = BackupIndex::start(&client, ns);
    backups.wait_until_ready().await;
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        namespace.clone(),
        allow_endpoint_override,
        match clock_file {
            Some(path) => {
                tracing::warn!(file = %path.display(), "--clock-file: time is read from a file (tests only)");
                Arc::new(FileClock(path))
            }
            None => Arc::new(SystemClock),
        },
        engine_image,
        backups,
    ));
    // Only our children wake the controllers: fewer events, less memory. Secrets are not
    // watched at all: the operator reads only the Secrets its resources name, by name, so it
    // needs no right to list or watch them (a deleted Secret is noticed at the next requeue).
    let ours =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let databases = Controller::new(
        api::<Dhis2Database>(&client, ns),
        watcher::Config::default(),
    )
    .owns(api::<StatefulSet>(&client, ns), ours.clone())
    .owns(api::<Service>(&client, ns), ours.clone())
    .shutdown_on_signal()
    .run(
        database_controller::reconcile,
        database_controller::error_policy,
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));
    let instances = Controller::new(
        api::<Dhis2Instance>(&client, ns),
        watcher::Config::default(),
    )
    .owns(api::<Deployment>(&client, ns), ours.clone())
    .owns(api::<Service>(&client, ns), ours.clone())
    .owns(api::<PersistentVolumeClaim>(&client, ns), ours.clone())
    .owns(api::<Ingress>(&client, ns), ours.clone())
    .owns(api::<Dhis2Database>(&client, ns), ours.clone())
    // A backup, drill or schedule of an instance changes its backup summary.
    .watches(
        api::<Dhis2Backup>(&client, ns),
        watcher::Config::default(),
        |b| instance_of(&b, &b.spec.instance_ref),
    )
    .watches(
        api::<Dhis2Drill>(&client, ns),
        watcher::Config::default(),
        |d| instance_of(&d, &d.spec.instance_ref),
    )
    .watches(
        api::<Dhis2BackupSchedule>(&client, ns),
        watcher::Config::default(),
        |s| instance_of(&s, &s.spec.instance_ref),
    )
    .shutdown_on_signal()
    .run(
        instance_controller::reconcile,
        instance_controller::error_policy,
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));
    // Schedules wake at their next fire time, and when what they made changes (a backup or a
    // drill finished: history limits, last success).
    let scheduled = watcher::Config::default().labels(SCHEDULE_LABEL);
    let backup_schedules = Controller::new(
        api::<Dhis2BackupSchedule>(&client, ns),
        watcher::Config::default(),
    )
    .owns(api::<Dhis2Backup>(&client, ns), scheduled.clone())
    .shutdown_on_signal()
    .run(
        backup_schedule_controller::reconcile,
        backup_schedule_controller::error_policy,
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));
    let drill_schedules = Controller::new(
        api::<Dhis2Instance>(&client, ns),
        watcher::Config::default(),
    )
    .owns(api::<Dhis2Drill>(&client, ns), scheduled)
    .shutdown_on_signal()
    .run(
        drill_schedule_controller::reconcile,
        drill_schedule_controller::error_policy,
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));
    // A backup wakes when its Job changes (started, finished, deleted).
    let backups = Controller::new(api::<Dhis2Backup>(&client, ns), watcher::Config::default())
        .owns(api::<Job>(&client, ns), ours.clone())
        .shutdown_on_signal()
        .run(
            backup_controller::reconcile,
            backup_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    // A drill wakes when its throw-away server becomes ready and when its Job ends.
    let drills = Controller::new(api::<Dhis2Drill>(&client, ns), watcher::Config::default())
        .owns(api::<Pod>(&client, ns), ours.clone())
        .owns(api::<Job>(&client, ns), ours.clone())
        .shutdown_on_signal()
        .run(
            drill_controller::reconcile,
            drill_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let restores = Controller::new(api::<Dhis2Restore>(&client, ns), watcher::Config::default())
        .owns(api::<Job>(&client, ns), ours)
        .shutdown_on_signal()
        .run(
            restore_controller::reconcile,
            restore_controller::error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()));
    ready.store(true, Ordering::SeqCst);
    tracing::info!(namespace = ?namespace, "dhis2-operator running");
    tokio::join!(
        databases,
        instances,
        backups,
        backup_schedules,
        drills,
        drill_schedules,
        restores
    );
    tracing::info!("dhis2-operator stopped");
    Ok(())
}

/// The instance a backup object is about (same namespace).
fn instance_of(obj: &impl kube::ResourceExt, instance: &str) -> Option<ObjectRef<Dhis2Instance>> {
    let ns = obj.namespace()?;
    Some(ObjectRef::new(instance).within(&ns))
}
