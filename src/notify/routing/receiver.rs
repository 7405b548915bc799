//! Receivers: named direct channels. A receiver is exactly one channel (`email`, `slack`,
//! `mattermost`, `telegram`, `webhook`); [`Channel`] dispatches to it.

use std::path::Path;
use std::time::Duration;

use serde_saphyr::Location;

use crate::config::ReceiverConfig;
use crate::notify::channel::{Deliver, DeliveryError};
use crate::notify::channels::email::{self, Email};
use crate::notify::channels::mattermost::{self, Mattermost};
use crate::notify::channels::slack::{self, Slack};
use crate::notify::channels::telegram::{self, Telegram};
use crate::notify::channels::webhook::{self, Webhook};
use crate::notify::message::Notification;

/// Checks that exactly one channel is set and validates it (expanding its secrets).
pub fn validate(c: &mut ReceiverConfig, base: &Path) -> Vec<(Option<Location>, String)> {
    let set = [
        c.email.is_some(),
        c.slack.is_some(),
        c.mattermost.is_some(),
        c.telegram.is_some(),
        c.webhook.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if set != 1 {
        return vec![(
            None,
            "a receiver needs exactly one of email, slack, mattermost, telegram, webhook".into(),
        )];
    }
    let problems = if let Some(one) = &mut c.email {
        email::validate(one, base)
    } else if let Some(one) = &mut c.slack {
        slack::validate(one, base)
    } else if let Some(one) = &mut c.mattermost {
        mattermost::validate(one, base)
    } else if let Some(one) = &mut c.telegram {
        telegram::validate(one, base)
    } else if let Some(one) = &mut c.webhook {
        webhook::validate(one, base)
    } else {
        Vec::new()
    };
    let mut problems: Vec<(Option<Location>, String)> =
        problems.into_iter().map(|(l, m)| (Some(l), m)).collect();
    // Counts are bounded like every other setting (a message lists orders, not millions).
    let counts = [
        ("max_orders", c.email.as_ref().map(|c| c.max_orders), 10_000),
        ("max_orders", c.slack.as_ref().map(|c| c.max_orders), 10_000),
        (
            "max_orders",
            c.mattermost.as_ref().map(|c| c.max_orders),
            10_000,
        ),
        (
            "max_orders",
            c.telegram.as_ref().map(|c| c.max_orders),
            10_000,
        ),
        (
            "max_alerts",
            c.webhook.as_ref().map(|c| c.max_alerts),
            10_000_000,
        ),
    ];
    let timeout = [
        c.email.as_ref().map(|c| c.timeout.0),
        c.slack.as_ref().map(|c| c.timeout.0),
        c.mattermost.as_ref().map(|c| c.timeout.0),
        c.telegram.as_ref().map(|c| c.timeout.0),
        c.webhook.as_ref().map(|c| c.timeout.0),
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
