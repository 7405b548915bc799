//! Sources: one read-only PostgreSQL pool per configured database, and the order model that
//! turns a database's layout into the SQL the rules run.

pub mod history;
mod model;
mod pool;
pub mod transitions;

pub use history::{History, Unjudgeable};
pub use model::{
    Columns, HistorySql, MAX_STATUS_LABELS, ModelKind, ModelSql, OTHER_STATUS, OrderModel,
    TimeKind, TransitionSql, fold_statuses, quote,
};
pub use pool::{OrderFound, RowSink, Source, SourceError, describe_pg_error};
pub use transitions::{InFlight, Recorded, TableFlow, Transition, Watermarks};
