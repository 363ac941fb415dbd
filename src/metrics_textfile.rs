//! The backup and drill metrics of docs/metrics.md as a node_exporter textfile, for plain servers
//! where no Prometheus scrapes a CLI. `backup run` and `drill` share one file per instance, so
//! each reads the previous file, keeps every series it does not own, updates its own and renders
//! the whole file again. Pure: parse → update → render; the file I/O is in `cli::metrics_textfile`.
//!
//! Hand-written rather than `prometheus_client`: that crate cannot read a previous file, and it
//! writes OpenMetrics, where a counter's TYPE line names `dhis2_backup_failures` — the classic
//! text format node_exporter reads (and `promtool check metrics`) wants
//! `# TYPE dhis2_backup_failures_total counter`.

use chrono::{DateTime, Utc};

use crate::backup_metrics::{
    DRILL_LAST, DRILL_RPO, DRILL_RTO, DRILL_SUCCESS, FAILURES, INSTANCE_LABEL, LAST_DURATION,
    LAST_SIZE, LAST_SUCCESS, Metric,
};

/// Every metric this file writes, in the order it writes them.
const OWN_METRICS: [&Metric; 8] = [
    &LAST_SUCCESS,
    &LAST_SIZE,
    &LAST_DURATION,
    &FAILURES,
    &DRILL_LAST,
    &DRILL_SUCCESS,
    &DRILL_RTO,
    &DRILL_RPO,
];

/// The values of `environment` the alert rules and dashboard know (docs/metrics.md).
pub const ENVIRONMENTS: [&str; 4] = ["staging", "production", "training", "other"];

/// What dhis2ctl called `INSTANCE_LABEL` before it was renamed. A file an older dhis2ctl wrote
/// still holds series labelled so; they are this instance's too, and are rewritten.
const OLD_INSTANCE_LABEL: &str = "instance";

/// Who a series is about: `dhis2_instance` (the engine's instance name), `namespace=""` (there
/// is no cluster) and `environment` (empty unless given).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceLabels {
    pub instance: String,
    pub environment: String,
}

impl InstanceLabels {
    fn pairs(&self) -> Vec<(String, String)> {
        vec![
            ("namespace".into(), String::new()),
            (INSTANCE_LABEL.into(), self.instance.clone()),
            ("environment".into(), self.environment.clone()),
        ]
    }

    /// A series is this instance's whatever its environment was, or the name of its instance
    /// label: changing the environment, or a newer dhis2ctl, moves the series instead of
    /// leaving stale ones behind.
    fn owns(&self, sample: &Sample) -> bool {
        let instance = sample
            .label(INSTANCE_LABEL)
            .or_else(|| sample.label(OLD_INSTANCE_LABEL));
        instance == Some(self.instance.as_str())
            && sample.label("namespace").unwrap_or_default().is_empty()
    }
}

/// How a `backup run` ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BackupOutcome {
    Succeeded {
        completed_at: DateTime<Utc>,
        size_bytes: u64,
        duration_seconds: f64,
    },
    Failed,
}

/// How a drill ended. RTO and RPO are `None` when the drill failed before measuring them.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillOutcome {
    pub ended_at: DateTime<Utc>,
    pub passed: bool,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    /// The value (and a timestamp, if any) as read: series of others are kept as they were.
    value: String,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Family {
    name: String,
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<Sample>,
}

/// A textfile's metric families, in the order first seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Textfile {
    families: Vec<Family>,
}

impl Textfile {
    /// Reads a previous file. Lines that are not valid exposition text (a half-written file, a
    /// hand edit) are dropped — node_exporter would refuse the whole file for one of them — and
    /// every valid series is kept, whoever wrote it.
    pub fn parse(text: &str) -> Self {
        let mut file = Self::default();
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                if let Some((name, help)) = split_name(rest) {
                    file.family_mut(name).help = Some(help.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = split_name(rest) {
                    file.family_mut(name).kind = Some(kind.to_string());
                }
            } else if !line.is_empty()
                && !line.starts_with('#')
                && let Some(sample) = parse_sample(line)
            {
                let family = file.family_name_of(&sample.name);
                file.family_mut(&family).samples.push(sample);
            }
        }
        file
    }

    /// After a backup: a success sets the last-success series; a failure counts one more in
    /// `dhis2_backup_failures_total` and leaves them as they were.
    pub fn record_backup(&mut self, labels: &InstanceLabels, outcome: &BackupOutcome) {
        self.adopt(labels);
        match outcome {
            BackupOutcome::Succeeded {
                completed_at,
                size_bytes,
                duration_seconds,
            } => {
                self.set(&LAST_SUCCESS, labels, Some(seconds(completed_at)));
                self.set(&LAST_SIZE, labels, Some(*size_bytes as f64));
                self.set(&LAST_DURATION, labels, Some(*duration_seconds));
                self.count_failures(labels, 0.0);
            }
            BackupOutcome::Failed => self.count_failures(labels, 1.0),
        }
    }

    /// After a drill: its time and outcome, and RTO/RPO when measured (removed when not, so no
    /// older drill's numbers pass for this one's).
    pub fn record_drill(&mut self, labels: &InstanceLabels, outcome: &DrillOutcome) {
        self.adopt(labels);
        self.set(&DRILL_LAST, labels, Some(seconds(&outcome.ended_at)));
        self.set(
            &DRILL_SUCCESS,
            labels,
            Some(if outcome.passed { 1.0 } else { 0.0 }),
        );
        self.set(&DRILL_RTO, labels, outcome.rto_seconds);
        self.set(&DRILL_RPO, labels, outcome.rpo_seconds.map(|s| s as f64));
        // Exported from the first write: an alert sees a failure only as an increase.
        self.count_failures(labels, 0.0);
    }

    /// The value of an instance's series (its `namespace` empty), if present.
    pub fn value(&self, metric: &str, instance: &str) -> Option<f64> {
        let labels = InstanceLabels {
            instance: instance.to_string(),
            environment: String::new(),
        };
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == metric && labels.owns(s))
            .and_then(|s| parse_value(&s.value))
    }

    /// The file in the Prometheus text exposition format, families grouped, HELP and TYPE first.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for family in self.families.iter().filter(|f| !f.samples.is_empty()) {
            if let Some(help) = &family.help {
                out.push_str(&format!("# HELP {} {help}\n", family.name));
            }
            if let Some(kind) = &family.kind {
                out.push_str(&format!("# TYPE {} {kind}\n", family.name));
            }
            for s in &family.samples {
                out.push_str(&s.name);
                if !s.labels.is_empty() {
                    let labels: Vec<String> = s
                        .labels
                        .iter()
                        .map(|(n, v)| format!("{n}=\"{}\"", escape_label_value(v)))
                        .collect();
                    out.push_str(&format!("{{{}}}", labels.join(",")));
                }
                out.push_str(&format!(" {}\n", s.value));
            }
        }
        out
    }

    /// The family a sample belongs to: its own name, or a histogram's/summary's for
    /// `_bucket`/`_sum`/`_count`.
    fn family_name_of(&self, sample_name: &str) -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample_name.strip_suffix(suffix) {
                let grouped = self.families.iter().any(|f| {
                    f.name == base && matches!(f.kind.as_deref(), Some("histogram" | "summary"))
                });
                if grouped {
                    return base.to_string();
                }
            }
        }
        sample_name.to_string()
    }

    fn family_mut(&mut self, name: &str) -> &mut Family {
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(at) => at,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: None,
                    kind: None,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[at]
    }

    /// Our families carry our HELP and TYPE, and this instance's series the current labels.
    /// Where an older file held one series twice (under two environments), the last is kept.
    fn adopt(&mut self, labels: &InstanceLabels) {
        for metric in OWN_METRICS {
            let family = self.family_mut(metric.name);
            family.help = Some(metric.help.to_string());
            family.kind = Some(metric.kind.to_string());
            let mut kept = None;
            family.samples.retain(|s| {
                if labels.owns(s) {
                    kept = Some(s.value.clone());
                    false
                } else {
                    true
                }
            });
            if let Some(value) = kept {
                family.samples.push(Sample {
                    name: metric.name.to_string(),
                    labels: labels.pairs(),
                    value,
                });
            }
        }
    }

    /// Sets (or with `None` removes) this instance's series of `metric`.
    fn set(&mut self, metric: &Metric, labels: &InstanceLabels, value: Option<f64>) {
        let family = self.family_mut(metric.name);
        family.samples.retain(|s| !labels.owns(s));
        if let Some(v) = value.filter(|v| v.is_finite()) {
            family.samples.push(Sample {
                name: metric.name.to_string(),
                labels: labels.pairs(),
                value: v.to_string(),
            });
        }
    }

    /// Adds `more` to this instance's failure counter, starting from the previous file's value
    /// (0 when there was none, or it was not a number).
    fn count_failures(&mut self, labels: &InstanceLabels, more: f64) {
        let before = self
            .value(FAILURES.name, &labels.instance)
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(0.0);
        self.set(&FAILURES, labels, Some(before + more));
    }
}

fn seconds(at: &DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// `NAME REST` of a HELP or TYPE line.
fn split_name(rest: &str) -> Option<(&str, &str)> {
    let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
    is_metric_name(name).then_some((name, text.trim()))
}

fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn is_label_name(name: &str) -> bool {
    is_metric_name(name) && !name.contains(':')
}

/// A value as the exposition format writes it (Go's float syntax, `+Inf`, `NaN`).
fn parse_value(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `name{label="value",…} value [timestamp]`, or `None` for anything else.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.trim();
    let mut parts = value.split_whitespace();
    parse_value(parts.next()?)?;
    if let Some(timestamp) = parts.next() {
        timestamp.parse::<i64>().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value: value.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

/// The labels after `{`, up to and including `}`; returns them and what follows.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, after) = text.split_once('=')?;
        let name = name.trim();
        if !is_label_name(name) {
            return None;
        }
        let mut chars = after.trim_start().strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        text = after.trim_start()[1 + end + 1..].trim_start();
        if let Some(after) = text.strip_prefix(',') {
            text = after;
        } else if !text.starts_with('}') {
            return None;
        }
    }
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn hmis() -> InstanceLabels {
        InstanceLabels {
            instance: "hmis".into(),
            environment: String::new(),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    fn succeeded(secs: i64) -> BackupOutcome {
        BackupOutcome::Succeeded {
            completed_at: at(secs),
            size_bytes: 1_500_000,
            duration_seconds: 12.5,
        }
    }

    #[test]
    fn a_first_successful_backup_writes_its_series_and_failures_at_zero() {
        let mut file = Textfile::parse("");
        file.record_backup(&hmis(), &succeeded(1_700_000_000));
        assert_eq!(
            file.render(),
            "# HELP dhis2_backup_last_success_timestamp_seconds Completion time of the newest completed backup.\n\
             # TYPE dhis2_backup_last_success_timestamp_seconds gauge\n\
             dhis2_backup_last_success_timestamp_seconds{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} 1700000000\n\
             # HELP dhis2_backup_last_size_bytes Stored size of the newest completed backup.\n\
             # TYPE dhis2_backup_last_size_bytes gauge\n\
             dhis2_backup_last_size_bytes{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} 1500000\n\
             # HELP dhis2_backup_last_duration_seconds Duration of the newest completed backup.\n\
             # TYPE dhis2_backup_last_duration_seconds gauge\n\
             dhis2_backup_last_duration_seconds{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} 12.5\n\
             # HELP dhis2_backup_failures_total Backups that failed.\n\
             # TYPE dhis2_backup_failures_total counter\n\
             dhis2_backup_failures_total{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} 0\n"
        );
    }

    #[test]
    fn a_failed_backup_counts_on_from_the_previous_file_and_keeps_the_last_success() {
        let mut file = Textfile::default();
        file.record_backup(&hmis(), &succeeded(1_700_000_000));
        let mut file = Textfile::parse(&file.render());
        file.record_backup(&hmis(), &BackupOutcome::Failed);
        let mut file = Textfile::parse(&file.render());
        file.record_backup(&hmis(), &BackupOutcome::Failed);
        assert_eq!(file.value(FAILURES.name, "hmis"), Some(2.0));
        assert_eq!(file.value(LAST_SUCCESS.name, "hmis"), Some(1_700_000_000.0));
        assert_eq!(file.value(LAST_SIZE.name, "hmis"), Some(1_500_000.0));

        file.record_backup(&hmis(), &succeeded(1_700_086_400));
        assert_eq!(file.value(LAST_SUCCESS.name, "hmis"), Some(1_700_086_400.0));
        assert_eq!(
            file.value(FAILURES.name, "hmis"),
            Some(2.0),
            "a counter never goes down"
        );
    }

    #[test]
    fn a_first_failed_backup_has_no_last_success() {
        let mut file = Textfile::default();
        file.record_backup(&hmis(), &BackupOutcome::Failed);
        assert_eq!(file.value(FAILURES.name, "hmis"), Some(1.0));
        assert_eq!(file.value(LAST_SUCCESS.name, "hmis"), None);
        assert!(!file.render().contains("last_success"));
    }

    #[test]
    fn a_drill_adds_its_series_and_keeps_the_backups() {
        let mut file = Textfile::default();
        file.record_backup(&hmis(), &succeeded(1_700_000_000));
        let mut file = Textfile::parse(&file.render());
        file.record_drill(
            &hmis(),
            &DrillOutcome {
                ended_at: at(1_700_003_600),
                passed: true,
                rto_seconds: Some(42.25),
                rpo_seconds: Some(3600),
            },
        );
        assert_eq!(file.value(DRILL_LAST.name, "hmis"), Some(1_700_003_600.0));
        assert_eq!(file.value(DRILL_SUCCESS.name, "hmis"), Some(1.0));
        assert_eq!(file.value(DRILL_RTO.name, "hmis"), Some(42.25));
        assert_eq!(file.value(DRILL_RPO.name, "hmis"), Some(3600.0));
        assert_eq!(file.value(LAST_SUCCESS.name, "hmis"), Some(1_700_000_000.0));
        assert_eq!(file.value(FAILURES.name, "hmis"), Some(0.0));

        // A drill that failed before measuring leaves no older drill's RTO/RPO behind.
        file.record_drill(
            &hmis(),
            &DrillOutcome {
                ended_at: at(1_700_090_000),
                passed: false,
                rto_seconds: None,
                rpo_seconds: None,
            },
        );
        assert_eq!(file.value(DRILL_SUCCESS.name, "hmis"), Some(0.0));
        assert_eq!(file.value(DRILL_RTO.name, "hmis"), None);
        assert_eq!(file.value(DRILL_RPO.name, "hmis"), None);
        assert!(!file.render().contains("dhis2_drill_last_rto_seconds"));
    }

    #[test]
    fn a_drill_alone_exports_failures_at_zero() {
        let mut file = Textfile::default();
        file.record_drill(
            &hmis(),
            &DrillOutcome {
                ended_at: at(1),
                passed: false,
                rto_seconds: None,
                rpo_seconds: None,
            },
        );
        assert_eq!(file.value(FAILURES.name, "hmis"), Some(0.0));
    }

    #[test]
    fn other_series_and_instances_are_kept_and_stay_grouped() {
        let previous = "# A comment someone wrote\n\
            # HELP dhis2_backup_failures_total Backups that failed.\n\
            # TYPE dhis2_backup_failures_total counter\n\
            dhis2_backup_failures_total{namespace=\"\",dhis2_instance=\"training\",environment=\"training\"} 4\n\
            # HELP node_custom_thing Something else.\n\
            # TYPE node_custom_thing gauge\n\
            node_custom_thing{path=\"a \\\"quoted\\\" \\\\ name\"} 7 1700000000000\n\
            # TYPE job_duration_seconds histogram\n\
            job_duration_seconds_bucket{le=\"+Inf\"} 3\n\
            job_duration_seconds_sum 1.5\n\
            job_duration_seconds_count 3\n";
        let mut file = Textfile::parse(previous);
        file.record_backup(&hmis(), &BackupOutcome::Failed);
        let text = file.render();
        assert!(text.contains(
            "dhis2_backup_failures_total{namespace=\"\",dhis2_instance=\"training\",environment=\"training\"} 4\n\
             dhis2_backup_failures_total{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} 1\n"
        ), "{text}");
        assert!(
            text.contains(
                "node_custom_thing{path=\"a \\\"quoted\\\" \\\\ name\"} 7 1700000000000\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE job_duration_seconds histogram\njob_duration_seconds_bucket{le=\"+Inf\"} 3\njob_duration_seconds_sum 1.5\njob_duration_seconds_count 3\n"), "{text}");
        assert_eq!(
            text.matches("# TYPE dhis2_backup_failures_total").count(),
            1,
            "{text}"
        );
        assert!(!text.contains("A comment"));
        assert_eq!(
            Textfile::parse(&text).render(),
            text,
            "what is written reads back the same"
        );
    }

    #[test]
    fn broken_lines_are_dropped_and_the_rest_kept() {
        let previous = "dhis2_backup_failures_total{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} 3\n\
            dhis2_backup_last_success_timestamp_seconds{dhis2_instance=\"hmis\",namespace=\"\",environment=\"\"} 1700000000\n\
            dhis2_backup_last_size_bytes{dhis2_instance=\"hmis\"\n\
            dhis2_backup_last_duration_seconds{dhis2_instance=\"hmis\"} twelve\n\
            3bad_name 1\n\
            ok_metric{a=\"1\",} 5\n\
            trailing_garbage 1 2 3\n\
            \n";
        let mut file = Textfile::parse(previous);
        file.record_backup(&hmis(), &BackupOutcome::Failed);
        assert_eq!(file.value(FAILURES.name, "hmis"), Some(4.0));
        assert_eq!(file.value(LAST_SUCCESS.name, "hmis"), Some(1_700_000_000.0));
        let text = file.render();
        assert!(!text.contains("last_size"), "{text}");
        assert!(!text.contains("last_duration"), "{text}");
        assert!(!text.contains("bad_name"), "{text}");
        assert!(!text.contains("trailing_garbage"), "{text}");
        assert!(text.contains("ok_metric{a=\"1\"} 5\n"), "{text}");
    }

    #[test]
    fn a_new_environment_moves_the_instances_series_instead_of_duplicating_them() {
        let mut file = Textfile::default();
        file.record_backup(&hmis(), &succeeded(1_700_000_000));
        let production = InstanceLabels {
            instance: "hmis".into(),
            environment: "production".into(),
        };
        file.record_backup(&production, &BackupOutcome::Failed);
        let text = file.render();
        assert!(!text.contains("environment=\"\""), "{text}");
        assert_eq!(text.matches("dhis2_instance=\"hmis\"").count(), 4, "{text}");
        assert_eq!(file.value(FAILURES.name, "hmis"), Some(1.0));
        assert_eq!(file.value(LAST_SUCCESS.name, "hmis"), Some(1_700_000_000.0));
    }

    #[test]
    fn a_file_an_older_dhis2ctl_labelled_instance_is_taken_over_and_relabelled() {
        let previous = "# HELP dhis2_backup_last_success_timestamp_seconds Completion time of the newest completed backup.\n\
            # TYPE dhis2_backup_last_success_timestamp_seconds gauge\n\
            dhis2_backup_last_success_timestamp_seconds{namespace=\"\",instance=\"hmis\",environment=\"\"} 1700000000\n\
            # HELP dhis2_backup_failures_total Backups that failed.\n\
            # TYPE dhis2_backup_failures_total counter\n\
            dhis2_backup_failures_total{namespace=\"\",instance=\"hmis\",environment=\"\"} 2\n\
            dhis2_backup_failures_total{namespace=\"\",instance=\"training\",environment=\"\"} 5\n\
            # HELP dhis2_drill_last_success 1 when the newest restore drill passed, 0 when it failed.\n\
            # TYPE dhis2_drill_last_success gauge\n\
            dhis2_drill_last_success{namespace=\"\",instance=\"hmis\",environment=\"\"} 1\n";
        let mut file = Textfile::parse(previous);
        assert_eq!(file.value(FAILURES.name, "hmis"), Some(2.0));
        file.record_backup(&hmis(), &BackupOutcome::Failed);
        let text = file.render();
        assert!(
            text.contains(
                "dhis2_backup_failures_total{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} 3\n"
            ),
            "the counter goes on from the old series: {text}"
        );
        assert!(
            text.contains("dhis2_backup_last_success_timestamp_seconds{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} 1700000000\n"),
            "{text}"
        );
        assert!(
            text.contains("dhis2_drill_last_success{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} 1\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("instance=\"hmis\"").count(),
            text.matches("dhis2_instance=\"hmis\"").count(),
            "no old series of hmis is left beside the new one: {text}"
        );
        assert!(
            text.contains("{namespace=\"\",instance=\"training\",environment=\"\"} 5\n"),
            "another instance's series is its own dhis2ctl's to take over: {text}"
        );
    }

    #[test]
    fn a_garbled_counter_starts_again_from_zero() {
        let mut file = Textfile::parse(
            "dhis2_backup_failures_total{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} NaN\n",
        );
        file.record_backup(&hmis(), &BackupOutcome::Failed);
        assert_eq!(file.value(FAILURES.name, "hmis"), Some(1.0));
    }

    #[test]
    fn a_series_of_a_cluster_namespace_is_not_this_instances() {
        let mut file = Textfile::parse(
            "dhis2_backup_failures_total{namespace=\"moh\",dhis2_instance=\"hmis\",environment=\"\"} 9\n",
        );
        file.record_backup(&hmis(), &BackupOutcome::Failed);
        let text = file.render();
        assert!(
            text.contains("{namespace=\"moh\",dhis2_instance=\"hmis\",environment=\"\"} 9"),
            "{text}"
        );
        assert!(
            text.contains("{namespace=\"\",dhis2_instance=\"hmis\",environment=\"\"} 1"),
            "{text}"
        );
    }
}
