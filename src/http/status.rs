//! The status page at `/`: what is stuck now, grouped by rule, each order with its age and
//! links; source and rule health. One self-contained HTML document (inline CSS, no scripts, no
//! external assets) that reloads itself every 30 s and reads on a phone. Everything shown comes
//! from alert labels and annotations (already free of personal data) and is HTML-escaped; only
//! http(s) URLs become links.
//!
//! [`render`] takes a snapshot of [`Shared`] and hands it to [`render_view`], a pure function
//! over plain data, so the page can be tested without a daemon.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

// A rule's overflow alert ("N more orders") is shown as a line, not as an order.
use crate::alert::{Alert, AlertState};
use crate::engine::{RuleStatus, Shared, SourceStatus, TREND_WINDOW};
use crate::human::human_duration;
use crate::notify::mute::silence::Silence;
use crate::notify::template::escape_html as esc;
use crate::rule::observe::OVERFLOW_KEY;

/// How often the page reloads itself, in seconds.
const REFRESH_SECS: u32 = 30;
/// Orders shown per rule (firing first, oldest first); the rest are counted and linked.
const MAX_PER_RULE: usize = 50;

/// `GET /`.
pub async fn page(State(s): State<Arc<Shared>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        crate::blocking::off_worker(|| render(&s, Utc::now())),
    )
        .into_response()
}

/// What the page shows: the daemon's state at one moment.
pub struct View<'a> {
    /// Every alert in the book (resolved ones are only counted).
    pub alerts: Vec<&'a Alert>,
    /// Silences (only those active at `now` mark alerts).
    pub silences: &'a [Silence],
    /// Alerts muted by the config's `inhibit_rules`, by (rule, key).
    pub inhibited: &'a crate::notify::mute::inhibit::Inhibited,
    /// Source health by name.
    pub sources: &'a BTreeMap<String, SourceStatus>,
    /// Rule health by name.
    pub rules: &'a BTreeMap<String, RuleStatus>,
    /// Each rule's count over the last hours, oldest first.
    pub trends: &'a BTreeMap<String, Vec<(DateTime<Utc>, u64)>>,
}

/// The whole page for the daemon's current state.
pub fn render(shared: &Shared, now: DateTime<Utc>) -> String {
    // Small things are copied so that only the book's read lock is held while rendering.
    let silences = shared.silences.read().expect("silences lock").clone();
    let sources = shared.source_status.read().expect("status lock").clone();
    let rules = shared.rule_status.read().expect("status lock").clone();
    let trends = shared.trends.snapshot();
    let book = shared.book.read().expect("book lock");
    let inhibited = shared.inhibitor.inhibited(book.all());
    render_view(
        &View {
            alerts: book.all().collect(),
            silences: &silences,
            inhibited: &inhibited,
            sources: &sources,
            rules: &rules,
            trends: &trends,
        },
        now,
    )
}

/// Only http(s) URLs become links (no `javascript:`, no `data:`, no scheme-relative `//host`).
pub(super) fn safe_url(u: &str) -> bool {
    let l = u.trim_start().to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

pub(super) fn age(now: DateTime<Utc>, since: DateTime<Utc>) -> String {
    human_duration((now - since).to_std().unwrap_or_default())
}

/// `s` as a URL query value: every byte but the unreserved ones percent-encoded (so the
/// result is also safe inside an HTML attribute).
pub(super) fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `<a>` for an http(s) URL, nothing otherwise.
pub(super) fn link(h: &mut String, url: &str, text: &str) {
    if safe_url(url) {
        let _ = write!(
            h,
            "<a href=\"{}\" rel=\"noopener noreferrer\">{}</a>",
            esc(url),
            esc(text)
        );
    }
}

/// `5 firing · 2 pending` with the zero parts left out.
fn counts(parts: &[(usize, &str)]) -> String {
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, w)| format!("{n} {w}"))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The order search box (`GET orders?id=…`, relative, so it works behind a path prefix).
pub(super) const SEARCH: &str = "<form class=\"search\" action=\"orders\" method=\"get\" \
     role=\"search\"><input name=\"id\" type=\"search\" placeholder=\"Order id, e.g. JW-000123\" \
     aria-label=\"Order id\" required maxlength=\"200\"><button type=\"submit\">Find order</button></form>";

pub(super) const STYLE: &str = "
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d232a;background:#f4f6f8;overflow-wrap:anywhere}
header{background:#1d232a;color:#fff;padding:12px 16px}
header h1{margin:0;font-size:18px}
header p{margin:4px 0 0;color:#c9d1d9;font-size:14px}
form.search{display:flex;gap:6px;margin:8px 0 0;max-width:520px}
form.search input{flex:1;min-width:0;font-size:16px;padding:6px 8px;border:0;border-radius:6px}
form.search button{font-size:15px;padding:6px 12px;border:0;border-radius:6px;background:#2563eb;color:#fff}
main{max-width:1100px;margin:0 auto;padding:12px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08);margin:0 0 12px;padding:12px 14px}
section.problems{border-left:5px solid #c62828}
section.problems ul{margin:0;padding-left:18px}
h2{font-size:16px;margin:0 0 4px;display:flex;flex-wrap:wrap;gap:6px;align-items:center}
.sub{margin:0 0 8px;display:flex;flex-wrap:wrap;gap:4px 12px}
.summary{display:flex;flex-wrap:wrap;gap:8px;margin:0 0 12px}
.tile{flex:1 1 140px;background:#fff;border-radius:8px;padding:10px 12px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.tile b{display:block;font-size:24px}
.tile.bad b{color:#c62828}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:14px;font-weight:600;color:#fff;background:#6b7785;white-space:nowrap}
.badge.critical,.badge.firing,.badge.down,.badge.err{background:#c62828}
.badge.warning,.badge.pending{background:#b45309}.badge.info{background:#2563eb}
.badge.ok,.badge.up{background:#2e7d32}
ul.orders{list-style:none;margin:0;padding:0}
ul.orders li{border-top:1px solid #e5e8eb;padding:8px 0}
ul.orders li.pending{border-left:3px solid #b45309;padding-left:8px}
ul.orders li.silenced{opacity:.65}
.row{display:flex;flex-wrap:wrap;gap:2px 10px;align-items:baseline}
.row a{padding:2px 0}
.id{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-weight:600}
.age{margin-left:auto;font-weight:600;white-space:nowrap}
.muted{color:#5c6670;font-size:14px}
.desc{color:#39424c;font-size:14px;margin-top:2px}
a{color:#1d4ed8}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-top:1px solid #e5e8eb;vertical-align:top}
th{color:#5c6670;font-weight:600;border-top:none}
td.error{color:#c62828}
.empty{color:#2e7d32;font-weight:600;margin:0}
svg.trend{display:block;width:100%;max-width:180px;height:24px;fill:none;stroke:#2563eb;stroke-width:2}
nav{display:flex;flex-wrap:wrap;gap:6px;margin:0 0 12px}
nav a{background:#fff;border-radius:14px;padding:4px 10px;text-decoration:none;box-shadow:0 1px 2px rgba(0,0,0,.08);font-size:14px}
@media (max-width:600px){
body{font-size:14px}main{padding:8px}section{padding:10px}
.tile{padding:6px 10px}.tile b{font-size:20px}
table,tbody{display:block}
thead{display:none}
tr{display:flex;flex-wrap:wrap;gap:2px 12px;align-items:baseline;border-top:1px solid #e5e8eb;padding:6px 0}
td{border:none;padding:1px 0}
td.error{flex-basis:100%}
td:empty{display:none}
td[data-label]::before{content:attr(data-label) ': ';color:#5c6670}
}
";

/// The whole page for `view` at `now`.
pub fn render_view(view: &View, now: DateTime<Utc>) -> String {
    let active = |a: &&&Alert| a.state != AlertState::Resolved;
    let mut grouped: BTreeMap<&str, Vec<&Alert>> = BTreeMap::new();
    for a in view.alerts.iter().filter(active) {
        grouped.entry(&*a.rule).or_default().push(a);
    }
    // Most severe first, then the rule whose oldest alert is oldest.
    let rank = |sev: Option<&str>| match sev {
        Some("critical") => 0,
        Some("warning") => 1,
        Some("info") => 2,
        _ => 3,
    };
    let mut by_rule: Vec<(&str, Vec<&Alert>)> = grouped.into_iter().collect();
    by_rule.sort_by_key(|(rule, alerts)| {
        (
            alerts
                .iter()
                .map(|a| rank(a.labels.get("severity")))
                .min()
                .unwrap_or(3),
            alerts
                .iter()
                .map(|a| a.entered_at.unwrap_or(a.starts_at))
                .min(),
            *rule,
        )
    });
    let in_state = |s: AlertState| view.alerts.iter().filter(|a| a.state == s).count();
    let (firing, pending, resolved) = (
        in_state(AlertState::Firing),
        in_state(AlertState::Pending),
        in_state(AlertState::Resolved),
    );
    // Why an alert is not notified: silenced, or inhibited by another that fires.
    let muted = |a: &Alert| -> Option<&'static str> {
        if view
            .silences
            .iter()
            .any(|s| s.is_active(now) && s.matches(&a.labels))
        {
            Some("silenced")
        } else if a.state == AlertState::Firing
            && view.inhibited.contains(&(a.rule.clone(), a.key.clone()))
        {
            Some("inhibited")
        } else {
            None
        }
    };
    let count_muted = |why: &str| {
        view.alerts
            .iter()
            .filter(active)
            .filter(|a| muted(a) == Some(why))
            .count()
    };
    let (silenced, inhibited) = (count_muted("silenced"), count_muted("inhibited"));
    let down: Vec<_> = view
        .sources
        .iter()
        .filter(|(_, s)| s.up == Some(false))
        .collect();
    let failing: Vec<_> = view.rules.values().filter(|r| r.health == "err").collect();

    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>{}orderwatch</title><style>{STYLE}</style></head><body>\
         <header><h1>orderwatch</h1><p>updated {} UTC · reloads every {REFRESH_SECS}&nbsp;s</p>\
         {SEARCH}</header><main>",
        if firing > 0 {
            format!("({firing}) ")
        } else {
            String::new()
        },
        now.format("%Y-%m-%d %H:%M:%S"),
    );
    let tile = |h: &mut String, n: usize, what: &str, bad: bool| {
        let class = if bad && n > 0 { "tile bad" } else { "tile" };
        let _ = write!(h, "<div class=\"{class}\"><b>{n}</b>{what}</div>");
    };
    h.push_str("<div class=\"summary\">");
    tile(&mut h, firing, "firing", true);
    tile(&mut h, pending, "pending", false);
    tile(
        &mut h,
        down.len(),
        &format!("of {} sources down", view.sources.len()),
        true,
    );
    tile(&mut h, failing.len(), "rules failing", true);
    h.push_str("</div>");
    let extra = counts(&[
        (silenced, "silenced"),
        (inhibited, "inhibited"),
        (resolved, "resolved in the last 15 min (not shown)"),
    ]);
    if !extra.is_empty() {
        let _ = write!(h, "<p class=\"muted\">{extra}</p>");
    }

    // A source that fails leaves its alerts as they were: say so before listing them.
    if !down.is_empty() || !failing.is_empty() {
        h.push_str(
            "<section class=\"problems\"><h2>Not watching everything</h2>\
             <p class=\"muted\">Alerts fed by these are as of the last good evaluation.</p><ul>",
        );
        for (name, s) in &down {
            let _ = write!(h, "<li>source <b>{}</b> down", esc(name));
            if let Some(t) = s.failing_since {
                let _ = write!(h, " for {}", age(now, t));
            }
            if let Some(e) = &s.last_error {
                let _ = write!(h, ": <span class=\"muted\">{}</span>", esc(e));
            }
            h.push_str("</li>");
        }
        for r in &failing {
            let _ = write!(h, "<li>rule <b>{}</b> failing", esc(&r.name));
            if let Some(e) = &r.error {
                let _ = write!(h, ": <span class=\"muted\">{}</span>", esc(e));
            }
            h.push_str("</li>");
        }
        h.push_str("</ul></section>");
    }

    // An index: on a phone the rules are far apart.
    h.push_str("<nav>");
    for (rule, alerts) in &by_rule {
        let _ = write!(
            h,
            "<a href=\"#rule-{}\">{} <b>{}</b></a>",
            esc(rule),
            esc(rule),
            alerts.len()
        );
    }
    h.push_str("<a href=\"#health\">sources &amp; rules</a></nav>");
    if by_rule.is_empty() {
        h.push_str("<section><p class=\"empty\">Nothing is stuck.</p></section>");
    }

    for (rule, alerts) in by_rule {
        rule_section(&mut h, view, rule, alerts, &muted, now);
    }

    health(&mut h, view, now);
    h.push_str(
        "<p class=\"muted\">JSON: <a href=\"api/v1/alerts\">alerts</a> · \
         <a href=\"api/v1/rules\">rules</a> · <a href=\"api/v1/silences\">silences</a> · \
         <a href=\"metrics\">metrics</a></p></main></body></html>\n",
    );
    h
}

/// One rule: heading with severity, counts, the common status and runbook; then its orders.
fn rule_section(
    h: &mut String,
    view: &View,
    rule: &str,
    mut alerts: Vec<&Alert>,
    muted: &dyn Fn(&Alert) -> Option<&'static str>,
    now: DateTime<Utc>,
) {
    let overflow: Vec<&Alert> = alerts
        .iter()
        .copied()
        .filter(|a| &*a.key == OVERFLOW_KEY)
        .collect();
    alerts.retain(|a| &*a.key != OVERFLOW_KEY);
    // Firing first, then the oldest.
    alerts.sort_by_key(|a| {
        (
            a.state != AlertState::Firing,
            a.entered_at.unwrap_or(a.starts_at),
            a.key.clone(),
        )
    });
    let first = alerts.first().or(overflow.first()).copied();
    let label = |a: Option<&Alert>, k: &str| {
        a.and_then(|a| a.labels.get(k))
            .unwrap_or_default()
            .to_string()
    };
    let severity = label(first, "severity");
    // What every alert of the rule shares is said once, in the heading.
    // Annotations of the alerts shown, rendered once each (an order's are made when asked).
    let notes: Vec<BTreeMap<String, String>> = alerts
        .iter()
        .take(MAX_PER_RULE)
        .map(|a| a.annotations_at(now))
        .collect();
    let status = {
        let v = first.and_then(|a| a.labels.get("status"));
        v.filter(|v| !v.is_empty() && alerts.iter().all(|a| a.labels.get("status") == Some(v)))
            .map(str::to_string)
    };
    let runbook = {
        let v = notes.first().and_then(|n| n.get("runbook_url"));
        v.filter(|v| notes.iter().all(|n| n.get("runbook_url") == Some(v)))
            .cloned()
    };

    let n = |s: AlertState| alerts.iter().filter(|a| a.state == s).count();
    let _ = write!(h, "<section id=\"rule-{}\"><h2>{}", esc(rule), esc(rule));
    if !severity.is_empty() {
        let _ = write!(
            h,
            " <span class=\"badge {}\">{}</span>",
            esc(&severity),
            esc(&severity)
        );
    }
    h.push_str("</h2><div class=\"sub muted\">");
    let why = |w: &str| alerts.iter().filter(|a| muted(a) == Some(w)).count();
    let _ = write!(
        h,
        "<span>{}</span>",
        counts(&[
            (n(AlertState::Firing), "firing"),
            (n(AlertState::Pending), "pending"),
            (why("silenced"), "silenced"),
            (why("inhibited"), "inhibited"),
        ])
    );
    if let Some(found) = view.rules.get(rule).and_then(|r| r.count) {
        let _ = write!(h, "<span>{found} found</span>");
    }
    if let Some(st) = &status {
        let _ = write!(h, "<span>in {}</span>", esc(st));
    }
    if let Some(url) = &runbook {
        link(h, url, "runbook");
    }
    h.push_str("</div><ul class=\"orders\">");

    let more = alerts.len().saturating_sub(MAX_PER_RULE);
    for (a, notes) in alerts.into_iter().zip(&notes).take(MAX_PER_RULE) {
        let id = a.labels.get("order_id").unwrap_or(&a.key);
        let since = a.entered_at.unwrap_or(a.starts_at);
        let quiet = muted(a);
        let class = match (a.state, quiet) {
            (_, Some(_)) => "silenced",
            (AlertState::Pending, _) => "pending",
            _ => "firing",
        };
        let _ = write!(
            h,
            "<li class=\"{class}\"><div class=\"row\"><a class=\"id\" href=\"orders?id={}\">{}</a>",
            query_value(id),
            esc(id)
        );
        if a.state == AlertState::Pending {
            h.push_str("<span class=\"badge pending\">pending</span>");
        }
        if let Some(why) = quiet {
            let _ = write!(h, "<span class=\"badge silenced\">{why}</span>");
        }
        if status.is_none()
            && let Some(st) = a.labels.get("status").filter(|s| !s.is_empty())
        {
            let _ = write!(h, "<span class=\"muted\">{}</span>", esc(st));
        }
        for (k, v) in notes.iter().filter(|(k, _)| k.ends_with("_url")) {
            if k == "runbook_url" && runbook.is_some() {
                continue;
            }
            link(h, v, &k.trim_end_matches("_url").replace('_', " "));
        }
        let _ = write!(
            h,
            "<span class=\"age\" title=\"since {}\">{}</span></div>",
            since.format("%Y-%m-%d %H:%M UTC"),
            age(now, since)
        );
        if let Some(text) = notes.get("summary").or_else(|| notes.get("description")) {
            let _ = write!(h, "<div class=\"desc\">{}</div>", esc(text));
        }
        h.push_str("</li>");
    }
    if more > 0 {
        let _ = write!(
            h,
            "<li class=\"muted\">and {more} more: <a href=\"api/v1/alerts?rule={}\">all alerts of this rule</a></li>",
            esc(rule)
        );
    }
    for a in overflow {
        let text = a
            .annotation("summary")
            .unwrap_or_else(|| "more orders than are alerted individually".into());
        let _ = write!(h, "<li class=\"muted\">{}</li>", esc(&text));
    }
    h.push_str("</ul></section>");
}

/// Source and rule health: tables on a wide screen, cards on a phone.
fn health(h: &mut String, view: &View, now: DateTime<Utc>) {
    h.push_str(
        "<section id=\"health\"><h2>Sources</h2><table><thead><tr><th>source</th><th>state</th>\
         <th>failing since</th><th>last error</th></tr></thead><tbody>",
    );
    for (name, s) in view.sources {
        let (class, word) = match s.up {
            Some(true) => ("up", "up"),
            Some(false) => ("down", "down"),
            None => ("unknown", "not yet queried"),
        };
        let _ = write!(
            h,
            "<tr><td><b>{}</b> <span class=\"muted\">{}</span></td>\
             <td><span class=\"badge {class}\">{word}</span></td><td data-label=\"failing since\">{}</td>\
             <td class=\"error\" data-label=\"error\">{}</td></tr>",
            esc(name),
            esc(&s.target),
            s.failing_since
                .map(|t| format!("{} UTC ({} ago)", t.format("%Y-%m-%d %H:%M"), age(now, t)))
                .unwrap_or_default(),
            esc(s.last_error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</tbody></table></section>");

    h.push_str(
        "<section><h2>Rules</h2><table><thead><tr><th>rule</th><th>health</th>\
         <th>found</th><th>last 6 h</th><th>last evaluation</th><th>error</th></tr></thead><tbody>",
    );
    for r in view.rules.values() {
        let _ = write!(
            h,
            "<tr><td><b>{}</b> <span class=\"muted\">{} on {}</span></td>\
             <td><span class=\"badge {}\">{}</span></td><td data-label=\"found\">{}{}</td>\
             <td data-label=\"last 6 h\">{}</td>\
             <td data-label=\"last evaluation\">{}</td><td class=\"error\" data-label=\"error\">{}</td></tr>",
            esc(&r.name),
            r.kind.as_str(),
            esc(&r.source),
            esc(r.health),
            esc(r.health),
            r.count.map(|n| n.to_string()).unwrap_or_default(),
            if r.capped { " (capped)" } else { "" },
            view.trends
                .get(&r.name)
                .map(|points| sparkline(points, now))
                .unwrap_or_default(),
            r.last_evaluation
                .map(|t| format!("{} ago", age(now, t)))
                .unwrap_or_else(|| "never".into()),
            esc(r.error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</tbody></table></section>");
}

/// A rule's count over the last [`TREND_WINDOW`] as an inline SVG line (no text inside it, so
/// it scales to any width without shrinking text), with its range in words beside it.
fn sparkline(points: &[(DateTime<Utc>, u64)], now: DateTime<Utc>) -> String {
    if points.len() < 2 {
        return String::new();
    }
    let window = TREND_WINDOW.as_secs_f64();
    let start = now - chrono::Duration::from_std(TREND_WINDOW).expect("window fits");
    let top = points.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let max = top.max(1) as f64;
    let min = points.iter().map(|(_, n)| *n).min().unwrap_or(0);
    let xy: Vec<String> = points
        .iter()
        .map(|(t, n)| {
            let x = ((*t - start).num_milliseconds() as f64 / 1000.0 / window * 100.0)
                .clamp(0.0, 100.0);
            let y = 19.0 - *n as f64 / max * 18.0;
            format!("{x:.2},{y:.2}")
        })
        .collect();
    format!(
        "<svg class=\"trend\" viewBox=\"0 0 100 20\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"found over the last 6 hours: {min} to {}\"><polyline points=\"{}\" \
         vector-effect=\"non-scaling-stroke\"/></svg><span class=\"muted\">{min}–{top}</span>",
        top,
        xy.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Notes;
    use crate::config::RuleKind;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    fn alert(rule: &str, id: &str, state: AlertState, age_min: i64) -> Alert {
        let entered = now() - chrono::Duration::minutes(age_min);
        Alert {
            rule: rule.into(),
            key: id.into(),
            labels: crate::labels::Labels::from(BTreeMap::from([
                ("rule".into(), rule.into()),
                ("order_id".into(), id.into()),
                ("status".into(), "SUBMITTED".into()),
                ("severity".into(), "warning".into()),
            ])),
            notes: Notes::fixed(BTreeMap::from([(
                "summary".into(),
                format!("Order {id} waits"),
            )])),
            state,
            active_at: entered,
            starts_at: entered,
            fired_at: None,
            last_seen: now(),
            resolved_at: None,
            entered_at: Some(entered),
            interval_secs: 30,
            version: 0,
        }
    }

    fn rule_status(name: &str, error: Option<&str>) -> RuleStatus {
        RuleStatus {
            name: name.into(),
            kind: RuleKind::Stuck,
            source: "shop".into(),
            health: if error.is_some() { "err" } else { "ok" },
            last_evaluation: Some(now() - chrono::Duration::seconds(12)),
            evaluation_duration_seconds: Some(0.01),
            error: error.map(Into::into),
            failing_since: error.map(|_| now() - chrono::Duration::seconds(60)),
            count: Some(2),
            capped: false,
        }
    }

    fn page(alerts: &[Alert], silences: &[Silence], sources: &[(&str, bool)]) -> String {
        let sources = sources
            .iter()
            .map(|(n, up)| {
                let s = SourceStatus {
                    target: format!("db:5432/{n}"),
                    up: Some(*up),
                    reached: true,
                    failing_since: (!up).then(|| now() - chrono::Duration::minutes(7)),
                    last_error: (!up).then(|| "connection refused <x>".to_string()),
                    replication_lag_seconds: None,
                    stale: false,
                    over_lag: false,
                };
                (n.to_string(), s)
            })
            .collect();
        let rules = BTreeMap::from([(
            "submitted_over_1h".into(),
            rule_status("submitted_over_1h", None),
        )]);
        let inhibit: Vec<crate::config::InhibitRuleConfig> = serde_saphyr::from_str(
            "- source_matchers: ['severity=\"critical\"']\n  target_matchers: ['severity=\"warning\"']\n  equal: [order_id]\n",
        )
        .unwrap();
        let inhibited =
            crate::notify::mute::inhibit::Inhibitor::new(&inhibit).inhibited(alerts.iter());
        let trends: BTreeMap<String, Vec<(DateTime<Utc>, u64)>> = rules
            .keys()
            .map(|r: &String| {
                let at = |h: i64| now() - chrono::Duration::hours(h);
                (r.clone(), vec![(at(3), 5), (at(1), 12), (now(), 2)])
            })
            .collect();
        render_view(
            &View {
                alerts: alerts.iter().collect(),
                silences,
                inhibited: &inhibited,
                sources: &sources,
                rules: &rules,
                trends: &trends,
            },
            now(),
        )
    }

    #[test]
    fn each_rule_shows_how_its_count_moved() {
        let html = page(&[], &[], &[("shop", true)]);
        let svg = html.find("<svg class=\"trend\"").expect("a trend line");
        let line = &html[svg..];
        // 3 h ago at 5, 1 h ago at the top (12), now at 2: x across the 6 h, y from the top.
        assert!(
            line.contains("points=\"50.00,11.50 83.33,1.00 100.00,16.00\""),
            "{line}"
        );
        assert!(line.contains("<span class=\"muted\">2–12</span>"), "{line}");
        assert!(
            sparkline(&[(now(), 3)], now()).is_empty(),
            "one point is no line"
        );
    }

    #[test]
    fn rules_by_severity_then_age_and_inhibited_alerts_marked() {
        let mut crit = alert("price_calculation_slow", "JW-1", AlertState::Firing, 30);
        crit.labels.insert("severity", "critical");
        let alerts = [
            // The oldest rule, but only a warning.
            alert("submitted_over_1h", "JW-1", AlertState::Firing, 300),
            alert("submitted_over_1h", "JW-2", AlertState::Firing, 200),
            alert("approved_over_1d", "JW-7", AlertState::Firing, 100),
            crit,
        ];
        let html = page(&alerts, &[], &[("shop", true)]);
        let at = |rule: &str| html.find(&format!("<section id=\"rule-{rule}\">")).unwrap();
        assert!(at("price_calculation_slow") < at("submitted_over_1h"));
        assert!(at("submitted_over_1h") < at("approved_over_1d"));
        // JW-1's warning is muted by its critical; JW-2's is not.
        let sub = &html[at("submitted_over_1h")..at("approved_over_1d")];
        assert!(
            sub.contains(">JW-1</a><span class=\"badge silenced\">inhibited</span>"),
            "{sub}"
        );
        assert!(!sub.contains(">JW-2</a><span class=\"badge"), "{sub}");
        assert!(sub.contains("2 firing · 1 inhibited"), "{sub}");
        assert!(html.contains("1 inhibited"));
    }

    #[test]
    fn escapes_database_text_and_links_only_http() {
        let mut a = alert("submitted_over_1h", "JW-1", AlertState::Firing, 192);
        a.labels.insert("status", "<script>alert(1)</script>");
        a.set_annotation("summary", "<img src=x onerror=alert(1)>");
        a.set_annotation("evil_url", "javascript:alert(1)");
        a.set_annotation("data_url", " data:text/html,<b>x</b>");
        a.set_annotation("trace_url", "https://jaeger/search?a=1&b=\"><script>");
        a.labels.insert("severity", "<script>sev</script>");
        // A second order in another status: statuses are then shown per order.
        let b = alert("submitted_over_1h", "JW-<b>2", AlertState::Firing, 61);
        let mut c = alert("packaging_over_1d", "JW-3", AlertState::Firing, 61);
        c.labels.insert("status", "<i>PACKAGING");
        let html = page(&[a, b, c], &[], &[("shop", true)]);
        assert!(
            html.contains("<span>in &lt;i&gt;PACKAGING</span>"),
            "{html}"
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("JW-<b>"), "{html}");
        assert!(html.contains(">JW-&lt;b&gt;2<"), "{html}");
        assert!(html.contains("&lt;script&gt;sev&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("data:text"), "{html}");
        assert!(
            !html.contains(">evil<") && !html.contains(">data<"),
            "{html}"
        );
        assert!(html.contains(
            "<a href=\"https://jaeger/search?a=1&amp;b=&quot;&gt;&lt;script&gt;\" \
             rel=\"noopener noreferrer\">trace</a>"
        ));
        assert!(
            html.contains("<span class=\"age\" title=\"since 2026-11-22 08:48 UTC\">3h 12m</span>")
        );
    }

    #[test]
    fn groups_by_rule_firing_first_then_oldest_and_hides_resolved() {
        let alerts = [
            alert("submitted_over_1h", "JW-young", AlertState::Firing, 70),
            alert("submitted_over_1h", "JW-pend", AlertState::Pending, 500),
            alert("submitted_over_1h", "JW-old", AlertState::Firing, 300),
            alert("submitted_over_1h", "JW-gone", AlertState::Resolved, 900),
            alert("packaging_over_1d", "JW-pack", AlertState::Firing, 2000),
        ];
        let html = page(&alerts, &[], &[("shop", true)]);
        let pos = |s: &str| {
            html.find(s)
                .unwrap_or_else(|| panic!("{s} missing:\n{html}"))
        };
        assert!(pos("id=\"rule-packaging_over_1d\"") < pos("id=\"rule-submitted_over_1h\""));
        assert!(pos(">JW-old<") < pos(">JW-young<"));
        assert!(pos(">JW-young<") < pos(">JW-pend<"));
        assert!(html.contains("<li class=\"pending\"><div class=\"row\"><a class=\"id\" href=\"orders?id=JW-pend\">JW-pend</a><span class=\"badge pending\">pending</span>"));
        assert!(!html.contains("JW-gone"));
        assert!(html.contains("1 resolved in the last 15 min"));
        assert!(html.contains("<div class=\"tile bad\"><b>3</b>firing</div>"));
        // Every alert of the rule is SUBMITTED: said once in the heading.
        assert!(html.contains("<span>in SUBMITTED</span>"));
        assert_eq!(html.matches(">SUBMITTED<").count(), 0);
        assert!(!html.contains("Not watching everything"));
    }

    #[test]
    fn marks_silenced_alerts_and_shows_a_shared_runbook_once() {
        let mut alerts = vec![
            alert("submitted_over_1h", "JW-1", AlertState::Firing, 90),
            alert("submitted_over_1h", "JW-2", AlertState::Firing, 80),
        ];
        for a in &mut alerts {
            a.set_annotation("runbook_url", "https://wiki/runbooks/submitted");
        }
        let silence = Silence::new(
            vec!["order_id=\"JW-2\"".parse().unwrap()],
            now() - chrono::Duration::minutes(1),
            now() + chrono::Duration::hours(1),
            "calling the customer",
            "test",
        );
        let html = page(&alerts, &[silence], &[("shop", true)]);
        assert_eq!(html.matches("https://wiki/runbooks/submitted").count(), 1);
        assert!(html.contains(">runbook</a>"));
        assert_eq!(
            html.matches("<span class=\"badge silenced\">silenced</span>")
                .count(),
            1
        );
        let jw2 = html.find(">JW-2<").unwrap();
        assert!(html[jw2..].starts_with(">JW-2</a><span class=\"badge silenced\">"));
        assert!(html.contains("2 firing · 1 silenced"));
    }

    #[test]
    fn a_down_source_is_said_first_and_the_overflow_alert_is_a_line() {
        let mut over = alert("submitted_over_1h", OVERFLOW_KEY, AlertState::Firing, 61);
        over.entered_at = None;
        over.set_annotation("summary", "40 more orders match rule submitted_over_1h");
        let alerts = [
            alert("submitted_over_1h", "JW-1", AlertState::Firing, 90),
            over,
        ];
        let html = page(&alerts, &[], &[("mes", false), ("shop", true)]);
        let problems = html.find("Not watching everything").expect("problems box");
        assert!(problems < html.find("id=\"rule-").unwrap());
        assert!(html.contains("source <b>mes</b> down for 7m 00s"));
        assert!(html.contains("connection refused &lt;x&gt;"));
        assert!(html.contains("<span class=\"badge down\">down</span>"));
        assert!(
            html.contains("<li class=\"muted\">40 more orders match rule submitted_over_1h</li>")
        );
        assert!(!html.contains(">_overflow<"));
        assert!(html.contains("<span>1 firing</span>"));
    }

    #[test]
    fn nothing_stuck() {
        let html = page(&[], &[], &[("shop", true)]);
        assert!(html.contains("Nothing is stuck."));
        assert!(html.contains("<title>orderwatch</title>"));
    }

    #[test]
    fn only_http_links() {
        assert!(safe_url("https://jaeger/search?x=1"));
        assert!(safe_url("HTTP://crm/orders/1"));
        assert!(!safe_url("javascript:alert(1)"));
        assert!(!safe_url(" data:text/html,<b>"));
        assert!(!safe_url("//evil.example"));
    }
}
