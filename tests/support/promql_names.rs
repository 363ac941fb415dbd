//! The metric names and label names a PromQL expression uses, for checking alert rules and
//! dashboard queries against docs/metrics.md. Not a PromQL parser (promtool checks syntax):
//! it skips strings, range and subquery brackets, numbers and Grafana variables, and tells
//! metric names from functions, aggregations and keywords by PromQL's own rules.

/// One vector selector: `metric{label="…", …}`, or `{…}` without a name.
#[derive(Debug, PartialEq, Eq)]
pub struct Selector {
    pub metric: Option<String>,
    pub labels: Vec<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub selectors: Vec<Selector>,
    /// Labels named in `by`, `without`, `on`, `ignoring`, `group_left` and `group_right`.
    pub grouping_labels: Vec<String>,
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "atan2", "offset", "inf", "nan",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

struct Scanner {
    chars: Vec<char>,
    pos: usize,
}

impl Scanner {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn next_non_whitespace(&self) -> Option<char> {
        self.chars[self.pos..]
            .iter()
            .copied()
            .find(|c| !c.is_whitespace())
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Skips a quoted string starting at the current quote.
    fn skip_string(&mut self) -> Result<(), String> {
        let quote = self.chars[self.pos];
        self.pos += 1;
        while let Some(c) = self.peek() {
            self.pos += 1;
            if c == '\\' && quote != '`' {
                self.pos += 1;
            } else if c == quote {
                return Ok(());
            }
        }
        Err("unterminated string".into())
    }

    fn skip_past(&mut self, close: char) -> Result<(), String> {
        while let Some(c) = self.peek() {
            self.pos += 1;
            if c == close {
                return Ok(());
            }
        }
        Err(format!("missing '{close}'"))
    }

    /// `(a, b)` after a grouping keyword; the scanner stands on `(`.
    fn label_list(&mut self) -> Result<Vec<String>, String> {
        self.pos += 1;
        let mut labels = Vec::new();
        loop {
            self.skip_whitespace();
            match self.peek() {
                Some(')') => {
                    self.pos += 1;
                    return Ok(labels);
                }
                Some(',') => self.pos += 1,
                Some(c) if is_ident_start(c) => labels.push(self.ident()),
                other => return Err(format!("unexpected {other:?} in a label list")),
            }
        }
    }

    /// `{name op "value", …}`; the scanner stands on `{`.
    fn matchers(&mut self) -> Result<Vec<String>, String> {
        self.pos += 1;
        let mut labels = Vec::new();
        loop {
            self.skip_whitespace();
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    return Ok(labels);
                }
                Some(',') => self.pos += 1,
                Some(c) if is_ident_start(c) => {
                    labels.push(self.ident());
                    self.skip_whitespace();
                    while self.peek().is_some_and(|c| matches!(c, '=' | '!' | '~')) {
                        self.pos += 1;
                    }
                    self.skip_whitespace();
                    match self.peek() {
                        Some('"' | '\'' | '`') => self.skip_string()?,
                        other => {
                            return Err(format!(
                                "expected a string after a matcher, found {other:?}"
                            ));
                        }
                    }
                }
                other => return Err(format!("unexpected {other:?} in a label matcher")),
            }
        }
    }
}

/// The selectors and grouping labels of `expr`. Grafana variables (`$x`, `${x}`) are skipped.
pub fn names_in(expr: &str) -> Result<Names, String> {
    let mut s = Scanner {
        chars: expr.chars().collect(),
        pos: 0,
    };
    let mut names = Names::default();
    // The selector a `{` right after a metric name belongs to.
    let mut open_selector: Option<usize> = None;
    while let Some(c) = s.peek() {
        if c.is_whitespace() {
            s.pos += 1;
            continue;
        }
        let attach = open_selector.take();
        match c {
            '#' => s.skip_past('\n').unwrap_or(()),
            '"' | '\'' | '`' => s.skip_string()?,
            '[' => s.skip_past(']')?,
            '{' => {
                let labels = s.matchers()?;
                match attach {
                    Some(i) => names.selectors[i].labels = labels,
                    None => names.selectors.push(Selector {
                        metric: None,
                        labels,
                    }),
                }
            }
            '$' => {
                s.pos += 1;
                if s.peek() == Some('{') {
                    s.skip_past('}')?;
                } else {
                    s.ident();
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && s.chars.get(s.pos + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while s
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
                {
                    s.pos += 1;
                }
            }
            c if is_ident_start(c) => {
                let word = s.ident();
                let lower = word.to_ascii_lowercase();
                let next = s.next_non_whitespace();
                if GROUPING.contains(&lower.as_str()) {
                    if next == Some('(') {
                        s.skip_whitespace();
                        names.grouping_labels.extend(s.label_list()?);
                    }
                } else if KEYWORDS.contains(&lower.as_str())
                    || next == Some('(')
                    || AGGREGATIONS.contains(&lower.as_str())
                {
                    // an operator, a function call or an aggregation: not a metric
                } else {
                    names.selectors.push(Selector {
                        metric: Some(word),
                        labels: Vec::new(),
                    });
                    open_selector = Some(names.selectors.len() - 1);
                }
            }
            _ => s.pos += 1,
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(metric: Option<&str>, labels: &[&str]) -> Selector {
        Selector {
            metric: metric.map(str::to_string),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn metrics_labels_and_grouping_are_told_from_functions_and_keywords() {
        let names = names_in(
            "histogram_quantile(0.95, sum by (le, kind) (rate(x_bucket{kind=\"a\"}[$__rate_interval])))",
        )
        .unwrap();
        assert_eq!(names.selectors, vec![selector(Some("x_bucket"), &["kind"])]);
        assert_eq!(names.grouping_labels, vec!["le", "kind"]);

        let names = names_in(
            "up == 0\n  unless on (namespace, dhis2_instance) b{a!~\"x\"} == 1 and on () count(c) > 0",
        )
        .unwrap();
        assert_eq!(
            names.selectors,
            vec![
                selector(Some("up"), &[]),
                selector(Some("b"), &["a"]),
                selector(Some("c"), &[])
            ]
        );
        assert_eq!(names.grouping_labels, vec!["namespace", "dhis2_instance"]);
    }

    #[test]
    fn strings_numbers_durations_and_variables_are_not_names() {
        let names =
            names_in("time() - m{a=\"}{ by (x)\", b=~'$v'} > 26 * 3600 or vector(1e3) offset 5m")
                .unwrap();
        assert_eq!(names.selectors, vec![selector(Some("m"), &["a", "b"])]);
        assert!(names.grouping_labels.is_empty());

        let names = names_in("max_over_time(m[1d:5m]) * ${factor} + $x").unwrap();
        assert_eq!(names.selectors, vec![selector(Some("m"), &[])]);
    }

    #[test]
    fn a_bare_selector_has_no_metric_and_broken_matchers_are_refused() {
        let names = names_in("{__name__=\"m\"}").unwrap();
        assert_eq!(names.selectors, vec![selector(None, &["__name__"])]);
        assert!(names_in("m{a=\"x}").is_err());
        assert!(names_in("m{a=x}").is_err());
    }
}
