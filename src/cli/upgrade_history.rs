//! `dhis2ctl history INSTANCE`: the upgrade in progress and the last upgrades the operator
//! recorded (`status.upgrade`, `status.upgradeHistory`); and their one-line summary in `status`.

use std::process::ExitCode;

use chrono::DateTime;
use clap::Args;
use kube::api::Api;
use serde::Serialize;

use crate::crd::Dhis2Instance;
use crate::crd::dhis2_instance::Dhis2InstanceStatus;
use crate::crd::upgrade::{UpgradeRecord, UpgradeStatus};
use crate::output::{OutputFormat, human_duration, render_structured, render_table};

use super::kube_access::{ClusterError, KubeArgs, api_error, connect};

/// The MESSAGE column's width in the table (`-o wide` prints it whole).
const MESSAGE_WIDTH: usize = 60;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The Dhis2Instance.
    pub instance: String,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// What `-o json|yaml` prints: the operator's records as they are.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct History {
    upgrade: Option<UpgradeStatus>,
    upgrade_history: Vec<UpgradeRecord>,
}

fn seconds_between(from: &str, to: &str) -> Option<i64> {
    let from = DateTime::parse_from_rfc3339(from).ok()?;
    let to = DateTime::parse_from_rfc3339(to).ok()?;
    Some((to - from).num_seconds())
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut short: String = text.chars().take(width - 1).collect();
    short.push('…');
    short
}

/// The upgrade in progress (or the refused/failed one the status keeps), in one line.
pub fn current_line(u: &UpgradeStatus) -> String {
    let mut line = format!(
        "{:?} {} → {} (started {}",
        u.phase, u.from_version, u.to_version, u.started_at
    );
    if let Some(outcome) = u.outcome {
        line.push_str(&format!(", {outcome:?}"));
    }
    line.push(')');
    if let Some(m) = &u.message {
        line.push_str(&format!(": {m}"));
    }
    line
}

fn record_line(r: &UpgradeRecord) -> String {
    let mut line = format!(
        "{} → {} {:?} at {}",
        r.from_version, r.to_version, r.outcome, r.finished_at
    );
    if let Some(id) = &r.backup_id {
        line.push_str(&format!(" (pre-upgrade backup {id})"));
    }
    line
}

/// `status`'s lines about upgrades: the one in progress, and the last one that ended.
pub fn status_lines(status: &Dhis2InstanceStatus) -> String {
    let mut text = String::new();
    if let Some(u) = &status.upgrade {
        text.push_str(&format!("Upgrade:      {}\n", current_line(u)));
    }
    if let Some(r) = status.upgrade_history.first() {
        text.push_str(&format!("Last upgrade: {}\n", record_line(r)));
    } else if status.upgrade.is_none() {
        text.push_str("Last upgrade: none\n");
    }
    text
}

fn render(name: &str, history: &History, wide: bool) -> String {
    let mut text = match &history.upgrade {
        Some(u) if u.phase.is_finished() => format!(
            "Ended, kept until spec.version changes: {}\n  retry: `dhis2ctl upgrade {name} --to {} --retry`; keep {}: `dhis2ctl upgrade {name} --to {}`\n\n",
            current_line(u),
            u.to_version,
            u.from_version,
            u.from_version
        ),
        Some(u) => format!("In progress: {}\n\n", current_line(u)),
        None => "No upgrade in progress.\n\n".to_string(),
    };
    if history.upgrade_history.is_empty() {
        text.push_str(&format!("No upgrades recorded for {name}."));
        return text;
    }
    let mut headers = vec![
        "from",
        "to",
        "started",
        "duration",
        "outcome",
        "backup",
        "approved by",
    ];
    if wide {
        headers.insert(3, "finished");
    }
    headers.push("message");
    let rows = history
        .upgrade_history
        .iter()
        .map(|r| {
            let mut row = vec![
                r.from_version.clone(),
                r.to_version.clone(),
                r.started_at.clone(),
                seconds_between(&r.started_at, &r.finished_at)
                    .map(human_duration)
                    .unwrap_or_else(|| "-".into()),
                format!("{:?}", r.outcome),
                r.backup_id.clone().unwrap_or_else(|| "-".into()),
                r.approved_by.clone().unwrap_or_else(|| "-".into()),
            ];
            if wide {
                row.insert(3, r.finished_at.clone());
            }
            let message = r.message.clone().unwrap_or_default();
            row.push(if wide {
                message
            } else {
                truncate(&message, MESSAGE_WIDTH)
            });
            row
        })
        .collect();
    text.push_str(&render_table(&headers, rows));
    text
}

pub async fn history(args: HistoryArgs, output: OutputFormat) -> Result<ExitCode, ClusterError> {
    let (client, ns) = connect(&args.kube).await?;
    let instance = Api::<Dhis2Instance>::namespaced(client, &ns)
        .get_opt(&args.instance)
        .await
        .map_err(api_error)?
        .ok_or_else(|| ClusterError::NotFound {
            name: args.instance.clone(),
            namespace: ns.clone(),
        })?;
    let status = instance.status.unwrap_or_default();
    let history = History {
        upgrade: status.upgrade,
        upgrade_history: status.upgrade_history,
    };
    let text = render_structured(output, &history)
        .unwrap_or_else(|| render(&args.instance, &history, output == OutputFormat::Wide));
    super::print_stdout(&text);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::upgrade::UpgradeOutcome;

    fn record(message: &str) -> UpgradeRecord {
        UpgradeRecord {
            from_version: "2.41.3".into(),
            to_version: "2.42.0".into(),
            started_at: "2026-12-06T05:00:00Z".into(),
            finished_at: "2026-12-06T05:42:10Z".into(),
            outcome: UpgradeOutcome::Succeeded,
            backup_id: Some("20261206T050100Z-ab12".into()),
            approved_by: Some("Dr Sok".into()),
            message: Some(message.into()),
        }
    }

    #[test]
    fn the_table_shows_duration_and_truncates_the_message_unless_wide() {
        let long = "x".repeat(100);
        let history = History {
            upgrade: None,
            upgrade_history: vec![record(&long)],
        };
        let text = render("hmis", &history, false);
        assert!(text.contains("No upgrade in progress"), "{text}");
        assert!(
            text.contains("42m 10s") && text.contains("Dr Sok"),
            "{text}"
        );
        assert!(text.contains('…') && !text.contains(&long), "{text}");
        let wide = render("hmis", &history, true);
        assert!(wide.contains(&long) && wide.contains("FINISHED"), "{wide}");
    }

    #[test]
    fn status_shows_the_last_upgrade() {
        let status = Dhis2InstanceStatus {
            upgrade_history: vec![record("done")],
            ..Default::default()
        };
        let text = status_lines(&status);
        assert!(
            text.starts_with("Last upgrade: 2.41.3 → 2.42.0 Succeeded at 2026-12-06T05:42:10Z"),
            "{text}"
        );
        assert_eq!(
            status_lines(&Dhis2InstanceStatus::default()),
            "Last upgrade: none\n"
        );
    }
}
