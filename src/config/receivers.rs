//! What users write for the direct channels: `receivers` (one channel each: email, Slack,
//! Mattermost, Telegram, webhook), the `route` tree, `inhibit_rules` and `time_intervals`,
//! in Alertmanager's shapes.
//!
//! Config owns every config struct (see ARCHITECTURE.md, "Config ownership"): these are plain
//! data. What only the notify layer can check (a template renders in its channel's escaping,
//! matchers compile, the route tree builds, a time zone exists) is `notify::check`, which
//! `configure::load` runs after config's own checks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use super::duration::Dur;

/// Orders listed per chat message by default; the rest are counted as "and K more".
fn default_chat_max_orders() -> usize {
    10
}

/// HTTP timeout per chat request by default.
fn default_chat_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// Config under `receivers: { NAME: { email: {...} } }`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// "host:port" of the SMTP server (relay), e.g. smtp.example.com:587.
    pub smarthost: Spanned<String>,
    /// `starttls` (default; port 587), `tls` (implicit TLS, port 465) or `none` (plain, for a
    /// local relay).
    #[serde(default)]
    pub tls: EmailTls,
    /// PEM file with extra trusted CA certificates (a corporate relay's own CA); relative to
    /// the config file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SMTP AUTH user; `${ENV}` / `${file:PATH}` expanded.
    #[serde(default)]
    pub username: Option<Spanned<String>>,
    /// SMTP AUTH password; `${ENV}` / `${file:PATH}` expanded; never logged.
    #[serde(default)]
    pub password: Option<Spanned<String>>,
    /// Sender address (`ops@example.com` or `orderwatch <ops@example.com>`).
    pub from: Spanned<String>,
    /// Recipients (at least one); all go into `To`, one message for all of them.
    pub to: Vec<Spanned<String>>,
    /// Subject template (minijinja over the message context); default: the context's `title`.
    #[serde(default)]
    pub subject: Option<String>,
    /// Plain-text body template; not escaped.
    #[serde(default)]
    pub text: Option<String>,
    /// HTML body template; every `{{ value }}` is HTML-escaped.
    #[serde(default)]
    pub html: Option<String>,
    /// Orders listed per message before "and K more".
    #[serde(default = "default_email_max_orders")]
    pub max_orders: usize,
    /// Per-message timeout: connect, TLS, AUTH and the whole SMTP exchange.
    #[serde(default = "default_email_timeout")]
    pub timeout: Dur,
}

// Hand-written so that logging a config with `{:?}` cannot print the password.
impl fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailConfig")
            .field("smarthost", &self.smarthost.value)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("username", &self.username.as_ref().map(|u| &u.value))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from.value)
            .field(
                "to",
                &self.to.iter().map(|t| t.value.as_str()).collect::<Vec<_>>(),
            )
            .field("subject", &self.subject)
            .field("text", &self.text)
            .field("html", &self.html)
            .field("max_orders", &self.max_orders)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How the connection to the smarthost is protected.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (else nothing is
    /// sent): the submission port, 587.
    #[default]
    Starttls,
    /// TLS from the first byte: the submissions port, 465.
    Tls,
    /// No encryption: only for a relay on the same host or a trusted network. Credentials
    /// are then accepted only for a loopback smarthost.
    None,
}

impl EmailTls {
    /// The mode as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            EmailTls::Starttls => "starttls",
            EmailTls::Tls => "tls",
            EmailTls::None => "none",
        }
    }
}

fn default_email_max_orders() -> usize {
    20
}
fn default_email_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

/// A Slack incoming webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming-webhook URL (`https://hooks.slack.com/services/…`). The URL is the
    /// credential: write it as `${ENV}` or `${file:PATH}`; it never appears in logs or errors.
    pub webhook_url: Spanned<String>,
    /// Channel override (`#ops`); only legacy webhooks honour it, app webhooks post to the
    /// channel they were created for.
    #[serde(default)]
    pub channel: Option<String>,
    /// Sender name override (legacy webhooks only).
    #[serde(default)]
    pub username: Option<String>,
    /// Sender icon as an emoji code, e.g. `:rotating_light:` (legacy webhooks only).
    #[serde(default)]
    pub icon_emoji: Option<String>,
    /// A minijinja template (Slack mrkdwn) replacing the default message; values are escaped
    /// for mrkdwn, `{{ url|slack_url }}` fits a URL into `<url|label>`. The message is then
    /// this text alone, without the Block Kit layout.
    #[serde(default)]
    pub text: Option<Spanned<String>>,
    /// Orders listed per message; the rest are counted as "and K more".
    #[serde(default = "default_chat_max_orders")]
    pub max_orders: usize,
    /// HTTP timeout per request.
    #[serde(default = "default_chat_timeout")]
    pub timeout: Dur,
}

/// A Mattermost incoming webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MattermostConfig {
    /// The incoming-webhook URL (`https://mattermost.example/hooks/xxx`). The URL is the
    /// credential: write it as `${ENV}` or `${file:PATH}`; it never appears in logs or errors.
    pub webhook_url: Spanned<String>,
    /// Channel override (`town-square` or `@username`), if the webhook allows it.
    #[serde(default)]
    pub channel: Option<String>,
    /// Sender name override, if the server allows it.
    #[serde(default)]
    pub username: Option<String>,
    /// Sender picture override (an http(s) URL), if the server allows it.
    #[serde(default)]
    pub icon_url: Option<Spanned<String>>,
    /// A minijinja template (Markdown) replacing the default message; values are escaped for
    /// Markdown, `{{ value|code }}` writes one as inline code.
    #[serde(default)]
    pub text: Option<Spanned<String>>,
    /// Orders listed per message (fewer when the post limit needs it); the rest are counted
    /// as "and K more".
    #[serde(default = "default_chat_max_orders")]
    pub max_orders: usize,
    /// HTTP timeout per request.
    #[serde(default = "default_chat_timeout")]
    pub timeout: Dur,
}

/// A Telegram chat: a numeric id (`-1001234567890`) or a public `@channelusername`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ChatId {
    /// A numeric chat id (negative for groups and channels).
    Id(i64),
    /// `@channelusername`.
    Username(String),
}

impl<'de> Deserialize<'de> for ChatId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ChatId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a numeric chat id or an @channelusername")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ChatId, E> {
                Ok(ChatId::Id(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ChatId, E> {
                i64::try_from(v)
                    .map(ChatId::Id)
                    .map_err(|_| E::custom("chat id out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ChatId, E> {
                let v = v.trim();
                Ok(v.parse()
                    .map_or_else(|_| ChatId::Username(v.to_string()), ChatId::Id))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl std::fmt::Display for ChatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatId::Id(id) => write!(f, "{id}"),
            ChatId::Username(name) => f.write_str(name),
        }
    }
}

/// A Telegram bot posting to one chat.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot token from @BotFather (`123456:ABC-…`); a secret: write `${ENV}` or
    /// `${file:PATH}`. It never appears in logs or errors.
    pub bot_token: Spanned<String>,
    /// The chat: a numeric id (`-1001234567890`) or a public `@channelusername`.
    pub chat_id: Spanned<ChatId>,
    /// The topic of a forum supergroup to post in.
    #[serde(default)]
    pub message_thread_id: Option<Spanned<i64>>,
    /// The Bot API base URL; change it for a self-hosted Bot API server (or a test receiver).
    #[serde(default = "default_api_url")]
    pub api_url: Spanned<String>,
    /// A minijinja template (Telegram HTML: b, i, code, pre, a href) replacing the default
    /// message; values are HTML-escaped automatically.
    #[serde(default)]
    pub text: Option<Spanned<String>>,
    /// Sends the message silently (no sound on the phones), e.g. for a warnings-only chat.
    #[serde(default)]
    pub disable_notification: bool,
    /// Orders listed per message (fewer when the 4096-character limit needs it); the rest are
    /// counted as "and K more".
    #[serde(default = "default_chat_max_orders")]
    pub max_orders: usize,
    /// HTTP timeout per request.
    #[serde(default = "default_chat_timeout")]
    pub timeout: Dur,
}

fn default_api_url() -> Spanned<String> {
    Spanned::new(
        "https://api.telegram.org".to_string(),
        Location::UNKNOWN,
        Location::UNKNOWN,
    )
}

/// A generic webhook receiving Alertmanager's webhook format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST. It may carry a token in its path or query, so it is a secret:
    /// `${ENV}` and `${file:PATH}` are expanded and the URL never appears in logs or errors.
    pub url: Spanned<String>,
    /// Extra request headers, e.g. `Authorization: Bearer ${HOOK_TOKEN}`; values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// At most this many alerts per request (default 1 000), 0 for all (unbounded: one
    /// request may then carry a whole incident). Beyond it alerts are dropped and counted in
    /// `truncatedAlerts`, as Alertmanager's `max_alerts` does.
    #[serde(default = "default_webhook_max_alerts")]
    pub max_alerts: usize,
    /// HTTP timeout per request.
    #[serde(default = "default_webhook_timeout")]
    pub timeout: Dur,
}

/// A request's alerts by default: an incident's 100 000 alerts do not make one 50 MB body.
pub const DEFAULT_MAX_ALERTS: usize = 1000;

fn default_webhook_max_alerts() -> usize {
    DEFAULT_MAX_ALERTS
}

fn default_webhook_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// A receiver as configured: `receivers: { NAME: { telegram: {...} } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Email over SMTP.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// Slack incoming webhook.
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    /// Mattermost incoming webhook.
    #[serde(default)]
    pub mattermost: Option<MattermostConfig>,
    /// Telegram Bot API.
    #[serde(default)]
    pub telegram: Option<TelegramConfig>,
    /// Alertmanager-compatible webhook (JSON, version 4).
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// A route as configured (Alertmanager's `route`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The receiver; children inherit it.
    #[serde(default)]
    pub receiver: Option<Spanned<String>>,
    /// Label matchers, all of which must hold (`severity="critical"`, `team=~"sales|ops"`).
    #[serde(default)]
    pub matchers: Vec<Spanned<String>>,
    /// Labels alerts are grouped by; one message per group. Inherited; default `[rule]`.
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// Wait this long after a group's first alert before the first message. Inherited; default 30s.
    #[serde(default)]
    pub group_wait: Option<Dur>,
    /// Then wait at least this long before a message about changes. Inherited; default 5m.
    #[serde(default)]
    pub group_interval: Option<Dur>,
    /// Repeat an unchanged, still-firing group after this long. Inherited; default 4h.
    #[serde(default)]
    pub repeat_interval: Option<Dur>,
    /// Send a message when the group's alerts resolve. Inherited; default true.
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Names of `time_intervals` during which this route sends nothing. Inherited.
    #[serde(default)]
    pub mute_time_intervals: Option<Vec<Spanned<String>>>,
    /// Keep matching later siblings after this route matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Child routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// A time window: weekdays and times of day in a time zone (Alertmanager's time interval).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalConfig {
    /// Weekdays or ranges: `monday`, `saturday:sunday`. Empty: every day.
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// Times of day: `{start_time: "22:00", end_time: "24:00"}`, end exclusive. Empty: all day.
    #[serde(default)]
    pub times: Vec<TimeRange>,
    /// IANA time zone of weekdays and times (default UTC).
    #[serde(default)]
    pub location: Option<String>,
}

/// A time-of-day range.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    /// `HH:MM`, inclusive.
    pub start_time: String,
    /// `HH:MM`, exclusive; `24:00` is midnight at the end of the day.
    pub end_time: String,
}

/// An inhibit rule as configured (Alertmanager's format).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Matchers the muting (firing) alert satisfies, e.g. `severity="critical"`.
    #[serde(default)]
    pub source_matchers: Vec<Spanned<String>>,
    /// Matchers the muted alert satisfies, e.g. `severity="warning"`.
    pub target_matchers: Vec<Spanned<String>>,
    /// Labels whose values must be the same (and present) on both.
    #[serde(default)]
    pub equal: Vec<String>,
}
