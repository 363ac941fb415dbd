//! GitHub's anchor of a Markdown heading, for tests that check `#section` links
//! (tests/docs_links.rs, the runbook links of tests/monitoring_artifacts.rs).

/// Lower case, punctuation dropped, spaces as hyphens.
pub fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}
