//! What to do when the data volume a managed database asks for differs from what its
//! StatefulSet was created with (pure). A StatefulSet's volume claim templates are immutable, so
//! the StatefulSet keeps its template; a larger size is made by expanding the claim itself, which
//! Kubernetes allows only when the StorageClass has `allowVolumeExpansion`. A smaller size or
//! another class cannot be made in place: that is a migration (backup, new database, restore).

use crate::operator::kit::quantity::memory_bytes;

/// Size and class of a volume (template or claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeShape {
    pub size: String,
    pub class: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoragePlan {
    /// Nothing to change on the volume.
    Unchanged,
    /// Patch the claim's request to this size.
    Expand { to: String },
    /// Cannot be done in place; the reason and what to do.
    Refuse {
        reason: &'static str,
        message: String,
    },
}

const MIGRATE: &str = "back up the database (dhis2ctl backup), create a new Dhis2Database with the storage you want and restore into it";

/// `template`: what the existing StatefulSet was created with; `claim`: the data claim as it is
/// now (`None` before the StatefulSet controller made it); `desired`: what the spec asks for.
pub fn storage_plan(
    template: &VolumeShape,
    claim: Option<&VolumeShape>,
    desired: &VolumeShape,
) -> StoragePlan {
    // A class left out means "the cluster default", which is what the template got.
    if desired.class.is_some() && desired.class != template.class {
        return StoragePlan::Refuse {
            reason: "StorageClassChange",
            message: format!(
                "spec.storage.storageClassName: the data volume was created in class {} and a volume's class cannot change; to move to {}, {MIGRATE}",
                template.class.as_deref().unwrap_or("(cluster default)"),
                desired.class.as_deref().unwrap_or("(cluster default)"),
            ),
        };
    }
    let current = claim.unwrap_or(template);
    let (Some(have), Some(want)) = (memory_bytes(&current.size), memory_bytes(&desired.size))
    else {
        return StoragePlan::Unchanged;
    };
    if want < have {
        StoragePlan::Refuse {
            reason: "VolumeShrink",
            message: format!(
                "spec.storage.size: the data volume has {} and volumes cannot shrink to {}; set {} again, or {MIGRATE}",
                current.size, desired.size, current.size
            ),
        }
    } else if want > have && claim.is_some() {
        StoragePlan::Expand {
            to: desired.size.clone(),
        }
    } else {
        StoragePlan::Unchanged
    }
}

/// The `Degraded` message when the API server refused to expand the claim.
pub fn expansion_refused_message(claim: &str, from: &str, to: &str, api_error: &str) -> String {
    format!(
        "spec.storage.size: the data volume {claim} could not grow from {from} to {to}: {api_error}. \
         A volume grows in place only when its StorageClass has allowVolumeExpansion: true (and the claim is bound); \
         ask for that, or {MIGRATE}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(size: &str, class: Option<&str>) -> VolumeShape {
        VolumeShape {
            size: size.into(),
            class: class.map(Into::into),
        }
    }

    #[test]
    fn a_larger_size_expands_the_claim() {
        let t = shape("100Gi", Some("fast"));
        assert_eq!(
            storage_plan(&t, Some(&t), &shape("200Gi", Some("fast"))),
            StoragePlan::Expand { to: "200Gi".into() }
        );
        // Already expanded: the template still says 100Gi, the claim has 200Gi.
        assert_eq!(
            storage_plan(
                &t,
                Some(&shape("200Gi", Some("fast"))),
                &shape("200Gi", Some("fast"))
            ),
            StoragePlan::Unchanged
        );
        // No claim yet: nothing to expand.
        assert_eq!(
            storage_plan(&t, None, &shape("200Gi", Some("fast"))),
            StoragePlan::Unchanged
        );
        assert_eq!(storage_plan(&t, Some(&t), &t), StoragePlan::Unchanged);
        // 1Ti == 1024Gi: same size in other words.
        let g = shape("1024Gi", None);
        assert_eq!(
            storage_plan(&g, Some(&g), &shape("1Ti", None)),
            StoragePlan::Unchanged
        );
    }

    #[test]
    fn shrinking_and_changing_class_are_refused_with_what_to_do() {
        let t = shape("100Gi", Some("fast"));
        let StoragePlan::Refuse { reason, message } =
            storage_plan(&t, Some(&t), &shape("50Gi", Some("fast")))
        else {
            panic!("shrink accepted")
        };
        assert_eq!(reason, "VolumeShrink");
        assert!(message.contains("spec.storage.size") && message.contains("restore"));
        let StoragePlan::Refuse { reason, message } =
            storage_plan(&t, Some(&t), &shape("100Gi", Some("slow")))
        else {
            panic!("class change accepted")
        };
        assert_eq!(reason, "StorageClassChange");
        assert!(message.contains("fast") && message.contains("slow") && message.contains("backup"));
        // Leaving the class out keeps whatever the volume has.
        assert_eq!(
            storage_plan(&t, Some(&t), &shape("100Gi", None)),
            StoragePlan::Unchanged
        );
    }
}
