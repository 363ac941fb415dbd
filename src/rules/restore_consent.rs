//! Whether a restore may write into its target: an existing instance's name typed again, and a
//! production one approved by a named person (shared by `dhis2ctl restore` and the operator).

use crate::crd::dhis2_instance::{Dhis2Instance, Environment};
use crate::crd::dhis2_restore::Dhis2RestoreSpec;

/// Whether the restore may write into its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// The target does not exist: it is created from the source's spec.
    NewInstance,
    /// The target exists and its name was typed again (and, for production, approved).
    Overwrite,
}

/// Why a restore may not overwrite its target: a short reason (for Events) and one line that
/// names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// An existing target needs `confirmOverwrite` equal to its name, and a `production` one also
/// `approvedBy`; a new target needs neither.
pub fn check_consent(
    spec: &Dhis2RestoreSpec,
    target: Option<&Dhis2Instance>,
) -> Result<Consent, Refusal> {
    let Some(target) = target else {
        return Ok(Consent::NewInstance);
    };
    let name = &spec.target.instance;
    match spec.confirm_overwrite.as_deref() {
        None | Some("") => {
            return Err(Refusal {
                reason: "OverwriteNotConfirmed",
                message: format!(
                    "Dhis2Instance {name} exists and would be overwritten: set spec.confirmOverwrite: {name} to restore over it (its current database is kept as <database>__replaced_<time>), or name a new instance in spec.target.instance"
                ),
            });
        }
        Some(typed) if typed != name => {
            return Err(Refusal {
                reason: "OverwriteNotConfirmed",
                message: format!(
                    "spec.confirmOverwrite is '{typed}', not the target's name: set spec.confirmOverwrite: {name}"
                ),
            });
        }
        Some(_) => {}
    }
    let approved = spec
        .approved_by
        .as_deref()
        .is_some_and(|who| !who.trim().is_empty());
    if target.spec.environment == Environment::Production && !approved {
        return Err(Refusal {
            reason: "ApprovalRequired",
            message: format!(
                "Dhis2Instance {name} is a production instance: set spec.approvedBy to the person who approved overwriting it"
            ),
        });
    }
    Ok(Consent::Overwrite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::dhis2_restore::Dhis2Restore;

    fn restore(yaml: &str) -> Dhis2RestoreSpec {
        Dhis2Restore::new("r", serde_saphyr::from_str(yaml).expect("fixture")).spec
    }

    fn instance(name: &str, yaml: &str) -> Dhis2Instance {
        Dhis2Instance::new(name, serde_saphyr::from_str(yaml).expect("fixture"))
    }

    fn staging() -> Dhis2Instance {
        instance("staging", "version: '2.41.3'\nenvironment: staging\n")
    }

    fn production() -> Dhis2Instance {
        instance("hmis", "version: '2.41.3'\nenvironment: production\n")
    }

    #[test]
    fn a_new_target_needs_no_consent() {
        let spec = restore("source: {instance: hmis}\ntarget: {instance: hmis-copy}\n");
        assert_eq!(check_consent(&spec, None), Ok(Consent::NewInstance));
    }

    #[test]
    fn overwriting_needs_the_targets_name_typed_again() {
        let spec = restore("source: {instance: hmis}\ntarget: {instance: staging}\n");
        let refusal = check_consent(&spec, Some(&staging())).unwrap_err();
        assert_eq!(refusal.reason, "OverwriteNotConfirmed");
        let refusal = refusal.message;
        assert!(
            refusal.contains("set spec.confirmOverwrite: staging"),
            "{refusal}"
        );
        assert_eq!(refusal.lines().count(), 1);

        let typo = restore(
            "source: {instance: hmis}\ntarget: {instance: staging}\nconfirmOverwrite: stagign\n",
        );
        let refusal = check_consent(&typo, Some(&staging())).unwrap_err().message;
        assert!(refusal.contains("'stagign'"), "{refusal}");
        assert!(
            refusal.contains("set spec.confirmOverwrite: staging"),
            "{refusal}"
        );

        let confirmed = restore(
            "source: {instance: hmis}\ntarget: {instance: staging}\nconfirmOverwrite: staging\n",
        );
        assert_eq!(
            check_consent(&confirmed, Some(&staging())),
            Ok(Consent::Overwrite)
        );
    }

    #[test]
    fn production_also_needs_an_approver() {
        let confirmed =
            restore("source: {instance: old}\ntarget: {instance: hmis}\nconfirmOverwrite: hmis\n");
        let refusal = check_consent(&confirmed, Some(&production())).unwrap_err();
        assert_eq!(refusal.reason, "ApprovalRequired");
        let refusal = refusal.message;
        assert!(refusal.contains("spec.approvedBy"), "{refusal}");
        assert!(refusal.contains("production"), "{refusal}");

        let blank = restore(
            "source: {instance: old}\ntarget: {instance: hmis}\nconfirmOverwrite: hmis\napprovedBy: '  '\n",
        );
        assert!(check_consent(&blank, Some(&production())).is_err());

        let approved = restore(
            "source: {instance: old}\ntarget: {instance: hmis}\nconfirmOverwrite: hmis\napprovedBy: Dr. Sok Chea\n",
        );
        assert_eq!(
            check_consent(&approved, Some(&production())),
            Ok(Consent::Overwrite)
        );
        // An approver alone is no confirmation.
        let unconfirmed = restore(
            "source: {instance: old}\ntarget: {instance: hmis}\napprovedBy: Dr. Sok Chea\n",
        );
        assert!(
            check_consent(&unconfirmed, Some(&production()))
                .unwrap_err()
                .message
                .contains("spec.confirmOverwrite")
        );
    }
}
