//! The engine: runs rules on their schedules (`rule::Schedule`), runs evaluations, moves the
//! alert book ([`crate::alert`]) and keeps it saved in the state store.

mod daemon;

pub use daemon::{
    Current, Daemon, OVERFLOW_KEY, RuleStatus, Shared, SourceStatus, StartError, Verdict,
    check_online, evaluate_once, run,
};
pub use daemon::{Parts, build_parts};
