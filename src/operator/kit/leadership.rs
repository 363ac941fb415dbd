//! Leader election for two or more operator replicas: only the holder of a `coordination.k8s.io`
//! Lease runs the controllers; the others wait, serving `/healthz`, `/readyz` and `/metrics`.
//! The holder renews the Lease every 10 s; a replica that dies stops renewing and another takes
//! over when the 15 s term runs out. A replica that shuts down releases the Lease. A replica that
//! finds it lost the Lease exits (like controller-runtime's operators): two replicas must never
//! reconcile at once, and a restart puts it back among the candidates with clean state.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Lease's term: how long after the holder's last renewal another replica may take it.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// The holder renews this long before its term ends (and so tolerates this much clock skew).
pub const LEASE_RENEW_BEFORE_SECONDS: u64 = 5;
/// How long a shutting-down leader waits for the API server to take its release.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which Lease, where, and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub lease_name: String,
    pub namespace: String,
    /// Unique among the replicas (the pod's name in a cluster).
    pub identity: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LeadershipError {
    #[error(
        "cannot take part in leader election on Lease {namespace}/{lease}: {source} (the operator's ServiceAccount needs get, create and patch on leases.coordination.k8s.io in {namespace})"
    )]
    Lease {
        namespace: String,
        lease: String,
        source: LeaseManagerError,
    },
    #[error("leader election on Lease {namespace}/{lease} stopped: {why}")]
    Stopped {
        namespace: String,
        lease: String,
        why: String,
    },
}

/// This replica holds the Lease (until `lost` resolves or it is `release`d).
pub struct Leadership {
    election: LeaderElection,
    holding: watch::Receiver<bool>,
    manager: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

/// Waits until this replica holds the Lease (creating the Lease if there is none).
pub async fn acquire(
    client: Client,
    election: LeaderElection,
) -> Result<Leadership, LeadershipError> {
    let lease_error = |source| LeadershipError::Lease {
        namespace: election.namespace.clone(),
        lease: election.lease_name.clone(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client, &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(LEASE_DURATION_SECONDS)
        .with_grace(LEASE_RENEW_BEFORE_SECONDS)
        .with_field_manager(format!("dhis2-operator-lease-{}", election.identity))
        .build()
        .await
        .map_err(lease_error)?;
    let (mut holding, manager) = manager.watch().await;
    while !*holding.borrow_and_update() {
        if holding.changed().await.is_err() {
            // The manager's task ended before this replica ever led: say why.
            let why = match manager.await {
                Ok(Err(e)) => return Err(lease_error(e)),
                Ok(Ok(_)) => "the lease manager stopped".to_string(),
                Err(e) => e.to_string(),
            };
            return Err(LeadershipError::Stopped {
                namespace: election.namespace,
                lease: election.lease_name,
                why,
            });
        }
    }
    Ok(Leadership {
        election,
        holding,
        manager,
    })
}

impl Leadership {
    pub fn election(&self) -> &LeaderElection {
        &self.election
    }

    /// Resolves when this replica no longer holds the Lease (another took it after a renewal
    /// failed, or the lease manager stopped).
    pub async fn lost(&mut self) {
        loop {
            if self.holding.changed().await.is_err() || !*self.holding.borrow_and_update() {
                return;
            }
        }
    }

    /// Gives the Lease up so another replica can take it without waiting for the term to end.
    pub async fn release(self) {
        let Leadership {
            election,
            holding,
            manager,
        } = self;
        // Closing the channel makes the manager release the Lease and stop.
        drop(holding);
        match tokio::time::timeout(RELEASE_TIMEOUT, manager).await {
            Ok(Ok(Ok(_))) => {
                tracing::info!(lease = %election.lease_name, "released the leader Lease")
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!(lease = %election.lease_name, error = %e, "could not release the leader Lease; another replica takes it when its term ends")
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %election.lease_name, error = %e, "the lease manager failed")
            }
            Err(_) => {
                tracing::warn!(lease = %election.lease_name, "releasing the leader Lease timed out; another replica takes it when its term ends")
            }
        }
    }
}

/// This replica's name among the candidates: the pod's name when set (`POD_NAME` from the
/// downward API), else the host name and process id (two operators on one machine differ).
pub fn default_identity(pod_name: Option<String>) -> String {
    pod_name.filter(|n| !n.is_empty()).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "dhis2-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

/// The namespace to keep the Lease in: the flag, else the pod's own namespace (mounted with its
/// ServiceAccount token).
pub fn lease_namespace(explicit: Option<String>) -> Option<String> {
    explicit.filter(|n| !n.is_empty()).or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_name_is_the_identity() {
        assert_eq!(
            default_identity(Some("dhis2-operator-7d9f-abcde".into())),
            "dhis2-operator-7d9f-abcde"
        );
    }

    #[test]
    fn without_a_pod_name_host_and_process_make_the_identity() {
        let identity = default_identity(Some(String::new()));
        assert!(
            identity.ends_with(&format!("-{}", std::process::id())),
            "{identity}"
        );
        assert_eq!(identity, default_identity(None));
    }

    #[test]
    fn the_flag_names_the_lease_namespace() {
        assert_eq!(
            lease_namespace(Some("dhis2-operator".into())).as_deref(),
            Some("dhis2-operator")
        );
    }
}
