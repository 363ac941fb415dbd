//! One upgrade check's result: passed, a warning or a blocker, with a reason an IT officer can
//! act on.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CheckOutcome {
    Passed,
    Warning,
    Blocked,
}

/// One check with its result and a one-line reason an IT officer can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub check: String,
    pub outcome: CheckOutcome,
    pub detail: String,
    /// The offending rows, when the check found some (at most ten; the detail has the count).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<String>,
}

impl CheckResult {
    pub fn new(check: &str, outcome: CheckOutcome, detail: impl Into<String>) -> Self {
        Self {
            check: check.to_string(),
            outcome,
            detail: detail.into(),
            rows: Vec::new(),
        }
    }

    pub fn with_rows(mut self, rows: Vec<String>) -> Self {
        self.rows = rows;
        self
    }
}
