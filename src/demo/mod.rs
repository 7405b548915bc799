//! The demo: the reference schema with realistic generated orders, a simulator that keeps them
//! moving, and the daemon running on it with the shipped rules.
mod run;
pub mod seed;
pub mod services;
pub mod simulator;

pub use run::{DemoEnv, DemoError, run, start_env};
