//! The `mattermost` channel: an incoming webhook posting Markdown.
//!
//! The default message is a heading line, the facts, and a table of the orders, which
//! Mattermost renders well. Values are escaped for Markdown (a `|` in a label would split a
//! table cell, a `*` start emphasis), and the post stays under Mattermost's 16383-character
//! limit by listing fewer orders ("and K more").

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use minijinja::{Environment, Value as TemplateValue};
use serde_json::{Value, json};
use serde_saphyr::Location;

use super::chat;
use crate::config::MattermostConfig;
use crate::config::expand_secrets;
use crate::notify::channel::{Deliver, DeliveryError, expand_http_url, http_url};
use crate::notify::message::Notification;
use crate::notify::template::{escaping_environment, render_sample};

/// Mattermost's limit on a post's message, in characters.
pub const MAX_POST_CHARS: usize = 16383;

/// The default message (Markdown). Values are escaped; `code` writes a value as inline code.
pub const DEFAULT_TEXT: &str = r#"{% if status == "firing" %}:red_circle:{% else %}:white_check_mark:{% endif %} **{{ title }}**
{% if summary %}{{ summary }}
{% endif %}{% if rule %}**Rule** {{ rule|code }} · {% endif %}**Source** {{ source }} · **Severity** {{ severity }}{% if firing_count %} · **Stuck orders** {{ firing_count }} · **Oldest** {{ oldest_age }}{% endif %}
{% if orders %}
| Order | Status | Age | Labels | Links |
|:------|:-------|----:|:-------|:------|
{% for o in orders %}| {{ o.order_id|code }} | {{ o.status }} | {{ o.age }} | {% for k, v in o.labels|items %}{{ k }}: {{ v }}{% if not loop.last %}, {% endif %}{% endfor %} | {% for l in o.links %}[{{ l.name }}]({{ l.url }}){% if not loop.last %} · {% endif %}{% endfor %} |
{% endfor %}{% endif %}{% if more %}
…and {{ more }} more
{% endif %}{% if resolved_count %}
**Recovered ({{ resolved_count }}):** {% for o in resolved %}{{ o.order_id|code }}{% if not loop.last %}, {% endif %}{% endfor %}{% if resolved_more %} …and {{ resolved_more }} more{% endif %}
{% endif %}{% if description %}
> {{ description }}
{% endif %}{% if external_url %}
[Open orderwatch]({{ external_url }}){% endif %}"#;

/// Expands `${ENV}`/`${file:PATH}` in `webhook_url` in place (relative to `base`) and
/// checks the values; returns each problem with the location of the offending value.
pub fn validate(c: &mut MattermostConfig, base: &Path) -> Vec<(Location, String)> {
    let mut problems = Vec::new();
    expand_http_url(&mut c.webhook_url, base, "webhook_url", &mut problems);
    if let Some(icon) = &mut c.icon_url {
        // Not a secret, but `${ENV}` is handy for a per-environment icon.
        match expand_secrets(&icon.value, base) {
            Ok(v) => icon.value = v,
            Err(e) => problems.push((icon.referenced, format!("icon_url: {e}"))),
        }
        if let Err(e) = http_url(&icon.value, "icon_url") {
            problems.push((icon.referenced, e));
        }
    }
    chat::check_text_and_timeout(&c.text, check_template, &c.timeout, &mut problems);
    problems
}

/// Compiles a custom template and renders the sample through it, so mistakes fail at start-up.
fn check_template(source: &str) -> Result<(), String> {
    render_sample(&markdown_environment(source)?, TEMPLATE).map(drop)
}

const TEMPLATE: &str = "text";

/// A template environment writing every value escaped for Markdown (`|safe` opts out), with
/// a `code` filter.
fn markdown_environment(source: &str) -> Result<Environment<'static>, String> {
    let mut env = escaping_environment(TEMPLATE, source, escape)?;
    env.add_filter("code", code);
    Ok(env)
}

/// Escapes text for Markdown: a backslash before each character that could start markup
/// (CommonMark allows one before any ASCII punctuation, also in link targets and table
/// cells), and line breaks as spaces so a value cannot end a table row. Parentheses stay:
/// with `[` and `]` escaped they cannot form a link. Mentions (`@all`, `@channel`) are
/// neutralised.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in crate::notify::template::no_mentions(s).chars() {
        match c {
            '\\' | '`' | '*' | '_' | '~' | '[' | ']' | '<' | '>' | '|' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `{{ value|code }}`: the value as inline code, which shows it verbatim (no escaping needed
/// inside). A value with a backtick, a `|` or a line break is written escaped instead, since
/// inside code those could not be escaped.
fn code(value: String) -> TemplateValue {
    if value.is_empty() || value.contains(['`', '|', '\n', '\r']) {
        TemplateValue::from_safe_string(escape(&value))
    } else {
        TemplateValue::from_safe_string(format!("`{value}`"))
    }
}

/// The runtime `mattermost` channel.
#[derive(Debug)]
pub struct Mattermost {
    poster: chat::Poster,
    channel: Option<String>,
    username: Option<String>,
    icon_url: Option<String>,
}

impl Mattermost {
    /// Builds the channel from a validated config (secrets expanded).
    pub fn new(name: &str, cfg: &MattermostConfig) -> Result<Mattermost, String> {
        let source = cfg.text.as_ref().map_or(DEFAULT_TEXT, |t| t.value.as_str());
        Ok(Mattermost {
            poster: chat::Poster::new(
                name,
                http_url(&cfg.webhook_url.value, "webhook_url")?,
                markdown_environment(source)?,
                cfg.max_orders,
                &cfg.timeout,
            ),
            channel: cfg.channel.clone(),
            username: cfg.username.clone(),
            icon_url: cfg.icon_url.as_ref().map(|i| i.value.clone()),
        })
    }

    /// The channel's name in the config.
    pub fn name(&self) -> &str {
        self.poster.name()
    }

    /// The Markdown message for `n`, within the post limit.
    pub fn text(&self, n: &Notification) -> Result<String, String> {
        self.poster.render(
            TEMPLATE,
            n,
            Utc::now(),
            |t| t.chars().count() <= MAX_POST_CHARS,
            |t| cut(t, MAX_POST_CHARS),
        )
    }

    /// The webhook's JSON body for `n`.
    pub fn payload(&self, n: &Notification) -> Result<Value, String> {
        let mut body = json!({"text": self.text(n)?});
        chat::set_optional(
            &mut body,
            &[
                ("channel", &self.channel),
                ("username", &self.username),
                ("icon_url", &self.icon_url),
            ],
        );
        Ok(body)
    }
}

/// Cuts a message to `max` characters at a line break where there is one, ending with "…".
fn cut(s: &str, max: usize) -> String {
    let end = s.char_indices().nth(max - 2).map_or(s.len(), |(i, _)| i);
    let head = &s[..end];
    let head = head.rfind('\n').map_or(head, |i| &head[..i]);
    format!("{head}\n…")
}

impl Deliver for Mattermost {
    fn kind(&self) -> &'static str {
        "mattermost"
    }

    /// Incoming webhooks are rate-limited per server; one post a second stays well clear.
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

    fn mattermost(text: Option<&str>) -> Mattermost {
        let spanned = |s: &str| Spanned::new(s.to_string(), Location::UNKNOWN, Location::UNKNOWN);
        Mattermost::new(
            "m",
            &MattermostConfig {
                webhook_url: spanned("https://mm.example/hooks/x"),
                channel: Some("ops".into()),
                username: None,
                icon_url: None,
                text: text.map(spanned),
                max_orders: 10,
                timeout: Dur(Duration::from_secs(10)),
            },
        )
        .unwrap()
    }

    #[test]
    fn hostile_data_neither_links_nor_mentions() {
        let body = mattermost(None).payload(&Notification::hostile()).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(!text.to_ascii_lowercase().contains("javascript:"), "{text}");
        assert!(!text.contains("data:text"), "{text}");
        assert!(!text.contains("@all") && !text.contains("@here"), "{text}");
        assert!(
            text.contains("[trace](https://jaeger/search?q=a%20b%28c%29%7Cd&who=%40all)"),
            "{text}"
        );
    }

    #[test]
    fn escaping_and_code() {
        assert_eq!(escape("a|b *c* <d> e_f\ng"), r"a\|b \*c\* \<d\> e\_f g");
        assert_eq!(code("JW-1".into()).to_string(), "`JW-1`");
        assert_eq!(code("a|b".into()).to_string(), r"a\|b");
    }

    #[test]
    fn sample_is_a_markdown_table_with_escaped_values() {
        let n = Notification::sample("ops", "http://ow:9187");
        let text = mattermost(None).text(&n).unwrap();
        assert!(
            text.contains("\n| Order | Status | Age | Labels | Links |\n"),
            "{text}"
        );
        assert!(
            text.contains(r"order\_type: pendant & chain \<test\>, team: sales |"),
            "{text}"
        );
        assert!(text.contains("**Rule** `submitted_over_1h`"), "{text}");
        assert!(text.contains("**Recovered (1):** `JW-00000017`"), "{text}");
        assert!(text.contains("[Open orderwatch](http://ow:9187)"), "{text}");
        let rows = text.lines().filter(|l| l.starts_with("| `JW-")).count();
        assert_eq!(rows, 2, "{text}");
        for row in text.lines().filter(|l| l.starts_with('|')) {
            let cells = row.replace(r"\|", "").matches('|').count();
            assert_eq!(cells, 6, "{row}");
        }
    }

    #[test]
    fn cut_stays_under_the_limit() {
        let s = "line one\nline two\nline three";
        let c = cut(s, 15);
        assert!(c.chars().count() <= 15, "{c}");
        assert_eq!(c, "line one\n…");
        assert!(check_template("{{ title|nosuch }}").is_err());
        assert!(
            mattermost(Some("{{ '' }}"))
                .text(&Notification::sample("o", ""))
                .is_err()
        );
    }
}
