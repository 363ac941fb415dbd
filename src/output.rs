//! How dhis2ctl prints: kubectl-style tables for people, JSON or YAML for programs.

use clap::ValueEnum;
use comfy_table::{Table, presets};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    /// A table with more columns (`get` only; elsewhere the same as table).
    Wide,
    Json,
    Yaml,
}

impl OutputFormat {
    pub fn is_machine(self) -> bool {
        matches!(self, Self::Json | Self::Yaml)
    }
}

/// JSON or YAML of any report; `None` for the table format (the caller prints its own text).
pub fn render_structured<T: Serialize>(format: OutputFormat, value: &T) -> Option<String> {
    match format {
        OutputFormat::Table | OutputFormat::Wide => None,
        OutputFormat::Json => Some(
            serde_json::to_string_pretty(value)
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")),
        ),
        // serde-saphyr: kube-rs' choice now that serde_yaml is unmaintained.
        OutputFormat::Yaml => Some(
            serde_saphyr::to_string(value)
                .map(|s| s.trim_end().to_string())
                .unwrap_or_else(|e| format!("error: {e}")),
        ),
    }
}

/// A borderless table with upper-case headers, like `kubectl get`.
pub fn render_table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(headers.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>());
    for row in rows {
        table.add_row(row);
    }
    table
        .lines()
        .map(|l| l.trim().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// `3m 20s`, `2h 5m`, `4d 3h`: ages and durations, like kubectl's AGE column.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_look_like_kubectl() {
        let text = render_table(
            &["id", "size"],
            vec![
                vec!["a".into(), "1 KiB".into()],
                vec!["bbbb".into(), "2".into()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(lines[0].contains("SIZE"));
    }

    #[test]
    fn structured_formats() {
        #[derive(Serialize)]
        struct R {
            id: &'static str,
            count: u32,
        }
        let r = R { id: "x", count: 3 };
        assert!(
            render_structured(OutputFormat::Json, &r)
                .unwrap()
                .contains("\"count\": 3")
        );
        let yaml = render_structured(OutputFormat::Yaml, &r).unwrap();
        assert!(yaml.contains("count: 3"), "{yaml}");
        assert!(render_structured(OutputFormat::Table, &r).is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(3601), "1h 0m");
        assert_eq!(human_duration(90000), "1d 1h");
    }
}
