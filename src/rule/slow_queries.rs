//! `kind: slow_queries`: active queries in the source's `pg_stat_activity` running longer than
//! `older_than` (default 5 s, the seed's "a database step over 5 s"), with analytic work left
//! out by application-name or user patterns. The query text is shortened and its literals
//! removed before it goes anywhere, so no personal data can leak through a WHERE clause.
//!
//! Seeing other sessions' queries needs a superuser or the `pg_read_all_stats` role.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;

use super::finding::{Outcome, Signal};
use crate::config::RuleConfig;
use crate::source::{Source, SourceError};

/// Characters of normalized query text kept.
pub const MAX_QUERY_CHARS: usize = 200;

const SQL: &str = "SELECT pid::text, EXTRACT(EPOCH FROM (now() - query_start))::float8, query_start, \
     coalesce(application_name, ''), coalesce(usename::text, ''), coalesce(datname::text, ''), coalesce(query, '') \
     FROM pg_stat_activity \
     WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
       AND query_start < now() - make_interval(secs => $1::float8) \
     ORDER BY query_start";

/// The compiled check.
#[derive(Debug)]
pub struct SlowQueriesCheck {
    /// The threshold.
    pub older_than: Duration,
    exclude_applications: Vec<Regex>,
    exclude_users: Vec<Regex>,
    max_findings: usize,
    source: Arc<Source>,
}

/// A query's text without literals or comments, whitespace collapsed, shortened:
/// `SELECT * FROM orders WHERE email = 'anna@example.com' AND id > 42`
/// becomes `SELECT * FROM orders WHERE email = ? AND id > ?`.
pub fn normalize_query(q: &str) -> String {
    static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"(?s)/\*.*?\*/", " "), // block comments
            (r"--[^\n]*", " "),      // line comments
            (
                r"(?s)\$([A-Za-z_][A-Za-z0-9_]*)?\$.*?\$([A-Za-z_][A-Za-z0-9_]*)?\$",
                "?",
            ), // dollar quotes
            (r"(?i)(?:\b[eb])?'(?:[^'\\]|''|\\.)*'", "?"), // string literals (E'', B'', '')
            (r"\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b", "?"), // numbers
            (r"\s+", " "),
        ]
        .into_iter()
        .map(|(p, r)| (Regex::new(p).expect("static regex"), r))
        .collect()
    });
    let mut s = q.to_string();
    for (re, with) in PATTERNS.iter() {
        s = re.replace_all(&s, *with).into_owned();
    }
    let s = s.trim();
    if s.chars().count() > MAX_QUERY_CHARS {
        format!("{}…", s.chars().take(MAX_QUERY_CHARS).collect::<String>())
    } else {
        s.to_string()
    }
}

impl SlowQueriesCheck {
    /// From the rule's config (patterns already validated).
    pub fn new(cfg: &RuleConfig, source: Arc<Source>) -> SlowQueriesCheck {
        let compile = |v: &[serde_saphyr::Spanned<String>]| {
            v.iter()
                .filter_map(|p| Regex::new(&format!("^(?:{})$", p.value)).ok())
                .collect()
        };
        SlowQueriesCheck {
            older_than: cfg.older_than(),
            exclude_applications: compile(&cfg.exclude_applications),
            exclude_users: compile(&cfg.exclude_users),
            max_findings: cfg.max_findings,
            source,
        }
    }

    /// The SQL it runs.
    pub fn sql(&self) -> &'static str {
        SQL
    }

    /// Reads `pg_stat_activity`; one signal per slow, non-analytic query (key: its pid).
    pub async fn evaluate(&self) -> Result<Outcome, SourceError> {
        let rows = self
            .source
            .query(SQL, &[&self.older_than.as_secs_f64()])
            .await?;
        let mut out = Outcome::default();
        for r in &rows {
            let (app, user): (String, String) = (r.get(3), r.get(4));
            if self.exclude_applications.iter().any(|re| re.is_match(&app))
                || self.exclude_users.iter().any(|re| re.is_match(&user))
            {
                continue;
            }
            out.count += 1;
            if out.signals.len() >= self.max_findings {
                continue;
            }
            let labels = BTreeMap::from([
                ("application_name".to_string(), app),
                ("user".to_string(), user),
                ("database".to_string(), r.get::<_, String>(5)),
                ("query".to_string(), normalize_query(&r.get::<_, String>(6))),
            ]);
            out.signals.push(Signal {
                key: r.get(0),
                value: Some(r.get(1)),
                since: r.get::<_, Option<DateTime<Utc>>>(2),
                labels,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_comments_never_survive() {
        let q = "SELECT * /* by anna@example.com */ FROM orders -- phone +7 912\n WHERE email = 'anna@example.com' \
                 AND note = E'it''s \\' quoted' AND phone = $$+7 912 000$$ AND id > 42 AND total = 1.5e3 AND t1.x = 'a'";
        let n = normalize_query(q);
        assert_eq!(
            n,
            "SELECT * FROM orders WHERE email = ? AND note = ? AND phone = ? AND id > ? AND total = ? AND t1.x = ?"
        );
        for leak in ["anna", "912", "42", "quoted", "1.5"] {
            assert!(!n.contains(leak), "{leak} in {n}");
        }
        let long = format!("SELECT {}", "a, ".repeat(200));
        assert_eq!(normalize_query(&long).chars().count(), MAX_QUERY_CHARS + 1);
    }
}
