//! When a cnpg cluster's superuser access (`enableSuperuserAccess`) is on (pure): only while a
//! logical restore into a database of that cluster needs it — CloudNativePG's application role
//! may not create or rename databases — and off again once that restore has restored. Derived
//! from the restores each time, so an operator restarted at any point turns it off when no
//! restore needs it; `status.cnpg.superuserFor` says which restore it is on for.

use crate::crd::dhis2_instance::Dhis2Instance;
use crate::crd::dhis2_restore::Dhis2Restore;

use crate::crd::dhis2_restore::RestorePhase;
use crate::rules::names::dedicated_database_name;

/// The restore that needs the superuser of `database` now (the first by name), if any: one
/// stopping its target or running its Job, whose target instance uses `database`. A
/// point-in-time restore needs none (CloudNativePG replays the archive into a new cluster).
pub fn restore_needing_superuser(
    database: &str,
    restores: &[Dhis2Restore],
    instances: &[Dhis2Instance],
) -> Option<String> {
    let uses_database = |target: &str| {
        instances.iter().any(|i| {
            i.metadata.name.as_deref() == Some(target)
                && i.spec
                    .database_ref
                    .clone()
                    .unwrap_or_else(|| dedicated_database_name(target))
                    == database
        })
    };
    let mut needing: Vec<String> = restores
        .iter()
        .filter(|r| r.spec.point_in_time.is_none())
        .filter(|r| {
            let phase = r.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
            matches!(phase, RestorePhase::ScalingDown | RestorePhase::Restoring)
        })
        .filter(|r| uses_database(&r.spec.target.instance))
        .filter_map(|r| r.metadata.name.clone())
        .collect();
    needing.sort();
    needing.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, database: &str) -> Dhis2Instance {
        let mut i = Dhis2Instance::new(
            name,
            serde_saphyr::from_str("version: 2.42.0\nenvironment: production\n").unwrap(),
        );
        i.spec.database_ref = Some(database.into());
        i
    }

    fn restore(name: &str, target: &str, phase: &str, point_in_time: bool) -> Dhis2Restore {
        let mut r: Dhis2Restore = serde_json::from_value(serde_json::json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Restore",
            "metadata": {"name": name},
            "spec": {"source": {"instance": target}, "target": {"instance": target},
                "confirmOverwrite": target, "approvedBy": "Dr. Sok"},
            "status": {"phase": phase}
        }))
        .unwrap();
        if point_in_time {
            r.spec.point_in_time = Some("2026-12-07T10:13:00+07:00".into());
        }
        r
    }

    #[test]
    fn the_superuser_is_on_only_while_a_restore_into_the_cluster_stops_its_target_or_restores() {
        let instances = [
            instance("hmis", "hmis-db"),
            instance("tracker", "tracker-db"),
        ];
        for (phase, on) in [
            ("Pending", false),
            ("ScalingDown", true),
            ("Restoring", true),
            ("Starting", false),
            ("Completed", false),
            ("Failed", false),
        ] {
            let restores = [restore("r1", "hmis", phase, false)];
            assert_eq!(
                restore_needing_superuser("hmis-db", &restores, &instances).is_some(),
                on,
                "{phase}"
            );
            assert_eq!(
                restore_needing_superuser("tracker-db", &restores, &instances),
                None,
                "another cluster: {phase}"
            );
        }
        let restores = [
            restore("r2", "hmis", "Restoring", false),
            restore("r1", "hmis", "Restoring", true),
            restore("r0", "gone", "Restoring", false),
        ];
        assert_eq!(
            restore_needing_superuser("hmis-db", &restores, &instances).as_deref(),
            Some("r2"),
            "point-in-time needs none; a restore whose target does not use it neither"
        );
    }
}
