//! The custom resources (API group `dhis2operator.io`, version `v1alpha1`): what an MoH IT
//! officer declares. Schemas come from these types; `dhis2-operator crd` prints them and
//! manifests/crds/ holds the generated copy (CI fails when it drifts).

pub mod api_reference;
pub mod backup_common;
pub mod common;
pub mod dhis2_backup;
pub mod dhis2_backup_schedule;
pub mod dhis2_database;
pub mod dhis2_drill;
pub mod dhis2_instance;
pub mod dhis2_promotion;
pub mod dhis2_restore;
pub mod upgrade;

use kube::CustomResourceExt;

pub use dhis2_backup::{Dhis2Backup, Dhis2BackupSpec};
pub use dhis2_backup_schedule::{Dhis2BackupSchedule, Dhis2BackupScheduleSpec};
pub use dhis2_database::{Dhis2Database, Dhis2DatabaseSpec};
pub use dhis2_drill::{Dhis2Drill, Dhis2DrillSpec};
pub use dhis2_instance::{Dhis2Instance, Dhis2InstanceSpec};
pub use dhis2_promotion::{Dhis2Promotion, Dhis2PromotionSpec};
pub use dhis2_restore::{Dhis2Restore, Dhis2RestoreSpec};

pub const API_GROUP: &str = "dhis2operator.io";

/// Every CRD, in the order they should be applied, as the API server receives them.
pub fn crds() -> Vec<serde_json::Value> {
    [
        Dhis2Database::crd(),
        Dhis2Instance::crd(),
        Dhis2Backup::crd(),
        Dhis2BackupSchedule::crd(),
        Dhis2Restore::crd(),
        Dhis2Drill::crd(),
        Dhis2Promotion::crd(),
    ]
    .iter()
    .map(|crd| {
        let mut value = serde_json::to_value(crd).unwrap_or_default();
        drop_null_from_enums(&mut value);
        value
    })
    .collect()
}

/// `crds()` as one multi-document YAML.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|value| {
            // serde-saphyr: kube-rs' choice now that serde_yaml is unmaintained.
            let mut doc = serde_saphyr::to_string(value).unwrap_or_default();
            if !doc.ends_with('\n') {
                doc.push('\n');
            }
            format!("---\n{doc}")
        })
        .collect()
}

/// schemars lists `null` among the values of an optional enum; `nullable: true` already says
/// that, and kubectl's client-side validation refuses a `null` enum value ("unknown object type
/// \"nil\"").
fn drop_null_from_enums(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(drop_null_from_enums);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_from_enums),
        _ => {}
    }
}
