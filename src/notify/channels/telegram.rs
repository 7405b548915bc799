//! The `telegram` channel: the Bot API's `sendMessage` in HTML parse mode.
//!
//! Every value is HTML-escaped by the template environment, so a label such as
//! `pendant & chain <test>` cannot break the markup. A message must stay within 4096
//! characters after entity parsing: when it would not, fewer orders are listed (the template
//! says "and K more"), and only as a last resort is the text cut, between tags and entities,
//! with the open tags closed. The bot token is part of the request URL: it never reaches an
//! error or a log (transport errors are stripped of the URL, and we never format it).

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use minijinja::Environment;
use serde_saphyr::Location;

use super::chat;
use crate::config::expand_secrets;
use crate::config::{ChatId, TelegramConfig};
use crate::notify::channel::{Deliver, DeliveryError, expand_http_url, http_url};
use crate::notify::message::Notification;
use crate::notify::template::{escape_html, escaping_environment, render_sample};

/// Telegram's limit on a message's text, in characters after entity parsing.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// Tags Telegram's HTML parse mode understands (anything else is rejected by the API).
const SUPPORTED_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-spoiler",
    "span",
];

/// The default message (Telegram HTML: b, i, code, a href). Rendered as `text.html`, so every
/// value is escaped.
pub const DEFAULT_TEXT: &str = r#"{% if status == "firing" %}🔴{% else %}✅{% endif %} <b>{{ title }}</b>
{% if summary %}{{ summary }}
{% endif %}{% if rule %}Rule: <code>{{ rule }}</code>
{% endif %}Source: <b>{{ source }}</b> · severity: <b>{{ severity }}</b>
{% if firing_count %}Stuck orders: <b>{{ firing_count }}</b>, oldest for <b>{{ oldest_age }}</b>
{% for o in orders %}• <code>{{ o.order_id }}</code> {{ o.status }} for {{ o.age }}{% for k, v in o.labels|items %} · {{ k }}: {{ v }}{% endfor %}{% for l in o.links %} · <a href="{{ l.url }}">{{ l.name }}</a>{% endfor %}
{% endfor %}{% if more %}…and {{ more }} more
{% endif %}{% endif %}{% if resolved_count %}Recovered: <b>{{ resolved_count }}</b>
{% for o in resolved %}• <code>{{ o.order_id }}</code> was {{ o.status }}{% for k, v in o.labels|items %} · {{ k }}: {{ v }}{% endfor %}
{% endfor %}{% if resolved_more %}…and {{ resolved_more }} more
{% endif %}{% endif %}{% if description %}<i>{{ description }}</i>
{% endif %}{% if external_url %}<a href="{{ external_url }}">Open orderwatch</a>{% endif %}"#;

/// Expands `${ENV}`/`${file:PATH}` in `bot_token` and `api_url` in place (relative to
/// `base`) and checks every value; returns each problem with the location of the
/// offending value. Messages never contain the token.
pub fn validate(c: &mut TelegramConfig, base: &Path) -> Vec<(Location, String)> {
    let mut problems = Vec::new();
    let token = &mut c.bot_token;
    match expand_secrets(&token.value, base) {
        Ok(v) => {
            if !is_bot_token(&v) {
                problems.push((
                    token.referenced,
                    "bot_token does not look like a bot token (digits:letters, from @BotFather)"
                        .into(),
                ));
            }
            token.value = v;
        }
        Err(e) => problems.push((token.referenced, format!("bot_token: {e}"))),
    }
    expand_http_url(&mut c.api_url, base, "api_url", &mut problems);
    match &c.chat_id.value {
        ChatId::Id(0) => problems.push((c.chat_id.referenced, "chat_id is 0".into())),
        ChatId::Id(_) => {}
        ChatId::Username(u) => {
            let name = u.strip_prefix('@').unwrap_or_default();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problems.push((
                    c.chat_id.referenced,
                    format!("chat_id {u:?} is neither a number nor an @channelusername"),
                ));
            }
        }
    }
    if let Some(t) = &c.message_thread_id
        && t.value <= 0
    {
        problems.push((t.referenced, "message_thread_id must be positive".into()));
    }
    chat::check_text_and_timeout(&c.text, check_template, &c.timeout, &mut problems);
    problems
}

/// `digits:rest`, the rest URL-safe: anything else would change the request path.
fn is_bot_token(t: &str) -> bool {
    t.split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.chars().all(|c| c.is_ascii_digit())
            && !secret.is_empty()
            && secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// Compiles a custom template and renders the sample notification through it, so a typo or
/// an unsupported tag fails at start-up, not at 3 a.m.
fn check_template(source: &str) -> Result<(), String> {
    check_html(&render_sample(&html_environment(source)?, TEMPLATE)?)
}

/// The template's name: `.html`, so the environment escapes every value.
const TEMPLATE: &str = "text.html";

/// The template environment: minijinja's HTML auto-escaping, narrowed to what Telegram's
/// parser knows: `&`, `<`, `>` and `"` (in `href`). minijinja's default also writes `'` and
/// `/` as numeric entities, which would lengthen links and the counted text for nothing.
fn html_environment(source: &str) -> Result<Environment<'static>, String> {
    escaping_environment(TEMPLATE, source, |s| {
        escape_html(&crate::notify::template::no_mentions(s))
    })
}

/// One piece of Telegram HTML.
#[derive(Debug, PartialEq)]
enum Unit<'a> {
    /// An opening tag with its name.
    Open(&'a str),
    /// A closing tag with its name.
    Close(&'a str),
    /// A visible character (or an entity standing for one), weighing this many UTF-16 units,
    /// the unit Telegram counts in.
    Char(usize),
}

/// Splits Telegram HTML into tags, entities and characters (each with its byte range), or
/// says why Telegram would reject it.
fn units(s: &str) -> Result<Vec<(std::ops::Range<usize>, Unit<'_>)>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = match c {
            '<' => {
                let j = i + s[i..].find('>').ok_or("unclosed `<`: escape it as &lt;")?;
                let inner = &s[i + 1..j];
                let (close, inner) = match inner.strip_prefix('/') {
                    Some(rest) => (true, rest),
                    None => (false, inner),
                };
                let name = inner
                    .split(|c: char| c.is_ascii_whitespace())
                    .next()
                    .unwrap_or_default();
                if !SUPPORTED_TAGS.contains(&name) {
                    return Err(format!(
                        "tag <{name}> is not supported by Telegram (use b, i, u, s, code, pre, a, blockquote)"
                    ));
                }
                out.push((
                    i..j + 1,
                    if close {
                        Unit::Close(name)
                    } else {
                        Unit::Open(name)
                    },
                ));
                j + 1
            }
            '&' => {
                let j = s[i..]
                    .char_indices()
                    .take(12)
                    .find(|&(_, c)| c == ';')
                    .map(|(k, _)| i + k)
                    .ok_or("bare `&`: escape it as &amp;")?;
                let entity = &s[i + 1..j];
                let known = matches!(entity, "lt" | "gt" | "amp" | "quot")
                    || entity
                        .strip_prefix("#x")
                        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                    || entity
                        .strip_prefix('#')
                        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
                if !known {
                    return Err(format!("unknown entity &{entity};"));
                }
                out.push((i..j + 1, Unit::Char(1)));
                j + 1
            }
            '>' => return Err("bare `>`: escape it as &gt;".into()),
            c => {
                out.push((i..i + c.len_utf8(), Unit::Char(c.len_utf16())));
                i + c.len_utf8()
            }
        };
        while chars.next_if(|&(k, _)| k < end).is_some() {}
    }
    Ok(out)
}

/// Checks that text is Telegram HTML: supported tags, properly nested, no bare `<`, `>`, `&`.
pub fn check_html(s: &str) -> Result<(), String> {
    let mut open = Vec::new();
    for (_, unit) in units(s)? {
        match unit {
            Unit::Open(name) => open.push(name),
            Unit::Close(name) => {
                if open.pop() != Some(name) {
                    return Err(format!("</{name}> does not close the innermost open tag"));
                }
            }
            Unit::Char(_) => {}
        }
    }
    match open.last() {
        Some(name) => Err(format!("<{name}> is never closed")),
        None => Ok(()),
    }
}

/// The length Telegram counts: visible characters (UTF-16 units), tags excluded, an entity
/// as one. Text that does not parse counts its raw length.
pub fn visible_len(s: &str) -> usize {
    match units(s) {
        Ok(units) => units
            .iter()
            .map(|(_, u)| if let Unit::Char(w) = u { *w } else { 0 })
            .sum(),
        Err(_) => s.encode_utf16().count(),
    }
}

/// Cuts HTML to at most `max` visible characters, ending with "…": never inside a tag or an
/// entity, and closing the tags left open. Text that does not parse is returned as is (the
/// API will say what is wrong).
pub fn truncate_html(s: &str, max: usize) -> String {
    let Ok(units) = units(s) else {
        return s.to_string();
    };
    if visible_len(s) <= max {
        return s.to_string();
    }
    let mut open: Vec<&str> = Vec::new();
    let mut seen = 0;
    let mut cut = s.len();
    for (range, unit) in &units {
        match unit {
            Unit::Open(name) => open.push(name),
            Unit::Close(_) => {
                open.pop();
            }
            Unit::Char(w) => {
                if seen + w > max.saturating_sub(1) {
                    cut = range.start;
                    break;
                }
                seen += w;
            }
        }
    }
    let mut out = s[..cut].to_string();
    out.push('…');
    for name in open.iter().rev() {
        out.push_str(&format!("</{name}>"));
    }
    out
}

/// The runtime `telegram` channel.
#[derive(Debug)]
pub struct Telegram {
    /// Posts to `{api_url}/bot{token}/sendMessage`: a secret, never formatted.
    poster: chat::Poster,
    chat_id: ChatId,
    message_thread_id: Option<i64>,
    disable_notification: bool,
}

impl Telegram {
    /// Builds the channel from a validated config (secrets expanded).
    pub fn new(name: &str, cfg: &TelegramConfig) -> Result<Telegram, String> {
        if !is_bot_token(&cfg.bot_token.value) {
            return Err("bot_token does not look like a bot token".into());
        }
        let base = http_url(&cfg.api_url.value, "api_url")?;
        let url = http_url(
            &format!(
                "{}/bot{}/sendMessage",
                base.as_str().trim_end_matches('/'),
                cfg.bot_token.value
            ),
            "the sendMessage URL",
        )?;
        let source = cfg.text.as_ref().map_or(DEFAULT_TEXT, |t| t.value.as_str());
        Ok(Telegram {
            poster: chat::Poster::new(
                name,
                url,
                html_environment(source)?,
                cfg.max_orders,
                &cfg.timeout,
            ),
            chat_id: cfg.chat_id.value.clone(),
            message_thread_id: cfg.message_thread_id.as_ref().map(|t| t.value),
            disable_notification: cfg.disable_notification,
        })
    }

    /// The channel's name in the config.
    pub fn name(&self) -> &str {
        self.poster.name()
    }

    /// The message text (Telegram HTML) for `n`, within the 4096-character limit.
    pub fn text(&self, n: &Notification) -> Result<String, String> {
        self.poster.render(
            TEMPLATE,
            n,
            Utc::now(),
            |t| visible_len(t) <= MAX_MESSAGE_CHARS,
            |t| truncate_html(t, MAX_MESSAGE_CHARS),
        )
    }

    /// The `sendMessage` request body for `n`.
    pub fn payload(&self, n: &Notification) -> Result<serde_json::Value, String> {
        let mut body = serde_json::json!({
            "chat_id": self.chat_id,
            "text": self.text(n)?,
            "parse_mode": "HTML",
            "disable_notification": self.disable_notification,
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(thread) = self.message_thread_id {
            body["message_thread_id"] = thread.into();
        }
        Ok(body)
    }
}

impl Deliver for Telegram {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    /// Telegram allows about one message per second to the same chat.
    fn min_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let body = self.payload(n).map_err(DeliveryError::Permanent)?;
        match self.poster.post(&body).await {
            Ok(body) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) if v["ok"] == false => Err(DeliveryError::Permanent(format!(
                    "Telegram answered ok=false: {}",
                    v["description"].as_str().unwrap_or_default()
                ))),
                _ => Ok(()),
            },
            // Telegram says when to retry in its JSON body, not always in a header.
            Err(DeliveryError::RateLimited {
                retry_after: None,
                detail,
            }) => Err(DeliveryError::RateLimited {
                retry_after: json_retry_after(&detail),
                detail,
            }),
            Err(e) => Err(e),
        }
    }
}

/// `parameters.retry_after` of a Telegram error body embedded in an error detail
/// (`HTTP 429 …: {"ok":false,…}`).
fn json_retry_after(detail: &str) -> Option<Duration> {
    let json = &detail[detail.find('{')?..];
    let v: serde_json::Value = serde_json::Deserializer::from_str(json)
        .into_iter()
        .next()?
        .ok()?;
    v["parameters"]["retry_after"]
        .as_u64()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::template::{MessageContext, render};

    #[test]
    fn html_units_count_visible_characters() {
        let s = "<b>a &amp; b</b> <a href=\"http://x/?a=1&amp;b=2\">link</a> é😀";
        check_html(s).unwrap();
        // "a & b" (5) + " " + "link" (4) + " " + "é" (1) + "😀" (2 UTF-16 units)
        assert_eq!(visible_len(s), 14);
        assert!(check_html("<b>x</i>").is_err());
        assert!(check_html("<b>x").is_err());
        assert!(check_html("a < b").is_err());
        assert!(check_html("a & b").is_err());
        assert!(check_html("a > b").is_err());
        assert!(check_html("<div>x</div>").is_err());
        assert!(check_html("&nbsp;").is_err());
        check_html("&#39;&#x27;&quot;").unwrap();
    }

    #[test]
    fn truncation_never_cuts_a_tag_or_an_entity() {
        let s = "<b>bold &amp; more</b> <a href=\"http://x\">link text</a> tail";
        for max in 1..visible_len(s) {
            let t = truncate_html(s, max);
            check_html(&t).unwrap_or_else(|e| panic!("max {max}: {t}: {e}"));
            assert!(visible_len(&t) <= max, "max {max}: {t}");
            assert!(
                t.ends_with('…') || t.ends_with("…</b>") || t.ends_with("…</a>"),
                "{t}"
            );
        }
        assert_eq!(truncate_html(s, 100), s);
        assert_eq!(truncate_html(s, 8), "<b>bold &amp; …</b>");
    }

    #[test]
    fn default_template_escapes_values_and_only_uses_supported_tags() {
        let env = html_environment(DEFAULT_TEXT).unwrap();
        let n = Notification::sample("ops", "http://ow:9187/?a=1&b=\"2\"");
        let text = render(&env, TEMPLATE, &MessageContext::new(&n, 10, Utc::now())).unwrap();
        check_html(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        assert!(text.contains("pendant &amp; chain &lt;test&gt;"), "{text}");
        assert!(
            text.contains("<a href=\"http://ow:9187/?a=1&amp;b=&quot;2&quot;\">"),
            "{text}"
        );
        assert!(text.contains("Recovered: <b>1</b>"), "{text}");
    }

    #[test]
    fn hostile_data_neither_links_nor_mentions() {
        let env = html_environment(DEFAULT_TEXT).unwrap();
        let n = Notification::hostile();
        let text = render(&env, TEMPLATE, &MessageContext::new(&n, 10, Utc::now())).unwrap();
        check_html(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        assert!(!text.to_ascii_lowercase().contains("javascript:"), "{text}");
        assert!(!text.contains("data:text"), "{text}");
        assert!(!text.contains("@all") && !text.contains("@here"), "{text}");
    }

    #[test]
    fn custom_templates_are_checked() {
        assert!(check_template("<b>{{ title }}</b>").is_ok());
        assert!(check_template("<h1>{{ title }}</h1>").is_err());
        assert!(check_template("{{ title | nosuchfilter }}").is_err());
        assert!(check_template("{% if %}").is_err());
    }

    #[test]
    fn chat_ids_and_tokens() {
        let id: ChatId = serde_json::from_str("-1001234567890").unwrap();
        assert_eq!(id, ChatId::Id(-1001234567890));
        let id: ChatId = serde_json::from_str("\"-42\"").unwrap();
        assert_eq!(id, ChatId::Id(-42));
        let id: ChatId = serde_json::from_str("\"@ops_alerts\"").unwrap();
        assert_eq!(serde_json::to_value(&id).unwrap(), "@ops_alerts");
        assert!(is_bot_token("123456:AAE-x_y"));
        assert!(!is_bot_token("123456:AAE/../x"));
        assert!(!is_bot_token("abc:def"));
    }

    #[test]
    fn retry_after_from_the_json_body() {
        let detail = r#"HTTP 429 Too Many Requests: {"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#;
        assert_eq!(json_retry_after(detail), Some(Duration::from_secs(7)));
        assert_eq!(json_retry_after("HTTP 429: slow down"), None);
    }
}
