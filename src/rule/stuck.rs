//! `kind: stuck`: orders in a status for longer than `older_than`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::finding::{Finding, Outcome, StatusStat};
use crate::config::RuleConfig;
use crate::source::{Source, SourceError};

/// The compiled check: the statuses, the threshold and the source.
#[derive(Debug)]
pub struct StuckCheck {
    /// The statuses.
    pub statuses: Vec<String>,
    /// The threshold.
    pub older_than: Duration,
    /// Rows fetched at most.
    pub max_findings: usize,
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
            labels: source.model.labels.clone(),
            source,
        }
    }

    /// The statement `once` runs (see `OrderModel::sql`).
    pub async fn sql(&self) -> Result<String, SourceError> {
        let m = self.source.model_sql().await?;
        Ok(m.stuck_for(self.statuses.len()).to_string())
    }

    /// Runs the query, or reads a status log's kept state; ages come from the database clock.
    pub async fn evaluate(&self) -> Result<Outcome, SourceError> {
        let source = &self.source;
        let secs = self.older_than.as_secs_f64();
        let stored = source.to_db(&self.statuses);
        if let Some(h) = source.history().await? {
            let mut out = Outcome::default();
            let orders = h.stuck(&stored, secs);
            out.count = orders.len() as u64;
            for o in &orders {
                // Oldest first: the first of each status carries its oldest age.
                let stat = out
                    .per_status
                    .entry(source.from_db(o.status.to_string()))
                    .or_insert(StatusStat {
                        count: 0,
                        oldest_age_seconds: o.age_seconds,
                    });
                stat.count += 1;
            }
            out.findings = orders
                .iter()
                .take(self.max_findings)
                .map(|o| Finding {
                    order_id: o.id.to_string(),
                    status: source.from_db(o.status.to_string()),
                    entered_at: o.entered_at,
                    age_seconds: o.age_seconds,
                    labels: self
                        .labels
                        .iter()
                        .zip(&o.labels)
                        .filter_map(|(n, v)| v.map(|v| (n.clone(), v.to_string())))
                        .collect(),
                    other_status: None,
                })
                .collect();
            return Ok(out);
        }
        let sql = source.model_sql().await?;
        // One row past the cap tells whether the rows are all: only then are the exact counts
        // asked for, in the same snapshot.
        let limit = self.max_findings as i64 + 1;
        let cap = self.max_findings;
        let (rows, stats) = source
            .query_pair(
                (sql.stuck_for(stored.len()), &[&stored, &secs, &limit]),
                (&sql.stuck_stats, &[&stored, &secs]),
                |rows| rows.len() > cap,
            )
            .await?;
        // Decoding 100 000 rows is CPU work: off the async workers.
        Ok(crate::blocking::off_worker(|| {
            self.outcome(source, &rows, stats, cap)
        }))
    }

    /// The outcome of the rows (and the exact totals, when capped).
    fn outcome(
        &self,
        source: &Source,
        rows: &[tokio_postgres::Row],
        stats: Option<Vec<tokio_postgres::Row>>,
        cap: usize,
    ) -> Outcome {
        let mut out = Outcome::default();
        for row in rows.iter().take(cap) {
            let status = source.from_db(row.get(1));
            let age: f64 = row.get(3);
            // Oldest first: the first row of a status carries its oldest age.
            out.per_status
                .entry(status.clone())
                .or_insert(StatusStat {
                    count: 0,
                    oldest_age_seconds: age,
                })
                .count += 1;
            let mut labels = BTreeMap::new();
            for (i, name) in self.labels.iter().enumerate() {
                if let Some(v) = row.get::<_, Option<String>>(4 + i) {
                    labels.insert(name.clone(), v);
                }
            }
            out.findings.push(Finding {
                order_id: row.get(0),
                status,
                entered_at: row.get::<_, DateTime<Utc>>(2),
                age_seconds: age,
                labels,
                other_status: None,
            });
        }
        out.count = out.findings.len() as u64;
        if let Some(stats) = stats {
            out.per_status.clear();
            out.count = 0;
            for row in stats {
                let stat = StatusStat {
                    count: row.get::<_, i64>(1) as u64,
                    oldest_age_seconds: row.get(2),
                };
                out.count += stat.count;
                // Two stored values may read as one status (a code map): their sum, the older.
                let e = out
                    .per_status
                    .entry(source.from_db(row.get(0)))
                    .or_insert(StatusStat {
                        count: 0,
                        oldest_age_seconds: stat.oldest_age_seconds,
                    });
                e.count += stat.count;
                e.oldest_age_seconds = e.oldest_age_seconds.max(stat.oldest_age_seconds);
            }
        }
        out
    }
}
