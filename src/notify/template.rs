//! The template context every channel renders its messages from, so an email, a Telegram
//! message and a Slack post say the same things: the rule, how many orders, the oldest age,
//! the first N orders (id, status, age, allow-listed labels, links), "and K more", and on
//! recovery which orders recovered. Only labels and annotations reach it: no personal data.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use minijinja::Environment;
use serde::Serialize;

use super::message::{Notification, NotifiedAlert, NotifyStatus};
use crate::human::human_duration;

/// Labels shown as the order's own fields or the group's, not repeated per order.
const NOT_ORDER_LABELS: &[&str] = &[
    "alertname",
    "rule",
    "source",
    "status",
    "severity",
    "order_id",
];

/// One order line of a message.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderLine {
    /// The order id.
    pub order_id: String,
    /// Its status.
    pub status: String,
    /// How long it has been in the status, e.g. "3h 05m" (at render time).
    pub age: String,
    /// Seconds, for sorting and custom formatting.
    pub age_seconds: i64,
    /// When it entered the status (RFC 3339), if known.
    pub entered_at: String,
    /// The allow-listed labels (order_type, team, …).
    pub labels: BTreeMap<String, String>,
    /// The alert's summary annotation.
    pub summary: String,
    /// Links: annotations whose name ends in `_url` (e.g. `trace_url`, `crm_url`).
    pub links: Vec<Link>,
}

/// A named link.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Link {
    /// The annotation name without `_url` (e.g. `trace`).
    pub name: String,
    /// The URL.
    pub url: String,
}

/// Everything a message template can use.
#[derive(Debug, Clone, Serialize)]
pub struct MessageContext {
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// A one-line title: `[FIRING:21] submitted_over_1h (shop, critical)`.
    pub title: String,
    /// The rule (common label), or empty when the group spans rules.
    pub rule: String,
    /// The alertname.
    pub alertname: String,
    /// The source.
    pub source: String,
    /// The severity.
    pub severity: String,
    /// The summary when the group holds one alert, or the rule's common summary.
    pub summary: String,
    /// What probably went wrong and what to check first: the description the alerts share,
    /// else the oldest firing order's (descriptions often mention the order's own age).
    pub description: String,
    /// Firing orders in the group (overflow alerts counted by what they carry).
    pub firing_count: u64,
    /// Resolved orders in the group.
    pub resolved_count: u64,
    /// Age of the oldest firing order.
    pub oldest_age: String,
    /// The first firing orders, oldest first.
    pub orders: Vec<OrderLine>,
    /// Firing orders not listed.
    pub more: u64,
    /// The first resolved orders.
    pub resolved: Vec<OrderLine>,
    /// Resolved orders not listed.
    pub resolved_more: u64,
    /// The group's labels.
    pub group_labels: BTreeMap<String, String>,
    /// Labels shared by every alert.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations shared by every alert.
    pub common_annotations: BTreeMap<String, String>,
    /// The daemon's base URL.
    pub external_url: String,
    /// The receiver.
    pub receiver: String,
}

fn line(a: &NotifiedAlert, now: DateTime<Utc>) -> OrderLine {
    let entered = a
        .annotations
        .get("entered_at")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let age_secs = entered.map_or(0, |t| (now - t.with_timezone(&Utc)).num_seconds().max(0));
    let labels = a
        .labels
        .iter()
        .filter(|(k, _)| !NOT_ORDER_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let links = a
        .annotations
        .iter()
        .filter_map(|(k, v)| {
            Some(Link {
                name: k.strip_suffix("_url")?.to_string(),
                url: safe_link(v)?,
            })
        })
        .collect();
    OrderLine {
        order_id: a.labels.get("order_id").cloned().unwrap_or_default(),
        status: a.labels.get("status").cloned().unwrap_or_default(),
        age: if entered.is_some() {
            human_duration(Duration::from_secs(age_secs as u64))
        } else {
            a.annotations.get("age").cloned().unwrap_or_default()
        },
        age_seconds: age_secs,
        entered_at: a.annotations.get("entered_at").cloned().unwrap_or_default(),
        labels,
        summary: a.annotations.get("summary").cloned().unwrap_or_default(),
        links,
    }
}

/// `u` as a link every channel can carry: only an absolute http(s) URL (no `javascript:`, no
/// `data:`, no scheme-relative `//host`), with the characters that would end a Markdown link
/// target or a Slack `<url|label>` (`(`, `)`, `|`, spaces, quotes, `<`, `>`) and `@`
/// percent-encoded, credentials removed.
pub fn safe_link(u: &str) -> Option<String> {
    let t = u.trim();
    let lower = t.get(..8).unwrap_or(t).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    let mut parsed = reqwest::Url::parse(t).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    // No credentials in a message; and with them gone, an `@` left is data (encoded below),
    // so mention-neutralising escapes never touch a link.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let mut out = String::with_capacity(t.len());
    for c in parsed.as_str().chars() {
        match c {
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '|' => out.push_str("%7C"),
            '"' => out.push_str("%22"),
            '\'' => out.push_str("%27"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            '@' => out.push_str("%40"),
            c if c.is_whitespace() => out.push_str("%20"),
            c => out.push(c),
        }
    }
    Some(out)
}

/// Text a chat service will not read as a mention: a word joiner after every `@`, so
/// `@all`, `@channel`, `@here` or `@someone` from label data notifies nobody (and still reads
/// the same).
pub fn no_mentions(s: &str) -> String {
    s.replace('@', "@\u{2060}")
}

fn is_overflow(a: &NotifiedAlert) -> bool {
    a.labels.get("order_id").is_some_and(|id| id == "_overflow")
}

/// Orders an alert stands for: 1, or what an overflow alert carries.
fn weight(a: &NotifiedAlert) -> u64 {
    if is_overflow(a) {
        a.annotations
            .get("more")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1)
    } else {
        1
    }
}

impl MessageContext {
    /// The context of `n` at `now`, listing at most `max_orders` orders of each kind.
    pub fn new(n: &Notification, max_orders: usize, now: DateTime<Utc>) -> MessageContext {
        let label = |k: &str| {
            n.common_labels
                .get(k)
                .or_else(|| n.group_labels.get(k))
                .cloned()
                .unwrap_or_default()
        };
        let mut firing: Vec<OrderLine> = Vec::new();
        let mut resolved: Vec<OrderLine> = Vec::new();
        let (mut firing_count, mut resolved_count) = (0, 0);
        for a in &n.alerts {
            match a.status {
                NotifyStatus::Firing => firing_count += weight(a),
                NotifyStatus::Resolved => resolved_count += weight(a),
            }
            if is_overflow(a) {
                continue;
            }
            match a.status {
                NotifyStatus::Firing => firing.push(line(a, now)),
                NotifyStatus::Resolved => resolved.push(line(a, now)),
            }
        }
        firing.sort_by_key(|o| std::cmp::Reverse(o.age_seconds));
        let oldest_age = firing.first().map(|o| o.age.clone()).unwrap_or_default();
        let more = firing_count - firing.len().min(max_orders) as u64;
        let resolved_more = resolved_count - resolved.len().min(max_orders) as u64;
        firing.truncate(max_orders);
        resolved.truncate(max_orders);
        let rule = label("rule");
        let (source, severity) = (label("source"), label("severity"));
        let what = if rule.is_empty() {
            label("alertname")
        } else {
            rule.clone()
        };
        let status = n.status.as_str();
        let title = match n.status {
            NotifyStatus::Firing => {
                format!("[FIRING:{firing_count}] {what} ({source}, {severity})")
            }
            NotifyStatus::Resolved => {
                format!("[RESOLVED] {what} ({source}): {resolved_count} recovered")
            }
        };
        let oldest_firing = n
            .alerts
            .iter()
            .filter(|a| a.status == NotifyStatus::Firing && !is_overflow(a))
            .min_by_key(|a| a.starts_at);
        let description = n
            .common_annotations
            .get("description")
            .or_else(|| oldest_firing.and_then(|a| a.annotations.get("description")))
            .cloned()
            .unwrap_or_default();
        let summary = if n.alerts.len() == 1 {
            n.alerts[0]
                .annotations
                .get("summary")
                .cloned()
                .unwrap_or_default()
        } else {
            n.common_annotations
                .get("summary")
                .cloned()
                .unwrap_or_default()
        };
        MessageContext {
            status,
            title,
            rule,
            alertname: label("alertname"),
            source,
            severity,
            summary,
            description,
            firing_count,
            resolved_count,
            oldest_age,
            orders: firing,
            more,
            resolved,
            resolved_more,
            group_labels: n.group_labels.clone(),
            common_labels: n.common_labels.clone(),
            common_annotations: n.common_annotations.clone(),
            external_url: n.external_url.clone(),
            receiver: n.receiver.clone(),
        }
    }
}

/// Escapes text for HTML element content and double-quoted attributes (Telegram's HTML, the
/// status page).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A template environment with one named template per entry (`name`, `source`).
/// Templates whose name ends in `.html` are HTML-escaped automatically; others are not.
pub fn environment(templates: &[(&str, &str)]) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.set_keep_trailing_newline(true);
    for (name, source) in templates {
        env.add_template_owned(name.to_string(), source.to_string())
            .map_err(|e| format!("template {name}: {e}"))?;
    }
    Ok(env)
}

/// A one-template environment whose formatter writes every value through `escape` (values
/// marked `|safe` pass unchanged): the chat channels' markup-specific escaping.
pub fn escaping_environment(
    name: &str,
    source: &str,
    escape: fn(&str) -> String,
) -> Result<Environment<'static>, String> {
    let mut env = environment(&[(name, source)])?;
    env.set_formatter(move |out, state, value| {
        if value.is_safe() || value.is_undefined() || value.is_none() {
            return minijinja::escape_formatter(out, state, value);
        }
        out.write_str(&escape(&value.to_string()))
            .map_err(minijinja::Error::from)
    });
    Ok(env)
}

/// Renders the sample notification through template `name` of `env`, so a custom template's
/// mistakes fail at start-up rather than at the first alert.
pub fn render_sample(env: &Environment<'static>, name: &str) -> Result<String, String> {
    let n = Notification::sample("check", "http://orderwatch.example");
    render(env, name, &MessageContext::new(&n, 10, Utc::now()))
}

/// Renders template `name` of `env` over `ctx`.
pub fn render(
    env: &Environment<'static>,
    name: &str,
    ctx: &MessageContext,
) -> Result<String, String> {
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("template {name}: {e:#}"))
}

/// Renders template `name` over `n` listing as many orders as fit (at most `max_orders`), so a
/// long message says "and K more" instead of being cut. Returns the text and whether it fits;
/// when even no orders do not fit (a huge description, a verbose custom template), the text
/// with no orders is returned for the caller to cut.
///
/// Shared by the chat channels (Slack, Mattermost, Telegram); the length grows with the
/// number of orders, so a binary search needs a handful of renders at most.
pub fn render_fitting(
    env: &Environment<'static>,
    name: &str,
    n: &Notification,
    max_orders: usize,
    now: DateTime<Utc>,
    fits: impl Fn(&str) -> bool,
) -> Result<(String, bool), String> {
    let render_k = |k: usize| render(env, name, &MessageContext::new(n, k, now));
    let top = max_orders.min(n.alerts.len());
    let text = render_k(top)?;
    if fits(&text) {
        return Ok((text, true));
    }
    // Invariant: `hi` does not fit; `best` is the longest fitting render below `lo`.
    let (mut lo, mut hi, mut best) = (0, top, None);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let text = render_k(mid)?;
        if fits(&text) {
            best = Some(text);
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    match best {
        Some(text) => Ok((text, true)),
        None => Ok((render_k(0)?, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_context_counts_lists_and_titles() {
        let n = Notification::sample("ops", "http://orderwatch:9187");
        let ctx = MessageContext::new(&n, 10, Utc::now());
        assert_eq!(ctx.firing_count, 2);
        assert_eq!(ctx.resolved_count, 1);
        assert_eq!(ctx.title, "[FIRING:2] submitted_over_1h (shop, critical)");
        assert_eq!(ctx.orders[0].order_id, "JW-00000042", "oldest first");
        assert!(
            ctx.oldest_age.starts_with("3h") || ctx.oldest_age.starts_with("2h 59m"),
            "{}",
            ctx.oldest_age
        );
        assert_eq!(
            ctx.orders[0].labels.get("order_type").map(String::as_str),
            Some("ring")
        );
        assert!(!ctx.orders[0].labels.contains_key("order_id"));
        assert_eq!(ctx.resolved[0].order_id, "JW-00000017");
        let ctx = MessageContext::new(&n, 1, Utc::now());
        assert_eq!((ctx.orders.len(), ctx.more), (1, 1));
    }

    #[test]
    fn description_falls_back_to_the_oldest_firing_order() {
        let mut n = Notification::sample("ops", "");
        for (i, a) in n.alerts.iter_mut().enumerate() {
            a.annotations
                .insert("description".into(), format!("check MES for order {i}"));
        }
        let (labels, annotations) = Notification::common(&n.alerts);
        (n.common_labels, n.common_annotations) = (labels, annotations);
        let ctx = MessageContext::new(&n, 10, Utc::now());
        // Alert 0 (JW-00000042, 3 h) is the oldest firing one; alert 2 is resolved.
        assert_eq!(ctx.description, "check MES for order 0");
    }

    #[test]
    fn html_templates_escape_and_text_templates_do_not() {
        let env = environment(&[
            ("a.html", "{{ orders[1].labels.order_type }}"),
            ("a.txt", "{{ orders[1].labels.order_type }}"),
        ])
        .unwrap();
        let ctx = MessageContext::new(&Notification::sample("ops", ""), 10, Utc::now());
        assert_eq!(
            render(&env, "a.html", &ctx).unwrap(),
            "pendant &amp; chain &lt;test&gt;"
        );
        assert_eq!(
            render(&env, "a.txt", &ctx).unwrap(),
            "pendant & chain <test>"
        );
    }
}
