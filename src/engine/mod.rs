//! The engine: runs rules on their schedules (`rule::Schedule`), runs evaluations, keeps the
//! alert state machine and persists it in the state store.

mod alerts;
mod daemon;
mod observe;
mod store;

pub use alerts::{
    Alert, AlertBook, AlertState, Annotate, Coverage, Notes, Observation, Pass, RuleTiming,
    Transition, TransitionKind, Unsaved,
};
pub use daemon::{
    Current, Daemon, OVERFLOW_KEY, RuleStatus, Shared, SourceStatus, StartError, Verdict,
    check_online, evaluate_once, run,
};
pub use daemon::{Parts, build_parts};
pub use observe::{Applier, RuleParts, observation, unchanged};
pub use store::{Store, StoreError};
