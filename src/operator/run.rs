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
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, watcher};

use kube::ResourceExt;

use crate::crd::{
    Dhis2Backup, Dhis2BackupSchedule, Dhis2Database, Dhis2Drill, Dhis2Instance, Dhis2Promotion,
    Dhis2Restore,
};

use crate::operator::context::{Context, scoped_api as api};
use crate::operator::database::connection::instance_database_name;
use crate::operator::instance::backup_index::BackupIndex;
use crate::operator::kit::client as api_client;
use crate::operator::kit::clock::{FileClock, SystemClock};
use crate::operator::kit::labels::MANAGED_BY;
use crate::operator::kit::leadership::{self, LeaderElection, LeadershipError};
use crate::operator::kit::shared_watch::SharedWatch;
use crate::operator::telemetry::fleet_collector::FleetCollector;
use crate::operator::telemetry::metrics::Metrics;
use crate::operator::telemetry::server;
use crate::operator::{backup, database, drill, instance, promotion, restore, schedule};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach the Kubernetes API (kubeconfig or in-cluster config): {0}")]
    Client(String),
    #[error(
        "the dhis2operator.io CRDs are not installed ({0}); run: dhis2-operator crd | kubectl apply -f -"
    )]
    CrdsMissing(String),
    #[error(transparent)]
    Leadership(#[from] LeadershipError),
    #[error(
        "this replica lost the leader Lease {0}; it stops so that only one replica reconciles (it restarts as a candidate)"
    )]
    LeadershipLost(String),
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
    /// A Dhis2Backup or Dhis2Restore may name any repository (`--allow-any-repository`), not
    /// only one of its namespace's instances'.
    pub allow_any_repository: bool,
    /// Read "now" from this file (tests only); the system clock otherwise.
    pub clock_file: Option<std::path::PathBuf>,
    /// The image of the engine's Jobs.
    pub engine_image: String,
    /// Reconciles each controller runs at once (0: no limit).
    pub max_concurrent_reconciles: u16,
    /// Run the controllers only while holding this Lease (two or more replicas); always when
    /// `None` (one replica).
    pub leader_election: Option<LeaderElection>,
}

pub async fn run(options: RunOptions) -> Result<(), StartError> {
    let RunOptions {
        namespace,
        metrics_addr,
        allow_endpoint_override,
        allow_any_repository,
        clock_file,
        engine_image,
        leader_election,
        max_concurrent_reconciles,
    } = options;
    // Each reconcile in flight holds its future, its queued API requests and its span (~57 KiB
    // measured, docs/benchmarks.md): a bound keeps the operator's memory flat when the API server
    // is slow and many objects are due at once. Others wait their turn, a DHIS2 health check
    // (at most 15 s) being the longest a turn takes.
    let controller_config =
        kube::runtime::controller::Config::default().concurrency(max_concurrent_reconciles);
    let client = api_client::connect()
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
    let mut held_lease = match leader_election {
        None => None,
        Some(election) => {
            // A waiting replica is healthy and ready: a rolling update must be able to replace
            // the replicas one by one, and its /metrics says it is not leading.
            ready.store(true, Ordering::SeqCst);
            metrics.set_leader(false);
            tracing::info!(lease = %election.lease_name, namespace = %election.namespace, identity = %election.identity, "waiting to become the leader");
            tokio::select! {
                leading = leadership::acquire(client.clone(), election) => Some(leading?),
                () = shutdown_requested() => {
                    tracing::info!("dhis2-operator stopped before it became the leader");
                    return Ok(());
                }
            }
        }
    };
    metrics.set_leader(true);
    if let Some(leading) = &held_lease {
        tracing::info!(lease = %leading.election().lease_name, identity = %leading.election().identity, "became the leader; starting the controllers");
    }

    if allow_endpoint_override {
        tracing::warn!(
            "--allow-endpoint-override: the dhis2operator.io/endpoint-override annotation is honoured (development only)"
        );
    }
    // One watch per kind, shared (src/operator/kit/shared_watch.rs). Only our children wake the controllers, and
    // only their metadata is watched: fewer watches, fewer events, less memory. Secrets are not
    // watched at all: the operator reads only the Secrets its resources name, by name, so it
    // needs no right to list or watch them (a deleted Secret is noticed at the next requeue).
    let ours =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let all = watcher::Config::default;
    let instance_watch = SharedWatch::<Dhis2Instance>::new();
    let database_watch = SharedWatch::<Dhis2Database>::new();
    let backup_watch = SharedWatch::<Dhis2Backup>::new();
    let drill_watch = SharedWatch::<Dhis2Drill>::new();
    let schedule_watch = SharedWatch::<Dhis2BackupSchedule>::new();
    let restore_watch = SharedWatch::<Dhis2Restore>::new();
    let job_watch = SharedWatch::<PartialObjectMeta<Job>>::new();
    let service_watch = SharedWatch::<PartialObjectMeta<Service>>::new();
    metrics.register_fleet(FleetCollector::new(
        instance_watch.store(),
        database_watch.store(),
        backup_watch.store(),
        chrono::Utc::now(),
    ));
    let backups = BackupIndex {
        backups: backup_watch.store(),
        drills: drill_watch.store(),
        schedules: schedule_watch.store(),
    };
    let mut ctx = Context::new(
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
        backups.clone(),
    );
    ctx.allow_any_repository = allow_any_repository;
    if allow_any_repository {
        tracing::warn!(
            "--allow-any-repository: a Dhis2Backup or Dhis2Restore may name any repository, not only its namespace's instances'"
        );
    }
    let ctx = Arc::new(ctx);
    let databases =
        Controller::for_shared_stream(database_watch.subscribe(), database_watch.store())
            .owns_stream(
                watcher(
                    api::<PartialObjectMeta<StatefulSet>>(&client, ns),
                    ours.clone(),
                )
                .touched_objects(),
            )
            .owns_shared_stream(service_watch.subscribe())
            // A cnpg database takes its instance count and archive from the instance using it.
            .watches_shared_stream(instance_watch.subscribe(), |i| {
                let ns = i.namespace()?;
                Some(ObjectRef::new(&instance_database_name(&i)).within(&ns))
            })
            .with_config(controller_config.clone())
            .shutdown_on_signal()
            .run(
                database::reconcile::reconcile,
                database::reconcile::error_policy,
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()));
    let instances =
        Controller::for_shared_stream(instance_watch.subscribe(), instance_watch.store())
            .owns_stream(
                watcher(
                    api::<PartialObjectMeta<Deployment>>(&client, ns),
                    ours.clone(),
                )
                .touched_objects(),
            )
            .owns_shared_stream(service_watch.subscribe())
            .owns_stream(
                watcher(
                    api::<PartialObjectMeta<PersistentVolumeClaim>>(&client, ns),
                    ours.clone(),
                )
                .touched_objects(),
            )
            .owns_stream(
                watcher(api::<PartialObjectMeta<Ingress>>(&client, ns), ours.clone())
                    .touched_objects(),
            )
            .owns_shared_stream(database_watch.subscribe())
            // A backup, drill or schedule of an instance changes its backup summary.
            .watches_shared_stream(backup_watch.subscribe(), |b| {
                instance_of(&*b, &b.spec.instance_ref)
            })
            .watches_shared_stream(drill_watch.subscribe(), |d| {
                instance_of(&*d, &d.spec.instance_ref)
            })
            .watches_shared_stream(schedule_watch.subscribe(), |s| {
                instance_of(&*s, &s.spec.instance_ref)
            })
            .with_config(controller_config.clone())
            .shutdown_on_signal()
            .run(
                instance::reconcile::reconcile,
                instance::reconcile::error_policy,
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()));
    // Schedules wake at their next fire time, and when what they made changes (a backup or a
    // drill finished: history limits, last success).
    let backup_schedules =
        Controller::for_shared_stream(schedule_watch.subscribe(), schedule_watch.store())
            .owns_shared_stream(backup_watch.subscribe())
            .with_config(controller_config.clone())
            .shutdown_on_signal()
            .run(
                schedule::reconcile::reconcile,
                schedule::reconcile::error_policy,
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()));
    let drill_schedules =
        Controller::for_shared_stream(instance_watch.subscribe(), instance_watch.store())
            .owns_shared_stream(drill_watch.subscribe())
            .with_config(controller_config.clone())
            .shutdown_on_signal()
            .run(
                schedule::drill_reconcile::reconcile,
                schedule::drill_reconcile::error_policy,
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()));
    // A backup wakes when its Job changes (started, finished, deleted).
    let backup_runs = Controller::for_shared_stream(backup_watch.subscribe(), backup_watch.store())
        .owns_shared_stream(job_watch.subscribe())
        .with_config(controller_config.clone())
        .shutdown_on_signal()
        .run(
            backup::reconcile::reconcile,
            backup::reconcile::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    // A drill wakes when its throw-away server becomes ready and when its Job ends.
    let drills = Controller::for_shared_stream(drill_watch.subscribe(), drill_watch.store())
        .owns_stream(
            watcher(api::<PartialObjectMeta<Pod>>(&client, ns), ours.clone()).touched_objects(),
        )
        .owns_shared_stream(job_watch.subscribe())
        .with_config(controller_config.clone())
        .shutdown_on_signal()
        .run(
            drill::reconcile::reconcile,
            drill::reconcile::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    // A promotion wakes when its staging or production instance changes (and every 30 s while
    // a gate has not passed: time passing is what some gates wait for).
    let promotion_api = api::<Dhis2Promotion>(&client, ns);
    let promotion_controller = Controller::new(promotion_api, all());
    let promotion_store = promotion_controller.store();
    let promotions = promotion_controller
        .watches_shared_stream(instance_watch.subscribe(), move |i| {
            let name = i.name_any();
            let ns = i.namespace();
            promotion_store
                .state()
                .into_iter()
                .filter(|p| p.spec.from == name || p.spec.to == name)
                .filter(|p| p.namespace() == ns)
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        })
        .with_config(controller_config.clone())
        .shutdown_on_signal()
        .run(
            promotion::reconcile::reconcile,
            promotion::reconcile::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let restores = Controller::for_shared_stream(restore_watch.subscribe(), restore_watch.store())
        .owns_shared_stream(job_watch.subscribe())
        .with_config(controller_config.clone())
        .shutdown_on_signal()
        .run(
            restore::reconcile::reconcile,
            restore::reconcile::error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()));
    // Every subscription is taken: start the shared watches.
    instance_watch.start(watcher(api::<Dhis2Instance>(&client, ns), all()));
    database_watch.start(watcher(api::<Dhis2Database>(&client, ns), all()));
    backup_watch.start(watcher(api::<Dhis2Backup>(&client, ns), all()));
    drill_watch.start(watcher(api::<Dhis2Drill>(&client, ns), all()));
    schedule_watch.start(watcher(api::<Dhis2BackupSchedule>(&client, ns), all()));
    restore_watch.start(watcher(api::<Dhis2Restore>(&client, ns), all()));
    job_watch.start(watcher(
        api::<PartialObjectMeta<Job>>(&client, ns),
        ours.clone(),
    ));
    service_watch.start(watcher(
        api::<PartialObjectMeta<Service>>(&client, ns),
        ours,
    ));
    // Until the backup index has its first full list, a summary would wrongly say "no backups".
    backups.wait_until_ready().await;
    ready.store(true, Ordering::SeqCst);
    tracing::info!(namespace = ?namespace, "dhis2-operator running");
    let controllers = async {
        tokio::join!(
            databases,
            instances,
            backup_runs,
            backup_schedules,
            drills,
            drill_schedules,
            restores,
            promotions
        )
    };
    match held_lease.as_mut() {
        None => {
            controllers.await;
        }
        Some(leading) => {
            tokio::select! {
                _ = controllers => {}
                () = leading.lost() => {
                    let lease = leading.election().lease_name.clone();
                    tracing::error!(%lease, "lost the leader Lease; stopping");
                    return Err(StartError::LeadershipLost(lease));
                }
            }
        }
    }
    if let Some(leading) = held_lease {
        leading.release().await;
    }
    tracing::info!("dhis2-operator stopped");
    Ok(())
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The instance a backup object is about (same namespace).
fn instance_of(obj: &impl kube::ResourceExt, instance: &str) -> Option<ObjectRef<Dhis2Instance>> {
    let ns = obj.namespace()?;
    Some(ObjectRef::new(instance).within(&ns))
}
