//! Upgrading DHIS2 safely. So far: the upgrade check — may this database go from one DHIS2
//! version to another? `check::check_upgrade` decides (pure); `preflight` reads the facts it
//! needs from the database; `requirements` is the one table of what each release line needs.

pub mod check;
pub mod check_result;
pub mod error;
pub mod facts;
pub mod known_blockers;
pub mod preflight;
pub mod requirements;
pub mod version;

pub use check::{CurrentVersion, UpgradeCheck, Verdict, check_upgrade};
pub use check_result::{CheckOutcome, CheckResult};
pub use error::UpgradeError;
pub use facts::DatabaseFacts;
pub use preflight::read_database_facts;
pub use version::{BadVersion, Dhis2Version, Major};
