//! The status page at `/`: what is stuck now, grouped by rule, each order with its age and
//! links; source and rule health. One self-contained HTML document (inline CSS, no scripts, no
//! external assets) that reloads itself every 30 s and reads on a phone. Everything shown comes
//! from alert labels and annotations (already free of personal data) and is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use crate::engine::{Alert, AlertState, Shared};
use crate::notify::template::escape_html as esc;
use crate::rule::template::human_duration;

/// How often the page reloads itself, in seconds.
const REFRESH_SECS: u32 = 30;
/// Orders shown per rule (oldest first); the rest are counted and linked.
const MAX_PER_RULE: usize = 50;

/// `GET /`.
pub async fn page(State(s): State<Arc<Shared>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        render(&s, Utc::now()),
    )
        .into_response()
}

/// Only http(s) URLs become links (no `javascript:`, no `data:`).
fn safe_url(u: &str) -> bool {
    let l = u.trim_start().to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

fn age(now: DateTime<Utc>, since: DateTime<Utc>) -> String {
    human_duration((now - since).to_std().unwrap_or_default())
}

const STYLE: &str = "
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d232a;background:#f4f6f8}
header{background:#1d232a;color:#fff;padding:12px 16px}
header h1{margin:0;font-size:18px}
header p{margin:4px 0 0;color:#c9d1d9;font-size:13px}
main{max-width:1100px;margin:0 auto;padding:12px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08);margin:0 0 12px;padding:12px 14px}
h2{font-size:16px;margin:0 0 8px;display:flex;flex-wrap:wrap;gap:6px;align-items:center}
.summary{display:flex;flex-wrap:wrap;gap:8px;margin:0 0 12px}
.tile{flex:1 1 140px;background:#fff;border-radius:8px;padding:10px 12px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.tile b{display:block;font-size:24px}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;color:#fff;background:#6b7785}
.critical,.firing,.down,.err{background:#c62828}.warning,.pending{background:#d97706}.info{background:#2563eb}
.ok,.up{background:#2e7d32}.silenced{background:#6b7785}
ul.orders{list-style:none;margin:0;padding:0}
ul.orders li{border-top:1px solid #e5e8eb;padding:8px 0;display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline}
.id{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-weight:600}
.age{font-weight:600}
.muted{color:#5c6670;font-size:13px}
.desc{flex-basis:100%;color:#39424c;font-size:14px}
a{color:#1d4ed8}
.table{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-top:1px solid #e5e8eb;vertical-align:top}
th{color:#5c6670;font-weight:600;border-top:none}
td.err{background:none;color:#c62828;word-break:break-word}
.empty{color:#2e7d32;font-weight:600}
.index{display:flex;flex-wrap:wrap;gap:6px;margin:0 0 12px}
.index a{background:#fff;border-radius:14px;padding:3px 10px;text-decoration:none;box-shadow:0 1px 2px rgba(0,0,0,.08);font-size:13px}
@media (max-width:600px){body{font-size:14px}main{padding:8px}section{padding:10px}}
";

/// The whole page.
pub fn render(shared: &Shared, now: DateTime<Utc>) -> String {
    let book = shared.book.read().expect("book lock");
    let silences = shared.silences.read().expect("silences lock");
    let sources = shared.source_status.read().expect("status lock").clone();
    let rules = shared.rule_status.read().expect("status lock").clone();

    let mut by_rule: BTreeMap<&str, Vec<&Alert>> = BTreeMap::new();
    for a in book.all().filter(|a| a.state != AlertState::Resolved) {
        by_rule.entry(a.rule.as_str()).or_default().push(a);
    }
    let firing = book.all().filter(|a| a.state == AlertState::Firing).count();
    let pending = book
        .all()
        .filter(|a| a.state == AlertState::Pending)
        .count();
    let down = sources.values().filter(|s| s.up == Some(false)).count();
    let silenced = |a: &Alert| {
        silences
            .iter()
            .any(|s| s.is_active(now) && s.matches(&a.labels))
    };

    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>{} orderwatch</title><style>{STYLE}</style></head><body>\
         <header><h1>orderwatch</h1><p>{} firing · {} pending · {} of {} sources down · \
         updated {} UTC, reloads every {REFRESH_SECS} s</p></header><main>",
        if firing > 0 {
            format!("({firing})")
        } else {
            String::new()
        },
        firing,
        pending,
        down,
        sources.len(),
        now.format("%Y-%m-%d %H:%M:%S"),
    );
    let _ = write!(
        h,
        "<div class=\"summary\">\
         <div class=\"tile\"><b>{firing}</b>firing alerts</div>\
         <div class=\"tile\"><b>{pending}</b>pending</div>\
         <div class=\"tile\"><b>{down}</b>sources down</div>\
         <div class=\"tile\"><b>{}</b>rules</div></div>",
        rules.len()
    );

    if by_rule.is_empty() {
        h.push_str("<section><p class=\"empty\">Nothing is stuck.</p></section>");
    } else {
        // An index: on a phone the rules are far apart.
        h.push_str("<nav class=\"index\">");
        for (rule, alerts) in &by_rule {
            let _ = write!(
                h,
                "<a href=\"#rule-{}\">{} <b>{}</b></a>",
                esc(rule),
                esc(rule),
                alerts.len()
            );
        }
        h.push_str("</nav>");
    }
    for (rule, mut alerts) in by_rule {
        // Firing first, then the oldest.
        alerts.sort_by_key(|a| {
            (
                a.state != AlertState::Firing,
                a.entered_at.unwrap_or(a.starts_at),
            )
        });
        let severity = alerts[0]
            .labels
            .get("severity")
            .map(String::as_str)
            .unwrap_or("");
        let count = rules.get(rule).and_then(|s| s.count);
        let _ = write!(
            h,
            "<section id=\"rule-{}\"><h2>{} <span class=\"badge {}\">{}</span> \
             <span class=\"muted\">{} alert{}{}</span></h2><ul class=\"orders\">",
            esc(rule),
            esc(rule),
            esc(severity),
            esc(severity),
            alerts.len(),
            if alerts.len() == 1 { "" } else { "s" },
            match count {
                Some(n) if n as usize != alerts.len() => format!(", {n} found"),
                _ => String::new(),
            }
        );
        let more = alerts.len().saturating_sub(MAX_PER_RULE);
        for a in alerts.into_iter().take(MAX_PER_RULE) {
            let id = a
                .labels
                .get("order_id")
                .map(String::as_str)
                .unwrap_or(a.key.as_str());
            let since = a.entered_at.unwrap_or(a.starts_at);
            let _ = write!(
                h,
                "<li><span class=\"id\">{}</span><span class=\"badge {}\">{}</span>",
                esc(id),
                a.state.as_str(),
                a.state.as_str()
            );
            if silenced(a) {
                h.push_str("<span class=\"badge silenced\">silenced</span>");
            }
            if let Some(st) = a.labels.get("status").filter(|s| !s.is_empty()) {
                let _ = write!(h, "<span class=\"muted\">{}</span>", esc(st));
            }
            let _ = write!(
                h,
                "<span class=\"age\" title=\"since {}\">{}</span>",
                since.format("%Y-%m-%d %H:%M UTC"),
                age(now, since)
            );
            for (k, v) in a.annotations.iter().filter(|(k, _)| k.ends_with("_url")) {
                let name = k.trim_end_matches("_url").replace('_', " ");
                if safe_url(v) {
                    let _ = write!(
                        h,
                        "<a href=\"{}\" rel=\"noopener noreferrer\">{}</a>",
                        esc(v),
                        esc(&name)
                    );
                }
            }
            if let Some(text) = a
                .annotations
                .get("summary")
                .or_else(|| a.annotations.get("description"))
            {
                let _ = write!(h, "<span class=\"desc\">{}</span>", esc(text));
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
        h.push_str("</ul></section>");
    }

    h.push_str(
        "<section><h2>Sources</h2><div class=\"table\"><table><tr><th>source</th><th>state</th>\
         <th>since</th><th>last error</th></tr>",
    );
    for (name, s) in &sources {
        let (class, word) = match s.up {
            Some(true) => ("up", "up"),
            Some(false) => ("down", "down"),
            None => ("pending", "not yet queried"),
        };
        let _ = write!(
            h,
            "<tr><td>{}<div class=\"muted\">{}</div></td><td><span class=\"badge {class}\">{word}</span></td>\
             <td>{}</td><td class=\"err\">{}</td></tr>",
            esc(name),
            esc(&s.target),
            s.failing_since
                .map(|t| format!("down for {}", age(now, t)))
                .unwrap_or_default(),
            esc(s.last_error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table></div></section>");

    h.push_str(
        "<section><h2>Rules</h2><div class=\"table\"><table><tr><th>rule</th><th>health</th>\
         <th>found</th><th>last evaluation</th><th>error</th></tr>",
    );
    for r in rules.values() {
        let _ = write!(
            h,
            "<tr><td>{}<div class=\"muted\">{} on {}</div></td><td><span class=\"badge {}\">{}</span></td>\
             <td>{}{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            esc(&r.name),
            r.kind.as_str(),
            esc(&r.source),
            esc(r.health),
            esc(r.health),
            r.count.map(|n| n.to_string()).unwrap_or_default(),
            if r.capped { " (capped)" } else { "" },
            r.last_evaluation
                .map(|t| format!("{} ago", age(now, t)))
                .unwrap_or_else(|| "never".into()),
            esc(r.error.as_deref().unwrap_or(""))
        );
    }
    h.push_str(
        "</table></div></section><p class=\"muted\">JSON: <a href=\"api/v1/alerts\">alerts</a> · \
         <a href=\"api/v1/rules\">rules</a> · <a href=\"api/v1/silences\">silences</a> · \
         <a href=\"metrics\">metrics</a></p></main></body></html>\n",
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_from_the_database() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; 'y'"
        );
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
