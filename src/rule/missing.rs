//! `kind: missing`: orders one database has and the other never got (`LostOrder`), or has in
//! a status that disagrees (`StatusMismatch`, with `expect_status`).
//!
//! The two databases are separate servers, so the join happens here: candidates (orders in
//! `status` for over `older_than` in `source`) are read oldest first in pages of `batch_size`
//! by keyset pagination, and each page is looked up in `missing_in` with one
//! `id = ANY($1)` query on its primary key. Memory and round trips stay bounded however many
//! candidates there are; the count stays exact while the findings kept are capped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::types::{ToSql, Type};

use super::finding::{Finding, Outcome, StatusStat};
use crate::config::RuleConfig;
use crate::source::{Source, SourceError};

/// The compiled check.
#[derive(Debug)]
pub struct MissingCheck {
    /// Statuses of the candidates in `source`.
    pub statuses: Vec<String>,
    /// How long a candidate has been in its status.
    pub older_than: Duration,
    /// Findings kept at most.
    pub max_findings: usize,
    /// Statuses in the other database that agree; `None`: any row there agrees.
    pub expect_status: Option<Vec<String>>,
    /// The candidates' SQL (keyset pagination).
    pub sql: String,
    lookup_sql: String,
    batch_size: usize,
    labels: Vec<String>,
    source: Arc<Source>,
    other: Arc<Source>,
}

impl MissingCheck {
    /// From the rule's config and its two sources.
    pub fn new(cfg: &RuleConfig, source: Arc<Source>, other: Arc<Source>) -> MissingCheck {
        MissingCheck {
            statuses: cfg.statuses(),
            older_than: cfg.older_than(),
            max_findings: cfg.max_findings,
            expect_status: cfg.expect_status.as_ref().map(|s| s.value.to_vec()),
            sql: source.model.candidates_sql(),
            lookup_sql: other.model.lookup_sql(),
            batch_size: cfg.batch_size,
            labels: source.model.labels.clone(),
            source,
            other,
        }
    }

    /// The other database's name.
    pub fn other_name(&self) -> &str {
        &self.other.name
    }

    /// Looks `ids` up in the other database: id → status. The parameter is bound with the id
    /// column's own type, so the lookup is a primary-key index scan even for integer ids.
    async fn lookup(&self, ids: &[String]) -> Result<HashMap<String, String>, SourceError> {
        let param_type = self
            .other
            .param_types(&self.lookup_sql)
            .await?
            .into_iter()
            .next()
            .unwrap_or(Type::TEXT_ARRAY);
        let rows = match param_type {
            Type::INT8_ARRAY => {
                let v: Vec<i64> = ids.iter().filter_map(|s| s.parse().ok()).collect();
                self.other
                    .query(&self.lookup_sql, &[&v as &(dyn ToSql + Sync)])
                    .await?
            }
            Type::INT4_ARRAY => {
                let v: Vec<i32> = ids.iter().filter_map(|s| s.parse().ok()).collect();
                self.other
                    .query(&self.lookup_sql, &[&v as &(dyn ToSql + Sync)])
                    .await?
            }
            _ => {
                self.other
                    .query(&self.lookup_sql, &[&ids as &(dyn ToSql + Sync)])
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect())
    }

    /// Runs the check, one status at a time; ages come from the source database's clock.
    pub async fn evaluate(&self) -> Result<Outcome, SourceError> {
        let mut out = Outcome::default();
        for status in &self.statuses {
            self.evaluate_status(status, &mut out).await?;
        }
        // Oldest first across statuses, capped.
        out.findings.sort_by(|a, b| {
            a.entered_at
                .cmp(&b.entered_at)
                .then_with(|| a.order_id.cmp(&b.order_id))
        });
        out.findings.truncate(self.max_findings);
        Ok(out)
    }

    async fn evaluate_status(&self, wanted: &str, out: &mut Outcome) -> Result<(), SourceError> {
        let secs = self.older_than.as_secs_f64();
        let page = self.batch_size.max(1) as i64;
        let kept_before = out.findings.len();
        // Keyset cursor: (entered_at, order_id) of the last candidate seen.
        let mut after: Option<(DateTime<Utc>, String)> = None;
        loop {
            // Before any real timestamp, inside PostgreSQL's range.
            let floor = DateTime::<Utc>::from_timestamp(-2_208_988_800, 0).expect("1900-01-01");
            let (at, id) = after.clone().unwrap_or((floor, String::new()));
            let rows = self
                .source
                .query(
                    &self.sql,
                    &[&wanted, &secs, &at, &id, &after.is_some(), &page],
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let found = self.lookup(&ids).await?;
            for row in &rows {
                let order_id: String = row.get(0);
                let status: String = row.get(1);
                let entered_at: DateTime<Utc> = row.get(2);
                let age_seconds: f64 = row.get(3);
                let other_status = found.get(&order_id);
                let problem = match (other_status, &self.expect_status) {
                    (None, _) => true,
                    (Some(s), Some(expected)) => !expected.contains(s),
                    (Some(_), None) => false,
                };
                if !problem {
                    continue;
                }
                out.count += 1;
                let stat = out.per_status.entry(status.clone()).or_insert(StatusStat {
                    count: 0,
                    oldest_age_seconds: 0.0,
                });
                stat.count += 1;
                stat.oldest_age_seconds = stat.oldest_age_seconds.max(age_seconds);
                if out.findings.len() - kept_before < self.max_findings {
                    let mut labels = BTreeMap::new();
                    for (i, name) in self.labels.iter().enumerate() {
                        if let Some(v) = row.get::<_, Option<String>>(4 + i) {
                            labels.insert(name.clone(), v);
                        }
                    }
                    out.findings.push(Finding {
                        order_id,
                        status,
                        entered_at,
                        age_seconds,
                        labels,
                        other_status: other_status.cloned(),
                    });
                }
            }
            let last = rows.last().expect("non-empty page");
            after = Some((last.get(2), last.get(0)));
            if (rows.len() as i64) < page {
                break;
            }
        }
        Ok(())
    }
}
