//! Alert state: what orderwatch knows of every alert and remembers across restarts. No I/O
//! but the store's own file; engine, notify and http read and change it through these types.
//!
//! - [`state`]: an alert, its states, what an evaluation observed, the changes announced.
//! - [`book`]: the state machine over all alerts (pending → firing → resolved).
//! - [`store`]: the SQLite file that keeps the book across restarts.

mod book;
mod state;
mod store;

pub use book::{AlertBook, Pass, Touch, Unsaved};
pub use state::{
    Alert, AlertState, Annotate, Coverage, Labels, Notes, Observation, RESOLVED_RETENTION,
    RuleTiming, Str, Transition, TransitionKind,
};
pub use store::{OpenReport, Store, StoreError};
