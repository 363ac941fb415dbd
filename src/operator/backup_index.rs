//! In-memory copies of the backup objects (`Dhis2Backup`, `Dhis2Drill`, `Dhis2BackupSchedule`),
//! kept current by watches, so the instance controller summarises an instance's backups without
//! listing them from the API server at every reconcile.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::crd::{Dhis2Backup, Dhis2BackupSchedule, Dhis2Drill};

use super::context::scoped_api;

#[derive(Clone)]
pub struct BackupIndex {
    pub backups: Store<Dhis2Backup>,
    pub drills: Store<Dhis2Drill>,
    pub schedules: Store<Dhis2BackupSchedule>,
}

/// Starts a watch that keeps a store of `K` current; returns the store.
fn mirror<K>(client: &Client, namespace: Option<&str>) -> Store<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(
            scoped_api::<K>(client, namespace),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    reader
}

impl BackupIndex {
    pub fn start(client: &Client, namespace: Option<&str>) -> Self {
        Self {
            backups: mirror(client, namespace),
            drills: mirror(client, namespace),
            schedules: mirror(client, namespace),
        }
    }

    /// Until every store has its first full list, a summary would wrongly say "no backups".
    pub async fn wait_until_ready(&self) {
        let _ = tokio::join!(
            self.backups.wait_until_ready(),
            self.drills.wait_until_ready(),
            self.schedules.wait_until_ready()
        );
    }

    pub fn backups_of(&self, namespace: &str, instance: &str) -> Vec<Arc<Dhis2Backup>> {
        self.backups.state_filter(|b| {
            b.namespace().as_deref() == Some(namespace) && b.spec.instance_ref == instance
        })
    }

    pub fn drills_of(&self, namespace: &str, instance: &str) -> Vec<Arc<Dhis2Drill>> {
        self.drills.state_filter(|d| {
            d.namespace().as_deref() == Some(namespace) && d.spec.instance_ref == instance
        })
    }

    pub fn schedules_of(&self, namespace: &str, instance: &str) -> Vec<Arc<Dhis2BackupSchedule>> {
        self.schedules.state_filter(|s| {
            s.namespace().as_deref() == Some(namespace) && s.spec.instance_ref == instance
        })
    }
}
