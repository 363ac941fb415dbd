//! The backup and drill metrics of docs/metrics.md, defined once: the operator's `/metrics`
//! (`operator::fleet_metrics`) and a plain server's node_exporter textfile (`metrics_textfile`)
//! export the same names, types and help.

/// The label that names the DHIS2 instance on every per-instance series. Not `instance`: that is
/// Prometheus's own label (the scrape target's address), and a series carrying its own
/// `instance` needs `honor_labels` or gets it renamed `exported_instance`.
pub const INSTANCE_LABEL: &str = "dhis2_instance";

/// One metric: its series name (a counter's with `_total`), its type and its help.
pub struct Metric {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
}

pub const LAST_SUCCESS: Metric = Metric {
    name: "dhis2_backup_last_success_timestamp_seconds",
    kind: "gauge",
    help: "Completion time of the newest completed backup.",
};
pub const LAST_SIZE: Metric = Metric {
    name: "dhis2_backup_last_size_bytes",
    kind: "gauge",
    help: "Stored size of the newest completed backup.",
};
pub const LAST_DURATION: Metric = Metric {
    name: "dhis2_backup_last_duration_seconds",
    kind: "gauge",
    help: "Duration of the newest completed backup.",
};
pub const FAILURES: Metric = Metric {
    name: "dhis2_backup_failures_total",
    kind: "counter",
    help: "Backups that failed.",
};
pub const DRILL_LAST: Metric = Metric {
    name: "dhis2_drill_last_timestamp_seconds",
    kind: "gauge",
    help: "When the newest finished restore drill ended.",
};
pub const DRILL_SUCCESS: Metric = Metric {
    name: "dhis2_drill_last_success",
    kind: "gauge",
    help: "1 when the newest restore drill passed, 0 when it failed.",
};
pub const DRILL_RTO: Metric = Metric {
    name: "dhis2_drill_last_rto_seconds",
    kind: "gauge",
    help: "Measured restore time of the newest restore drill.",
};
pub const DRILL_RPO: Metric = Metric {
    name: "dhis2_drill_last_rpo_seconds",
    kind: "gauge",
    help: "Age of the backup the newest restore drill restored.",
};
