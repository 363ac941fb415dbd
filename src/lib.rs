//! dhis2-operator: run DHIS2 safely. The backup engine (`backup`) works on any server with access
//! to the DHIS2 database; the CLI (`cli`) drives it; `demo` seeds DHIS2-shaped databases.

pub mod backup;
pub mod backup_metrics;
pub mod cli;
pub mod cnpg;
pub mod crd;
pub mod demo;
pub mod job_report;
pub mod markdown;
pub mod metrics_textfile;
pub mod operator;
pub mod output;
pub mod postgres;
pub mod postgres_tls;
pub mod progress;
pub mod rules;
pub mod upgrade;

/// kube (ring) and the AWS SDK (aws-lc-rs) both enable a rustls crypto backend, so rustls cannot
/// pick one itself: choose aws-lc-rs once, at start-up, in every binary.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
