//! What the chat channels (Slack, Mattermost, Telegram) share: their config defaults, the
//! checks of a custom `text` template and of the timeout, a message rendered within the
//! service's limit, and the optional sender fields of a webhook body.

use std::time::Duration;

use chrono::{DateTime, Utc};
use minijinja::Environment;
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use crate::config::Dur;
use crate::notify::message::Notification;
use crate::notify::template::render_fitting;

/// Orders listed per message by default; the rest are counted as "and K more".
pub fn default_max_orders() -> usize {
    10
}

/// HTTP timeout per request by default.
pub fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// Checks a chat config's custom `text` template (`check` compiles it and renders the
/// sample through it, so mistakes fail at start-up) and its timeout.
pub fn check_text_and_timeout(
    text: &Option<Spanned<String>>,
    check: impl Fn(&str) -> Result<(), String>,
    timeout: &Dur,
    problems: &mut Vec<(Location, String)>,
) {
    if let Some(text) = text
        && let Err(e) = check(&text.value)
    {
        problems.push((text.referenced, format!("text: {e}")));
    }
    if timeout.0.is_zero() {
        problems.push((Location::UNKNOWN, "timeout must be greater than 0".into()));
    }
}

/// The message for `n`: template `name` of `env` with as many orders as `fits` allows (at
/// most `max_orders`), else `cut` to the limit. A message with nothing to show is an error.
pub fn render_within(
    env: &Environment<'static>,
    name: &str,
    n: &Notification,
    max_orders: usize,
    now: DateTime<Utc>,
    fits: impl Fn(&str) -> bool,
    cut: impl Fn(&str) -> String,
) -> Result<String, String> {
    let (text, fit) = render_fitting(env, name, n, max_orders, now, fits)?;
    let text = if fit { text } else { cut(&text) };
    if text.trim().is_empty() {
        return Err("the template rendered an empty message".into());
    }
    Ok(text)
}

/// Sets each optional field (channel, sender name, icon) of a webhook body that is given.
pub fn set_optional(body: &mut Value, fields: &[(&str, &Option<String>)]) {
    for (key, value) in fields {
        if let Some(v) = value {
            body[*key] = v.as_str().into();
        }
    }
}
