//! `kind: sql`: a custom read-only query whose rows are the findings, for checks nobody
//! thought of yet. Column `id` names a finding, `value` (optional) is its number, and every
//! other column becomes a label: select only what may leave the database.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::finding::{Outcome, Signal};
use crate::config::RuleConfig;
use crate::source::{Source, SourceError};

/// The compiled check.
#[derive(Debug)]
pub struct SqlCheck {
    /// The wrapped query: each row as JSON plus the exact total, capped at `$1` rows.
    pub sql: String,
    max_findings: usize,
    source: Arc<Source>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl SqlCheck {
    /// From the rule's config.
    pub fn new(cfg: &RuleConfig, source: Arc<Source>) -> SqlCheck {
        let q = cfg
            .query
            .as_ref()
            .map(|q| crate::config::without_trailing_semicolon(&q.value).to_string())
            .unwrap_or_default();
        SqlCheck {
            sql: format!(
                "SELECT row_to_json(q)::text, count(*) OVER () FROM (\n{q}\n) q LIMIT $1::int8"
            ),
            max_findings: cfg.max_findings,
            source,
        }
    }

    /// Runs the query (read-only, with the source's statement timeout).
    pub async fn evaluate(&self) -> Result<Outcome, SourceError> {
        let rows = self
            .source
            .query(&self.sql, &[&(self.max_findings as i64)])
            .await?;
        let mut out = Outcome::default();
        for r in &rows {
            out.count = r.get::<_, i64>(1) as u64;
            let Ok(Value::Object(row)) = serde_json::from_str::<Value>(&r.get::<_, String>(0))
            else {
                continue;
            };
            let key = row.get("id").map(text).unwrap_or_default();
            let value = row.get("value").and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            });
            let labels: BTreeMap<String, String> = row
                .iter()
                .filter(|(k, _)| k.as_str() != "id" && k.as_str() != "value")
                .map(|(k, v)| (k.clone(), text(v)))
                .collect();
            out.signals.push(Signal {
                key,
                value,
                since: None,
                labels,
                details: BTreeMap::new(),
            });
        }
        Ok(out)
    }
}
