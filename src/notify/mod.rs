//! Notifiers: where alert state goes. The engine publishes state changes to a [`Hub`]; each
//! notifier runs as its own task and never queries a database.
//!
//! Alertmanager is the first-class path ([`alertmanager`]). Direct channels (email, Slack,
//! Mattermost, Telegram, webhook) deliver one [`Notification`] per alert group through the
//! one [`Deliver`] interface; [`template`] gives them a shared message context.

mod alertmanager;
pub mod channel;
pub mod clock;
pub mod direct;
pub mod dispatch;
pub mod email;
mod hub;
pub mod inhibit;
mod log;
pub mod mattermost;
pub mod message;
pub mod outbox;
pub mod receiver;
pub mod route;
pub mod silence;
pub mod slack;
pub mod telegram;
pub mod template;
pub mod webhook;

pub use alertmanager::{AlertmanagerNotifier, PostableAlert, to_postable};
pub use channel::{Deliver, DeliveryError};
pub use hub::Hub;
pub use log::LogNotifier;
pub use message::{Notification, NotifiedAlert, NotifyStatus};
