//! `orderwatch explain`: asks PostgreSQL how it would run every rule's SQL, and says in plain
//! words which rule would read a whole table, with the `CREATE INDEX` that fixes it.
//!
//! Each statement is planned with the parameters the rule really binds, with sequential scans
//! discouraged (`enable_seqscan = off`): on a small or freshly loaded table the planner prefers
//! a Seq Scan anyway, so the question asked is "can an index serve this query at all", which is
//! what decides the cost once the table is large. A Seq Scan left in that plan means no index
//! can. Each statement is also planned exactly as the daemon runs it (its transaction's
//! settings, sequential scans allowed): that plan is printed beside the verdict, so what
//! `explain` shows is what runs.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::config::{Loaded, RuleKind};
use crate::engine::StartError;
use crate::rule::Check;
use crate::source::ModelKind;
use crate::source::{Source, SourceError};

/// One statement's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The rule (or `gauges` for a source's per-status gauge query).
    pub rule: String,
    /// The database.
    pub source: String,
    /// Which of the rule's statements.
    pub purpose: String,
    /// Uses indexes only (or has no table query).
    pub ok: bool,
    /// Tables read whole, with the plan's filter.
    pub seq_scans: Vec<SeqScan>,
    /// Indexes the plan uses.
    pub indexes: Vec<String>,
    /// The plan's total cost (with sequential scans discouraged).
    pub cost: Option<f64>,
    /// The statement that adds the missing index, when it can be derived.
    pub fix: Option<String>,
    /// Plain words.
    pub note: String,
    /// The planner's error, if planning failed.
    pub error: Option<String>,
    /// The plan the daemon runs (its own settings, sequential scans allowed), one line:
    /// nodes outermost first, with their index or table and the planner's row estimate.
    pub runs: Option<String>,
    /// The other rules this statement serves (same source, statuses and schedule: one
    /// statement a cycle for all of them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
}

impl Verdict {
    /// Whose statement: `rule NAME (SOURCE)`, or `source NAME` for its gauge query.
    pub fn who(&self) -> String {
        if self.rule == "gauges" {
            format!("source {}", self.source)
        } else {
            format!("rule {} ({})", self.rule, self.source)
        }
    }
}

/// A table the plan reads whole.
#[derive(Debug, Clone, Serialize)]
pub struct SeqScan {
    /// `schema.table`.
    pub relation: String,
    /// The filter applied to every row, as the planner prints it.
    pub filter: Option<String>,
}

/// A statement to plan, with what fixes it if it scans.
struct Planned {
    rule: String,
    source: Arc<Source>,
    purpose: &'static str,
    sql: Stmt,
    params: Params,
    fix: Fix,
    /// Other rules served by the statement.
    shared_with: Vec<String>,
}

/// Which statement: one of the source's model, built once its columns are known, or a
/// rule's own.
enum Stmt {
    Gauges,
    Stuck,
    StuckStats,
    Candidates,
    Lookup,
    /// A status log's incremental read.
    LogRead,
    /// A status log's read of whole orders by id.
    LogById,
    Custom(String),
}

/// The parameters the rule binds.
enum Params {
    /// `$1` statuses, `$2` seconds, `$3` limit.
    Stuck(Vec<String>, f64, i64),
    /// `$1` statuses, `$2` seconds.
    StuckStats(Vec<String>, f64, Vec<f64>),
    /// `$1` status, `$2` seconds, `$3` cursor time, `$4` cursor id, `$5` has cursor, `$6` page.
    Candidates(String, f64, i64),
    /// `$1` ids of the id column's type.
    Lookup,
    /// `$1` limit.
    Limit(i64),
    /// `$1` terminal statuses.
    Terminal(Vec<String>),
    /// `$1` the floor of an incremental read (set when planned).
    Floor,
}

/// How to fix a scan of this statement.
enum Fix {
    /// An index on the model's (status, entered_at) (and for a history table, its id too).
    StatusTime,
    /// An index on the model's id column.
    Id,
    /// An index on the log's time column (reading new rows by time).
    Time,
    /// A custom query: only the user knows its columns.
    Custom,
}

/// Plans every statement of the rules named in `only` (all when empty) and of every source's
/// gauge query, in config order.
pub async fn explain(loaded: &Loaded, only: &[String]) -> Result<Vec<Verdict>, StartError> {
    let (sources, rules) = crate::engine::build_parts(loaded, false)?;
    // In order: statements to plan, and verdicts known without planning.
    let mut planned: Vec<Result<Planned, Verdict>> = Vec::new();
    if only.is_empty() {
        for s in sources.values() {
            if let ModelKind::History { .. } = s.model.kind {
                // The daemon keeps a status log's state: these two are what it reads.
                planned.push(Ok(Planned {
                    rule: "status log".into(),
                    source: s.clone(),
                    purpose: "new rows (the daemon's steady read)",
                    sql: Stmt::LogRead,
                    params: Params::Floor,
                    fix: Fix::Time,
                    shared_with: Vec::new(),
                }));
                planned.push(Ok(Planned {
                    rule: "status log".into(),
                    source: s.clone(),
                    purpose: "whole orders by id (rows committed late)",
                    sql: Stmt::LogById,
                    params: Params::Lookup,
                    fix: Fix::Id,
                    shared_with: Vec::new(),
                }));
            } else if s.gauges {
                planned.push(Ok(Planned {
                    rule: "gauges".into(),
                    source: s.clone(),
                    purpose: "per-status gauges",
                    sql: Stmt::Gauges,
                    params: Params::Terminal(s.to_db(&s.terminal_statuses)),
                    fix: Fix::StatusTime,
                    shared_with: Vec::new(),
                }));
            }
        }
    }
    // Rules that share their statements are planned once, under the first of them.
    for group in crate::rule::share_groups(&rules)
        .iter()
        .filter(|g| only.is_empty() || g.iter().any(|r| only.contains(&r.name)))
    {
        let rule = &group[0];
        let shared_with: Vec<String> = group[1..].iter().map(|r| r.name.clone()).collect();
        let cfg = loaded
            .rules
            .iter()
            .map(|(_, c)| c)
            .find(|c| c.name.value == rule.name)
            .expect("every rule comes from the config");
        let secs = cfg.older_than().as_secs_f64();
        let source = sources.get(&rule.source);
        match (&rule.check, source) {
            (Check::Stuck(_), Some(s)) => {
                // As the daemon runs them for the group: rows at the lowest threshold, one past
                // the largest cap (to know whether it capped); totals for every threshold.
                let checks: Vec<&crate::rule::StuckCheck> = group
                    .iter()
                    .filter_map(|r| match &r.check {
                        Check::Stuck(c) => Some(c),
                        _ => None,
                    })
                    .collect();
                let crate::rule::SharedPlan {
                    thresholds,
                    lowest,
                    limit,
                } = crate::rule::SharedPlan::of(&checks);
                planned.push(Ok(Planned {
                    rule: rule.name.clone(),
                    source: s.clone(),
                    purpose: "stuck orders",
                    sql: Stmt::Stuck,
                    params: Params::Stuck(s.to_db(&cfg.statuses()), lowest, limit),
                    fix: Fix::StatusTime,
                    shared_with: shared_with.clone(),
                }));
                planned.push(Ok(Planned {
                    rule: rule.name.clone(),
                    source: s.clone(),
                    purpose: "exact totals (run only when the rows were capped)",
                    sql: Stmt::StuckStats,
                    params: Params::StuckStats(s.to_db(&cfg.statuses()), lowest, thresholds),
                    fix: Fix::StatusTime,
                    shared_with,
                }));
            }
            (Check::Missing(c), Some(s)) => {
                planned.push(Ok(Planned {
                    rule: rule.name.clone(),
                    source: s.clone(),
                    purpose: "candidates",
                    sql: Stmt::Candidates,
                    params: Params::Candidates(
                        s.to_db(&cfg.statuses())
                            .first()
                            .cloned()
                            .unwrap_or_default(),
                        secs,
                        cfg.batch_size as i64,
                    ),
                    fix: Fix::StatusTime,
                    shared_with: Vec::new(),
                }));
                if let Some(other) = sources.get(c.other_name()) {
                    planned.push(Ok(Planned {
                        rule: rule.name.clone(),
                        source: other.clone(),
                        purpose: "lookup in the other database",
                        sql: Stmt::Lookup,
                        params: Params::Lookup,
                        fix: Fix::Id,
                        shared_with: Vec::new(),
                    }));
                }
            }
            (Check::Sql(c), Some(s)) => planned.push(Ok(Planned {
                rule: rule.name.clone(),
                source: s.clone(),
                purpose: "custom query",
                sql: Stmt::Custom(c.sql.clone()),
                params: Params::Limit(cfg.max_findings as i64),
                fix: Fix::Custom,
                shared_with: Vec::new(),
            })),
            _ => planned.push(Err(Verdict {
                rule: rule.name.clone(),
                source: rule.source.clone(),
                purpose: match rule.kind {
                    RuleKind::SlowQueries => "pg_stat_activity".into(),
                    _ => "HTTP metrics".into(),
                },
                ok: true,
                seq_scans: Vec::new(),
                indexes: Vec::new(),
                cost: None,
                fix: None,
                note: "no table query".into(),
                error: None,
                runs: None,
                shared_with: Vec::new(),
            })),
        }
    }
    let mut verdicts = Vec::new();
    for p in planned {
        verdicts.push(match p {
            Ok(p) => plan(p).await,
            Err(v) => v,
        });
    }
    Ok(verdicts)
}

/// The text of `p`'s statement.
async fn statement(p: &Planned) -> Result<(String, bool), SourceError> {
    if let Stmt::Custom(sql) = &p.sql {
        return Ok((sql.clone(), false));
    }
    let m = p.source.model_sql().await?;
    let log = m.history.as_ref();
    let none = || SourceError::Config {
        source_name: p.source.name.clone(),
        detail: "no such statement for this order model".into(),
    };
    Ok(match &p.sql {
        Stmt::Gauges => (m.gauges.clone().ok_or_else(none)?, false),
        Stmt::Stuck => match &p.params {
            Params::Stuck(statuses, ..) => (m.stuck_for(statuses.len()).to_string(), false),
            _ => (m.stuck.clone(), false),
        },
        Stmt::StuckStats => (m.stuck_stats.clone(), false),
        Stmt::Candidates => (m.candidates.clone(), false),
        Stmt::Lookup => (m.lookup.clone(), false),
        Stmt::LogRead => {
            let log = log.ok_or_else(none)?;
            (log.read.clone(), log.serial)
        }
        Stmt::LogById => (log.ok_or_else(none)?.refetch.clone(), false),
        Stmt::Custom(_) => unreachable!("handled above"),
    })
}

async fn plan(p: Planned) -> Verdict {
    let floor = DateTime::<Utc>::from_timestamp(-2_208_988_800, 0).expect("1900-01-01");
    let recent = Utc::now() - chrono::Duration::minutes(5);
    let planned = |as_run: bool| {
        let p = &p;
        async move {
            let (sql, serial) = statement(p).await?;
            let s = &p.source;
            match &p.params {
                Params::Stuck(st, secs, limit) => s.explain(&sql, &[st, secs, limit], as_run).await,
                Params::StuckStats(st, secs, thresholds) => {
                    s.explain(&sql, &[st, secs, thresholds], as_run).await
                }
                Params::Candidates(status, secs, page) => {
                    let (id, after) = (String::new(), false);
                    s.explain(&sql, &[status, secs, &floor, &id, &after, page], as_run)
                        .await
                }
                Params::Limit(limit) => s.explain(&sql, &[limit], as_run).await,
                Params::Terminal(t) => s.explain(&sql, &[t], as_run).await,
                Params::Lookup => lookup(s, &sql, as_run).await,
                Params::Floor if serial => s.explain(&sql, &[&i64::MAX], as_run).await,
                Params::Floor => s.explain(&sql, &[&recent], as_run).await,
            }
        }
    };
    let result = planned(false).await;
    let runs = planned(true)
        .await
        .ok()
        .map(|plan| summary(&plan[0]["Plan"]));
    let mut v = Verdict {
        rule: p.rule.clone(),
        source: p.source.name.clone(),
        purpose: p.purpose.into(),
        ok: false,
        seq_scans: Vec::new(),
        indexes: Vec::new(),
        cost: None,
        fix: None,
        note: String::new(),
        error: None,
        runs,
        shared_with: p.shared_with.clone(),
    };
    let plan = match result {
        Ok(plan) => plan,
        Err(e) => {
            v.note = "cannot plan".into();
            v.error = Some(e.to_string());
            return v;
        }
    };
    let root = &plan[0]["Plan"];
    v.cost = root["Total Cost"].as_f64();
    walk(root, &mut v.seq_scans, &mut v.indexes);
    v.indexes.sort();
    v.indexes.dedup();
    v.ok = v.seq_scans.is_empty();
    if v.ok {
        v.note = if v.indexes.is_empty() {
            "reads no table".into()
        } else {
            format!("index scan on {}", v.indexes.join(", "))
        };
    } else {
        let mut tables: Vec<&str> = v.seq_scans.iter().map(|s| s.relation.as_str()).collect();
        tables.dedup();
        // The cost of a plan with a disabled Seq Scan carries the planner's penalty: meaningless.
        v.cost = None;
        v.note = format!("scans the whole table {}", tables.join(", "));
        v.fix = fix(&p.source, &p.fix);
        if v.fix.is_none() {
            v.note.push_str(
                " (a custom query: add an index on the columns its filter below compares)",
            );
        }
    }
    v
}

/// One line for a plan: its nodes outermost first (`>` down a single child, `[a; b]` for
/// several), each with its index or table and the planner's row estimate.
fn summary(node: &Value) -> String {
    let mut out = node["Node Type"].as_str().unwrap_or("?").to_string();
    if let Some(i) = node["Index Name"].as_str() {
        out.push_str(&format!(" using {i}"));
    }
    if let Some(r) = node["Relation Name"].as_str() {
        out.push_str(&format!(" on {r}"));
    }
    if let Some(n) = node["Plan Rows"].as_f64() {
        out.push_str(&format!(" ({n:.0} rows)"));
    }
    let children: Vec<String> = node["Plans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(summary)
        .collect();
    match children.len() {
        0 => out,
        1 => format!("{out} > {}", children[0]),
        _ => format!("{out} > [{}]", children.join("; ")),
    }
}

/// The lookup binds an array of the id column's own type; one id that matches nothing.
async fn lookup(source: &Source, sql: &str, as_run: bool) -> Result<Value, SourceError> {
    // `$1` is text[] cast to the id column's type; "0" is a valid id of every type we take
    // but uuid, whose cast would fail: a zero uuid then.
    let zero = if source.model_sql().await?.id_integer {
        "0"
    } else {
        "00000000-0000-0000-0000-000000000000"
    };
    let ids = vec![zero.to_string()];
    source.explain(sql, &[&ids], as_run).await
}

/// Collects Seq Scans (with their table and filter) and the indexes of a plan tree.
fn walk(node: &Value, scans: &mut Vec<SeqScan>, indexes: &mut Vec<String>) {
    if node["Node Type"] == "Seq Scan" {
        let table = node["Relation Name"].as_str().unwrap_or("?");
        let relation = match node["Schema"].as_str() {
            Some(schema) => format!("{schema}.{table}"),
            None => table.to_string(),
        };
        scans.push(SeqScan {
            relation,
            filter: node["Filter"].as_str().map(str::to_string),
        });
    }
    if let Some(i) = node["Index Name"].as_str() {
        indexes.push(i.to_string());
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        walk(child, scans, indexes);
    }
}

/// The `CREATE INDEX` for a statement of `source`'s order model; `None` for custom queries.
fn fix(source: &Source, fix: &Fix) -> Option<String> {
    let m = &source.model;
    let table = match &m.kind {
        ModelKind::Table(t) | ModelKind::History { table: t, .. } => t,
        ModelKind::Query(_) => return None,
    };
    let create = |cols: &[&str]| {
        let name = format!("{}_{}_idx", table.replace('.', "_"), cols.join("_"));
        let q = |i: &str| {
            i.split('.')
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(".")
        };
        let cols: Vec<String> = cols.iter().map(|c| q(c)).collect();
        format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({});",
            q(&name),
            q(table),
            cols.join(", ")
        )
    };
    match (fix, &m.kind) {
        (Fix::Custom, _) => None,
        (Fix::Id, ModelKind::History { .. }) | (Fix::StatusTime, ModelKind::History { .. }) => {
            // The latest-row anti-join needs (id, entered_at); the filter (status, entered_at).
            let mut both = create(&[&m.status, &m.entered_at]);
            both.push('\n');
            both.push_str(&create(&[&m.id, &m.entered_at]));
            Some(both)
        }
        (Fix::Time, _) => Some(create(&[&m.entered_at])),
        (Fix::Id, _) => Some(create(&[&m.id])),
        (Fix::StatusTime, _) => Some(create(&[&m.status, &m.entered_at])),
    }
}

/// `explain`'s exit code: 0 every statement uses indexes, 1 some scan a whole table, 2 some
/// could not be planned.
pub fn exit_code(verdicts: &[Verdict]) -> u8 {
    if verdicts.iter().any(|v| v.error.is_some()) {
        2
    } else if verdicts.iter().any(|v| !v.ok) {
        1
    } else {
        0
    }
}

/// Plain words, one line per statement, fixes indented below.
pub fn table(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    for v in verdicts {
        let tag = match (&v.error, v.ok) {
            (Some(_), _) => "ERROR",
            (None, true) => "ok   ",
            (None, false) => "SCAN ",
        };
        let cost = v
            .cost
            .map(|c| format!(" (cost {c:.1})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{tag} {}, {}: {}{cost}\n",
            v.who(),
            v.purpose,
            v.note
        ));
        if let Some(e) = &v.error {
            out.push_str(&format!("        {e}\n"));
        }
        if let Some(r) = &v.runs {
            out.push_str(&format!("        runs: {r}\n"));
        }
        if !v.shared_with.is_empty() {
            out.push_str(&format!(
                "        shared with rules {} (one statement a cycle for all)\n",
                v.shared_with.join(", ")
            ));
        }
        for s in &v.seq_scans {
            match &s.filter {
                Some(f) => {
                    out.push_str(&format!("        Seq Scan on {} filter {f}\n", s.relation))
                }
                None => out.push_str(&format!("        Seq Scan on {}\n", s.relation)),
            }
        }
        if let Some(f) = &v.fix {
            for line in f.lines() {
                out.push_str(&format!("        fix: {line}\n"));
            }
        }
    }
    let mut scanning: BTreeSet<String> = BTreeSet::new();
    let mut fixes: BTreeSet<&str> = BTreeSet::new();
    for v in verdicts.iter().filter(|v| !v.ok && v.error.is_none()) {
        scanning.insert(if v.rule == "gauges" {
            format!("the gauges of {}", v.source)
        } else {
            v.rule.clone()
        });
        fixes.extend(v.fix.iter().flat_map(|f| f.lines()));
    }
    if scanning.is_empty() {
        out.push_str("Every query is served by an index.\n");
    } else {
        out.push_str(&format!(
            "\n{} would read a whole table on every evaluation: their cost grows with the table, \
             not with the stuck orders. Run on the database (CONCURRENTLY does not block writes):\n",
            scanning.into_iter().collect::<Vec<_>>().join(", ")
        ));
        for f in fixes {
            out.push_str(&format!("  {f}\n"));
        }
    }
    out
}
