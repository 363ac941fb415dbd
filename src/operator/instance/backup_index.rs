//! In-memory copies of the backup objects (`Dhis2Backup`, `Dhis2Drill`, `Dhis2BackupSchedule`),
//! kept current by the operator's shared watches (`src/operator/kit/shared_watch.rs`), so the instance controller summarises an instance's backups without
//! listing them from the API server at every reconcile.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::crd::{Dhis2Backup, Dhis2BackupSchedule, Dhis2Drill};

#[derive(Clone)]
pub struct BackupIndex {
    pub backups: Store<Dhis2Backup>,
    pub drills: Store<Dhis2Drill>,
    pub schedules: Store<Dhis2BackupSchedule>,
}

impl BackupIndex {
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
