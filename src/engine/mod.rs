//! The engine orchestrates: it runs rules on their schedules (`rule::Schedule`), hands their
//! observations to the alert book ([`crate::alert`]) and keeps it saved, watches source
//! health, and reloads the config into a new generation of tasks. It holds no alert state of
//! its own and serves no HTTP (see `crate::serve`).
//!
//! - [`shared`](self::Shared): what the tasks and the HTTP handlers share; start-up errors.
//! - `daemon`: build, start, reload, stop ([`Daemon`], [`Running`]).
//! - `evaluate`: one evaluation of a rule group and its metrics; the schedule loop; `once`.
//! - `flow`: the order flow loop (transitions → metrics, state saved).
//! - `health`: per-status gauges, replication lag, `SourceDown`/`SourceStale`.
//! - `online`: `check`'s online half.

mod daemon;
mod evaluate;
mod flow;
mod health;
mod online;
mod shared;

pub use daemon::{Daemon, Running};
pub use evaluate::evaluate_once;
pub use online::{Verdict, check_online, check_templates};
pub use shared::{
    Current, MAX_LOOKUPS, OWN_RULES, Parts, RULE_FAILING_RULE, RuleStatus, SOURCE_DOWN_RULE,
    SOURCE_STALE_RULE, Shared, SourceStatus, StartError, TREND_WINDOW, Trends, build_parts,
};
