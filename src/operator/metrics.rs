//! Prometheus metrics of the operator: reconciles by kind and outcome, failures by error kind,
//! and reconcile durations.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: String,
    pub error: String,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dhis2_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciliations take",
            durations.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            durations,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and times it until the guard drops.
    pub fn reconcile_started(&self, kind: &str) -> ReconcileTimer<'_> {
        let labels = KindLabels { kind: kind.into() };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            start: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, kind: &str, error: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                kind: kind.into(),
                error: error.into(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: KindLabels,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .durations
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_failures_and_durations_are_exported() {
        let m = Metrics::default();
        {
            let _t = m.reconcile_started("Dhis2Instance");
        }
        m.reconcile_failed("Dhis2Instance", "conflict");
        let text = m.encode();
        assert!(
            text.contains("dhis2_operator_reconciles_total{kind=\"Dhis2Instance\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "dhis2_operator_reconcile_failures_total{kind=\"Dhis2Instance\",error=\"conflict\"} 1"
        ));
        assert!(
            text.contains(
                "dhis2_operator_reconcile_duration_seconds_count{kind=\"Dhis2Instance\"} 1"
            )
        );
    }
}
