//! "Where is order X now, and what happened to it?": one order across every source — its
//! status and time in status, a status log's history, the rules it matches now, the
//! lost-message verdict of each `missing` rule, its alerts (state, since, silenced) and the
//! configured links. `orderwatch order` and `GET /api/v1/orders/{id}` both answer from here.
//!
//! Each source is asked once, by id (an index lookup; see `Source::order`), the sources at
//! the same time; everything else comes from what the daemon already holds. Only order ids,
//! statuses, times and allow-listed label columns appear.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::AlertBook;
use crate::config::RuleKind;
use crate::notify::mute::silence::Silence;
use crate::rule::{Check, Rule};
use crate::source::{OrderFound, Source};

/// Everything known about one order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderReport {
    /// The id asked for.
    pub order_id: String,
    /// Per source, in name order.
    pub sources: Vec<SourceView>,
    /// The order rules (`stuck`, `missing`) watching the status the order is in now, in a
    /// source that holds it.
    pub rules: Vec<RuleView>,
    /// The order's alerts, by rule; `None` when asked without the daemon's alert state.
    pub alerts: Option<Vec<AlertView>>,
    /// The configured `links`, rendered for this order.
    pub links: BTreeMap<String, String>,
}

/// One source's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceView {
    /// The source's name.
    pub source: String,
    /// The order as the source holds it; `None` when it does not (or could not be asked).
    pub order: Option<OrderFound>,
    /// How long the order has been in its status, seconds.
    pub in_status_seconds: Option<f64>,
    /// Why the source could not be asked (unreachable, timeout); never "not there".
    pub error: Option<String>,
}

/// One order rule, judged for this order now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleView {
    /// The rule's name.
    pub rule: String,
    /// `stuck` or `missing`.
    pub kind: RuleKind,
    /// The rule's source.
    pub source: String,
    /// The statuses it watches.
    pub statuses: Vec<String>,
    /// Its threshold, seconds.
    pub older_than_seconds: u64,
    /// The order is in a watched status, past the threshold (for `missing`: and not found as
    /// expected in the other source).
    pub matches: bool,
    /// For `missing`: the verdict between the two sources.
    pub verdict: Option<String>,
}

/// One alert about this order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertView {
    /// The rule.
    pub rule: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// Since when it is active.
    pub since: DateTime<Utc>,
    /// When it resolved, if it did.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The ids of the active silences muting it.
    pub silenced_by: Vec<String>,
}

/// The order's path: each status it was in (a status log's runs, else its current status)
/// and the seconds it spent there, up to `now` for the last; empty when its time is unknown.
pub fn time_in_each(o: &OrderFound, now: DateTime<Utc>) -> Vec<(&str, i64)> {
    let runs: Vec<(&str, DateTime<Utc>)> = match o.entered_at {
        None => Vec::new(),
        Some(at) if o.history.is_empty() => vec![(o.status.as_str(), at)],
        Some(_) => o.history.iter().map(|(s, at)| (s.as_str(), *at)).collect(),
    };
    runs.iter()
        .enumerate()
        .map(|(i, (status, at))| {
            let end = runs.get(i + 1).map_or(now, |(_, next)| *next);
            (*status, (end - *at).num_seconds().max(0))
        })
        .collect()
}

/// Why an order's time in status can be unknown.
pub const TIME_UNKNOWN: &str =
    "its rows are older than the status log's lookback, or its time is empty";

/// Asks every source about `id` at the same time and judges the order rules.
pub async fn order(
    sources: &BTreeMap<String, Arc<Source>>,
    rules: &[Arc<Rule>],
    links: Option<&crate::rule::template::Annotations>,
    id: &str,
) -> OrderReport {
    let now = Utc::now();
    let asks = sources.iter().map(|(name, s)| async move {
        let (order, error) = match s.order(id).await {
            Ok(o) => (o, None),
            Err(e) => (None, Some(e.to_string())),
        };
        SourceView {
            source: name.clone(),
            in_status_seconds: order
                .as_ref()
                .and_then(|o| o.entered_at)
                .map(|at| (now - at).num_milliseconds() as f64 / 1000.0),
            order,
            error,
        }
    });
    let views: Vec<SourceView> = futures_util::future::join_all(asks).await;
    let by_name: BTreeMap<&str, &SourceView> =
        views.iter().map(|v| (v.source.as_str(), v)).collect();
    let mut judged = Vec::new();
    for r in rules {
        let Some(view) = by_name.get(r.source.as_str()) else {
            continue;
        };
        let Some(found) = &view.order else { continue };
        let statuses = r.statuses().to_vec();
        // Only the rules watching the status the order is in now: the others say nothing
        // about it.
        if !statuses.contains(&found.status) {
            continue;
        }
        let past = view.in_status_seconds.unwrap_or(0.0) >= r.older_than().as_secs_f64();
        let (matches, verdict) = match &r.check {
            Check::Stuck(_) => (past, None),
            Check::Missing(m) => {
                let other = by_name.get(m.other());
                let (lost, verdict) = match other {
                    Some(v) if v.error.is_some() => (
                        false,
                        format!(
                            "{} could not be asked: {}",
                            m.other(),
                            v.error.as_deref().unwrap_or_default()
                        ),
                    ),
                    Some(SourceView { order: Some(o), .. }) => match &m.expect_status {
                        Some(ok) if !ok.contains(&o.status) => (
                            true,
                            format!(
                                "in {} as {}, expected {}",
                                m.other(),
                                o.status,
                                ok.join(" or ")
                            ),
                        ),
                        _ => (false, format!("in {} as {}", m.other(), o.status)),
                    },
                    _ => (true, format!("not in {}", m.other())),
                };
                (past && lost, Some(verdict))
            }
            _ => continue,
        };
        judged.push(RuleView {
            rule: r.name.clone(),
            kind: r.kind,
            source: r.source.clone(),
            statuses,
            older_than_seconds: r.older_than().as_secs(),
            matches,
            verdict,
        });
    }
    let links = match (
        links,
        views.iter().find_map(|v| v.order.as_ref().map(|o| (v, o))),
    ) {
        (Some(l), Some((v, o))) => l.render(&minijinja::context! {
            order_id => id, status => o.status, source => v.source, labels => o.labels,
        }),
        _ => BTreeMap::new(),
    };
    OrderReport {
        order_id: id.to_string(),
        sources: views,
        rules: judged,
        alerts: None,
        links,
    }
}

/// The order's alerts in `book`, each with the active silences muting it.
pub fn alerts(
    book: &AlertBook,
    rules: &[Arc<Rule>],
    silences: &[Silence],
    id: &str,
) -> Vec<AlertView> {
    let now = Utc::now();
    rules
        .iter()
        .filter(|r| matches!(r.kind, RuleKind::Stuck | RuleKind::Missing))
        .filter_map(|r| book.get(&r.name, id))
        .map(|a| AlertView {
            rule: a.rule.to_string(),
            state: a.state.as_str().to_string(),
            since: a.active_at,
            resolved_at: a.resolved_at,
            silenced_by: silences
                .iter()
                .filter(|s| s.is_active(now) && s.matches(&a.labels))
                .map(|s| s.id.clone())
                .collect(),
        })
        .collect()
}

/// `report` as people on call read it in a terminal (every value passed through
/// `report::printable`: an id or a label cannot drive the terminal).
pub fn text(report: &OrderReport, now: DateTime<Utc>) -> String {
    use std::fmt::Write as _;
    let p = crate::report::printable;
    let dur =
        |secs: f64| crate::human::human_duration(std::time::Duration::from_secs_f64(secs.max(0.0)));
    let mut out = format!("{}\n", p(&report.order_id));
    for v in &report.sources {
        match (&v.order, &v.error) {
            (Some(o), _) => {
                let _ = match o.entered_at {
                    Some(at) => write!(
                        out,
                        "  {:<10} {} for {} (since {} UTC)",
                        p(&v.source),
                        p(&o.status),
                        dur(v.in_status_seconds.unwrap_or(0.0)),
                        at.format("%Y-%m-%d %H:%M")
                    ),
                    None => write!(
                        out,
                        "  {:<10} {} (since when unknown: {TIME_UNKNOWN})",
                        p(&v.source),
                        p(&o.status)
                    ),
                };
                for (k, val) in &o.labels {
                    let _ = write!(out, "  {}: {}", p(k), p(val));
                }
                out.push('\n');
                if !o.history.is_empty() {
                    let runs: Vec<String> = time_in_each(o, now)
                        .into_iter()
                        .map(|(s, secs)| format!("{} {}", p(s), dur(secs as f64)))
                        .collect();
                    let _ = writeln!(out, "  {:<10} history: {}", "", runs.join(" → "));
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "  {:<10} could not be asked: {}", p(&v.source), p(e));
            }
            (None, None) => {
                let _ = writeln!(out, "  {:<10} not here", p(&v.source));
            }
        }
    }
    if !report.rules.is_empty() {
        out.push_str("  rules:\n");
        for r in &report.rules {
            let _ = writeln!(
                out,
                "    {:<32} {:<8} {} over {}{}",
                p(&r.rule),
                if r.matches { "MATCHES" } else { "no" },
                p(&r.statuses.join(",")),
                dur(r.older_than_seconds as f64),
                r.verdict
                    .as_deref()
                    .map(|v| format!(": {}", p(v)))
                    .unwrap_or_default()
            );
        }
    }
    match &report.alerts {
        None => out.push_str("  alerts: unknown (the daemon was not asked)\n"),
        Some(a) if a.is_empty() => out.push_str("  alerts: none\n"),
        Some(alerts) => {
            out.push_str("  alerts:\n");
            for a in alerts {
                let when = match a.resolved_at {
                    Some(at) => format!("resolved {} ago", dur((now - at).num_seconds() as f64)),
                    None => format!("for {}", dur((now - a.since).num_seconds() as f64)),
                };
                let silenced = if a.silenced_by.is_empty() {
                    String::new()
                } else {
                    format!(", silenced by {}", p(&a.silenced_by.join(",")))
                };
                let _ = writeln!(out, "    {:<32} {} {when}{silenced}", p(&a.rule), a.state);
            }
        }
    }
    for (k, v) in &report.links {
        let _ = writeln!(out, "  {}: {}", p(k), p(v));
    }
    out
}
