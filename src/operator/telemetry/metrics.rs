//! Prometheus metrics of the operator (docs/metrics.md): its build, reconciles by kind, failures
//! by error kind, reconcile durations and when each kind last reconciled successfully; and, once
//! the watches run, the per-instance metrics (`src/operator/telemetry/fleet_collector.rs`).

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    last_success: Family<KindLabels, Gauge<f64, AtomicU64>>,
    leader: Gauge,
    /// The per-instance metrics, registered once the watch stores exist.
    fleet: OnceLock<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dhis2_operator");
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("build_info", "The operator's version (value 1)", build_info);
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controllers (holds the leader Lease), 0 while it waits",
            leader.clone(),
        );
        let last_success = Family::<KindLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_reconcile_timestamp_seconds",
            "When a reconcile of this kind last succeeded",
            last_success.clone(),
        );
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
            last_success,
            leader,
            fleet: OnceLock::new(),
        }
    }
}

impl Metrics {
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

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

    pub fn reconcile_succeeded(&self, kind: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success
            .get_or_create(&KindLabels { kind: kind.into() })
            .set(now);
    }

    /// Adds the per-instance metrics (once; a second call is ignored).
    pub fn register_fleet(&self, collector: impl Collector) {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector));
        let _ = self.fleet.set(registry);
    }

    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let _ = encode_registry(&mut out, &self.registry);
        if let Some(fleet) = self.fleet.get() {
            let _ = encode_registry(&mut out, fleet);
        }
        let _ = encode_eof(&mut out);
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
