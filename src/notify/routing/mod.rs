//! Which receiver gets which alert, and when: the route tree with its matchers and group
//! settings, mute and active time intervals ([`route`]), and the receivers, each exactly one
//! channel ([`receiver`]).

pub mod receiver;
pub mod route;
