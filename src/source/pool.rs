//! One PostgreSQL pool per source. Every statement runs alone in its own
//! `BEGIN READ ONLY` transaction with `SET LOCAL statement_timeout`, and that transaction is
//! always rolled back: whatever a statement does to its session (`set_config(…, false)`
//! included) is undone before the connection goes back to the pool, so no rule can make the
//! next one writable or unbounded. Nothing is set per session and no named statement outlives
//! its transaction, so the same holds behind PgBouncer in transaction mode, where consecutive
//! transactions of one client run on different server connections. A role that is a superuser
//! is refused (unless the source allows it): read-only transactions do not stop a superuser's
//! functions such as `pg_terminate_backend` or `pg_read_file`. Sessions identify themselves as
//! `application_name=orderwatch`, so a DBA sees who is querying.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};

use super::model::OrderModel;
use crate::config::SourceConfig;

/// A source failure: connecting or querying. Messages never contain the password.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The URL could not be turned into a pool.
    #[error("source {source_name}: bad configuration: {detail}")]
    Config {
        /// The source.
        source_name: String,
        /// What is wrong.
        detail: String,
    },
    /// No connection could be made (or none became free in time).
    #[error("source {source_name} ({target}): cannot connect: {detail}")]
    Connect {
        /// The source.
        source_name: String,
        /// host:port/dbname, without credentials.
        target: String,
        /// What went wrong.
        detail: String,
    },
    /// A query failed.
    #[error("source {source_name} ({target}): query failed: {detail}")]
    Query {
        /// The source.
        source_name: String,
        /// host:port/dbname, without credentials.
        target: String,
        /// What went wrong (the server's message and SQLSTATE).
        detail: String,
    },
}

/// The useful part of a tokio-postgres error: the server's message and SQLSTATE when there is
/// one, else the error chain (which never includes the password).
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// A configured database.
pub struct Source {
    /// The source's name in the config.
    pub name: String,
    /// Where its orders are.
    pub model: OrderModel,
    /// Statuses never counted (e.g. CLOSED).
    pub terminal_statuses: Vec<String>,
    /// Whether per-status gauges are exported.
    pub gauges: bool,
    /// The statuses the source knows (`statuses`), if listed.
    pub statuses: Option<std::collections::HashSet<String>>,
    target: String,
    pool: Pool,
    /// `BEGIN READ ONLY; SET LOCAL statement_timeout …; SELECT <role check>`: one round trip.
    begin: String,
    allow_superuser: bool,
    /// Parameter types per statement text, for the unnamed statements (see `run_unnamed`).
    param_types: std::sync::Mutex<std::collections::HashMap<String, Vec<Type>>>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("target", &self.target)
            .finish()
    }
}

impl Source {
    /// Builds the pool; connects lazily, so an unreachable database does not stop start-up.
    pub fn build(name: &str, cfg: &SourceConfig) -> Result<Source, SourceError> {
        let bad = |detail: String| SourceError::Config {
            source_name: name.to_string(),
            detail,
        };
        // libpq's TLS parameters (verify-ca/-full, sslrootcert, sslcert, sslkey) are not known
        // to tokio-postgres: they are taken out of the URL and applied with rustls.
        let (url, tls) = crate::config::split_tls(&cfg.url.value, &cfg.base_dir).map_err(bad)?;
        let client_tls = tls.client().map_err(bad)?;
        let mut pg = tokio_postgres::Config::from_str(&url).map_err(|e| bad(e.to_string()))?;
        // No `options` startup parameter: PgBouncer refuses it, and a session setting would
        // reach one server connection only. Read-only and the timeout are set per transaction.
        pg.application_name("orderwatch");
        pg.connect_timeout(cfg.connect_timeout.0);
        let target = describe_target(&pg);
        let mgr_cfg = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match client_tls {
            None => Manager::from_config(pg, NoTls, mgr_cfg),
            Some(t) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(t.config().map_err(bad)?);
                Manager::from_config(pg, tls, mgr_cfg)
            }
        };
        // Waiting for a free connection is bounded too: a stuck pool is a failure, not a hang.
        let wait = cfg.connect_timeout.0 + cfg.statement_timeout.0;
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(cfg.connect_timeout.0 + Duration::from_secs(1)))
            .recycle_timeout(Some(cfg.connect_timeout.0))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let model = OrderModel::from_config(&cfg.orders);
        Ok(Source {
            name: name.to_string(),
            model,
            terminal_statuses: cfg.terminal_statuses.clone(),
            gauges: cfg.gauges,
            statuses: cfg
                .statuses
                .as_ref()
                .map(|s| s.value.iter().cloned().collect()),
            target,
            pool,
            begin: begin_sql(cfg.statement_timeout.0),
            allow_superuser: cfg.allow_superuser,
            param_types: Default::default(),
        })
    }

    /// host:port/dbname, safe to log.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, SourceError> {
        self.pool.get().await.map_err(|e| SourceError::Connect {
            source_name: self.name.clone(),
            target: self.target.clone(),
            detail: match &e {
                deadpool_postgres::PoolError::Backend(pe) => describe_pg_error(pe),
                other => other.to_string(),
            },
        })
    }

    /// Opens a read-only transaction on a pooled connection (one round trip) and checks the
    /// role. `extra` runs inside it first (e.g. `SET LOCAL enable_seqscan = off`).
    async fn begin(&self, extra: &str) -> Result<ReadOnlyTx, SourceError> {
        let client = self.client().await?;
        let tx = ReadOnlyTx {
            client: Some(client),
            discard: false,
        };
        let sql = if extra.is_empty() {
            self.begin.clone()
        } else {
            format!("{}; {extra}", self.begin)
        };
        let messages = tx
            .client()
            .simple_query(&sql)
            .await
            .map_err(|e| self.query_error(&e))?;
        let role = messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap_or("").to_string(), r.get(1) == Some("on")))
            }
            _ => None,
        });
        if let Some((role, true)) = role
            && !self.allow_superuser
        {
            tx.end().await;
            return Err(SourceError::Config {
                source_name: self.name.clone(),
                detail: format!(
                    "role {role:?} is a superuser, refused: a read-only transaction does not \
                     stop a superuser's functions (pg_terminate_backend, pg_read_file). Connect \
                     as a role that may only SELECT (README: a least-privilege role), or set \
                     allow_superuser: true on this source"
                ),
            });
        }
        Ok(tx)
    }

    /// Runs one statement in its own read-only transaction, rolled back afterwards. The
    /// statement is prepared unnamed-per-transaction: prepared, run and closed inside the
    /// transaction, so no statement name is left on a (pooled) server connection.
    #[tracing::instrument(name = "query", skip_all, fields(source = %self.name,
        otel.kind = "client", db.system = "postgresql", db.statement = %statement_head(sql),
        rows = tracing::field::Empty, error = tracing::field::Empty))]
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, SourceError> {
        let result = self.query_in_tx("", sql, params).await;
        match &result {
            Ok(rows) => tracing::Span::current().record("rows", rows.len()),
            Err(e) => tracing::Span::current().record("error", tracing::field::display(e)),
        };
        result
    }

    async fn query_in_tx(
        &self,
        extra: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, SourceError> {
        let mut tx = self.begin(extra).await?;
        let result = self.run_unnamed(&tx, sql, params).await;
        // A type PostgreSQL defines outside the built-in ones (an enum, citext) made
        // tokio-postgres look it up with named statements it caches on the connection: that
        // connection is closed rather than carried to another transaction (a pooler would
        // hand it another server connection, where those names do not exist).
        if let Ok(rows) = &result
            && rows.first().is_some_and(|r| {
                r.columns()
                    .iter()
                    .any(|c| Type::from_oid(c.type_().oid()).is_none())
            })
        {
            tx.discard = true;
        }
        if result.is_err() {
            // The schema may have changed under the cached parameter types.
            self.param_types.lock().expect("types lock").remove(sql);
        }
        tx.end().await;
        result
    }

    /// Runs `sql` as PostgreSQL's unnamed statement, which needs no closing and never outlives
    /// its transaction (the rows a named statement returns keep it alive past the ROLLBACK,
    /// where its Close would reach another server connection behind a pooler). The unnamed
    /// statement needs the parameters' types: learnt once per statement text from a named
    /// prepare that is closed at once, inside the same transaction.
    async fn run_unnamed(
        &self,
        tx: &ReadOnlyTx,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, SourceError> {
        let cached = self
            .param_types
            .lock()
            .expect("types lock")
            .get(sql)
            .cloned();
        let types = match cached {
            Some(t) => t,
            None => {
                let t = self.describe_params(tx, sql).await?;
                self.param_types
                    .lock()
                    .expect("types lock")
                    .insert(sql.to_string(), t.clone());
                t
            }
        };
        if types.len() != params.len() {
            return Err(SourceError::Query {
                source_name: self.name.clone(),
                target: self.target.clone(),
                detail: format!(
                    "the statement takes {} parameters, {} given",
                    types.len(),
                    params.len()
                ),
            });
        }
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params.iter().copied().zip(types).collect();
        tx.client()
            .query_typed(sql, &typed)
            .await
            .map_err(|e| self.query_error(&e))
    }

    /// The parameter types of `sql`, from a named statement closed before anything else is
    /// sent in the transaction.
    async fn describe_params(&self, tx: &ReadOnlyTx, sql: &str) -> Result<Vec<Type>, SourceError> {
        let stmt = tx
            .client()
            .prepare(sql)
            .await
            .map_err(|e| self.query_error(&e))?;
        Ok(stmt.params().to_vec())
    }

    /// `EXPLAIN (FORMAT JSON)` of `sql` with `params`, planned with sequential scans
    /// discouraged (`enable_seqscan = off`, in a transaction that is rolled back): a Seq Scan
    /// in that plan means no index can serve the query, whatever the table's size today.
    pub async fn explain(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<serde_json::Value, SourceError> {
        let rows = self
            .query_in_tx(
                "SET LOCAL enable_seqscan = off",
                &format!("EXPLAIN (FORMAT JSON) {sql}"),
                params,
            )
            .await?;
        let row = rows.first().ok_or_else(|| SourceError::Query {
            source_name: self.name.clone(),
            target: self.target.clone(),
            detail: "EXPLAIN returned no row".into(),
        })?;
        Ok(row.get(0))
    }

    /// The parameter types PostgreSQL infers for `sql`.
    pub async fn param_types(&self, sql: &str) -> Result<Vec<Type>, SourceError> {
        let tx = self.begin("").await?;
        let result = self.describe_params(&tx, sql).await;
        tx.end().await;
        result
    }

    /// Prepares `sql` without running it: the server checks that tables and columns exist.
    pub async fn prepare(&self, sql: &str) -> Result<(), SourceError> {
        self.param_types(sql).await.map(|_| ())
    }

    /// Whether the role may change `table` (INSERT, UPDATE, DELETE or TRUNCATE): `check`
    /// warns, since orderwatch needs SELECT only.
    pub async fn may_write(&self, table: &str) -> Result<bool, SourceError> {
        let rows = self
            .query(
                "SELECT has_table_privilege($1::text, 'INSERT,UPDATE,DELETE,TRUNCATE')",
                &[&table],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    fn query_error(&self, e: &tokio_postgres::Error) -> SourceError {
        let detail = describe_pg_error(e);
        if e.as_db_error().is_none() && e.is_closed() {
            SourceError::Connect {
                source_name: self.name.clone(),
                target: self.target.clone(),
                detail,
            }
        } else {
            SourceError::Query {
                source_name: self.name.clone(),
                target: self.target.clone(),
                detail,
            }
        }
    }
}

impl SourceError {
    /// The source that failed.
    pub fn source_name(&self) -> &str {
        match self {
            SourceError::Config { source_name, .. }
            | SourceError::Connect { source_name, .. }
            | SourceError::Query { source_name, .. } => source_name,
        }
    }
}

/// A pooled connection inside a `BEGIN READ ONLY` transaction. [`ReadOnlyTx::end`] rolls it
/// back and returns the connection to the pool; dropped without `end` (an evaluation cancelled
/// mid-statement) or when the ROLLBACK fails, the connection is taken out of the pool and
/// closed instead, so no open transaction reaches the next user.
struct ReadOnlyTx {
    client: Option<deadpool_postgres::Object>,
    /// Close the connection instead of returning it (see `run_unnamed`).
    discard: bool,
}

impl ReadOnlyTx {
    fn client(&self) -> &deadpool_postgres::Object {
        self.client.as_ref().expect("transaction is open")
    }

    async fn end(mut self) {
        let client = self.client.take().expect("transaction is open");
        // Session-level advisory locks survive a ROLLBACK; they are let go in the same
        // message, so behind a pooler it reaches the same server connection.
        let ended = client
            .batch_execute("ROLLBACK; SELECT pg_advisory_unlock_all()")
            .await;
        if ended.is_err() || self.discard {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Drop for ReadOnlyTx {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// The statement that opens every transaction: read-only, the statement timeout (in
/// milliseconds, never rounded down to 0 = "no timeout"), and the role check's two values.
fn begin_sql(timeout: Duration) -> String {
    format!(
        "BEGIN READ ONLY; SET LOCAL statement_timeout = {}; \
         SELECT current_user::text, current_setting('is_superuser')",
        timeout.as_millis().max(1)
    )
}

fn describe_target(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{}",
        pg.get_dbname().unwrap_or(pg.get_user().unwrap_or(""))
    )
}

/// The start of a statement's text for traces (the SQL is ours or the rule author's, never
/// data: parameters are not included).
fn statement_head(sql: &str) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_has_no_credentials() {
        let pg = tokio_postgres::Config::from_str("postgres://alice:hunter2@db.example:6432/shop")
            .unwrap();
        let t = describe_target(&pg);
        assert_eq!(t, "db.example:6432/shop");
        assert!(!t.contains("hunter2"));
    }
}
