//! Which conditions and phase to report (pure): from what validation, the database, the
//! Deployment and DHIS2's own answers say.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::operator::instance::health::Dhis2Health;
use crate::operator::kit::conditions::condition;

pub struct InstanceObservation<'a> {
    pub generation: Option<i64>,
    pub problems: &'a [String],
    /// Why the problems block progress: `InvalidSpec` or `Conflict`.
    pub problem_reason: &'a str,
    /// `Ok(())` when the database is ready, else why not.
    pub database: Result<(), String>,
    pub desired_replicas: i32,
    pub ready_replicas: i32,
    pub health: Option<&'a Dhis2Health>,
}

/// What reconciling a database found: whether PostgreSQL is ready, and a problem that needs a
/// person (`InvalidSpec`, `Conflict`, `CredentialsMissing`, a storage change the cluster cannot
/// make). A problem does not hide readiness: a database whose resize was refused still serves.
pub struct DatabaseObservation {
    pub generation: Option<i64>,
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
    pub problem: Option<(&'static str, String)>,
}

pub fn database_phase_and_conditions(o: &DatabaseObservation) -> (String, Vec<Condition>) {
    let g = o.generation;
    let phase = match (&o.problem, o.ready) {
        (Some(_), _) => "Degraded",
        (None, true) => "Ready",
        (None, false) => "Provisioning",
    };
    let degraded = match &o.problem {
        Some((reason, message)) => condition("Degraded", true, reason, message.clone(), g),
        None => condition("Degraded", false, "AsExpected", "", g),
    };
    (
        phase.into(),
        vec![
            condition("Ready", o.ready, o.reason, o.message.clone(), g),
            condition(
                "Progressing",
                !o.ready && o.problem.is_none(),
                o.reason,
                o.message.clone(),
                g,
            ),
            degraded,
        ],
    )
}

pub fn instance_phase_and_conditions(o: &InstanceObservation) -> (String, Vec<Condition>) {
    let g = o.generation;
    if !o.problems.is_empty() {
        let message = o.problems.join("; ");
        let reason = o.problem_reason;
        return (
            "Degraded".into(),
            vec![
                condition("Ready", false, reason, message.clone(), g),
                condition("Progressing", false, reason, "fix the cause to continue", g),
                condition("Degraded", true, reason, message, g),
                condition("DatabaseReady", false, reason, "not checked", g),
            ],
        );
    }
    let db = match &o.database {
        Ok(()) => condition(
            "DatabaseReady",
            true,
            "DatabaseReady",
            "the database is ready",
            g,
        ),
        Err(why) => condition("DatabaseReady", false, "DatabaseNotReady", why.clone(), g),
    };
    if o.desired_replicas == 0 {
        return (
            "Stopped".into(),
            vec![
                condition("Ready", false, "ScaledToZero", "spec.replicas is 0", g),
                condition("Progressing", false, "ScaledToZero", "nothing to run", g),
                condition("Degraded", false, "ScaledToZero", "", g),
                db,
            ],
        );
    }
    let (phase, ready, reason, message) = match (&o.database, o.health) {
        (Err(why), _) => ("Provisioning", false, "WaitingForDatabase", why.clone()),
        (Ok(()), Some(Dhis2Health::Up { version, .. }))
            if o.ready_replicas >= o.desired_replicas =>
        {
            (
                "Ready",
                true,
                "Healthy",
                format!(
                    "{}/{} replicas ready; DHIS2 {} answers",
                    o.ready_replicas,
                    o.desired_replicas,
                    version.as_deref().unwrap_or("")
                ),
            )
        }
        (Ok(()), Some(Dhis2Health::Up { .. })) => (
            "Progressing",
            false,
            "ReplicasNotReady",
            format!("{}/{} replicas ready", o.ready_replicas, o.desired_replicas),
        ),
        (Ok(()), Some(h @ Dhis2Health::Starting { .. })) => {
            ("Migrating", false, "Starting", h.summary())
        }
        (Ok(()), Some(h @ Dhis2Health::Down { .. })) => {
            ("Provisioning", false, "NotAnswering", h.summary())
        }
        (Ok(()), None) => (
            "Provisioning",
            false,
            "WaitingForPods",
            format!("{}/{} replicas ready", o.ready_replicas, o.desired_replicas),
        ),
    };
    (
        phase.into(),
        vec![
            condition("Ready", ready, reason, message.clone(), g),
            condition("Progressing", !ready, reason, message, g),
            condition("Degraded", false, "AsExpected", "", g),
            db,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe<'a>(
        health: Option<&'a Dhis2Health>,
        ready: i32,
        db: Result<(), String>,
        problems: &'a [String],
    ) -> (String, Vec<Condition>) {
        instance_phase_and_conditions(&InstanceObservation {
            generation: Some(3),
            problems,
            problem_reason: "InvalidSpec",
            database: db,
            desired_replicas: 1,
            ready_replicas: ready,
            health,
        })
    }

    fn status_of<'a>(c: &'a [Condition], kind: &str) -> &'a str {
        &c.iter().find(|c| c.type_ == kind).unwrap().status
    }

    #[test]
    fn healthy_instance_is_ready() {
        let up = Dhis2Health::Up {
            version: Some("2.41.3".into()),
            revision: None,
            info_status: None,
        };
        let (phase, c) = observe(Some(&up), 1, Ok(()), &[]);
        assert_eq!(phase, "Ready");
        assert_eq!(status_of(&c, "Ready"), "True");
        assert_eq!(status_of(&c, "DatabaseReady"), "True");
        assert_eq!(c[0].observed_generation, Some(3));
    }

    #[test]
    fn migrating_and_down_are_not_ready_with_the_reason() {
        let starting = Dhis2Health::Starting { http_status: 503 };
        let (phase, c) = observe(Some(&starting), 0, Ok(()), &[]);
        assert_eq!(phase, "Migrating");
        assert!(c[0].message.contains("Flyway"));
        let down = Dhis2Health::Down {
            reason: "cannot connect".into(),
        };
        let (_, c) = observe(Some(&down), 0, Ok(()), &[]);
        assert_eq!(status_of(&c, "Ready"), "False");
        assert_eq!(c[0].reason, "NotAnswering");
    }

    #[test]
    fn invalid_specs_are_degraded() {
        let problems = vec!["spec.replicas: needs redis".to_string()];
        let (phase, c) = observe(None, 0, Ok(()), &problems);
        assert_eq!(phase, "Degraded");
        assert_eq!(status_of(&c, "Degraded"), "True");
        assert!(c[0].message.contains("spec.replicas"));
        assert_eq!(c[0].reason, "InvalidSpec");
    }

    #[test]
    fn a_database_problem_is_degraded_without_hiding_readiness() {
        let (phase, c) = database_phase_and_conditions(&DatabaseObservation {
            generation: Some(2),
            ready: true,
            reason: "Ready",
            message: "PostgreSQL is ready".into(),
            problem: Some(("VolumeNotExpandable", "spec.storage.size: …".into())),
        });
        assert_eq!(phase, "Degraded");
        assert_eq!(status_of(&c, "Ready"), "True");
        assert_eq!(status_of(&c, "Degraded"), "True");
        assert_eq!(status_of(&c, "Progressing"), "False");
        let (phase, c) = database_phase_and_conditions(&DatabaseObservation {
            generation: Some(2),
            ready: false,
            reason: "WaitingForPod",
            message: "waiting".into(),
            problem: None,
        });
        assert_eq!(phase, "Provisioning");
        assert_eq!(status_of(&c, "Progressing"), "True");
        assert_eq!(status_of(&c, "Degraded"), "False");
    }

    #[test]
    fn waiting_for_the_database() {
        let (phase, c) = observe(None, 0, Err("Dhis2Database db not found".into()), &[]);
        assert_eq!(phase, "Provisioning");
        assert_eq!(status_of(&c, "DatabaseReady"), "False");
        assert_eq!(c[0].reason, "WaitingForDatabase");
    }
}
