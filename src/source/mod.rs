//! Sources: one read-only PostgreSQL pool per configured database, and the order model that
//! turns a database's layout into the SQL the rules run.

mod model;
mod pool;

pub use model::{MAX_STATUS_LABELS, ModelKind, OTHER_STATUS, OrderModel, fold_statuses};
pub use pool::{Source, SourceError, describe_pg_error};
