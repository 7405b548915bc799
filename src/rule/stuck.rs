//! `kind: stuck`: orders in a status for longer than `older_than`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::finding::{Finding, Outcome, StatusStat};
use crate::config::RuleConfig;
use crate::source::{Source, SourceError};

/// The compiled check: SQL and its bind parameters.
#[derive(Debug)]
pub struct StuckCheck {
    /// The statuses.
    pub statuses: Vec<String>,
    /// The threshold.
    pub older_than: Duration,
    /// Rows fetched at most.
    pub max_findings: usize,
    /// The SQL (see `OrderModel::stuck_sql`).
    pub sql: String,
    /// Per-status totals, run only when rows were capped.
    stats_sql: String,
    labels: Vec<String>,
    source: Arc<Source>,
}

impl StuckCheck {
    /// From the rule's config and its source's order model.
    pub fn new(cfg: &RuleConfig, source: Arc<Source>) -> StuckCheck {
        StuckCheck {
            statuses: cfg.statuses(),
            older_than: cfg.older_than(),
            max_findings: cfg.max_findings,
            sql: source.model.stuck_sql(),
            stats_sql: source.model.stuck_stats_sql(),
            labels: source.model.labels.clone(),
            source,
        }
    }

    /// Runs the query; ages come from the database clock.
    pub async fn evaluate(&self) -> Result<Outcome, SourceError> {
        let source = &self.source;
        let secs = self.older_than.as_secs_f64();
        let limit = self.max_findings as i64;
        let rows = source
            .query(&self.sql, &[&self.statuses, &secs, &limit])
            .await?;
        let mut out = Outcome::default();
        for row in &rows {
            let status: String = row.get(1);
            out.count = row.get::<_, i64>(4) as u64;
            out.per_status
                .entry(status.clone())
                .or_insert_with(|| StatusStat {
                    count: row.get::<_, i64>(5) as u64,
                    oldest_age_seconds: row.get(6),
                });
            let mut labels = BTreeMap::new();
            for (i, name) in self.labels.iter().enumerate() {
                if let Some(v) = row.get::<_, Option<String>>(7 + i) {
                    labels.insert(name.clone(), v);
                }
            }
            out.findings.push(Finding {
                order_id: row.get(0),
                status,
                entered_at: row.get::<_, DateTime<Utc>>(2),
                age_seconds: row.get(3),
                labels,
                other_status: None,
            });
        }
        if out.truncated() && self.statuses.len() > 1 {
            for row in source
                .query(&self.stats_sql, &[&self.statuses, &secs])
                .await?
            {
                let stat = StatusStat {
                    count: row.get::<_, i64>(1) as u64,
                    oldest_age_seconds: row.get(2),
                };
                out.per_status.insert(row.get(0), stat);
            }
        }
        Ok(out)
    }
}
