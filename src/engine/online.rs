//! `check`'s online half: each source reached with the daemon's own session settings, its
//! order model checked against the columns PostgreSQL reports.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::health::{null_rows, null_time_counts, read_gauges};
use super::shared::{StartError, build_parts};
use crate::config::Loaded;
use crate::human::human_duration;
use crate::source::{ModelKind, Source, Unjudgeable};

/// One line of `check`'s online report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Works.
    Ok,
    /// Works, but should be changed (e.g. the role may write).
    Warn,
    /// Does not work.
    Fail,
}

/// `file:line:col: ` for a config location.
fn at(file: &std::path::Path, loc: &serde_saphyr::Location) -> String {
    format!("{}:{}:{}: ", file.display(), loc.line(), loc.column())
}

/// Every column the order model names that its table lacks, each at the config location that
/// names it, in one go (PostgreSQL would name only the first); the table itself when it is not
/// there. Empty when all are there (and for a query model, whose columns its query makes).
async fn missing_columns(name: &str, s: &Source, loaded: &Loaded) -> Vec<(Verdict, String)> {
    let Some(cfg) = loaded.config.sources.get(name).map(|c| &c.value.orders) else {
        return Vec::new();
    };
    let Some(table) = cfg.table.as_ref().or(cfg.history_table.as_ref()) else {
        return Vec::new();
    };
    let file = &loaded.path;
    let quoted = crate::source::quote(&table.value);
    let columns: Vec<String> = match s
        .query(
            "SELECT a.attname::text FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&quoted],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => return vec![(Verdict::Fail, format!("source {name}: {e}"))],
    };
    if columns.is_empty() {
        return vec![(
            Verdict::Fail,
            format!(
                "{}source {name}: table {} does not exist (or the role may not see it)",
                at(file, &table.referenced),
                table.value
            ),
        )];
    }
    let named = [
        Some(("id", &cfg.id)),
        Some(("status", &cfg.status)),
        Some(("entered_at", &cfg.entered_at)),
        cfg.tiebreak.as_ref().map(|t| ("tiebreak", t)),
    ]
    .into_iter()
    .flatten()
    .chain(cfg.labels.iter().map(|l| ("labels", l)));
    let mut lines = Vec::new();
    for (key, column) in named {
        if columns.contains(&column.value) {
            continue;
        }
        let near = crate::human::closest(&column.value, columns.iter().map(String::as_str))
            .map(|c| format!("did you mean {c}? "))
            .unwrap_or_default();
        lines.push((
            Verdict::Fail,
            format!(
                "{}source {name}: {key}: column {:?} is not in {} ({near}its columns: {})",
                at(file, &column.referenced),
                column.value,
                table.value,
                columns.join(", ")
            ),
        ));
    }
    lines
}

/// The statuses a rule on source `name` names that no order holds (without a `statuses`
/// list nothing else catches `awaiting_paymnet` or `Paid`): a warning each, at the rule's
/// `status`, with the closest value the table holds.
fn unseen_statuses(name: &str, held: &[String], loaded: &Loaded) -> Vec<(Verdict, String)> {
    let mut lines = Vec::new();
    for (file, r) in &loaded.rules {
        let (Some(status), true) = (&r.status, r.source.value == name) else {
            continue;
        };
        for wanted in status.value.to_vec() {
            if held.contains(&wanted) {
                continue;
            }
            let near = crate::human::closest(&wanted, held.iter().map(String::as_str))
                .map(|c| format!("; the closest value it holds: {c}"))
                .unwrap_or_else(|| format!("; it holds: {}", held.join(", ")));
            lines.push((
                Verdict::Warn,
                format!(
                    "{}rule {}: status {wanted:?} occurs in no order of source {name}: the \
                     rule cannot fire until one is in it (a typo?){near}",
                    at(file, &status.referenced),
                    r.name.value
                ),
            ));
        }
    }
    lines
}

/// `check`'s lines about one source's order model: the columns as PostgreSQL types them,
/// statuses outside `statuses`, a `timestamp` column that looks like another zone's wall
/// clock, orders that cannot be judged, and whether the statements prepare.
async fn check_model(name: &str, s: &Source, loaded: &Loaded) -> Vec<(Verdict, String)> {
    let missing = missing_columns(name, s, loaded).await;
    if !missing.is_empty() {
        return missing;
    }
    let mut lines = Vec::new();
    let sql = match s.model_sql().await {
        Ok(sql) => sql,
        Err(e) => return vec![(Verdict::Fail, e.to_string())],
    };
    // The values the table holds (at most 1 000 distinct, by a loose index scan): against
    // `statuses` when listed, else against the statuses the rules name.
    match s.query(&sql.distinct_statuses, &[]).await {
        Ok(rows) => {
            let held: Vec<String> = rows
                .iter()
                .map(|r| s.from_db(r.get::<_, String>(0)))
                .collect();
            match &s.statuses {
                Some(known) => {
                    let unknown: Vec<&String> =
                        held.iter().filter(|v| !known.contains(*v)).collect();
                    if !unknown.is_empty() {
                        lines.push((
                            Verdict::Warn,
                            format!(
                                "source {name}: the orders hold statuses not in `statuses`: {} \
                                 (exported as status=\"other\")",
                                unknown
                                    .iter()
                                    .map(|v| format!("{:?}", crate::report::printable(v)))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                }
                None => lines.extend(unseen_statuses(name, &held, loaded)),
            }
        }
        Err(e) => lines.push((Verdict::Fail, format!("source {name}: statuses: {e}"))),
    }
    if sql.time == crate::source::TimeKind::Local && s.time_zone.is_none() {
        match s.query(&sql.newest, &[]).await {
            Ok(rows) => {
                let newest: Option<DateTime<Utc>> = rows.first().and_then(|r| r.get(0));
                let db_now = Utc::now();
                if let Some(ahead) = newest.map(|n| (n - db_now).num_seconds())
                    && ahead >= 20 * 60
                {
                    // The newest row is at most "now" in its own zone, so the zone is at
                    // least that far ahead; most offsets are whole hours.
                    let q = (ahead + 3599) / 3600 * 3600;
                    lines.push((
                        Verdict::Warn,
                        format!(
                            "source {name}: {} is a timestamp without time zone read as UTC, and its \
                             newest value lies {} ahead of now: it looks like wall-clock time at \
                             UTC+{:02}:{:02} or so. Set time_zone under sources.{name} (e.g. \
                             time_zone: Europe/Moscow), or every age is off by that much",
                            s.model.entered_at,
                            human_duration(Duration::from_secs(ahead as u64)),
                            q / 3600,
                            q % 3600 / 60
                        ),
                    ));
                }
            }
            Err(e) => lines.push((Verdict::Fail, format!("source {name}: newest time: {e}"))),
        }
    }
    let mut unjudgeable: Vec<(String, Unjudgeable, i64)> = Vec::new();
    match &sql.history {
        Some(hs) => {
            for (what, stmt) in [("incremental read", &hs.read), ("read by id", &hs.refetch)] {
                if let Err(e) = s.prepare(stmt).await {
                    lines.push((
                        Verdict::Fail,
                        format!("source {name}: status log {what}: {e}"),
                    ));
                }
            }
            // What the daemon's start-up read will keep, read now.
            let nulls = null_rows(s, hs).await;
            match (s.read_history().await, nulls) {
                (Ok(h), Ok((nulls, timed))) => {
                    lines.push((
                        Verdict::Ok,
                        format!(
                            "source {name}: status log read: {} orders not in a terminal status",
                            h.len()
                        ),
                    ));
                    unjudgeable.extend(h.unjudgeable());
                    unjudgeable.extend(null_time_counts(&nulls, |id| {
                        h.contains(id) || !timed.contains(id)
                    }));
                }
                (Err(e), _) | (_, Err(e)) => {
                    lines.push((Verdict::Fail, format!("source {name}: status log: {e}")))
                }
            }
        }
        None => {
            if sql.gauges.is_some() {
                match read_gauges(s).await {
                    Ok(g) => {
                        lines.push((
                            Verdict::Ok,
                            format!("source {name}: per-status gauge query ran"),
                        ));
                        unjudgeable.extend(g.unjudgeable);
                    }
                    Err(e) => {
                        lines.push((Verdict::Fail, format!("source {name}: gauge query: {e}")))
                    }
                }
            }
        }
    }
    for (status, why, n) in unjudgeable {
        let what = match why {
            Unjudgeable::NullTime => format!("no {}", s.model.entered_at),
            Unjudgeable::FutureTime => format!("a {} in the future", s.model.entered_at),
            Unjudgeable::Tie => {
                "latest rows at the same time with different statuses (set orders.tiebreak)"
                    .to_string()
            }
        };
        lines.push((
            Verdict::Warn,
            format!(
                "source {name}: {n} orders in {:?} have {what}: no rule can judge them \
                 (orderwatch_orders_unjudgeable{{reason=\"{}\"}})",
                crate::report::printable(&s.from_db(status)),
                why.as_str()
            ),
        ));
    }
    lines
}

/// `check` without `--offline`: reaches every source and prepares every rule's SQL, so missing
/// tables, columns or permissions show up before the daemon runs. One line per check.
pub async fn check_online(loaded: &Loaded) -> Result<Vec<(Verdict, String)>, StartError> {
    let (sources, rules) = build_parts(loaded, false)?;
    let mut lines = Vec::new();
    let verdict = |ok: bool| if ok { Verdict::Ok } else { Verdict::Fail };
    for (name, s) in &sources {
        match s.query("SELECT 1", &[]).await {
            Ok(_) => lines.push((
                Verdict::Ok,
                format!(
                    "source {name} ({}) reachable, statements run read-only",
                    s.target()
                ),
            )),
            Err(e) => {
                lines.push((Verdict::Fail, e.to_string()));
                continue;
            }
        }
        let tables = match &s.model.kind {
            ModelKind::Table(t) => vec![t.clone()],
            ModelKind::History { table, .. } => vec![table.clone()],
            ModelKind::Query(_) => vec![],
        };
        for t in tables {
            match s.may_write(&t).await {
                Ok(true) => lines.push((
                    Verdict::Warn,
                    format!(
                        "source {name}: the role may write {t} (INSERT/UPDATE/DELETE/TRUNCATE); \
                         orderwatch needs SELECT only (README: a least-privilege role)"
                    ),
                )),
                Ok(false) => {}
                Err(e) => lines.push((Verdict::Fail, format!("source {name}: {e}"))),
            }
        }
        lines.extend(check_model(name, s, loaded).await);
    }
    for r in &rules {
        let Some(source) = sources.get(&r.source) else {
            // http_errors reads Prometheus or the services, not a database.
            let what = r.sql().await.unwrap_or_default();
            lines.push((Verdict::Ok, format!("rule {}: reads {what}", r.name)));
            continue;
        };
        let result = match r.sql().await {
            Ok(sql) => source.prepare(&sql).await,
            Err(e) => Err(e),
        };
        lines.push((
            verdict(result.is_ok()),
            match result {
                Ok(()) => format!("rule {}: SQL prepared on {}", r.name, r.source),
                Err(e) => format!("rule {}: {e}", r.name),
            },
        ));
    }
    Ok(lines)
}

/// `check`'s template check (offline too): every order rule's annotation templates rendered
/// against a sample order of its source, an undefined value an error. The daemon renders one
/// empty, so `{{ channel }}` written for `{{ labels.channel }}` would leave every alert's
/// field blank. One line per problem, `file:line:col: …` at the template.
pub fn check_templates(loaded: &Loaded) -> Result<Vec<String>, StartError> {
    let (sources, rules) = build_parts(loaded, false)?;
    let mut problems = Vec::new();
    for rule in &rules {
        if !matches!(
            rule.kind,
            crate::config::RuleKind::Stuck | crate::config::RuleKind::Missing
        ) {
            continue;
        }
        let labels = sources
            .get(&rule.source)
            .map(|s| s.model.labels.clone())
            .unwrap_or_default();
        let ctx = crate::rule::observe::sample_context(rule, &labels);
        let Some((file, config)) = loaded.rules.iter().find(|(_, r)| r.name.value == rule.name)
        else {
            continue;
        };
        for (key, error) in rule.annotations.strict_errors(&ctx) {
            // A link template comes from the main file's `links`, unless the rule set its own.
            let (file, at) = match (config.annotations.get(&key), loaded.config.links.get(&key)) {
                (Some(t), Some(l)) if t.referenced == l.referenced => (&loaded.path, l.referenced),
                (Some(t), _) => (file, t.referenced),
                (None, _) => (file, config.name.referenced),
            };
            let known = if labels.is_empty() {
                "no label columns".to_string()
            } else {
                format!("labels.{}", labels.join(", labels."))
            };
            problems.push(format!(
                "{}:{}:{}: rule {}: annotation {key}: {error} (a sample order has order_id, \
                 status, age, age_seconds, entered_at, older_than, rule, source, severity, \
                 other_source, other_status and {known})",
                file.display(),
                at.line(),
                at.column(),
                rule.name
            ));
        }
    }
    Ok(problems)
}
