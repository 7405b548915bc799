//! The order page at `/orders?id=…`: where one order is in every source, drawn as a timeline
//! (one bar per status, its length the time spent there, each watching rule's threshold
//! marked), the rules it matches, the lost-message verdicts, its alerts and links. Reached
//! from the status page's search box. Self-contained HTML (inline CSS and SVG, no scripts);
//! the text is HTML, the SVG draws only bars and marks, so it scales to any width and no
//! text shrinks with it.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::status::{SEARCH, STYLE, age, link};
use crate::engine::Shared;
use crate::human::human_duration;
use crate::lookup::{OrderReport, RuleView, SourceView};
use crate::notify::template::escape_html as esc;

/// `GET /orders?id=…`: the order's page; without an id, the search box alone.
pub async fn search(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let id = q.get("id").map(|i| i.trim()).unwrap_or_default();
    let body = if id.is_empty() {
        page_html(
            "Find an order",
            "<p class=\"muted\">Type an order id above.</p>",
        )
    } else {
        match super::orders::lookup(&s, id).await {
            Ok(report) => render(&report, Utc::now()),
            Err(response) => return response,
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn page_html(title: &str, main: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · orderwatch</title><style>{STYLE}{ORDER_STYLE}</style></head><body>\
         <header><h1><a class=\"home\" href=\"./\">orderwatch</a> · {}</h1>{SEARCH}</header>\
         <main>{main}</main></body></html>",
        esc(title),
        esc(title),
    )
}

const ORDER_STYLE: &str = "
a.home{color:#fff;text-decoration:none}
.timeline{display:grid;grid-template-columns:minmax(0,max-content) minmax(0,1fr) max-content;gap:6px 10px;align-items:center;margin:8px 0}
.timeline .st{font-weight:600}
.timeline svg{display:block;width:100%;height:18px}
.timeline .dur{white-space:nowrap}
.marks{margin:4px 0 0;padding-left:18px}
.now{fill:#c62828}.past{fill:#6b7785}.ok{fill:#2e7d32}
.mark{stroke:#1d4ed8;stroke-width:3}
.marks b.key{color:#1d4ed8}
@media (max-width:600px){.timeline{grid-template-columns:minmax(0,1fr) max-content;gap:2px 10px}
.timeline .st{grid-column:1/-1;margin-top:4px}}
";

/// The whole page for `report` at `now`.
pub fn render(report: &OrderReport, now: DateTime<Utc>) -> String {
    let mut h = String::with_capacity(8 * 1024);
    let found = report.sources.iter().filter(|s| s.order.is_some()).count();
    let _ = write!(
        h,
        "<section><h2><span class=\"id\">{}</span></h2><p class=\"muted\">{}</p></section>",
        esc(&report.order_id),
        if found == 0 {
            "In no source.".to_string()
        } else {
            format!("Found in {found} of {} sources.", report.sources.len())
        }
    );
    for view in &report.sources {
        source_section(&mut h, view, &report.rules, now);
    }
    rules_section(&mut h, report);
    alerts_section(&mut h, report, now);
    if !report.links.is_empty() {
        h.push_str("<section><h2>Links</h2><div class=\"sub\">");
        for (name, url) in &report.links {
            link(&mut h, url, name.trim_end_matches("_url"));
        }
        h.push_str("</div></section>");
    }
    page_html(&report.order_id, &h)
}

fn source_section(h: &mut String, view: &SourceView, rules: &[RuleView], now: DateTime<Utc>) {
    let _ = write!(h, "<section><h2>{}", esc(&view.source));
    let Some(o) = &view.order else {
        match &view.error {
            Some(e) => {
                let _ = write!(
                    h,
                    " <span class=\"badge err\">not asked</span></h2><p class=\"error\">{}</p></section>",
                    esc(e)
                );
            }
            None => h.push_str(" <span class=\"badge\">not here</span></h2></section>"),
        }
        return;
    };
    let _ = write!(h, " <span class=\"badge\">{}</span></h2>", esc(&o.status));
    let Some(entered_at) = o.entered_at else {
        let _ = write!(
            h,
            "<p class=\"muted\">Since when is unknown: {}.</p></section>",
            crate::lookup::TIME_UNKNOWN
        );
        return;
    };
    let _ = write!(
        h,
        "<p class=\"sub\"><span>for <b>{}</b></span><span class=\"muted\">since {} UTC</span>",
        age(now, entered_at),
        entered_at.format("%Y-%m-%d %H:%M")
    );
    for (k, v) in &o.labels {
        let _ = write!(h, "<span class=\"muted\">{}: {}</span>", esc(k), esc(v));
    }
    h.push_str("</p>");
    // The runs: a status log's history, else the one current status.
    let runs = crate::lookup::time_in_each(o, now);
    let spans: Vec<(&str, f64, bool)> = runs
        .iter()
        .enumerate()
        .map(|(i, (status, secs))| (*status, *secs as f64, i + 1 == runs.len()))
        .collect();
    // Thresholds of the rules on this source, by status.
    let marks = |status: &str| -> Vec<&RuleView> {
        rules
            .iter()
            .filter(|r| r.source == view.source && r.statuses.iter().any(|s| s == status))
            .collect()
    };
    let scale = spans
        .iter()
        .map(|(s, secs, _)| {
            marks(s)
                .iter()
                .map(|r| r.older_than_seconds as f64)
                .fold(*secs, f64::max)
        })
        .fold(1.0, f64::max);
    h.push_str("<div class=\"timeline\" role=\"list\" aria-label=\"time in each status\">");
    for (status, secs, current) in &spans {
        let width = (secs / scale * 100.0).max(0.5);
        let class = if *current { "now" } else { "past" };
        let _ = write!(
            h,
            "<span class=\"st\" role=\"listitem\">{}</span>\
             <svg viewBox=\"0 0 100 10\" preserveAspectRatio=\"none\" aria-hidden=\"true\">\
             <rect x=\"0\" y=\"1\" width=\"{width:.2}\" height=\"8\" class=\"{class}\"/>",
            esc(status)
        );
        for r in marks(status) {
            let x = (r.older_than_seconds as f64 / scale * 100.0).min(99.6);
            let _ = write!(
                h,
                "<line x1=\"{x:.2}\" x2=\"{x:.2}\" y1=\"0\" y2=\"10\" class=\"mark\" \
                 vector-effect=\"non-scaling-stroke\"/>"
            );
        }
        let _ = write!(
            h,
            "</svg><span class=\"dur\">{}</span>",
            human_duration(std::time::Duration::from_secs(*secs as u64))
        );
    }
    h.push_str("</div>");
    let mut listed = Vec::new();
    for (status, _, _) in &spans {
        for r in marks(status) {
            if !listed.contains(&r.rule) {
                listed.push(r.rule.clone());
            }
        }
    }
    if !listed.is_empty() {
        h.push_str(
            "<p class=\"muted\">The <b class=\"key\">blue</b> marks are the thresholds of the \
             rules watching the status:</p><ul class=\"marks muted\">",
        );
        for r in rules.iter().filter(|r| listed.contains(&r.rule)) {
            let _ = write!(
                h,
                "<li><b>{}</b>: {} over {}</li>",
                esc(&r.rule),
                esc(&r.statuses.join(", ")),
                human_duration(std::time::Duration::from_secs(r.older_than_seconds))
            );
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>");
}

fn rules_section(h: &mut String, report: &OrderReport) {
    if report.rules.is_empty() {
        return;
    }
    h.push_str(
        "<section><h2>Rules</h2><table><thead><tr><th>Rule</th><th>Now</th><th>Threshold</th>\
         <th>Between sources</th></tr></thead><tbody>",
    );
    for r in &report.rules {
        let _ = write!(
            h,
            "<tr><td data-label=\"Rule\">{}</td><td data-label=\"Now\">{}</td>\
             <td data-label=\"Threshold\">{} over {}</td><td data-label=\"Between sources\">{}</td></tr>",
            esc(&r.rule),
            if r.matches {
                "<span class=\"badge firing\">matches</span>"
            } else {
                "<span class=\"badge ok\">no</span>"
            },
            esc(&r.statuses.join(", ")),
            human_duration(std::time::Duration::from_secs(r.older_than_seconds)),
            esc(r.verdict.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</tbody></table></section>");
}

fn alerts_section(h: &mut String, report: &OrderReport, now: DateTime<Utc>) {
    let Some(alerts) = &report.alerts else { return };
    h.push_str("<section><h2>Alerts</h2>");
    if alerts.is_empty() {
        h.push_str("<p class=\"empty\">No alert about this order.</p></section>");
        return;
    }
    h.push_str("<ul class=\"orders\">");
    for a in alerts {
        let _ = write!(
            h,
            "<li><div class=\"row\"><span class=\"badge {}\">{}</span><span>{}</span>\
             <span class=\"age\">{}</span></div>",
            a.state,
            a.state,
            esc(&a.rule),
            match a.resolved_at {
                Some(at) => format!("resolved {} ago", age(now, at)),
                None => format!("for {}", age(now, a.since)),
            }
        );
        if !a.silenced_by.is_empty() {
            let _ = write!(
                h,
                "<div class=\"muted\">silenced by {}</div>",
                esc(&a.silenced_by.join(", "))
            );
        }
        h.push_str("</li>");
    }
    h.push_str("</ul></section>");
}
