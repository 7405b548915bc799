//! Output of `orderwatch once`: a table for people, JSON for scripts (DESIGN.md's contract).

use std::fmt::Write as _;

use serde::Serialize;

use crate::rule::{Finding, Outcome, Rule, Signal};
use crate::source::SourceError;

/// One rule's result in `once --format json`.
#[derive(Debug, Serialize)]
pub struct RuleReport<'a> {
    /// Rule name.
    pub name: &'a str,
    /// Kind.
    pub kind: &'static str,
    /// Source.
    pub source: &'a str,
    /// False when the source failed.
    pub ok: bool,
    /// Exact number found (absent when the source failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// True when `findings` holds fewer rows than `count` (capped by `max_findings`).
    pub capped: bool,
    /// The findings, oldest first.
    pub findings: &'a [Finding],
    /// With `--annotations`: each finding's annotations as its alert would carry them
    /// (summary, links, runbook), in the order of `findings`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<std::collections::BTreeMap<String, String>>,
    /// Findings that are not orders (`slow_queries`, `sql`).
    #[serde(skip_serializing_if = "<[Signal]>::is_empty")]
    pub signals: &'a [Signal],
    /// The error, when the source failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole JSON document.
#[derive(Debug, Serialize)]
pub struct OnceReport<'a> {
    /// Per rule.
    pub rules: Vec<RuleReport<'a>>,
}

/// Exit code of `once`: 0 nothing found, 1 something found, 2 an error.
pub fn exit_code(results: &[(std::sync::Arc<Rule>, Result<Outcome, SourceError>)]) -> i32 {
    if results.iter().any(|(_, r)| r.is_err()) {
        2
    } else if results
        .iter()
        .any(|(_, r)| r.as_ref().is_ok_and(|o| o.count > 0))
    {
        1
    } else {
        0
    }
}

/// Each order finding's annotations as its alert would carry them now (`--annotations`).
fn annotations(rule: &Rule, o: &Outcome) -> Vec<std::collections::BTreeMap<String, String>> {
    let now = chrono::Utc::now();
    o.findings
        .iter()
        .map(|f| crate::rule::observe::finding_annotations(rule, f, now))
        .collect()
}

/// Builds the JSON report; with `with_annotations`, each finding's annotations too.
pub fn build(
    results: &[(std::sync::Arc<Rule>, Result<Outcome, SourceError>)],
    with_annotations: bool,
) -> OnceReport<'_> {
    OnceReport {
        rules: results
            .iter()
            .map(|(rule, res)| match res {
                Ok(o) => RuleReport {
                    name: &rule.name,
                    kind: rule.kind.as_str(),
                    source: &rule.source,
                    ok: true,
                    count: Some(o.count),
                    capped: o.truncated(),
                    findings: &o.findings,
                    annotations: if with_annotations {
                        annotations(rule, o)
                    } else {
                        Vec::new()
                    },
                    signals: &o.signals,
                    error: None,
                },
                Err(e) => RuleReport {
                    name: &rule.name,
                    kind: rule.kind.as_str(),
                    source: &rule.source,
                    ok: false,
                    count: None,
                    capped: false,
                    findings: &[],
                    annotations: Vec::new(),
                    signals: &[],
                    error: Some(e.to_string()),
                },
            })
            .collect(),
    }
}

/// `s` safe to print on a terminal or in a text log line: control characters (newlines, ESC
/// and OSC sequences, C1 controls) and bidirectional overrides are shown escaped (`\n`,
/// `\u{1b}`), so data can neither forge a line nor drive the terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if needs_escape(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn labels_text<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    labels
        .into_iter()
        .map(|(k, v)| format!("{}={}", printable(k), printable(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A plain-text table: one block per rule, one line per order (with `with_annotations`, its
/// annotations indented below it). Every value from the data is passed through [`printable`].
pub fn table(
    results: &[(std::sync::Arc<Rule>, Result<Outcome, SourceError>)],
    with_annotations: bool,
) -> String {
    let mut out = String::new();
    for (rule, res) in results {
        match res {
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{:<34} ERROR  {}",
                    rule.name,
                    printable(&e.to_string())
                );
            }
            Ok(o) => {
                let capped = if o.truncated() {
                    format!(" (showing oldest {})", o.findings.len())
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "{:<34} {:>6} found{capped}  [{} on {}]",
                    rule.name,
                    o.count,
                    if rule.statuses().is_empty() {
                        rule.kind.as_str().to_string()
                    } else {
                        rule.statuses().join(",")
                    },
                    rule.source
                );
                for sig in &o.signals {
                    let value = sig.value.map(|v| format!("{v:.1}")).unwrap_or_default();
                    let mut shown = sig.labels.clone();
                    shown.extend(sig.details.iter().map(|(k, v)| (k.clone(), v.clone())));
                    let _ = writeln!(
                        out,
                        "    {:<16} {value:>9}  {}",
                        printable(&sig.key),
                        labels_text(shown.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    );
                }
                let notes = if with_annotations {
                    annotations(rule, o)
                } else {
                    Vec::new()
                };
                for (i, f) in o.findings.iter().enumerate() {
                    let age = crate::human::human_duration(std::time::Duration::from_secs_f64(
                        f.age_seconds.max(0.0),
                    ));
                    let _ = writeln!(
                        out,
                        "    {:<16} {:<24} {:>9}  since {}  {}",
                        printable(&f.order_id),
                        printable(&f.status),
                        age,
                        f.entered_at.format("%Y-%m-%d %H:%M:%SZ"),
                        labels_text(f.labels.iter())
                    );
                    for (k, v) in notes.get(i).into_iter().flatten() {
                        if k != "age" && k != "entered_at" {
                            let _ = writeln!(out, "        {k}: {}", printable(v));
                        }
                    }
                }
            }
        }
    }
    out
}
