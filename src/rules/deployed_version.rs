//! What DHIS2 runs outside an upgrade (version and image), when two versions are the same, and
//! when a new version's container counts as crash-looping while it migrates.

use crate::crd::dhis2_instance::Dhis2Instance;
use crate::upgrade::version::Dhis2Version;

/// Restarts of the new version's container while it migrates that count as a crash loop.
pub const CRASH_LOOP_RESTARTS: i32 = 5;

/// The version and image DHIS2 runs outside an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub version: String,
    pub image: String,
}

/// Equal as DHIS2 versions (`2.42.4` = `42.4.0`); as text when either is not one.
pub fn same_version(a: &str, b: &str) -> bool {
    match (Dhis2Version::parse(a), Dhis2Version::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The version and image DHIS2 runs outside an upgrade: as recorded, else the spec's (a new
/// instance, or one made before the operator recorded it: DHIS2's own answer is no guide, it
/// may name a build such as 2.41.3.1 for the image 2.41.3).
pub fn deployed_of(instance: &Dhis2Instance) -> Deployed {
    let status = instance.status.clone().unwrap_or_default();
    match status.deployed_version {
        Some(version) => Deployed {
            image: status
                .deployed_image
                .unwrap_or_else(|| format!("dhis2/core:{version}")),
            version,
        },
        None => Deployed {
            version: instance.spec.version.clone(),
            image: dhis2_image(instance),
        },
    }
}

/// `dhis2/core:<version>`; DHIS2 publishes both `2.41.3` and `41.3.0` style tags.
pub fn dhis2_image(instance: &Dhis2Instance) -> String {
    instance
        .spec
        .image
        .clone()
        .unwrap_or_else(|| format!("dhis2/core:{}", instance.spec.version))
}
