//! What every reconcile needs: the API client, an event recorder, metrics, an HTTP client for
//! DHIS2's health endpoints, and the namespace scope.

use std::sync::Arc;

use kube::Client;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use rand::Rng;
use serde::de::DeserializeOwned;

use crate::operator::error::Error;
use crate::operator::instance::backup_index::BackupIndex;
use crate::operator::kit::backoff::{FailureCounts, backoff_delay};
use crate::operator::kit::clock::Clock;
use crate::operator::telemetry::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// Honour the endpoint-override annotation (`--allow-endpoint-override`, development only).
    pub allow_endpoint_override: bool,
    /// A Dhis2Backup or Dhis2Restore may name any repository, not only one of its namespace's
    /// instances' (`--allow-any-repository`; see `repository_scope`).
    pub allow_any_repository: bool,
    /// Failed reconciles in a row per object, for the retry backoff.
    pub failures: FailureCounts,
    /// "Now" for schedules and deadlines.
    pub clock: Arc<dyn Clock>,
    /// The image the engine's Jobs run (the operator's own image: it carries dhis2ctl).
    pub engine_image: String,
    /// Watched copies of the backup objects, for the instances' backup summaries.
    pub backups: BackupIndex,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        namespace: Option<String>,
        allow_endpoint_override: bool,
        clock: Arc<dyn Clock>,
        engine_image: String,
        backups: BackupIndex,
    ) -> Self {
        let reporter = Reporter {
            controller: "dhis2-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            http: reqwest::Client::builder()
                .user_agent(concat!("dhis2-operator/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            namespace,
            allow_endpoint_override,
            allow_any_repository: false,
            failures: FailureCounts::default(),
            clock,
            engine_image,
            backups,
        }
    }

    /// After a successful reconcile the next failure backs off from the start again.
    pub fn reconcile_succeeded(&self, kind: &str, obj: &impl ResourceExt) {
        self.failures.succeeded(&failure_key(kind, obj));
        self.metrics.reconcile_succeeded(kind);
    }

    /// Every controller's error policy: counts the failure in a row, logs and meters it, and
    /// retries after an exponential, jittered delay.
    pub fn retry_after_failure(&self, kind: &str, obj: &impl ResourceExt, error: &Error) -> Action {
        let attempt = self.failures.failed(&failure_key(kind, obj));
        let delay = backoff_delay(attempt, rand::rng().random());
        tracing::warn!(kind, object = %obj.name_any(), %error, attempt, retry_in = ?delay, "reconcile failed");
        self.metrics.reconcile_failed(kind, error.metric_label());
        Action::requeue(delay)
    }

    /// The API for a namespaced kind in the object's namespace.
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        scoped_api(&self.client, Some(namespace))
    }

    /// Publishes an Event on `obj`; failures to publish are logged, never fatal.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(object = %obj.name_any(), error = %e, "could not publish an event");
        }
    }
}

/// `KIND/namespace/name`: one object's entry in the failure counts.
fn failure_key(kind: &str, obj: &impl ResourceExt) -> String {
    format!(
        "{kind}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// A namespaced kind in one namespace, or across all of them.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
