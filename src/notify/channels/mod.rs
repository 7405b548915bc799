//! The integrations, one file each: how a [`Notification`](super::Notification) becomes
//! what a service accepts, and how that service's failures are told apart (retry or give
//! up). Each channel's config sits beside its code. [`chat`] holds what the chat services
//! share; [`alertmanager`] pushes the alert state itself (not notifications) to
//! Alertmanager; [`log`] writes state changes to the daemon's log.

pub mod alertmanager;
pub mod chat;
pub mod email;
pub mod log;
pub mod mattermost;
pub mod slack;
pub mod telegram;
pub mod webhook;
