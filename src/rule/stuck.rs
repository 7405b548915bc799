//! `kind: stuck`: orders in a status for longer than `older_than`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::finding::{CHUNK, Finding, FindingSink, Outcome, StatusStat};
use crate::config::RuleConfig;
use crate::labels::{LabelColumns, Labels, intern};
use crate::source::{RowSink, Source, SourceError};

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
        Ok(Self::evaluate_shared(&[self], None).await?.remove(0))
    }

    /// The outcome from a status log's kept state.
    fn outcome_from_log(&self, h: &crate::source::History) -> Outcome {
        let source = &self.source;
        let stored = source.to_db(&self.statuses);
        let mut out = Outcome::default();
        let orders = h.stuck(&stored, self.older_than.as_secs_f64());
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
                status: source.status_of(o.status),
                entered_at: o.entered_at,
                age_seconds: o.age_seconds,
                labels: Labels::own_only(
                    self.labels
                        .iter()
                        .zip(&o.labels)
                        .filter_map(|(n, v)| v.map(|v| (intern(n), intern(v))))
                        .collect(),
                ),
                other_status: None,
            })
            .collect();
        out
    }

    /// Whether `other` can share this check's statements: same source, same statuses (one
    /// scan serves every threshold, see [`StuckCheck::evaluate_shared`]).
    pub fn shares_with(&self, other: &StuckCheck) -> bool {
        Arc::ptr_eq(&self.source, &other.source) && {
            let (mut a, mut b) = (self.statuses.clone(), other.statuses.clone());
            a.sort();
            b.sort();
            a == b
        }
    }

    /// Evaluates `checks` (same source and statuses, see [`StuckCheck::shares_with`]) with one
    /// rows statement at the lowest threshold, one past the largest cap, oldest first: each
    /// check's rows are a prefix of those (the rows older than its own threshold). Only when
    /// some check has more rows than its cap are the exact totals asked for, every threshold's
    /// from one aggregate over the same snapshot. The database's work follows the statuses
    /// watched, not the rules.
    ///
    /// Each check's findings go to `sink` as they are decoded, a chunk at a time (its place
    /// in `checks` names it), so they are never all held; without a sink they are kept in
    /// the outcomes.
    pub async fn evaluate_shared(
        checks: &[&StuckCheck],
        sink: Option<&mut (dyn FindingSink + Send)>,
    ) -> Result<Vec<Outcome>, SourceError> {
        let first = checks.first().expect("at least one check");
        let source = &first.source;
        let mut kept = Keep(vec![Vec::new(); checks.len()]);
        let keeping = sink.is_none();
        let sink = sink.unwrap_or(&mut kept);
        let from_log = source.history().await?.map(|h| {
            checks
                .iter()
                .map(|c| c.outcome_from_log(&h))
                .collect::<Vec<_>>()
        });
        if let Some(mut outcomes) = from_log {
            // The log's lock is released: the findings go to the sink a chunk at a time.
            if !keeping {
                for (i, out) in outcomes.iter_mut().enumerate() {
                    out.streamed = out.findings.len();
                    let mut rest = std::mem::take(&mut out.findings).into_iter();
                    loop {
                        let chunk: Vec<Finding> = rest.by_ref().take(CHUNK).collect();
                        if chunk.is_empty() {
                            break;
                        }
                        sink.findings(i, &chunk);
                    }
                }
            }
            return Ok(outcomes);
        }
        let stored = source.to_db(&first.statuses);
        let SharedPlan {
            thresholds,
            lowest,
            limit,
        } = SharedPlan::of(checks);
        let sql = source.model_sql().await?;
        let mut rows = SharedRows {
            first,
            columns: LabelColumns::new(&first.labels),
            row: Finding {
                order_id: String::new(),
                status: intern(""),
                entered_at: DateTime::<Utc>::UNIX_EPOCH,
                age_seconds: 0.0,
                labels: Labels::default(),
                other_status: None,
            },
            // No status is stored as "\0": the first row's is looked up.
            raw_status: "\0".into(),
            takers: checks
                .iter()
                .map(|c| Taker {
                    secs: c.older_than.as_secs_f64(),
                    cap: c.max_findings,
                    taken: 0,
                    over: false,
                    chunk: Vec::new(),
                    used: 0,
                    per_status: BTreeMap::new(),
                })
                .collect(),
            sink,
        };
        let (_, stats) = source
            .query_pair(
                (sql.stuck_for(stored.len()), &[&stored, &lowest, &limit]),
                (&sql.stuck_stats, &[&stored, &lowest, &thresholds]),
                &mut rows,
            )
            .await?;
        rows.flush();
        let stats = stats.map(|s| StuckStats::read(source, &s));
        let mut outcomes: Vec<Outcome> = rows
            .takers
            .into_iter()
            .map(|t| {
                let mut out = Outcome {
                    streamed: t.taken,
                    ..Outcome::default()
                };
                match &stats {
                    Some(stats) if t.over => {
                        let j = thresholds
                            .iter()
                            .position(|x| *x == t.secs)
                            .expect("every threshold asked for");
                        out.per_status = stats.passing(j);
                        out.count = out.per_status.values().map(|s| s.count).sum();
                    }
                    _ => {
                        out.per_status = t.per_status;
                        out.count = t.taken as u64;
                    }
                }
                out
            })
            .collect();
        if keeping {
            for (out, findings) in outcomes.iter_mut().zip(kept.0) {
                out.findings = findings;
                out.streamed = 0;
            }
        }
        Ok(outcomes)
    }

    /// One fetched row into `f` (its room reused), its label columns read by `columns`;
    /// `raw_status` is the status as `f` was last read with (the next row's is most often the
    /// same: its name is then not looked up again).
    fn read_finding(
        f: &mut Finding,
        raw_status: &mut String,
        source: &Source,
        columns: &mut LabelColumns,
        row: &tokio_postgres::Row,
    ) {
        f.order_id.clear();
        f.order_id.push_str(row.get::<_, &str>(0));
        let raw = row.get::<_, &str>(1);
        if *raw_status != raw {
            f.status = source.status_of(raw);
            raw.clone_into(raw_status);
        }
        f.entered_at = row.get::<_, DateTime<Utc>>(2);
        f.age_seconds = row.get(3);
        columns.read_into(&mut f.labels, |i| row.get::<_, Option<&str>>(4 + i));
        f.other_status = None;
    }
}

/// Keeps the findings (no sink given).
struct Keep(Vec<Vec<Finding>>);

impl FindingSink for Keep {
    fn findings(&mut self, rule: usize, chunk: &[Finding]) {
        self.0[rule].extend_from_slice(chunk);
    }
}

/// One check's share of the rows: those older than its threshold, up to its cap.
struct Taker {
    /// Its threshold, seconds.
    secs: f64,
    cap: usize,
    /// Rows taken so far.
    taken: usize,
    /// A row older than the threshold came past the cap: the exact totals are needed.
    over: bool,
    /// Taken, not yet handed to the sink: the first `used` (the rest is room to reuse).
    chunk: Vec<Finding>,
    used: usize,
    /// Count and oldest age per status of the rows taken (the totals when not over).
    per_status: BTreeMap<String, StatusStat>,
}

impl Taker {
    /// Takes a copy of `f`, into the room of a finding handed on before when there is one.
    fn take(&mut self, f: &Finding) {
        match self.chunk.get_mut(self.used) {
            Some(slot) => slot.clone_from(f),
            None => self.chunk.push(f.clone()),
        }
        self.used += 1;
    }

    /// Hands what it took to `sink` as check `i`'s, keeping the room.
    fn hand_on(&mut self, i: usize, sink: &mut (dyn FindingSink + Send)) {
        sink.findings(i, &self.chunk[..self.used]);
        self.used = 0;
    }
}

/// The shared rows statement's rows, shared out to the checks as they arrive.
struct SharedRows<'a> {
    first: &'a StuckCheck,
    columns: LabelColumns,
    /// The row being shared out.
    row: Finding,
    /// Its status as stored.
    raw_status: String,
    takers: Vec<Taker>,
    sink: &'a mut (dyn FindingSink + Send),
}

impl SharedRows<'_> {
    /// Hands what is left to the sink.
    fn flush(&mut self) {
        for (i, t) in self.takers.iter_mut().enumerate() {
            if t.used > 0 {
                t.hand_on(i, self.sink);
            }
        }
    }
}

impl RowSink for SharedRows<'_> {
    fn row(&mut self, row: tokio_postgres::Row) {
        // Oldest first: a check takes a prefix, the rows older than its threshold.
        let age: f64 = row.get(3);
        if !self.takers.iter().any(|t| age > t.secs) {
            return;
        }
        let f = &mut self.row;
        StuckCheck::read_finding(
            f,
            &mut self.raw_status,
            &self.first.source,
            &mut self.columns,
            &row,
        );
        for (i, t) in self.takers.iter_mut().enumerate() {
            if f.age_seconds <= t.secs {
                continue;
            }
            if t.taken == t.cap {
                t.over = true;
                continue;
            }
            t.taken += 1;
            // Oldest first: the first of a status carries its oldest age.
            match t.per_status.get_mut(&*f.status) {
                Some(s) => s.count += 1,
                None => {
                    t.per_status.insert(
                        f.status.to_string(),
                        StatusStat {
                            count: 1,
                            oldest_age_seconds: f.age_seconds,
                        },
                    );
                }
            }
            t.take(f);
            if t.used == CHUNK {
                t.hand_on(i, self.sink);
            }
        }
    }

    fn need_second(&self) -> bool {
        self.takers.iter().any(|t| t.over)
    }
}

/// What the statements `checks` share are bound with (the daemon's and `explain`'s).
pub struct SharedPlan {
    /// Every threshold once, seconds, longest first (the order of the totals' buckets).
    pub thresholds: Vec<f64>,
    /// The lowest threshold: the rows statement's and the totals' scan.
    pub lowest: f64,
    /// Rows asked for: one past the largest cap, to tell whether a check is capped.
    pub limit: i64,
}

impl SharedPlan {
    /// The plan of `checks` (at least one).
    pub fn of(checks: &[&StuckCheck]) -> SharedPlan {
        let mut thresholds: Vec<f64> = checks.iter().map(|c| c.older_than.as_secs_f64()).collect();
        thresholds.sort_by(|a, b| b.total_cmp(a));
        thresholds.dedup();
        let lowest = *thresholds.last().expect("a threshold");
        let cap = checks.iter().map(|c| c.max_findings).max().unwrap_or(0);
        SharedPlan {
            thresholds,
            lowest,
            limit: cap as i64 + 1,
        }
    }
}

/// The exact totals of a shared scan: per status, per bucket of thresholds (see
/// `ModelSql::stuck_stats`), the count and the oldest age.
struct StuckStats(BTreeMap<String, BTreeMap<i32, StatusStat>>);

impl StuckStats {
    fn read(source: &Source, rows: &[tokio_postgres::Row]) -> StuckStats {
        let mut by_status: BTreeMap<String, BTreeMap<i32, StatusStat>> = BTreeMap::new();
        for row in rows {
            // Two stored values may read as one status (a code map): their sum, the older.
            let e = by_status
                .entry(source.from_db(row.get(0)))
                .or_default()
                .entry(row.get(1))
                .or_insert(StatusStat {
                    count: 0,
                    oldest_age_seconds: 0.0,
                });
            e.count += row.get::<_, i64>(2) as u64;
            e.oldest_age_seconds = e.oldest_age_seconds.max(row.get(3));
        }
        StuckStats(by_status)
    }

    /// Per status, the rows that pass threshold `j` (longest first, from 0): those in the
    /// buckets up to `j`.
    fn passing(&self, j: usize) -> BTreeMap<String, StatusStat> {
        self.0
            .iter()
            .filter_map(|(status, buckets)| {
                let mut stat = StatusStat {
                    count: 0,
                    oldest_age_seconds: 0.0,
                };
                for (_, b) in buckets.range(..=j as i32) {
                    stat.count += b.count;
                    stat.oldest_age_seconds = stat.oldest_age_seconds.max(b.oldest_age_seconds);
                }
                (stat.count > 0).then(|| (status.clone(), stat))
            })
            .collect()
    }
}
