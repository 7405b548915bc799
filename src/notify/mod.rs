//! Notifiers: where alert state goes. The engine publishes state changes to a [`Hub`]; each
//! notifier runs as its own task and never queries a database.

mod alertmanager;
mod hub;
mod log;

pub use alertmanager::{AlertmanagerNotifier, PostableAlert, to_postable};
pub use hub::Hub;
pub use log::LogNotifier;
