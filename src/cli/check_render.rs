//! The upgrade check as an IT officer reads it: one row per check, then the verdict (shared by
//! `dhis2ctl upgrade check` and the plan `dhis2ctl upgrade` prints).

use crate::output::render_table;
use crate::upgrade::{CheckOutcome, UpgradeCheck, Verdict};

pub(super) fn render_check(result: &UpgradeCheck) -> String {
    let from = match result.from_source {
        "schema" => format!("{} (schema {})", result.from.major(), result.from),
        _ => result.from.to_string(),
    };
    let rows = result
        .checks
        .iter()
        .map(|c| {
            let outcome = match c.outcome {
                CheckOutcome::Passed => "passed",
                CheckOutcome::Warning => "warning",
                CheckOutcome::Blocked => "blocked",
            };
            vec![c.check.clone(), outcome.to_string(), c.detail.clone()]
        })
        .collect();
    let verdict = match result.verdict {
        Verdict::Ready => "ready: nothing blocks the upgrade".to_string(),
        Verdict::ReadyWithWarnings => {
            "ready with warnings: nothing blocks the upgrade; read the warnings first".to_string()
        }
        Verdict::Blocked => format!(
            "blocked: fix the {} blocked check(s) before upgrading",
            result.blocked().count()
        ),
        Verdict::NothingToDo => "nothing to do: already on that version".to_string(),
    };
    format!(
        "DHIS2 {from} → {}\n\n{}\n\n{verdict}",
        result.to,
        render_table(&["check", "result", "detail"], rows)
    )
}
