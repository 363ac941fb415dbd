//! Serves `fleet_metrics` at each scrape, from the operator's watch stores (the I/O side: no API
//! request per scrape; what the stores hold is what the controllers last saw).

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::crd::{Dhis2Backup, Dhis2Database, Dhis2Instance};

use crate::operator::telemetry::fleet_metrics::{FailureTally, SeriesType, fleet_metrics};

#[derive(Debug)]
pub struct FleetCollector {
    instances: Store<Dhis2Instance>,
    databases: Store<Dhis2Database>,
    backups: Store<Dhis2Backup>,
    started: DateTime<Utc>,
    failures: Mutex<FailureTally>,
}

impl FleetCollector {
    pub fn new(
        instances: Store<Dhis2Instance>,
        databases: Store<Dhis2Database>,
        backups: Store<Dhis2Backup>,
        started: DateTime<Utc>,
    ) -> Self {
        Self {
            instances,
            databases,
            backups,
            started,
            failures: Mutex::default(),
        }
    }
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let instances = self.instances.state();
        let databases = self.databases.state();
        let backups = self.backups.state();
        let instances: Vec<&Dhis2Instance> = instances.iter().map(|i| i.as_ref()).collect();
        let databases: Vec<&Dhis2Database> = databases.iter().map(|d| d.as_ref()).collect();
        let backups: Vec<&Dhis2Backup> = backups.iter().map(|b| b.as_ref()).collect();
        let metrics = {
            let mut failures = self
                .failures
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            failures.observe(&backups, self.started);
            fleet_metrics(&instances, &databases, &backups, &failures)
        };

        let mut info = encoder.encode_descriptor(
            "dhis2_instance_info",
            "The DHIS2 version each instance runs (value 1)",
            None,
            MetricType::Gauge,
        )?;
        for (labels, value) in &metrics.info {
            ConstGauge::new(*value).encode(info.encode_family(labels)?)?;
        }
        for family in &metrics.families {
            let metric_type = match family.series_type {
                SeriesType::Gauge => MetricType::Gauge,
                SeriesType::Counter => MetricType::Counter,
            };
            // The encoder names a counter's series `<family>_total` itself.
            let name = match family.series_type {
                SeriesType::Counter => family.name.trim_end_matches("_total"),
                SeriesType::Gauge => family.name,
            };
            let mut descriptor = encoder.encode_descriptor(name, family.help, None, metric_type)?;
            for (labels, value) in &family.series {
                let series = descriptor.encode_family(labels)?;
                match family.series_type {
                    SeriesType::Gauge => ConstGauge::new(*value).encode(series)?,
                    SeriesType::Counter => ConstCounter::new(*value as u64).encode(series)?,
                }
            }
        }
        Ok(())
    }
}
