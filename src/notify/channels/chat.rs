//! What the chat channels (Slack, Mattermost, Telegram) share: the checks of a custom `text`
//! template and of the timeout, a message rendered within the service's limit, posting it
//! ([`Poster`]), and the optional sender fields of a webhook body. Their config structs and
//! defaults are config's (`config::SlackConfig`, …).

use chrono::{DateTime, Utc};
use minijinja::Environment;
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use crate::config::Dur;
use crate::notify::channel::{DeliveryError, post_json};
use crate::notify::message::Notification;
use crate::notify::template::render_fitting;

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

/// Sets each optional field (channel, sender name, icon) of a webhook body that is given.
pub fn set_optional(body: &mut Value, fields: &[(&str, &Option<String>)]) {
    for (key, value) in fields {
        if let Some(v) = value {
            body[*key] = v.as_str().into();
        }
    }
}

/// What a chat channel holds besides its own options: its name in the config, the URL it
/// posts to (a credential: never formatted), its message template and order cap, and the
/// HTTP client.
pub struct Poster {
    name: String,
    url: reqwest::Url,
    env: Environment<'static>,
    max_orders: usize,
    client: reqwest::Client,
}

impl std::fmt::Debug for Poster {
    /// Names the channel, never the URL.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Poster {
    /// A poster to `url` with the template environment `env`; requests time out after
    /// `timeout`.
    pub fn new(
        name: &str,
        url: reqwest::Url,
        env: Environment<'static>,
        max_orders: usize,
        timeout: &Dur,
    ) -> Poster {
        Poster {
            name: name.to_string(),
            url,
            env,
            max_orders,
            client: crate::outbound::http_client(timeout.0),
        }
    }

    /// The channel's name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Orders listed per message at most.
    pub fn max_orders(&self) -> usize {
        self.max_orders
    }

    /// The message for `n`: template `template` with as many orders as `fits` allows (at
    /// most the order cap), else `cut` to the limit. A message with nothing to show is an
    /// error.
    pub fn render(
        &self,
        template: &str,
        n: &Notification,
        now: DateTime<Utc>,
        fits: impl Fn(&str) -> bool,
        cut: impl Fn(&str) -> String,
    ) -> Result<String, String> {
        let (text, fit) = render_fitting(&self.env, template, n, self.max_orders, now, fits)?;
        let text = if fit { text } else { cut(&text) };
        if text.trim().is_empty() {
            return Err("the template rendered an empty message".into());
        }
        Ok(text)
    }

    /// Posts `body` as JSON; returns the response body (see `channel::post_json` for how
    /// failures are classified).
    pub async fn post(&self, body: &Value) -> Result<String, DeliveryError> {
        post_json(self.client.post(self.url.clone()), body).await
    }
}
