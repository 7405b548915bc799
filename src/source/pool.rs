//! One PostgreSQL pool per source. Every session is read-only
//! (`default_transaction_read_only`), has the source's `statement_timeout`, and identifies
//! itself as `application_name=orderwatch`, so a DBA sees who is querying and nothing we run
//! can write or run away.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::model::OrderModel;
use super::tls;
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
    target: String,
    pool: Pool,
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
        // libpq's verify-ca / verify-full are not known to tokio-postgres: we take them out of
        // the URL and verify ourselves.
        let (url, verify) = strip_verify_sslmode(&cfg.url.value);
        let mut pg = tokio_postgres::Config::from_str(&url).map_err(|e| bad(e.to_string()))?;
        let mut options = pg.get_options().map(str::to_string).unwrap_or_default();
        options.push_str(&format!(
            " -c default_transaction_read_only=on -c statement_timeout={}",
            cfg.statement_timeout.0.as_millis()
        ));
        pg.options(options.trim());
        pg.application_name("orderwatch");
        pg.connect_timeout(cfg.connect_timeout.0);
        if verify {
            pg.ssl_mode(SslMode::Require);
        }
        let target = describe_target(&pg);
        let mgr_cfg = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if pg.get_ssl_mode() == SslMode::Disable {
            Manager::from_config(pg, NoTls, mgr_cfg)
        } else {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls::client_config(verify));
            Manager::from_config(pg, tls, mgr_cfg)
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
            target,
            pool,
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

    /// Runs one query on a pooled read-only session.
    #[tracing::instrument(name = "query", skip_all, fields(source = %self.name,
        otel.kind = "client", db.system = "postgresql", db.statement = %statement_head(sql),
        rows = tracing::field::Empty, error = tracing::field::Empty))]
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, SourceError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.query_error(&e))?;
        let result = client
            .query(&stmt, params)
            .await
            .map_err(|e| self.query_error(&e));
        match &result {
            Ok(rows) => tracing::Span::current().record("rows", rows.len()),
            Err(e) => tracing::Span::current().record("error", tracing::field::display(e)),
        };
        result
    }

    /// `EXPLAIN (FORMAT JSON)` of `sql` with `params`, planned with sequential scans
    /// discouraged (`enable_seqscan = off`, in a transaction that is rolled back): a Seq Scan
    /// in that plan means no index can serve the query, whatever the table's size today.
    pub async fn explain(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<serde_json::Value, SourceError> {
        let client = self.client().await?;
        client
            .batch_execute("BEGIN READ ONLY; SET LOCAL enable_seqscan = off")
            .await
            .map_err(|e| self.query_error(&e))?;
        let result = client
            .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), params)
            .await
            .map_err(|e| self.query_error(&e));
        let _ = client.batch_execute("ROLLBACK").await;
        Ok(result?.get(0))
    }

    /// The parameter types PostgreSQL infers for `sql`.
    pub async fn param_types(
        &self,
        sql: &str,
    ) -> Result<Vec<tokio_postgres::types::Type>, SourceError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.query_error(&e))?;
        Ok(stmt.params().to_vec())
    }

    /// Prepares `sql` without running it: the server checks that tables and columns exist.
    pub async fn prepare(&self, sql: &str) -> Result<(), SourceError> {
        let client = self.client().await?;
        client
            .prepare(sql)
            .await
            .map(|_| ())
            .map_err(|e| self.query_error(&e))
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

/// Removes `sslmode=verify-ca|verify-full` from a URL's query; returns whether it was there.
fn strip_verify_sslmode(url: &str) -> (String, bool) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), false);
    };
    let mut verify = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let is_verify = *kv == "sslmode=verify-full" || *kv == "sslmode=verify-ca";
            verify |= is_verify;
            !is_verify
        })
        .collect();
    if kept.is_empty() {
        (base.to_string(), verify)
    } else {
        (format!("{base}?{}", kept.join("&")), verify)
    }
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
    fn verify_modes_are_taken_out_of_the_url() {
        assert_eq!(
            strip_verify_sslmode("postgres://u@h/db?sslmode=verify-full&connect_timeout=3"),
            ("postgres://u@h/db?connect_timeout=3".to_string(), true)
        );
        assert!(!strip_verify_sslmode("postgres://u@h/db?sslmode=require").1);
        assert_eq!(
            strip_verify_sslmode("postgres://u@h/db?sslmode=verify-ca").0,
            "postgres://u@h/db"
        );
    }

    #[test]
    fn target_has_no_credentials() {
        let pg = tokio_postgres::Config::from_str("postgres://alice:hunter2@db.example:6432/shop")
            .unwrap();
        let t = describe_target(&pg);
        assert_eq!(t, "db.example:6432/shop");
        assert!(!t.contains("hunter2"));
    }
}
