//! `kind: missing`: orders one database has and the other never got (`LostOrder`), or has in
//! a status that disagrees (`StatusMismatch`, with `expect_status`).
//!
//! The two databases are separate servers, so the join happens here: candidates (orders in
//! `status` for over `older_than` in `source`) are read oldest first in pages of `batch_size`
//! by keyset pagination, and each page is looked up in `missing_in` with one
//! `id = ANY($1)` query on its primary key. Memory and round trips stay bounded however many
//! candidates there are; the count stays exact while the findings kept are capped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

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
    batch_size: usize,
    labels: Vec<String>,
    source: Arc<Source>,
    other: Arc<Source>,
}

impl MissingCheck {
    /// The source the orders must reach (`missing_in`).
    pub fn other(&self) -> &str {
        &self.other.name
    }
}

/// A candidate: an order in a watched status for over the threshold.
struct Candidate {
    order_id: String,
    status: String,
    entered_at: DateTime<Utc>,
    age_seconds: f64,
    labels: crate::labels::Labels,
}

impl MissingCheck {
    /// From the rule's config and its two sources.
    pub fn new(cfg: &RuleConfig, source: Arc<Source>, other: Arc<Source>) -> MissingCheck {
        MissingCheck {
            statuses: cfg.statuses(),
            older_than: cfg.older_than(),
            max_findings: cfg.max_findings,
            expect_status: cfg.expect_status.as_ref().map(|s| s.value.to_vec()),
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

    /// The candidates' statement `once` runs (keyset pagination).
    pub async fn sql(&self) -> Result<String, SourceError> {
        Ok(self.source.model_sql().await?.candidates.clone())
    }

    /// Looks `ids` up in the other database: id → status name.
    async fn lookup(&self, ids: &[String]) -> Result<HashMap<String, String>, SourceError> {
        let sql = self.other.model_sql().await?;
        let rows = self.other.query_ids(&sql.lookup, ids).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), self.other.from_db(r.get(1))))
            .collect())
    }

    /// Runs the check; ages come from the source database's clock. A status log's kept
    /// state gives the candidates at once; otherwise they are read one status at a time.
    pub async fn evaluate(&self) -> Result<Outcome, SourceError> {
        let mut out = Outcome::default();
        let secs = self.older_than.as_secs_f64();
        let kept: Option<Vec<Candidate>> = match self.source.history().await? {
            Some(h) => {
                let stored = self.source.to_db(&self.statuses);
                Some(
                    h.stuck(&stored, secs)
                        .into_iter()
                        .map(|o| Candidate {
                            order_id: o.id.to_string(),
                            status: self.source.from_db(o.status.to_string()),
                            entered_at: o.entered_at,
                            age_seconds: o.age_seconds,
                            labels: crate::labels::Labels::own_only(
                                self.labels
                                    .iter()
                                    .zip(&o.labels)
                                    .filter_map(|(n, v)| {
                                        v.map(|v| {
                                            (crate::labels::intern(n), crate::labels::intern(v))
                                        })
                                    })
                                    .collect(),
                            ),
                        })
                        .collect(),
                )
            }
            None => None,
        };
        match kept {
            Some(all) => {
                for page in all.chunks(self.batch_size.max(1)) {
                    self.judge(page, &mut out).await?;
                }
            }
            None => {
                for status in &self.statuses {
                    self.evaluate_status(status, &mut out).await?;
                }
            }
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

    /// Looks one page of candidates up in the other database and counts the problems.
    async fn judge(&self, page: &[Candidate], out: &mut Outcome) -> Result<(), SourceError> {
        let ids: Vec<String> = page.iter().map(|c| c.order_id.clone()).collect();
        let found = self.lookup(&ids).await?;
        for c in page {
            let other_status = found.get(&c.order_id);
            let problem = match (other_status, &self.expect_status) {
                (None, _) => true,
                (Some(s), Some(expected)) => !expected.contains(s),
                (Some(_), None) => false,
            };
            if !problem {
                continue;
            }
            out.count += 1;
            let stat = out
                .per_status
                .entry(c.status.clone())
                .or_insert(StatusStat {
                    count: 0,
                    oldest_age_seconds: 0.0,
                });
            stat.count += 1;
            stat.oldest_age_seconds = stat.oldest_age_seconds.max(c.age_seconds);
            if out.findings.len() < self.max_findings * self.statuses.len().max(1) {
                out.findings.push(Finding {
                    order_id: c.order_id.clone(),
                    status: crate::labels::intern(&c.status),
                    entered_at: c.entered_at,
                    age_seconds: c.age_seconds,
                    labels: c.labels.clone(),
                    other_status: other_status.cloned(),
                });
            }
        }
        Ok(())
    }

    async fn evaluate_status(&self, wanted: &str, out: &mut Outcome) -> Result<(), SourceError> {
        let sql = self.source.model_sql().await?;
        let stored = self
            .source
            .to_db(&[wanted.to_string()])
            .pop()
            .unwrap_or_default();
        let secs = self.older_than.as_secs_f64();
        let page = self.batch_size.max(1) as i64;
        // Keyset cursor: (entered_at, order_id) of the last candidate seen.
        let mut after: Option<(DateTime<Utc>, String)> = None;
        let mut columns = crate::labels::LabelColumns::new(&self.labels);
        loop {
            // Before any real timestamp, inside PostgreSQL's range.
            let floor = DateTime::<Utc>::from_timestamp(-2_208_988_800, 0).expect("1900-01-01");
            let (at, id) = after.clone().unwrap_or((floor, String::new()));
            let rows = self
                .source
                .query(
                    &sql.candidates,
                    &[&stored, &secs, &at, &id, &after.is_some(), &page],
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            let candidates: Vec<Candidate> = rows
                .iter()
                .map(|row| Candidate {
                    order_id: row.get(0),
                    status: self.source.from_db(row.get(1)),
                    entered_at: row.get(2),
                    age_seconds: row.get(3),
                    labels: columns.labels(|i| row.get::<_, Option<&str>>(4 + i)),
                })
                .collect();
            self.judge(&candidates, out).await?;
            let last = rows.last().expect("non-empty page");
            after = Some((last.get(2), last.get(0)));
            if (rows.len() as i64) < page {
                break;
            }
        }
        Ok(())
    }
}
