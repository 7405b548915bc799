//! The `slack` channel: an incoming webhook.
//!
//! A message is Block Kit `blocks` (a header, the facts as fields, the orders, the
//! description, a link back) with a mrkdwn `text` as the fallback Slack shows in
//! notifications. Values are escaped for mrkdwn (`&`, `<`, `>`), links are `<url|label>`, and
//! Slack's limits hold: header ≤ 150 characters, section text ≤ 3000, fields ≤ 10 of ≤ 2000,
//! ≤ 50 blocks; orders that do not fit are counted in "and K more". A custom `text` template
//! replaces the whole message (no blocks), since Slack would show blocks instead of it.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use minijinja::Environment;
use serde_json::{Value, json};
use serde_saphyr::Location;

use super::chat;
use crate::config::SlackConfig;
use crate::notify::channel::{Deliver, DeliveryError, expand_http_url, http_url};
use crate::notify::message::Notification;
use crate::notify::template::{MessageContext, OrderLine, escaping_environment, render_sample};

/// Block Kit: at most this many blocks per message.
pub const MAX_BLOCKS: usize = 50;
/// Block Kit: a section's text.
pub const MAX_SECTION_CHARS: usize = 3000;
/// Block Kit: a header's plain text.
pub const MAX_HEADER_CHARS: usize = 150;
/// Block Kit: one field of a section.
const MAX_FIELD_CHARS: usize = 2000;
/// Sections per order list: two lists of this many plus the fixed blocks stay under 50.
const MAX_LIST_SECTIONS: usize = 20;
/// The fallback `text` next to blocks: Slack recommends at most 4,000 characters.
pub const MAX_FALLBACK_CHARS: usize = 4000;
/// A text-only message: Slack truncates `text` beyond 40,000 characters.
pub const MAX_TEXT_CHARS: usize = 40_000;

/// The default mrkdwn text (the fallback in notifications). Values are escaped; `slack_url`
/// makes a URL safe inside `<url|label>`.
pub const DEFAULT_TEXT: &str = r#"{% if status == "firing" %}:red_circle:{% else %}:white_check_mark:{% endif %} *{{ title }}*
{% if summary %}{{ summary }}
{% endif %}{% if rule %}*Rule:* `{{ rule }}` · {% endif %}*Source:* {{ source }} · *Severity:* {{ severity }}
{% if firing_count %}*Stuck orders:* {{ firing_count }}, oldest for {{ oldest_age }}
{% for o in orders %}• `{{ o.order_id }}` {{ o.status }} for {{ o.age }}{% for k, v in o.labels|items %} · {{ k }}: {{ v }}{% endfor %}{% for l in o.links %} · <{{ l.url|slack_url }}|{{ l.name }}>{% endfor %}
{% endfor %}{% if more %}…and {{ more }} more
{% endif %}{% endif %}{% if resolved_count %}*Recovered:* {{ resolved_count }}
{% for o in resolved %}• `{{ o.order_id }}` was {{ o.status }}{% for k, v in o.labels|items %} · {{ k }}: {{ v }}{% endfor %}
{% endfor %}{% if resolved_more %}…and {{ resolved_more }} more
{% endif %}{% endif %}{% if description %}> {{ description }}
{% endif %}{% if external_url %}<{{ external_url|slack_url }}|Open orderwatch>{% endif %}"#;

/// Expands `${ENV}`/`${file:PATH}` in `webhook_url` in place (relative to `base`) and
/// checks the values; returns each problem with the location of the offending value.
pub fn validate(c: &mut SlackConfig, base: &Path) -> Vec<(Location, String)> {
    let mut problems = Vec::new();
    expand_http_url(&mut c.webhook_url, base, "webhook_url", &mut problems);
    chat::check_text_and_timeout(&c.text, check_template, &c.timeout, &mut problems);
    problems
}

/// Compiles a custom template and renders the sample through it, so mistakes fail at start-up.
fn check_template(source: &str) -> Result<(), String> {
    render_sample(&mrkdwn_environment(source)?, TEMPLATE).map(drop)
}

const TEMPLATE: &str = "text";

/// A template environment writing every value escaped for mrkdwn (`|safe` opts out).
fn mrkdwn_environment(source: &str) -> Result<Environment<'static>, String> {
    let mut env = escaping_environment(TEMPLATE, source, escape)?;
    env.add_filter("slack_url", |url: String| link_url(&url));
    Ok(env)
}

/// Escapes text for mrkdwn: Slack reads `&`, `<` and `>` as markup (so `<!channel>` and
/// `<@U123>` stay text), and `@here`-style words get a word joiner.
pub fn escape(s: &str) -> String {
    crate::notify::template::no_mentions(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A URL fit for `<url|label>` once escaped: a `|` or a space would end it early.
fn link_url(url: &str) -> String {
    url.replace('|', "%7C").replace(' ', "%20")
}

/// `<url|label>`, both escaped.
pub fn link(url: &str, label: &str) -> String {
    format!("<{}|{}>", escape(&link_url(url)), escape(label))
}

/// Cuts mrkdwn to at most `max` characters ending with "…", never inside a link `<…>` or an
/// entity `&…;`.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let (mut safe, mut in_link, mut in_entity) = (0, false, false);
    for (count, (i, c)) in s.char_indices().enumerate() {
        if count >= max {
            break;
        }
        if !in_link && !in_entity {
            safe = i;
        }
        match c {
            '<' => in_link = true,
            '>' => in_link = false,
            '&' => in_entity = true,
            ';' => in_entity = false,
            _ => {}
        }
    }
    format!("{}…", &s[..safe])
}

/// The runtime `slack` channel.
#[derive(Debug)]
pub struct Slack {
    poster: chat::Poster,
    channel: Option<String>,
    username: Option<String>,
    icon_emoji: Option<String>,
    custom_text: bool,
}

impl Slack {
    /// Builds the channel from a validated config (secrets expanded).
    pub fn new(name: &str, cfg: &SlackConfig) -> Result<Slack, String> {
        let source = cfg.text.as_ref().map_or(DEFAULT_TEXT, |t| t.value.as_str());
        Ok(Slack {
            poster: chat::Poster::new(
                name,
                http_url(&cfg.webhook_url.value, "webhook_url")?,
                mrkdwn_environment(source)?,
                cfg.max_orders,
                &cfg.timeout,
            ),
            channel: cfg.channel.clone(),
            username: cfg.username.clone(),
            icon_emoji: cfg.icon_emoji.clone(),
            custom_text: cfg.text.is_some(),
        })
    }

    /// The channel's name in the config.
    pub fn name(&self) -> &str {
        self.poster.name()
    }

    /// The webhook's JSON body for `n`.
    pub fn payload(&self, n: &Notification) -> Result<Value, String> {
        self.payload_at(n, Utc::now())
    }

    fn payload_at(&self, n: &Notification, now: DateTime<Utc>) -> Result<Value, String> {
        let limit = if self.custom_text {
            MAX_TEXT_CHARS
        } else {
            MAX_FALLBACK_CHARS
        };
        let text = self.poster.render(
            TEMPLATE,
            n,
            now,
            |t| t.chars().count() <= limit,
            |t| cut(t, limit),
        )?;
        let mut body = json!({"text": text, "unfurl_links": false, "unfurl_media": false});
        if !self.custom_text {
            body["blocks"] = blocks(&MessageContext::new(n, self.poster.max_orders(), now)).into();
        }
        chat::set_optional(
            &mut body,
            &[
                ("channel", &self.channel),
                ("username", &self.username),
                ("icon_emoji", &self.icon_emoji),
            ],
        );
        Ok(body)
    }
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(text, MAX_SECTION_CHARS)}})
}

fn context(text: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(text, MAX_SECTION_CHARS)}]})
}

/// One order as a mrkdwn line.
fn order_line(o: &OrderLine, firing: bool) -> String {
    let (id, status) = (escape(&o.order_id), escape(&o.status));
    let mut line = if firing {
        format!("• `{id}` {status} for {}", escape(&o.age))
    } else {
        format!("• `{id}` was {status}")
    };
    for (k, v) in &o.labels {
        line.push_str(&format!(" · {}: {}", escape(k), escape(v)));
    }
    for l in &o.links {
        line.push_str(&format!(" · {}", link(&l.url, &l.name)));
    }
    line
}

/// Packs `heading` and lines into at most `max_sections` section texts of at most
/// [`MAX_SECTION_CHARS`]; returns them and how many lines they hold.
fn pack(heading: &str, lines: &[String], max_sections: usize) -> (Vec<String>, usize) {
    let mut sections = Vec::new();
    let (mut current, mut len) = (heading.to_string(), heading.chars().count());
    let mut used = 0;
    for line in lines {
        let line = cut(line, MAX_SECTION_CHARS - 1);
        let line_len = line.chars().count();
        if len + 1 + line_len > MAX_SECTION_CHARS {
            if sections.len() + 1 >= max_sections {
                break;
            }
            sections.push(std::mem::take(&mut current));
            len = 0;
        }
        if len > 0 {
            current.push('\n');
            len += 1;
        }
        current.push_str(&line);
        len += line_len;
        used += 1;
    }
    if !current.is_empty() {
        sections.push(current);
    }
    (sections, used)
}

/// Appends a list of orders: sections, then "and K more" for what was not listed.
fn push_list(blocks: &mut Vec<Value>, heading: &str, lines: Vec<String>, more: u64) {
    let (sections, used) = pack(heading, &lines, MAX_LIST_SECTIONS);
    blocks.extend(sections.iter().map(|s| section(s)));
    let more = more + (lines.len() - used) as u64;
    if more > 0 {
        blocks.push(context(&format!("…and {more} more")));
    }
}

/// The Block Kit layout of a message.
fn blocks(ctx: &MessageContext) -> Vec<Value> {
    let firing = ctx.status == "firing";
    let icon = if firing {
        ":red_circle:"
    } else {
        ":white_check_mark:"
    };
    let mut header = format!("{icon} {}", ctx.title);
    if header.chars().count() > MAX_HEADER_CHARS {
        header = header
            .chars()
            .take(MAX_HEADER_CHARS - 1)
            .collect::<String>()
            + "…";
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}),
    ];
    if !ctx.summary.is_empty() {
        blocks.push(section(&escape(&ctx.summary)));
    }
    let mut fields = Vec::new();
    let mut field = |name: &str, value: String| {
        if !value.is_empty() {
            let text = cut(&format!("*{name}*\n{value}"), MAX_FIELD_CHARS);
            fields.push(json!({"type": "mrkdwn", "text": text}));
        }
    };
    if !ctx.rule.is_empty() {
        field("Rule", format!("`{}`", escape(&ctx.rule)));
    }
    field("Source", escape(&ctx.source));
    field("Severity", escape(&ctx.severity));
    if ctx.firing_count > 0 {
        field("Stuck orders", ctx.firing_count.to_string());
        field("Oldest", escape(&ctx.oldest_age));
    }
    if ctx.resolved_count > 0 {
        field("Recovered", ctx.resolved_count.to_string());
    }
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if ctx.firing_count > 0 {
        let lines = ctx.orders.iter().map(|o| order_line(o, true)).collect();
        push_list(&mut blocks, "*Stuck orders, oldest first*", lines, ctx.more);
    }
    if ctx.resolved_count > 0 {
        let lines = ctx.resolved.iter().map(|o| order_line(o, false)).collect();
        push_list(&mut blocks, "*Recovered*", lines, ctx.resolved_more);
    }
    if !ctx.description.is_empty() {
        blocks.push(section(&format!("> {}", escape(&ctx.description))));
    }
    if !ctx.external_url.is_empty() {
        blocks.push(context(&link(&ctx.external_url, "Open orderwatch")));
    }
    debug_assert!(blocks.len() <= MAX_BLOCKS);
    blocks
}

impl Deliver for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    /// Slack accepts about one message per second per webhook.
    fn min_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let body = self.payload(n).map_err(DeliveryError::Permanent)?;
        self.poster.post(&body).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_saphyr::Spanned;

    use crate::config::Dur;
    use crate::notify::message::{NotifiedAlert, NotifyStatus};

    fn slack(max_orders: usize, text: Option<&str>) -> Slack {
        let spanned = |s: &str| Spanned::new(s.to_string(), Location::UNKNOWN, Location::UNKNOWN);
        Slack::new(
            "s",
            &SlackConfig {
                webhook_url: spanned("https://hooks.slack.example/services/T/B/X"),
                channel: None,
                username: None,
                icon_emoji: None,
                text: text.map(spanned),
                max_orders,
                timeout: Dur(Duration::from_secs(10)),
            },
        )
        .unwrap()
    }

    /// `count` firing orders with long labels and a link each.
    fn big(count: usize) -> Notification {
        let mut n = Notification::sample("ops", "http://ow");
        let template = n.alerts[1].clone();
        n.alerts = (0..count)
            .map(|i| {
                let mut a: NotifiedAlert = template.clone();
                a.labels.insert("order_id".into(), format!("JW-{i:08}"));
                a.labels.insert("note".into(), "x & y <z> ".repeat(20));
                a.annotations.insert(
                    "trace_url".into(),
                    format!("http://jaeger/search?id={i}&x=|"),
                );
                a
            })
            .collect();
        n.status = NotifyStatus::Firing;
        n
    }

    #[test]
    fn cut_respects_links_and_entities() {
        let s = "ab &amp; <http://x/?a=1&amp;b=2|label> tail";
        for max in 2..s.chars().count() {
            let c = cut(s, max);
            assert!(c.chars().count() <= max, "{max}: {c}");
            let body = c.trim_end_matches('…');
            assert_eq!(body.matches('<').count(), body.matches('>').count(), "{c}");
            assert_eq!(body.matches('&').count(), body.matches(';').count(), "{c}");
        }
        assert_eq!(cut(s, 100), s);
    }

    #[test]
    fn links_and_escaping() {
        assert_eq!(escape("a & <b>"), "a &amp; &lt;b&gt;");
        assert_eq!(
            link("http://x/?a=1&b=|", "t <1>"),
            "<http://x/?a=1&amp;b=%7C|t &lt;1&gt;>"
        );
    }

    #[test]
    fn sample_text_is_escaped_mrkdwn() {
        let body = slack(10, None)
            .payload(&Notification::sample("ops", "http://ow:9187"))
            .unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(
            text.contains("order_type: pendant &amp; chain &lt;test&gt;"),
            "{text}"
        );
        assert!(text.contains("<http://ow:9187|Open orderwatch>"), "{text}");
        assert!(
            text.contains("*Recovered:* 1\n• `JW-00000017` was SUBMITTED"),
            "{text}"
        );
        assert!(body["blocks"].as_array().unwrap().len() >= 5);
    }

    #[test]
    fn hostile_data_neither_links_nor_mentions() {
        let body = slack(10, None).payload(&Notification::hostile()).unwrap();
        let all = body.to_string();
        assert!(!all.to_ascii_lowercase().contains("javascript:"), "{all}");
        assert!(!all.contains("data:text"), "{all}");
        assert!(
            !all.contains("<!channel>") && !all.contains("<@U123>"),
            "{all}"
        );
        assert!(!all.contains("@all") && !all.contains("@here"), "{all}");
        assert!(all.contains("&lt;!channel&gt;"), "{all}");
        assert!(
            all.contains("<https://jaeger/search?q=a%20b%28c%29%7Cd&amp;who=%40all|trace>"),
            "{all}"
        );
    }

    #[test]
    fn huge_lists_stay_within_block_kit_limits() {
        for (count, max_orders) in [(300, 300), (3000, 3000), (300, 10)] {
            let n = big(count);
            let body = slack(max_orders, None).payload(&n).unwrap();
            let blocks = body["blocks"].as_array().unwrap();
            assert!(blocks.len() <= MAX_BLOCKS, "{}", blocks.len());
            let mut listed = 0;
            let mut more = 0;
            for b in blocks {
                if let Some(t) = b["text"]["text"].as_str() {
                    assert!(t.chars().count() <= MAX_SECTION_CHARS);
                    listed += t.lines().filter(|l| l.starts_with("• ")).count();
                }
                if let Some(t) = b["elements"][0]["text"].as_str()
                    && let Some(k) = t.strip_prefix("…and ")
                {
                    more += k.trim_end_matches(" more").parse::<usize>().unwrap();
                }
            }
            assert_eq!(listed + more, count, "every order listed or counted");
            assert!(listed >= max_orders.min(20), "{listed}");
            let text = body["text"].as_str().unwrap();
            assert!(text.chars().count() <= MAX_FALLBACK_CHARS);
            assert!(text.contains(" more\n"), "{text}");
        }
    }

    #[test]
    fn custom_text_replaces_the_layout() {
        let body = slack(10, Some("{{ title }}: {{ orders[1].labels.order_type }}"))
            .payload(&Notification::sample("ops", ""))
            .unwrap();
        assert_eq!(
            body["text"],
            "[FIRING:2] submitted_over_1h (shop, critical): pendant &amp; chain &lt;test&gt;"
        );
        assert!(body.get("blocks").is_none());
        assert!(check_template("{{ x | nosuch }}").is_err());
    }
}
