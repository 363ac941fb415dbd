//! The classic Prometheus text format (0.0.4) from OpenMetrics text, for scrapers and tools that
//! do not ask for OpenMetrics (`curl`, `promtool check metrics`, older Prometheus): a counter's
//! HELP and TYPE name its `_total` series, and there is no `# UNIT` or `# EOF` (pure).

use std::collections::HashSet;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the scraper's `Accept` header asks for OpenMetrics (Prometheus does).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

pub fn openmetrics_to_classic(text: &str) -> String {
    let counters: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + 16 * counters.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_total_series_and_openmetrics_markers_go() {
        let om = "# HELP a_reconciles Reconciliations started.\n# TYPE a_reconciles counter\na_reconciles_total{kind=\"X\"} 3\n# HELP b_up Up.\n# TYPE b_up gauge\nb_up 1\n# UNIT c_seconds seconds\n# EOF\n";
        assert_eq!(
            openmetrics_to_classic(om),
            "# HELP a_reconciles_total Reconciliations started.\n# TYPE a_reconciles_total counter\na_reconciles_total{kind=\"X\"} 3\n# HELP b_up Up.\n# TYPE b_up gauge\nb_up 1\n"
        );
    }

    #[test]
    fn only_a_scraper_asking_for_openmetrics_gets_it() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
