//! What CloudNativePG's account of a `Cluster` means for DHIS2 (pure): can DHIS2 write to it
//! now (a primary is up and no switch of primary is under way), and is anything wrong that a
//! person should see (instances down, WAL archiving failing, CloudNativePG stuck).

use crate::cnpg::generated::cluster::ClusterStatus;
use crate::crd::dhis2_database::CnpgStatus;

/// CloudNativePG's phase when all is well.
pub const HEALTHY_PHASE: &str = "Cluster in healthy state";
/// Phases while CloudNativePG is still making what was asked for (instances missing then are
/// expected, not a problem).
const BUILDING_PHASES: [&str; 3] = [
    "Setting up primary",
    "Creating a new replica",
    "Waiting for the instances to become active",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnpgHealth {
    /// DHIS2 can write: a primary is ready and it is the one CloudNativePG wants.
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
    /// Something a person should look at; the database may still be ready.
    pub problem: Option<(&'static str, String)>,
}

/// Our `status.cnpg` from CloudNativePG's status.
pub fn cnpg_status_summary(cluster: &str, status: Option<&ClusterStatus>) -> CnpgStatus {
    let s = status.cloned().unwrap_or_default();
    CnpgStatus {
        cluster: cluster.to_string(),
        phase: s.phase,
        instances: s.instances,
        ready_instances: s.ready_instances,
        current_primary: s.current_primary,
        first_recoverability_point: s.first_recoverability_point,
        last_successful_backup: s.last_successful_backup,
        ..Default::default()
    }
}

pub fn cnpg_health(
    cluster: &str,
    desired_instances: i32,
    archived: bool,
    status: Option<&ClusterStatus>,
) -> CnpgHealth {
    let Some(s) = status.filter(|s| s.phase.is_some() || s.current_primary.is_some()) else {
        return CnpgHealth {
            ready: false,
            reason: "WaitingForCnpg",
            message: format!(
                "waiting for CloudNativePG to create the PostgreSQL cluster {cluster}"
            ),
            problem: None,
        };
    };
    let phase = s.phase.clone().unwrap_or_default();
    let ready_instances = s.ready_instances.unwrap_or(0);
    let counts = format!("{ready_instances}/{desired_instances} instances ready");
    let primary = s.current_primary.clone().filter(|p| !p.is_empty());
    let target = s.target_primary.clone().filter(|p| !p.is_empty());
    let stuck = phase.contains("cannot") || phase.starts_with("Unable");
    let stuck_problem = stuck.then(|| {
        let why = s
            .phase_reason
            .clone()
            .filter(|r| !r.is_empty())
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        (
            "CnpgClusterStuck",
            format!(
                "CloudNativePG reports cluster {cluster}: {phase}{why} (kubectl cnpg status {cluster}; CloudNativePG's operator log)"
            ),
        )
    });
    let Some(primary) = primary.filter(|_| ready_instances >= 1) else {
        return CnpgHealth {
            ready: false,
            reason: "CnpgStarting",
            message: format!("CloudNativePG cluster {cluster}: {phase} ({counts})"),
            problem: stuck_problem,
        };
    };
    if let Some(target) = target.filter(|t| *t != primary) {
        return CnpgHealth {
            ready: false,
            reason: "CnpgSwitchingPrimary",
            message: format!(
                "CloudNativePG cluster {cluster} is moving the primary from {primary} to {target}: {phase} ({counts})"
            ),
            problem: stuck_problem,
        };
    }
    let archiving_failure = archived
        .then(|| {
            s.conditions.iter().flatten().find(|c| {
                c.type_ == "ContinuousArchiving" && c.status == "False"
            })
        })
        .flatten()
        .map(|c| {
            (
                "WalArchivingFailing",
                format!(
                    "CloudNativePG cannot archive WAL of cluster {cluster}: point-in-time recovery stops at the last archived WAL until this is fixed: {}",
                    if c.message.is_empty() { &c.reason } else { &c.message }
                ),
            )
        });
    let missing_instances = (ready_instances < i64::from(desired_instances)
        && !BUILDING_PHASES.contains(&phase.as_str()))
    .then(|| {
        (
            "CnpgInstancesNotReady",
            format!(
                "only {counts} in CloudNativePG cluster {cluster} ({phase}): DHIS2 still writes to {primary}, but fewer replicas are left to take over if it fails"
            ),
        )
    });
    CnpgHealth {
        ready: true,
        reason: "Ready",
        message: format!("CloudNativePG cluster {cluster}: {counts}, primary {primary} ({phase})"),
        problem: stuck_problem.or(archiving_failure).or(missing_instances),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> ClusterStatus {
        serde_json::from_value(json).expect("fixture")
    }

    #[test]
    fn a_healthy_cluster_is_ready_and_says_who_is_primary() {
        let s = status(serde_json::json!({
            "phase": HEALTHY_PHASE, "instances": 3, "readyInstances": 3,
            "currentPrimary": "hmis-db-1", "targetPrimary": "hmis-db-1"
        }));
        let h = cnpg_health("hmis-db", 3, true, Some(&s));
        assert!(h.ready);
        assert_eq!(h.problem, None);
        assert!(
            h.message.contains("3/3 instances ready, primary hmis-db-1"),
            "{}",
            h.message
        );
        let summary = cnpg_status_summary("hmis-db", Some(&s));
        assert_eq!(summary.ready_instances, Some(3));
        assert_eq!(summary.current_primary.as_deref(), Some("hmis-db-1"));
        assert_eq!(summary.phase.as_deref(), Some(HEALTHY_PHASE));
    }

    #[test]
    fn no_status_or_no_primary_yet_is_not_ready() {
        let h = cnpg_health("hmis-db", 3, false, None);
        assert!(!h.ready);
        assert_eq!(h.reason, "WaitingForCnpg");
        let s = status(
            serde_json::json!({"phase": "Setting up primary", "instances": 3, "readyInstances": 0}),
        );
        let h = cnpg_health("hmis-db", 3, false, Some(&s));
        assert!(!h.ready);
        assert_eq!(h.reason, "CnpgStarting");
        assert_eq!(h.problem, None);
    }

    #[test]
    fn a_failover_in_progress_is_not_ready() {
        let s = status(serde_json::json!({
            "phase": "Failing over", "instances": 3, "readyInstances": 2,
            "currentPrimary": "hmis-db-1", "targetPrimary": "hmis-db-2"
        }));
        let h = cnpg_health("hmis-db", 3, false, Some(&s));
        assert!(!h.ready);
        assert_eq!(h.reason, "CnpgSwitchingPrimary");
        assert!(
            h.message.contains("from hmis-db-1 to hmis-db-2"),
            "{}",
            h.message
        );
    }

    #[test]
    fn a_lost_replica_leaves_the_database_ready_but_degraded() {
        let s = status(serde_json::json!({
            "phase": "Waiting for the instances to become active", "instances": 3, "readyInstances": 2,
            "currentPrimary": "hmis-db-2", "targetPrimary": "hmis-db-2"
        }));
        // While CloudNativePG is bringing instances up, missing ones are expected.
        assert_eq!(cnpg_health("hmis-db", 3, false, Some(&s)).problem, None);
        let s = status(serde_json::json!({
            "phase": HEALTHY_PHASE, "instances": 3, "readyInstances": 2,
            "currentPrimary": "hmis-db-2", "targetPrimary": "hmis-db-2"
        }));
        let h = cnpg_health("hmis-db", 3, false, Some(&s));
        assert!(h.ready);
        let (reason, message) = h.problem.expect("degraded");
        assert_eq!(reason, "CnpgInstancesNotReady");
        assert!(message.contains("only 2/3"), "{message}");
    }

    #[test]
    fn failing_wal_archiving_and_a_stuck_cluster_are_problems() {
        let s = status(serde_json::json!({
            "phase": HEALTHY_PHASE, "instances": 1, "readyInstances": 1,
            "currentPrimary": "hmis-db-1",
            "conditions": [{"type": "ContinuousArchiving", "status": "False",
                "reason": "ContinuousArchivingFailing", "message": "AccessDenied",
                "lastTransitionTime": "2026-12-07T01:00:00Z"}]
        }));
        let h = cnpg_health("hmis-db", 1, true, Some(&s));
        assert!(h.ready);
        let (reason, message) = h.problem.expect("archiving");
        assert_eq!(reason, "WalArchivingFailing");
        assert!(message.contains("AccessDenied"), "{message}");
        // Not archived by us: CloudNativePG's condition is not ours to report.
        assert_eq!(cnpg_health("hmis-db", 1, false, Some(&s)).problem, None);

        let s = status(serde_json::json!({
            "phase": "Cluster cannot proceed due to unknown plugin",
            "phaseReason": "barman-cloud.cloudnative-pg.io not found", "instances": 1
        }));
        let h = cnpg_health("hmis-db", 1, true, Some(&s));
        assert!(!h.ready);
        let (reason, message) = h.problem.expect("stuck");
        assert_eq!(reason, "CnpgClusterStuck");
        assert!(
            message.contains("barman-cloud.cloudnative-pg.io not found"),
            "{message}"
        );
    }
}
