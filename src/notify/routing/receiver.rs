//! Receivers: named direct channels. A receiver is exactly one channel (`email`, `slack`,
//! `mattermost`, `telegram`, `webhook`); [`Channel`] dispatches to it.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Location;

use crate::notify::channel::{Deliver, DeliveryError};
use crate::notify::channels::email::{Email, EmailConfig};
use crate::notify::channels::mattermost::{Mattermost, MattermostConfig};
use crate::notify::channels::slack::{Slack, SlackConfig};
use crate::notify::channels::telegram::{Telegram, TelegramConfig};
use crate::notify::channels::webhook::{Webhook, WebhookConfig};
use crate::notify::message::Notification;

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

impl ReceiverConfig {
    /// Checks that exactly one channel is set and validates it (expanding its secrets).
    pub fn validate(&mut self, base: &Path) -> Vec<(Option<Location>, String)> {
        let set = [
            self.email.is_some(),
            self.slack.is_some(),
            self.mattermost.is_some(),
            self.telegram.is_some(),
            self.webhook.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if set != 1 {
            return vec![(
                None,
                "a receiver needs exactly one of email, slack, mattermost, telegram, webhook"
                    .into(),
            )];
        }
        let problems = if let Some(c) = &mut self.email {
            c.validate(base)
        } else if let Some(c) = &mut self.slack {
            c.validate(base)
        } else if let Some(c) = &mut self.mattermost {
            c.validate(base)
        } else if let Some(c) = &mut self.telegram {
            c.validate(base)
        } else if let Some(c) = &mut self.webhook {
            c.validate(base)
        } else {
            Vec::new()
        };
        let mut problems: Vec<(Option<Location>, String)> =
            problems.into_iter().map(|(l, m)| (Some(l), m)).collect();
        // Counts are bounded like every other setting (a message lists orders, not millions).
        let counts = [
            (
                "max_orders",
                self.email.as_ref().map(|c| c.max_orders),
                10_000,
            ),
            (
                "max_orders",
                self.slack.as_ref().map(|c| c.max_orders),
                10_000,
            ),
            (
                "max_orders",
                self.mattermost.as_ref().map(|c| c.max_orders),
                10_000,
            ),
            (
                "max_orders",
                self.telegram.as_ref().map(|c| c.max_orders),
                10_000,
            ),
            (
                "max_alerts",
                self.webhook.as_ref().map(|c| c.max_alerts),
                10_000_000,
            ),
        ];
        let timeout = [
            self.email.as_ref().map(|c| c.timeout.0),
            self.slack.as_ref().map(|c| c.timeout.0),
            self.mattermost.as_ref().map(|c| c.timeout.0),
            self.telegram.as_ref().map(|c| c.timeout.0),
            self.webhook.as_ref().map(|c| c.timeout.0),
        ]
        .into_iter()
        .flatten()
        .next();
        if let Some(t) = timeout
            && t > Duration::from_secs(600)
        {
            problems.push((None, "timeout must be at most 10m".to_string()));
        }
        for (what, value, max) in counts {
            if let Some(v) = value
                && v > max
            {
                problems.push((None, format!("{what} must be at most {max} (is {v})")));
            }
        }
        problems
    }
}

/// A built channel.
pub enum Channel {
    /// Email.
    Email(Email),
    /// Slack.
    Slack(Slack),
    /// Mattermost.
    Mattermost(Mattermost),
    /// Telegram.
    Telegram(Telegram),
    /// Webhook.
    Webhook(Webhook),
}

impl Channel {
    /// Builds the channel of a validated receiver.
    pub fn build(name: &str, c: &ReceiverConfig) -> Result<Channel, String> {
        if let Some(c) = &c.email {
            Email::new(name, c).map(Channel::Email)
        } else if let Some(c) = &c.slack {
            Slack::new(name, c).map(Channel::Slack)
        } else if let Some(c) = &c.mattermost {
            Mattermost::new(name, c).map(Channel::Mattermost)
        } else if let Some(c) = &c.telegram {
            Telegram::new(name, c).map(Channel::Telegram)
        } else if let Some(c) = &c.webhook {
            Webhook::new(name, c).map(Channel::Webhook)
        } else {
            Err(format!("receiver {name}: no channel configured"))
        }
    }
}

impl Deliver for Channel {
    fn kind(&self) -> &'static str {
        match self {
            Channel::Email(c) => c.kind(),
            Channel::Slack(c) => c.kind(),
            Channel::Mattermost(c) => c.kind(),
            Channel::Telegram(c) => c.kind(),
            Channel::Webhook(c) => c.kind(),
        }
    }

    fn min_interval(&self) -> Duration {
        match self {
            Channel::Email(c) => c.min_interval(),
            Channel::Slack(c) => c.min_interval(),
            Channel::Mattermost(c) => c.min_interval(),
            Channel::Telegram(c) => c.min_interval(),
            Channel::Webhook(c) => c.min_interval(),
        }
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        match self {
            Channel::Email(c) => c.deliver(n).await,
            Channel::Slack(c) => c.deliver(n).await,
            Channel::Mattermost(c) => c.deliver(n).await,
            Channel::Telegram(c) => c.deliver(n).await,
            Channel::Webhook(c) => c.deliver(n).await,
        }
    }
}
