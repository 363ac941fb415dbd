//! Standard conditions. Merging keeps `lastTransitionTime` when a condition's status did not
//! change, so writing status never makes the controller trigger itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    // The API requires a message; an empty one would be sent as null.
    let mut message = message.into();
    if message.is_empty() {
        message = reason.to_string();
    }
    Condition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

/// The new conditions, each keeping its old transition time when its status is unchanged.
pub fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(prev) = old.iter().find(|o| o.type_ == c.type_)
                && prev.status == c.status
            {
                c.last_transition_time = prev.last_transition_time.clone();
            }
            c
        })
        .collect()
}

pub fn is_true(conditions: &[Condition], kind: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == kind && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_survives_an_unchanged_status() {
        let mut old = condition("Ready", true, "Healthy", "ok", Some(1));
        old.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let merged = merge_conditions(
            std::slice::from_ref(&old),
            vec![condition("Ready", true, "Healthy", "still ok", Some(2))],
        );
        assert_eq!(merged[0].last_transition_time, old.last_transition_time);
        assert_eq!(merged[0].message, "still ok");
        let flipped = merge_conditions(
            &[old.clone()],
            vec![condition("Ready", false, "Down", "x", Some(2))],
        );
        assert_ne!(flipped[0].last_transition_time, old.last_transition_time);
    }
}
