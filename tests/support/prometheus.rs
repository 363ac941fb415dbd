//! A real Prometheus (Debian's `prometheus`) for the tests: scrapes the given targets every
//! second with `honor_labels: true` (as docs/runbooks.md asks of users), evaluates the given
//! rule files every second, and answers queries over its HTTP API.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

pub struct Prometheus {
    pub url: String,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

/// `promtool check metrics` accepts `text` (Prometheus's text format); else the test fails with
/// what promtool said and the text, naming `what` was checked.
pub fn assert_promtool_accepts_metrics(text: &str, what: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool is not installed: run scripts/testenv/install.sh (Debian package prometheus)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused {what}:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The label names the series of `text` (Prometheus's text format) carry.
pub fn label_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(open) = line.find('{') else { continue };
        let mut rest = &line[open + 1..];
        while let Some((name, value_and_more)) = rest.split_once("=\"") {
            names.insert(name.trim_start_matches(',').trim().to_string());
            let mut escaped = false;
            let Some(end) = value_and_more.char_indices().find_map(|(i, c)| {
                let closes = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                closes.then_some(i)
            }) else {
                break;
            };
            rest = &value_and_more[end + 1..];
            if rest.starts_with('}') {
                break;
            }
        }
    }
    names
}

/// The DHIS2 instance is named by `dhis2_instance` in `text`, and no series carries a label
/// `instance`: that one is Prometheus's own (the scrape target), so a series carrying it needs
/// `honor_labels` or has it renamed `exported_instance`.
pub fn assert_no_instance_label(text: &str, what: &str) {
    let names = label_names(text);
    assert!(
        names.contains("dhis2_instance") && !names.contains("instance"),
        "{what}: the series must name the DHIS2 instance `dhis2_instance`, never `instance`; \
         labels: {names:?}\n{text}"
    );
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    pub async fn start(job: &str, target: &str, rule_files: &[&std::path::Path]) -> Self {
        let binary = ["/usr/bin/prometheus", "/usr/sbin/prometheus"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("prometheus is not installed: run scripts/testenv/install.sh (Debian package prometheus)");
        let dir = tempfile::tempdir().unwrap();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - {}", std::fs::canonicalize(p).unwrap().display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\nscrape_configs:\n  - job_name: {job}\n    honor_labels: true\n    static_configs:\n      - targets: ['{target}']\n",
            rules.join("\n")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus");
        let p = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", p.url)).await
                && r.status().is_success()
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus did not become ready at {}", p.url);
    }

    /// An instant query: each series' labels and value.
    pub async fn query(&self, expr: &str) -> Vec<(Value, f64)> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            [("query", expr)],
        )
        .unwrap();
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let v = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), v)
            })
            .collect()
    }

    /// Waits until `expr` returns a series and gives its value.
    pub async fn wait_value(&self, expr: &str, secs: u64) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some((_, v)) = self.query(expr).await.first() {
                return *v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no series for {expr} in Prometheus after {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The alerts of the rule engine (pending and firing).
    pub async fn alerts(&self) -> Vec<Value> {
        let body: Value = reqwest::get(format!("{}/api/v1/alerts", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits for the alert `name` of the DHIS2 instance `instance` in `state` (`pending` or
    /// `firing`).
    pub async fn wait_alert(&self, name: &str, instance: &str, state: &str, secs: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let alerts = self.alerts().await;
            if let Some(a) = alerts.iter().find(|a| {
                a["labels"]["alertname"] == name
                    && a["labels"]["dhis2_instance"] == instance
                    && a["state"] == state
            }) {
                return a.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "alert {name} for {instance} never {state}; alerts: {alerts:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
