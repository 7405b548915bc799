//! `kind: slow_queries`: active queries in the source's `pg_stat_activity` running longer than
//! `older_than` (default 5 s, the seed's "a database step over 5 s"), with analytic work left
//! out by application-name or user patterns. The query text is shortened and its literals
//! removed before it goes anywhere, so no personal data can leak through a WHERE clause.
//!
//! Seeing other sessions' queries needs a superuser or the `pg_read_all_stats` role.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;

use super::finding::{Outcome, Signal};
use crate::config::RuleConfig;
use crate::source::{Source, SourceError};

/// Characters of normalized query text kept.
pub const MAX_QUERY_CHARS: usize = 200;

/// Running queries of this database (the source's, by `datname`) over the threshold.
/// `query_id` (PostgreSQL 14+, filled when `compute_query_id` is on, as it is with
/// pg_stat_statements loaded) is read through `to_jsonb` so older servers answer too.
const ACTIVITY_SQL: &str = "SELECT a.pid::text, EXTRACT(EPOCH FROM (now() - a.query_start))::float8, a.query_start, \
     coalesce(a.application_name, ''), coalesce(a.usename::text, ''), coalesce(left(a.query, 4000), ''), \
     to_jsonb(a) ->> 'query_id' \
     FROM pg_stat_activity a \
     WHERE a.state = 'active' AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() \
       AND a.datname = current_database() \
       AND a.query_start < now() - make_interval(secs => $1::float8) \
     ORDER BY a.query_start";

/// The schema pg_stat_statements is installed in, in this database (none: not installed).
const STATEMENTS_SCHEMA_SQL: &str = "SELECT n.nspname::text FROM pg_extension e \
     JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'";

/// Cumulative calls and execution time per normalized query and role, in this database,
/// without the query texts (`pg_stat_statements(false)` does not read its text file). The time
/// column is `total_exec_time` from PostgreSQL 13 on, `total_time` before: read through
/// `to_jsonb` so either answers.
fn statements_sql(schema: &str) -> String {
    let schema = format!("\"{}\"", schema.replace('"', "\"\""));
    format!(
        "SELECT s.queryid::text, coalesce(r.rolname::text, s.userid::text), sum(s.calls)::float8, \
         sum(coalesce(to_jsonb(s) ->> 'total_exec_time', to_jsonb(s) ->> 'total_time')::float8)::float8 \
         FROM {schema}.pg_stat_statements(false) s LEFT JOIN pg_roles r ON r.oid = s.userid \
         WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND s.queryid IS NOT NULL \
         GROUP BY 1, 2"
    )
}

/// The texts of the given query ids (only those found slow), in this database.
fn texts_sql(schema: &str) -> String {
    let schema = format!("\"{}\"", schema.replace('"', "\"\""));
    format!(
        "SELECT s.queryid::text, left(min(s.query), 4000) \
         FROM {schema}.pg_stat_statements(true) s \
         WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND s.queryid::text = ANY($1::text[]) \
         GROUP BY 1"
    )
}

/// pg_dump's data dump (`COPY … TO stdout`): long by nature, never an incident.
/// The texts are cut (`track_activity_query_size`, 4000 characters here), so a wide table's
/// `TO stdout` may be gone: any COPY that does not say `FROM STDIN` counts.
fn is_dump(text: &str) -> bool {
    static COPY: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)^\s*COPY\b").expect("static regex"));
    static LOAD: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)\bFROM\s+STDIN\b").expect("static regex"));
    COPY.is_match(text) && !LOAD.is_match(text)
}

/// How long a slow verdict stands while the query is not called again (a one-off migration,
/// a nightly job): then it resolves.
const VERDICT_TTL: Duration = Duration::from_secs(15 * 60);

/// How many (queryid, role) pairs seen running under an excluded application are remembered.
const MAX_ANALYTIC_KEYS: usize = 10_000;

/// How long such a pair is remembered while it is not in pg_stat_statements.
const ANALYTIC_TTL: Duration = Duration::from_secs(3600);

/// One query's cumulative counters at a sample.
#[derive(Debug, Clone, Copy)]
struct Totals {
    calls: f64,
    exec_ms: f64,
}

/// The previous pg_stat_statements sample: (queryid, role) → totals.
type Snapshot = HashMap<(String, String), Totals>;

/// What the statements view needs from one evaluation to the next.
#[derive(Debug, Default)]
struct StatementsState {
    /// The last sample, to take the means of the interval since.
    previous: Option<Snapshot>,
    /// Queries judged slow in the last interval they were called in, and when: kept while
    /// they are not called (an interval without calls has no mean to judge), for at most
    /// [`VERDICT_TTL`].
    slow: HashMap<(String, String), (Signal, std::time::Instant)>,
    /// Queries seen running under an excluded application (analytic work: pg_dump, BI):
    /// pg_stat_statements has no application, so their means are left out too. Keyed by
    /// query id and role, and by the text's fingerprint and role (before PostgreSQL 14,
    /// `pg_stat_activity` has no query id).
    analytic: HashMap<(String, String), std::time::Instant>,
    /// The last error reading the view, logged once until it changes.
    error: Option<String>,
}

/// The compiled check.
#[derive(Debug)]
pub struct SlowQueriesCheck {
    /// The threshold.
    pub older_than: Duration,
    exclude_applications: Vec<Regex>,
    exclude_users: Vec<Regex>,
    max_findings: usize,
    source: Arc<Source>,
    /// pg_stat_statements' state between evaluations.
    statements: Mutex<StatementsState>,
    /// Which views the last evaluation read: pg_stat_statements only when it could be read.
    pub used: Mutex<&'static str>,
}

/// What a rule reads when pg_stat_statements is there, and when it is not.
pub const WITH_STATEMENTS: &str = "pg_stat_statements + pg_stat_activity";
/// What a rule reads without pg_stat_statements.
pub const ACTIVITY_ONLY: &str = "pg_stat_activity";

/// A query's text without literals or comments, whitespace collapsed (not shortened).
fn strip_literals(q: &str) -> String {
    static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"(?s)/\*.*?\*/", " "), // block comments
            (r"--[^\n]*", " "),      // line comments
            (
                r"(?s)\$([A-Za-z_][A-Za-z0-9_]*)?\$.*?\$([A-Za-z_][A-Za-z0-9_]*)?\$",
                "?",
            ), // dollar quotes
            (r"(?i)(?:\b[eb])?'(?:[^'\\]|''|\\.)*'", "?"), // string literals (E'', B'', '')
            (r"\$\d+\b", "?"),       // pg_stat_statements' parameters
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
    s.trim().to_string()
}

fn shorten(s: &str) -> String {
    if s.chars().count() > MAX_QUERY_CHARS {
        format!("{}…", s.chars().take(MAX_QUERY_CHARS).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A query's text without literals or comments, whitespace collapsed, shortened:
/// `SELECT * FROM orders WHERE email = 'anna@example.com' AND id > 42`
/// becomes `SELECT * FROM orders WHERE email = ? AND id > ?`.
pub fn normalize_query(q: &str) -> String {
    shorten(&strip_literals(q))
}

/// A stable id for a query text when the server gives none (no `query_id`): FNV-1a of the
/// text without literals, so the same query run again is the same alert.
pub fn fingerprint(q: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in strip_literals(q).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("text:{h:016x}")
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
            statements: Mutex::new(StatementsState::default()),
            used: Mutex::new(ACTIVITY_ONLY),
        }
    }

    /// The SQL it runs on `pg_stat_activity` (and, when installed, on pg_stat_statements,
    /// see [`statements_sql`]).
    pub fn sql(&self) -> &'static str {
        ACTIVITY_SQL
    }

    fn excluded_user(&self, user: &str) -> bool {
        self.exclude_users.iter().any(|re| re.is_match(user))
    }

    /// Queries whose mean time over the interval since the last sample is over the
    /// threshold, from pg_stat_statements: `None` when the extension is not installed in this
    /// database; `Some((signals, partial))`, `partial` true for a first sample (which judges
    /// nothing) and when the view cannot be read (not preloaded, no privilege, a timeout:
    /// logged, and the last verdicts stand).
    async fn finished(&self) -> Result<Option<(Vec<Signal>, bool)>, SourceError> {
        let schema = self.source.query(STATEMENTS_SCHEMA_SQL, &[]).await?;
        let Some(schema) = schema.first().map(|r| r.get::<_, String>(0)) else {
            *self.statements.lock().expect("statements lock") = StatementsState::default();
            *self.used.lock().expect("used lock") = ACTIVITY_ONLY;
            return Ok(None);
        };
        let rows = match self.source.query(&statements_sql(&schema), &[]).await {
            Ok(rows) => rows,
            // Installed but not preloaded ("pg_stat_statements must be loaded via
            // shared_preload_libraries"), no privilege, a timeout: the running ones are still
            // watched, and what the view found slow stands (unread is not fast): the outcome
            // is partial. The next read is a baseline. A connection failure fails the rule as
            // any query would.
            Err(SourceError::Query { detail, .. }) => {
                let mut st = self.statements.lock().expect("statements lock");
                if st.error.as_deref() != Some(detail.as_str()) {
                    tracing::warn!(source = %self.source.name, error = %detail,
                        "pg_stat_statements cannot be read; watching running queries only");
                }
                st.error = Some(detail);
                st.previous = None;
                let kept = st.slow.values().map(|(s, _)| s.clone()).collect();
                *self.used.lock().expect("used lock") = ACTIVITY_ONLY;
                return Ok(Some((kept, true)));
            }
            Err(e) => return Err(e),
        };
        *self.used.lock().expect("used lock") = WITH_STATEMENTS;
        let mut now: Snapshot = HashMap::with_capacity(rows.len());
        for r in &rows {
            now.insert(
                (r.get::<_, String>(0), r.get::<_, String>(1)),
                Totals {
                    calls: r.get(2),
                    exec_ms: r.get(3),
                },
            );
        }
        let threshold_ms = self.older_than.as_secs_f64() * 1000.0;
        let mut slow: Vec<((String, String), f64, f64)> = Vec::new();
        let mut kept: Vec<Signal> = Vec::new();
        let baseline;
        {
            let mut st = self.statements.lock().expect("statements lock");
            st.error = None;
            let previous = st.previous.replace(now.clone());
            baseline = previous.is_none();
            if let Some(previous) = previous {
                let zero = Totals {
                    calls: 0.0,
                    exec_ms: 0.0,
                };
                let mut still = HashMap::new();
                // Analytic keys of queries not in the view for an hour are forgotten (one still
                // running is not in it yet: a query is counted when it ends).
                st.analytic
                    .retain(|k, at| now.contains_key(k) || at.elapsed() < ANALYTIC_TTL);
                for (key, t) in &now {
                    if self.excluded_user(&key.1) || st.analytic.contains_key(key) {
                        continue;
                    }
                    // A query first seen now ran only in this interval. Counters that went
                    // down were reset (pg_stat_statements_reset, an eviction): since then, as
                    // Prometheus takes a counter reset.
                    let p = previous
                        .get(key)
                        .copied()
                        .filter(|p| p.calls <= t.calls && p.exec_ms <= t.exec_ms)
                        .unwrap_or(zero);
                    let (calls, exec_ms) = (t.calls - p.calls, t.exec_ms - p.exec_ms);
                    if calls < 1.0 {
                        // Not called: the last verdict stands, for a while.
                        if let Some((sig, at)) = st.slow.get(key)
                            && at.elapsed() < VERDICT_TTL
                        {
                            kept.push(sig.clone());
                            still.insert(key.clone(), (sig.clone(), *at));
                        }
                        continue;
                    }
                    if exec_ms / calls > threshold_ms {
                        slow.push((key.clone(), exec_ms / calls, calls));
                    }
                }
                st.slow = still;
            }
        }
        if slow.is_empty() {
            return Ok(Some((kept, baseline)));
        }
        // The texts of the slow ones only. Without them (the text file cannot be read in
        // time) the queries are still reported, by id.
        let ids: Vec<String> = slow.iter().map(|(k, _, _)| k.0.clone()).collect();
        let texts: HashMap<String, String> =
            match self.source.query(&texts_sql(&schema), &[&ids]).await {
                Ok(rows) => rows
                    .iter()
                    .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
                    .collect(),
                Err(e) => {
                    tracing::warn!(source = %self.source.name, error = %e,
                        "pg_stat_statements: the slow queries' texts cannot be read");
                    HashMap::new()
                }
            };
        let mut out = kept;
        let mut st = self.statements.lock().expect("statements lock");
        for (key, mean_ms, calls) in slow {
            let text = texts.get(&key.0).map_or("", String::as_str);
            if is_dump(text)
                || st
                    .analytic
                    .contains_key(&(fingerprint(text), key.1.clone()))
            {
                continue;
            }
            let sig = Signal {
                key: format!("{}/{}", key.0, key.1),
                value: Some(mean_ms / 1000.0),
                since: None,
                labels: BTreeMap::from([
                    ("queryid".to_string(), key.0.clone()),
                    ("user".to_string(), key.1.clone()),
                ]),
                details: BTreeMap::from([
                    ("query".to_string(), normalize_query(text)),
                    ("calls".to_string(), format!("{calls}")),
                    (
                        "mean_seconds".to_string(),
                        format!("{:.3}", mean_ms / 1000.0),
                    ),
                    ("seen_by".to_string(), "pg_stat_statements".to_string()),
                ]),
            };
            st.slow
                .insert(key, (sig.clone(), std::time::Instant::now()));
            out.push(sig);
        }
        Ok(Some((out, baseline)))
    }

    /// Queries still running over the threshold, one signal per query id and role (the
    /// longest-running of them).
    async fn running(&self) -> Result<Vec<Signal>, SourceError> {
        let rows = self
            .source
            .query(ACTIVITY_SQL, &[&self.older_than.as_secs_f64()])
            .await?;
        let mut out: Vec<Signal> = Vec::new();
        for r in &rows {
            let (app, user): (String, String) = (r.get(3), r.get(4));
            let text: String = r.get(5);
            let queryid = r
                .get::<_, Option<String>>(6)
                .filter(|q| q != "0")
                .unwrap_or_else(|| fingerprint(&text));
            if self.exclude_applications.iter().any(|re| re.is_match(&app)) {
                // Analytic work: its pg_stat_statements means are left out from now on.
                let mut st = self.statements.lock().expect("statements lock");
                if st.analytic.len() >= MAX_ANALYTIC_KEYS {
                    st.analytic.clear();
                }
                let seen = std::time::Instant::now();
                st.analytic.insert((fingerprint(&text), user.clone()), seen);
                st.analytic.insert((queryid, user), seen);
                continue;
            }
            if self.excluded_user(&user) || is_dump(&text) {
                continue;
            }
            let key = format!("{queryid}/{user}");
            // Oldest first: the first row of a key is its longest-running query.
            if out.iter().any(|s| s.key == key) {
                continue;
            }
            out.push(Signal {
                key,
                value: Some(r.get(1)),
                since: r.get::<_, Option<DateTime<Utc>>>(2),
                labels: BTreeMap::from([
                    ("queryid".to_string(), queryid),
                    ("user".to_string(), user),
                ]),
                details: BTreeMap::from([
                    ("pid".to_string(), r.get::<_, String>(0)),
                    ("application_name".to_string(), app),
                    ("query".to_string(), normalize_query(&text)),
                    ("seen_by".to_string(), "pg_stat_activity".to_string()),
                ]),
            });
        }
        Ok(out)
    }

    /// Reads pg_stat_statements (when installed) and `pg_stat_activity`; one signal per slow,
    /// non-analytic query and role (key `queryid/user`), whether it finished within the
    /// interval (mean over the interval above the threshold) or is still running.
    pub async fn evaluate(&self) -> Result<Outcome, SourceError> {
        // Running ones first: an excluded application's query ids are learnt before the
        // statements are judged.
        let mut signals = self.running().await?;
        let finished = self.finished().await?;
        let partial = finished.as_ref().is_some_and(|(_, baseline)| *baseline);
        for f in finished.into_iter().flat_map(|(s, _)| s) {
            match signals.iter_mut().find(|s| s.key == f.key) {
                Some(s) => {
                    // Running now and slow on average: one alert, valued by the running one
                    // (its start, its pid); the interval's mean beside it.
                    s.details.insert(
                        "seen_by".into(),
                        "pg_stat_activity, pg_stat_statements".into(),
                    );
                    for k in ["calls", "mean_seconds"] {
                        if let Some(v) = f.details.get(k) {
                            s.details.insert(k.into(), v.clone());
                        }
                    }
                }
                None => signals.push(f),
            }
        }
        // Slowest first.
        signals.sort_by(|a, b| {
            b.value
                .partial_cmp(&a.value)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut out = Outcome {
            count: signals.len() as u64,
            partial,
            ..Outcome::default()
        };
        signals.truncate(self.max_findings);
        out.signals = signals;
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
