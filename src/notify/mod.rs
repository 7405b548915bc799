//! Notifiers: where alert state goes. The engine publishes state changes to a [`Hub`]; each
//! notifier runs as its own task and never queries a database. Laid out as Alertmanager's
//! `notify/` is:
//!
//! - the delivery pipeline at the root: [`hub`] (state changes to notifiers), [`dispatch`]
//!   (alerts grouped by route, group_wait/group_interval/repeat_interval), [`outbox`] (what
//!   is due, durable across restarts), [`direct`] (the direct channels' tasks), [`clock`];
//!   [`message`] and [`template`] build what a channel sends; [`channel`] is the one
//!   [`Deliver`] interface a channel implements;
//! - [`channels`]: one file per integration (email, Slack, Mattermost, Telegram, webhook),
//!   their shared chat helper, the Alertmanager push (the first-class path) and the log;
//! - [`routing`]: the route tree, receivers, time intervals;
//! - [`mute`]: silences and inhibition;
//! - [`check()`]: what only notify can check of a config (templates, matchers, the route
//!   tree), run by `configure::load` after config's own checks.

pub mod channel;
pub mod channels;
mod check;
pub mod clock;
pub mod direct;
pub mod dispatch;
mod hub;
pub mod message;
pub mod mute;
pub mod outbox;
pub mod routing;
pub mod template;

pub use channel::{Deliver, DeliveryError};
pub use channels::alertmanager::{AlertmanagerNotifier, PostableAlert, to_postable};
pub use channels::log::LogNotifier;
pub use check::check;
pub use hub::Hub;
pub use message::{Notification, NotifiedAlert, NotifyStatus};
