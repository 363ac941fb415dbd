//! dhis2-operator: run DHIS2 safely. The backup engine (`backup`) works on any server with access
//! to the DHIS2 database; the CLI (`cli`) drives it; `demo` seeds DHIS2-shaped databases.

pub mod backup;
pub mod cli;
pub mod crd;
pub mod demo;
pub mod operator;
pub mod output;
pub mod postgres;
pub mod progress;
