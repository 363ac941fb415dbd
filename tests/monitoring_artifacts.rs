//! The alert rules, their unit tests, the runbooks and the Grafana dashboard
//! (manifests/monitoring/, docs/runbooks.md) agree with promtool, with each other and with the
//! metric contract, docs/metrics.md: an alert an officer receives fires when it should, says
//! what to do, links a runbook section that exists, and reads only metrics and labels the
//! operator exports. Needs `promtool` (Debian package prometheus; scripts/testenv/install.sh).

#[path = "support/markdown_anchor.rs"]
mod markdown_anchor;
#[path = "support/promql_names.rs"]
mod promql_names;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use markdown_anchor::anchor;
use promql_names::{Names, names_in};
use serde::Deserialize;

const RUNBOOKS_URL: &str =
    "https://github.com/dhis2-operator/dhis2-operator/blob/main/docs/runbooks.md";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn monitoring(file: &str) -> PathBuf {
    repo().join("manifests/monitoring").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs a command from the repository root; panics with its output unless it succeeds.
fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && program == "promtool" {
                panic!(
                    "promtool is not installed: run scripts/testenv/install.sh (as root; it installs \
                     the Debian package prometheus, which provides promtool)"
                )
            }
            panic!("running {program}: {e}")
        });
    assert!(
        out.status.success(),
        "`{program} {}` failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- the files, as promtool and Grafana read them --------------------------------------------

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
    expr: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RuleTestFile {
    rule_files: Vec<String>,
    tests: Vec<RuleTestGroup>,
}

#[derive(Deserialize)]
struct RuleTestGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Deserialize)]
struct InputSeries {
    series: String,
}

#[derive(Deserialize)]
struct AlertTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpectedAlert>,
}

#[derive(Deserialize)]
struct ExpectedAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
}

fn alert_rules() -> Vec<Rule> {
    let file: RuleFile = serde_saphyr::from_str(&read(&monitoring("prometheus-rules.yaml")))
        .expect("prometheus-rules.yaml is a rule file");
    let rules: Vec<Rule> = file.groups.into_iter().flat_map(|g| g.rules).collect();
    assert!(
        rules.iter().all(|r| r.alert.is_some()),
        "prometheus-rules.yaml holds only alerts"
    );
    rules
}

fn rule_tests() -> RuleTestFile {
    serde_saphyr::from_str(&read(&monitoring("prometheus-rules.test.yaml")))
        .expect("prometheus-rules.test.yaml is a promtool test file")
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(&monitoring("grafana-dashboard.json")))
        .expect("grafana-dashboard.json is JSON")
}

/// Every panel, rows' collapsed panels included.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    fn walk<'a>(list: Option<&'a serde_json::Value>, out: &mut Vec<&'a serde_json::Value>) {
        for panel in list.and_then(|l| l.as_array()).into_iter().flatten() {
            out.push(panel);
            walk(panel.get("panels"), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard.get("panels"), &mut out);
    out
}

/// (panel title, query) for every panel query of the dashboard.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without `expr`"));
            queries.push((title.clone(), expr.to_string()));
        }
    }
    assert!(!queries.is_empty(), "the dashboard has no queries");
    queries
}

/// (variable name, query) of the dashboard's query variables.
fn variable_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = v["query"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .unwrap_or_default();
            (
                v["name"].as_str().unwrap_or("?").to_string(),
                query.to_string(),
            )
        })
        .collect()
}

// --- the contract -----------------------------------------------------------------------------

/// The series docs/metrics.md defines, each with the labels it carries.
struct Contract {
    series: BTreeMap<String, BTreeSet<String>>,
}

impl Contract {
    fn read() -> Self {
        let text = read(&repo().join("docs/metrics.md"));
        let backticked = |s: &str| -> Vec<String> {
            s.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        // "Labels: `namespace`, `dhis2_instance`, `environment` (`staging`, …) on every per-instance
        // series": the names before the parenthesis.
        let instance_labels: BTreeSet<String> = text
            .lines()
            .find_map(|l| l.strip_prefix("Labels:"))
            .map(|l| backticked(l.split('(').next().unwrap_or_default()))
            .unwrap_or_default()
            .into_iter()
            .collect();
        assert!(
            !instance_labels.is_empty(),
            "docs/metrics.md: no `Labels: …` line naming the per-instance labels"
        );

        let mut series = BTreeMap::new();
        let mut header: Vec<String> = Vec::new();
        for line in text.lines() {
            let Some(row) = line.trim().strip_prefix('|') else {
                header.clear();
                continue;
            };
            let cells: Vec<&str> = row
                .trim_end_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            if header.is_empty() {
                header = cells.iter().map(|c| c.to_lowercase()).collect();
                continue;
            }
            if cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
            {
                continue;
            }
            let column = |name: &str| header.iter().position(|h| h == name).map(|i| cells[i]);
            let metric = column("metric")
                .map(backticked)
                .and_then(|names| names.into_iter().next())
                .unwrap_or_else(|| panic!("docs/metrics.md: a table row without a metric: {line}"));
            let labels: BTreeSet<String> = match column("labels") {
                Some(cell) => backticked(cell).into_iter().collect(),
                None => {
                    // per-instance tables: the common labels, plus "extra label `x`"
                    let mut labels = instance_labels.clone();
                    if let Some(extra) =
                        column("meaning").and_then(|m| m.split("extra label").nth(1))
                    {
                        labels.extend(backticked(extra).into_iter().take(1));
                    }
                    labels
                }
            };
            if column("type").is_some_and(|t| t.starts_with("histogram")) {
                let mut bucket_labels = labels.clone();
                bucket_labels.insert("le".into());
                series.insert(format!("{metric}_bucket"), bucket_labels);
                series.insert(format!("{metric}_sum"), labels.clone());
                series.insert(format!("{metric}_count"), labels);
            } else {
                series.insert(metric, labels);
            }
        }
        assert!(
            series.len() > 20,
            "docs/metrics.md: only {} metrics found in its tables",
            series.len()
        );
        Contract { series }
    }

    fn all_labels(&self) -> BTreeSet<String> {
        self.series.values().flatten().cloned().collect()
    }

    /// The labels a series may be selected by, or None for a series nobody exports.
    /// Besides the contract: Prometheus's own `up` and `ALERTS`.
    fn labels_of(&self, series: &str) -> Option<BTreeSet<String>> {
        match series {
            "up" => Some(["job", "instance"].map(String::from).into()),
            "ALERTS" => {
                let mut labels = self.all_labels();
                labels.extend(["alertname", "alertstate", "severity", "reason"].map(String::from));
                Some(labels)
            }
            _ => self.series.get(series).cloned(),
        }
    }

    /// What is wrong with the names `expr` uses (empty when nothing is).
    fn problems(&self, expr: &str) -> Vec<String> {
        self.problems_besides(expr, &[])
    }

    /// `problems`, with `also` allowed on every series (the labels Prometheus adds to what it
    /// scrapes, for a series as Prometheus stores it).
    fn problems_besides(&self, expr: &str, also: &[&str]) -> Vec<String> {
        let Names {
            selectors,
            grouping_labels,
        } = match names_in(expr) {
            Ok(names) => names,
            Err(e) => return vec![format!("cannot read the query: {e}")],
        };
        let mut problems = Vec::new();
        for selector in &selectors {
            let Some(metric) = &selector.metric else {
                problems.push("a selector without a metric name".into());
                continue;
            };
            match self.labels_of(metric) {
                None => problems.push(format!("`{metric}` is not in docs/metrics.md")),
                Some(allowed) => {
                    for label in selector
                        .labels
                        .iter()
                        .filter(|l| !allowed.contains(*l) && !also.contains(&l.as_str()))
                    {
                        problems.push(format!("`{metric}` has no label `{label}`"));
                    }
                }
            }
        }
        let mut grouping_allowed = self.all_labels();
        grouping_allowed.insert("le".into());
        for label in grouping_labels
            .iter()
            .filter(|l| !grouping_allowed.contains(*l))
        {
            problems.push(format!(
                "groups by `{label}`, which no metric of docs/metrics.md has"
            ));
        }
        problems
    }
}

// --- promtool and build.sh --------------------------------------------------------------------

#[test]
fn promtool_accepts_the_alert_rules() {
    run_ok(
        "promtool",
        &[
            "check",
            "rules",
            "manifests/monitoring/prometheus-rules.yaml",
        ],
    );
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    run_ok(
        "promtool",
        &[
            "test",
            "rules",
            "manifests/monitoring/prometheus-rules.test.yaml",
        ],
    );
}

#[test]
fn the_generated_prometheusrule_and_dashboard_configmap_are_up_to_date() {
    let build = repo().join("scripts/monitoring/build.sh");
    run_ok(build.to_str().unwrap(), &["--check"]);
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses a rule's expression, so each query becomes a recording rule, with
    // Grafana's variables replaced by what Grafana would put there.
    let dashboard = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    for (i, (title, expr)) in dashboard_queries(&dashboard).into_iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$namespace", ".*")
            .replace("$instance", ".*");
        assert!(
            !expr.contains('$'),
            "panel {title:?}: a Grafana variable this test does not know: {expr}"
        );
        let expr = serde_json::to_string(&expr).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&file, rules).unwrap();
    run_ok("promtool", &["check", "rules", file.to_str().unwrap()]);
}

// --- what an alert tells the officer ----------------------------------------------------------

#[test]
fn every_alert_says_what_to_do_and_links_a_runbook_section_that_exists() {
    let runbooks = read(&repo().join("docs/runbooks.md"));
    let headings: Vec<&str> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .collect();
    let anchors: BTreeSet<String> = headings.iter().map(|h| anchor(h)).collect();
    let rules = alert_rules();
    for rule in &rules {
        let alert = rule.alert.as_deref().unwrap_or_default();
        let severity = rule.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{alert}: severity must be critical or warning, is {severity:?}"
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                rule.annotations
                    .get(key)
                    .is_some_and(|v| !v.trim().is_empty()),
                "{alert}: no `{key}` annotation"
            );
        }
        let url = &rule.annotations["runbook_url"];
        let fragment = url
            .strip_prefix(RUNBOOKS_URL)
            .and_then(|rest| rest.strip_prefix('#'))
            .unwrap_or_else(|| {
                panic!("{alert}: runbook_url {url} is not {RUNBOOKS_URL}#<section>")
            });
        assert!(
            anchors.contains(fragment),
            "{alert}: runbook_url points to #{fragment}, but docs/runbooks.md has no such section \
             (its sections: {anchors:?})"
        );
        assert_eq!(
            fragment,
            alert.to_lowercase(),
            "{alert}: its runbook section is named after it"
        );
        assert!(
            rule.annotations["description"].contains('`'),
            "{alert}: the description names no command to run"
        );
    }
    // and no runbook section for an alert that does not exist (any more)
    let alerts: BTreeSet<&str> = rules.iter().filter_map(|r| r.alert.as_deref()).collect();
    for heading in headings.iter().filter(|h| h.starts_with("DHIS2")) {
        assert!(
            alerts.contains(heading.trim()),
            "docs/runbooks.md has a section {heading:?} for an alert prometheus-rules.yaml does not have"
        );
    }
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() {
    let tests = rule_tests();
    assert_eq!(
        tests.rule_files,
        vec!["prometheus-rules.yaml".to_string()],
        "prometheus-rules.test.yaml tests prometheus-rules.yaml"
    );
    let cases: Vec<&AlertTest> = tests
        .tests
        .iter()
        .flat_map(|t| &t.alert_rule_test)
        .collect();
    for rule in alert_rules() {
        let alert = rule.alert.as_deref().unwrap_or_default();
        // A firing case of this rule: an expected alert carrying the rule's own labels (two
        // rules of one alert differ in them, e.g. `reason`).
        let fires = cases.iter().any(|c| {
            c.alertname == alert
                && c.exp_alerts.iter().any(|a| {
                    rule.labels
                        .iter()
                        .all(|(k, v)| a.exp_labels.get(k) == Some(v))
                })
        });
        assert!(
            fires,
            "{alert} {:?}: no test case in prometheus-rules.test.yaml where it fires",
            rule.labels
        );
        let quiet = cases
            .iter()
            .any(|c| c.alertname == alert && c.exp_alerts.is_empty());
        assert!(
            quiet,
            "{alert}: no test case in prometheus-rules.test.yaml where it does not fire"
        );
    }
}

// --- only what the operator exports -----------------------------------------------------------

/// The labels Prometheus gives every series it scrapes: the target's, never the DHIS2 instance's.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

#[test]
fn rules_tests_and_dashboard_use_only_metrics_and_labels_of_the_contract() {
    let contract = Contract::read();
    let mut problems = Vec::new();
    for rule in alert_rules() {
        let alert = rule.alert.as_deref().unwrap_or_default();
        for p in contract.problems(&rule.expr) {
            problems.push(format!("prometheus-rules.yaml, {alert}: {p}"));
        }
    }
    for group in rule_tests().tests {
        for input in &group.input_series {
            for p in contract.problems_besides(&input.series, &TARGET_LABELS) {
                problems.push(format!(
                    "prometheus-rules.test.yaml, test {:?}, series {}: {p}",
                    group.name, input.series
                ));
            }
        }
    }
    let dashboard = dashboard();
    for (title, expr) in dashboard_queries(&dashboard) {
        for p in contract.problems(&expr) {
            problems.push(format!("grafana-dashboard.json, panel {title:?}: {p}"));
        }
    }
    for (name, query) in variable_queries(&dashboard) {
        // label_values(SELECTOR, LABEL)
        let args = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','));
        let Some((selector, label)) = args else {
            problems.push(format!(
                "grafana-dashboard.json, variable ${name}: not label_values(metric, label): {query}"
            ));
            continue;
        };
        for p in contract.problems(selector) {
            problems.push(format!("grafana-dashboard.json, variable ${name}: {p}"));
        }
        let metric = names_in(selector)
            .ok()
            .and_then(|n| n.selectors.into_iter().next())
            .and_then(|s| s.metric)
            .unwrap_or_default();
        if !contract
            .labels_of(&metric)
            .is_some_and(|l| l.contains(label.trim()))
        {
            problems.push(format!(
                "grafana-dashboard.json, variable ${name}: `{metric}` has no label `{}`",
                label.trim()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "names docs/metrics.md does not define:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_dashboard_filters_instance_panels_by_its_variables() {
    let contract = Contract::read();
    let dashboard = dashboard();
    let variables: BTreeMap<String, String> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                v["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        variables.get("datasource").map(String::as_str),
        Some("datasource")
    );
    assert_eq!(
        variables.get("namespace").map(String::as_str),
        Some("query")
    );
    assert_eq!(variables.get("instance").map(String::as_str), Some("query"));

    for panel in panels(&dashboard)
        .into_iter()
        .filter(|p| p["type"] != "row")
    {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?} does not use the $datasource variable"
        );
    }
    // A panel about instances follows the instance picker; operator and alert panels need not.
    for (title, expr) in dashboard_queries(&dashboard) {
        let per_instance = names_in(&expr).unwrap().selectors.iter().any(|s| {
            s.metric
                .as_deref()
                .and_then(|m| contract.series.get(m))
                .is_some_and(|labels| labels.contains("dhis2_instance"))
        });
        if per_instance {
            assert!(
                expr.contains("namespace=~\"$namespace\"")
                    && expr.contains("dhis2_instance=~\"$instance\""),
                "panel {title:?} ignores $namespace or $instance: {expr}"
            );
        }
    }
}

#[test]
fn the_dhis2_instance_is_named_by_dhis2_instance_never_by_prometheus_s_instance() {
    // `instance` is the scrape target's address: an alert, a join or a legend that reads it
    // names the operator's pod or the node_exporter, not the DHIS2 instance.
    let mut problems = Vec::new();
    for rule in alert_rules() {
        let alert = rule.alert.as_deref().unwrap_or_default();
        let names = names_in(&rule.expr).unwrap();
        if names.grouping_labels.iter().any(|l| l == "instance") {
            problems.push(format!(
                "prometheus-rules.yaml, {alert}: joins on `instance`"
            ));
        }
        for (key, text) in &rule.annotations {
            if text.contains("$labels.instance") {
                problems.push(format!(
                    "prometheus-rules.yaml, {alert}: annotation {key} says $labels.instance"
                ));
            }
        }
    }
    let dashboard = dashboard();
    for (title, expr) in dashboard_queries(&dashboard) {
        let names = names_in(&expr).unwrap();
        if names.grouping_labels.iter().any(|l| l == "instance") {
            problems.push(format!(
                "grafana-dashboard.json, panel {title:?}: groups by `instance`"
            ));
        }
    }
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            if legend.contains("{{instance}}") {
                problems.push(format!(
                    "grafana-dashboard.json, panel {title:?}: legend {legend:?} shows `instance`"
                ));
            }
        }
        for transformation in panel["transformations"].as_array().into_iter().flatten() {
            for key in ["indexByName", "renameByName", "excludeByName"] {
                if transformation["options"][key].get("instance").is_some() {
                    problems.push(format!(
                        "grafana-dashboard.json, panel {title:?}: {key} names the column `instance`"
                    ));
                }
            }
        }
    }
    // (The variables' label_values(…, LABEL) are checked against the contract above.)
    assert!(
        problems.is_empty(),
        "the DHIS2 instance is the label `dhis2_instance` (docs/metrics.md):\n  {}",
        problems.join("\n  ")
    );
}
