//! A `Dhis2Restore`'s status (pure): the spec it started with, which it alone acts on; the
//! changes to the spec it refuses after that; its standard conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::crd::dhis2_restore::{Dhis2RestoreSpec, Dhis2RestoreStatus};

use crate::crd::dhis2_restore::RestorePhase;
use crate::operator::kit::conditions::{condition, merge_conditions};

/// What a started restore acts on: the spec recorded when it started (a restore started by an
/// operator that did not record it yet: the spec as it is).
pub fn acting_spec<'a>(
    spec: &'a Dhis2RestoreSpec,
    status: Option<&'a Dhis2RestoreStatus>,
) -> &'a Dhis2RestoreSpec {
    status.and_then(|s| s.started_with.as_ref()).unwrap_or(spec)
}

/// The fields changed since the restore started, each as `spec.field (was → now)`.
pub fn changes_after_start(started: &Dhis2RestoreSpec, now: &Dhis2RestoreSpec) -> Vec<String> {
    const FIELDS: [&str; 12] = [
        "/target/instance",
        "/target/newInstance",
        "/source/instance",
        "/source/backupRef",
        "/source/backupId",
        "/source/repository",
        "/confirmOverwrite",
        "/approvedBy",
        "/pointInTime",
        "/includeFileStore",
        "/regenerateAnalytics",
        "/deadlineSeconds",
    ];
    let (started, now) = (serde_json::to_value(started), serde_json::to_value(now));
    let show = |spec: &Result<serde_json::Value, serde_json::Error>, field: &str| match spec
        .as_ref()
        .map(|s| s.pointer(field))
    {
        Ok(Some(serde_json::Value::String(s))) => s.clone(),
        Ok(None | Some(serde_json::Value::Null)) => "unset".into(),
        Ok(Some(other)) => other.to_string(),
        Err(_) => "?".into(),
    };
    FIELDS
        .iter()
        .filter_map(|field| {
            let (was, is) = (show(&started, field), show(&now, field));
            (was != is).then(|| format!("spec{} ({was} → {is})", field.replace('/', ".")))
        })
        .collect()
}

/// Why a changed spec is not acted on, naming the fields and what to do instead; `None` when
/// the spec is the one the restore started with.
pub fn refused_change(status: &Dhis2RestoreStatus, now: &Dhis2RestoreSpec) -> Option<String> {
    let started = status.started_with.as_ref()?;
    let changes = changes_after_start(started, now);
    if changes.is_empty() {
        return None;
    }
    Some(format!(
        "{} changed after the restore started: ignored, the restore carries on with what it started with (target {}); to restore anything else, create a new Dhis2Restore",
        changes.join(", "),
        started.target.instance
    ))
}

/// Ready (restored and DHIS2 up), Progressing (running), Degraded (failed), and, once started,
/// SpecChangeRefused; each with the generation seen.
pub fn restore_conditions(
    old: &[Condition],
    status: &Dhis2RestoreStatus,
    refused: Option<&str>,
    generation: Option<i64>,
) -> Vec<Condition> {
    let phase = status.phase.unwrap_or_default();
    let message = status.message.clone().unwrap_or_default();
    let failure = status
        .failure_reason
        .clone()
        .unwrap_or_else(|| message.clone());
    let mut conditions = vec![
        match phase {
            RestorePhase::Completed => condition("Ready", true, "Completed", &message, generation),
            RestorePhase::Failed => condition("Ready", false, "Failed", &failure, generation),
            other => condition("Ready", false, other.as_str(), &message, generation),
        },
        if phase.is_finished() {
            condition("Progressing", false, phase.as_str(), &message, generation)
        } else {
            condition("Progressing", true, phase.as_str(), &message, generation)
        },
        if phase == RestorePhase::Failed {
            condition("Degraded", true, "RestoreFailed", &failure, generation)
        } else {
            condition(
                "Degraded",
                false,
                "AsExpected",
                "nothing failed",
                generation,
            )
        },
    ];
    if status.started_with.is_some() {
        conditions.push(match refused {
            Some(why) => condition(
                "SpecChangeRefused",
                true,
                "ChangedAfterStart",
                why,
                generation,
            ),
            None => condition(
                "SpecChangeRefused",
                false,
                "Unchanged",
                "the spec is the one the restore started with",
                generation,
            ),
        });
    }
    merge_conditions(old, conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::dhis2_restore::Dhis2Restore;

    fn spec(yaml: &str) -> Dhis2RestoreSpec {
        Dhis2Restore::new("r", serde_saphyr::from_str(yaml).expect("fixture")).spec
    }

    fn started() -> Dhis2RestoreStatus {
        Dhis2RestoreStatus {
            phase: Some(RestorePhase::Restoring),
            started_with: Some(spec(
                "source: {instance: hmis}\ntarget: {instance: staging}\nconfirmOverwrite: staging\n",
            )),
            ..Default::default()
        }
    }

    #[test]
    fn a_started_restore_acts_on_the_spec_it_started_with() {
        let status = started();
        let now = spec(
            "source: {instance: hmis}\ntarget: {instance: national}\nconfirmOverwrite: national\n",
        );
        assert_eq!(acting_spec(&now, Some(&status)).target.instance, "staging");
        assert_eq!(acting_spec(&now, None).target.instance, "national");
    }

    #[test]
    fn a_changed_target_is_refused_naming_the_fields() {
        let status = started();
        let now = spec(
            "source: {instance: hmis}\ntarget: {instance: national}\nconfirmOverwrite: national\n",
        );
        let why = refused_change(&status, &now).expect("refused");
        assert!(
            why.starts_with(
                "spec.target.instance (staging → national), spec.confirmOverwrite (staging → national) changed"
            ),
            "{why}"
        );
        assert!(why.contains("create a new Dhis2Restore"), "{why}");
        assert!(why.contains("target staging"), "{why}");
        let same = spec(
            "source: {instance: hmis}\ntarget: {instance: staging}\nconfirmOverwrite: staging\n",
        );
        assert_eq!(refused_change(&status, &same), None);
        let unset = spec(
            "source: {instance: hmis, backupId: latest}\ntarget: {instance: staging}\nconfirmOverwrite: staging\n",
        );
        assert!(
            refused_change(&status, &unset)
                .unwrap()
                .contains("spec.source.backupId (unset → latest)")
        );
        // Not started yet: nothing to refuse.
        assert_eq!(refused_change(&Dhis2RestoreStatus::default(), &now), None);
    }

    fn of<'a>(conditions: &'a [Condition], kind: &str) -> &'a Condition {
        conditions
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap_or_else(|| panic!("no {kind} in {conditions:?}"))
    }

    #[test]
    fn conditions_follow_the_phase() {
        let mut status = started();
        status.message = Some("the restore Job r-restore is running".into());
        let running = restore_conditions(&[], &status, None, Some(2));
        assert_eq!(of(&running, "Progressing").status, "True");
        assert_eq!(of(&running, "Progressing").reason, "Restoring");
        assert_eq!(of(&running, "Ready").status, "False");
        assert_eq!(of(&running, "Degraded").status, "False");
        assert_eq!(of(&running, "SpecChangeRefused").status, "False");
        assert_eq!(of(&running, "Ready").observed_generation, Some(2));

        let refused = restore_conditions(&running, &status, Some("spec.target.instance"), Some(3));
        assert_eq!(of(&refused, "SpecChangeRefused").status, "True");
        assert_eq!(
            of(&refused, "Progressing").last_transition_time,
            of(&running, "Progressing").last_transition_time
        );

        status.phase = Some(RestorePhase::Completed);
        let done = restore_conditions(&running, &status, None, Some(3));
        assert_eq!(of(&done, "Ready").status, "True");
        assert_eq!(of(&done, "Progressing").status, "False");

        status.phase = Some(RestorePhase::Failed);
        status.failure_reason = Some("no such backup".into());
        let failed = restore_conditions(&running, &status, None, Some(3));
        assert_eq!(of(&failed, "Degraded").status, "True");
        assert_eq!(of(&failed, "Degraded").message, "no such backup");
        assert_eq!(of(&failed, "Ready").reason, "Failed");

        // Pending, never started: no spec recorded, nothing refused.
        let pending = restore_conditions(&[], &Dhis2RestoreStatus::default(), None, Some(1));
        assert_eq!(of(&pending, "Progressing").reason, "Pending");
        assert!(pending.iter().all(|c| c.type_ != "SpecChangeRefused"));
    }
}
