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

use super::history::{Floor, History, LogRow};
use super::model::{Columns, HistorySql, ModelSql, OrderModel};
use super::transitions::{InFlight, TABLE_READ_LIMIT, TableFlow, TableRow, Transition, Watermarks};
use crate::config::{SourceConfig, StatusNames};

/// A source failure: connecting or querying. Messages never contain the password.
#[derive(Debug, Clone, thiserror::Error)]
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
        let code = db.code().code();
        // A data exception (class 22: a bad cast, a value out of range) quotes the row's
        // value, which may be personal (`invalid input syntax for type integer: "anna@…"`):
        // the message travels to logs, the API and alerts, the value does not.
        let message = if code.starts_with("22") {
            without_quoted(db.message())
        } else {
            db.message().to_string()
        };
        return format!("{}: {message} (SQLSTATE {code})", db.severity());
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

/// `s` with every double-quoted part replaced by `"…"`.
fn without_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut inside = false;
    for c in s.chars() {
        match (c, inside) {
            ('"', false) => {
                out.push_str("\"…");
                inside = true;
            }
            ('"', true) => {
                out.push('"');
                inside = false;
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

/// Batches of rows received ahead of their decoding (see `Source::run_each`).
const PIPELINE: usize = 4;
/// Rows in one such batch.
const PIPELINE_BATCH: usize = 256;

/// Takes the rows of [`Source::query_pair`]'s first statement as they arrive.
pub trait RowSink {
    /// The next row.
    fn row(&mut self, row: Row);
    /// Whether the second statement must run, after the last row.
    fn need_second(&self) -> bool;
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
    /// `time_zone`, when configured.
    pub time_zone: Option<String>,
    /// Beyond this replication lag a standby is stale.
    pub max_replication_lag: Duration,
    /// Everything of the config this source was built from (in memory only: it holds the
    /// URL): a reload keeps a source whose fingerprint is unchanged, with its kept state.
    fingerprint: String,
    /// Since when replay stands still at a position with received WAL waiting.
    behind_since: std::sync::Mutex<Option<(String, std::time::Instant)>>,
    /// Integer status codes → names (`statuses` as a map).
    codes: Option<std::collections::BTreeMap<i64, String>>,
    /// The model's statements, built once the columns' types are known.
    sql: tokio::sync::OnceCell<std::sync::Arc<ModelSql>>,
    /// A status log's kept state (the daemon only; `once` keeps none).
    kept: Option<tokio::sync::Mutex<History>>,
    /// The start-up read of the kept state is done (for `/readyz`).
    kept_ready: std::sync::atomic::AtomicBool,
    /// The statement timeout of the start-up read of a status log.
    load_timeout: Duration,
    target: String,
    pool: Pool,
    /// `BEGIN READ ONLY; SET LOCAL statement_timeout …; SELECT <role check>`: one round trip.
    begin: String,
    allow_superuser: bool,
    /// Parameter types per statement text, for the unnamed statements (see `run_unnamed`).
    param_types: std::sync::Mutex<std::collections::HashMap<String, Vec<Type>>>,
    /// One order lookup at a time (see [`Source::order`]): lookups never hold more than one
    /// connection of the pool, so they cannot starve the rules.
    lookups: tokio::sync::Semaphore,
    /// Transitions are observed (`flow`, the daemon only).
    flow: bool,
    /// The `flow_label` column's index among the model's labels.
    flow_label: Option<usize>,
    /// A table's (or query's) transition reader, once recording has started.
    table_flow: tokio::sync::Mutex<Option<TableFlow>>,
    /// Recording asked for ([`Source::record_transitions`]), with what the previous run
    /// persisted; taken by the first read.
    record_from: std::sync::Mutex<Option<Watermarks>>,
}

/// What [`Source::transitions`] read.
#[derive(Debug, Default)]
pub struct FlowRead {
    /// Orders seen entering a status since the last call, oldest first per read.
    pub transitions: Vec<Transition>,
    /// Transitions dropped because nobody took them (see `transitions::MAX_WAITING`).
    pub dropped: u64,
    /// Where the reads stand now (persisted, so that a restart counts what lies above).
    pub watermarks: Watermarks,
    /// The first read of a run only: the orders in flight then, for flows to time from.
    pub current: Vec<InFlight>,
    /// Orders in flight the reader keeps (a table's), and its bytes, estimated.
    pub in_flight: usize,
    /// See `in_flight`.
    pub approx_bytes: usize,
}

/// How far before the last read's clock a table's transition read re-reads: a row written
/// with an earlier time and committed late (or on a skewed clock) is still counted, once.
pub const TABLE_FLOW_OVERLAP_SECS: u64 = 120;

/// A table's order in flight is forgotten after this long in one status (deleted or archived
/// orders never leave by a transition): 8 weeks, twice the histograms' last bucket.
pub const IN_FLIGHT_EXPIRY_SECS: i64 = 8 * 7 * 86400;

/// One order as a source holds it (see [`Source::order`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OrderFound {
    /// The current status (its name, for a coded column).
    pub status: String,
    /// When the order entered it (for a status log: the first row of its current run);
    /// `None` when only its status could be read (rows beyond a status log's lookback, a
    /// NULL or infinite time).
    pub entered_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The allow-listed label columns, by column name (absent values left out).
    pub labels: std::collections::BTreeMap<String, String>,
    /// A status log's runs within the lookback, oldest first: each status and when it was
    /// entered (repeats of a status are one run). Empty for a table or a query.
    pub history: Vec<(String, chrono::DateTime<chrono::Utc>)>,
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
    /// With `keep_state` a status log's current state is kept and read incrementally (the
    /// daemon); without, every rule runs its full statement (`once`, `check`, `explain`).
    pub fn build(name: &str, cfg: &SourceConfig, keep_state: bool) -> Result<Source, SourceError> {
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
        let codes = match cfg.statuses.as_ref().map(|s| &s.value) {
            Some(StatusNames::Codes(m)) => Some(m.clone()),
            _ => None,
        };
        let time_zone = cfg
            .time_zone
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_else(|| "UTC".into());
        let mut source = Source {
            name: name.to_string(),
            terminal_statuses: cfg.terminal_statuses.clone(),
            gauges: cfg.gauges,
            statuses: cfg
                .statuses
                .as_ref()
                .map(|s| s.value.names().into_iter().collect()),
            codes,
            time_zone: cfg.time_zone.as_ref().map(|t| t.value.clone()),
            max_replication_lag: cfg.max_replication_lag.0,
            behind_since: Default::default(),
            fingerprint: format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}|{keep_state}",
                cfg.url.value,
                cfg.statement_timeout,
                cfg.connect_timeout,
                cfg.pool_size,
                cfg.terminal_statuses,
                cfg.gauges,
                cfg.statuses.as_ref().map(|s| &s.value),
                cfg.time_zone.as_ref().map(|t| &t.value),
                cfg.max_replication_lag,
                cfg.allow_superuser,
                model,
                cfg.base_dir,
                cfg.jit,
                cfg.flow,
                cfg.flow_label.as_ref().map(|f| &f.value),
            ),
            sql: tokio::sync::OnceCell::new(),
            kept: None,
            kept_ready: std::sync::atomic::AtomicBool::new(false),
            load_timeout: cfg.statement_timeout.0.max(Duration::from_secs(600)),
            target,
            pool,
            begin: begin_sql(cfg.statement_timeout.0, &time_zone, cfg.jit),
            allow_superuser: cfg.allow_superuser,
            param_types: Default::default(),
            lookups: tokio::sync::Semaphore::new(1),
            flow: keep_state && cfg.flow,
            flow_label: cfg
                .flow_label
                .as_ref()
                .and_then(|fl| model.labels.iter().position(|l| *l == fl.value)),
            table_flow: tokio::sync::Mutex::new(None),
            record_from: std::sync::Mutex::new(None),
            model,
        };
        if keep_state && let super::ModelKind::History { .. } = source.model.kind {
            source.kept = Some(tokio::sync::Mutex::new(source.new_history()));
        }
        Ok(source)
    }

    /// An empty status-log state for this source (serial or not is known once the columns
    /// are: see `load_history`).
    fn new_history(&self) -> History {
        let mut h = History::new(
            &self.to_db(&self.terminal_statuses),
            false,
            self.model.overlap_secs,
        );
        h.set_lookback(self.model.lookback_secs());
        h
    }

    /// Whether `other` was built from the same configuration (a reload may keep this one, and
    /// the state it keeps).
    pub fn same_config(&self, other: &Source) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// Status names as the column stores them (codes for a coded column).
    pub fn to_db(&self, names: &[String]) -> Vec<String> {
        match &self.codes {
            None => names.to_vec(),
            Some(codes) => names
                .iter()
                .map(|n| {
                    codes
                        .iter()
                        .find(|(_, v)| *v == n)
                        .map(|(c, _)| c.to_string())
                        .unwrap_or_else(|| n.clone())
                })
                .collect(),
        }
    }

    /// A stored status as its name (a code outside the map stays as it is).
    pub fn status_of(&self, raw: &str) -> crate::labels::Str {
        match &self.codes {
            Some(codes) => match raw.parse::<i64>().ok().and_then(|c| codes.get(&c)) {
                Some(name) => crate::labels::intern(name),
                None => crate::labels::intern(raw),
            },
            None => crate::labels::intern(raw),
        }
    }

    /// [`Source::from_db`] of a value as read, owned.
    pub fn from_db(&self, raw: String) -> String {
        match &self.codes {
            Some(codes) => raw
                .parse::<i64>()
                .ok()
                .and_then(|c| codes.get(&c).cloned())
                .unwrap_or(raw),
            None => raw,
        }
    }

    /// The model's statements, built on first use from the columns' types as PostgreSQL
    /// reports them (a failure is retried on the next use).
    pub async fn model_sql(&self) -> Result<std::sync::Arc<ModelSql>, SourceError> {
        self.sql
            .get_or_try_init(|| async {
                let rows = self.query(&self.model.columns_sql(), &[]).await?;
                let row = rows.first().ok_or_else(|| SourceError::Query {
                    source_name: self.name.clone(),
                    target: self.target.clone(),
                    detail: "no row describing the order model's columns".into(),
                })?;
                let cols = Columns {
                    status_type: row.get(0),
                    entered_at_type: row.get(1),
                    tiebreak_type: row.get(2),
                    tiebreak_serial: row.get(3),
                    id_type: row.get(4),
                };
                self.model
                    .sql(&cols)
                    .map(std::sync::Arc::new)
                    .map_err(|detail| SourceError::Config {
                        source_name: self.name.clone(),
                        detail: format!("orders: {detail}"),
                    })
            })
            .await
            .cloned()
    }

    /// Whether the start-up read of every kept state is done (always, without one).
    pub fn kept_ready(&self) -> bool {
        self.kept.is_none() || self.kept_ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The kept state of a status log brought up to date: on first use the start-up read
    /// (every row within `history_lookback`), then the rows since the last read (and the
    /// overlap re-read for rows committed late), and the orders that must be read again
    /// whole. `None` when the source keeps no state.
    pub async fn history(
        &self,
    ) -> Result<Option<tokio::sync::MutexGuard<'_, History>>, SourceError> {
        let Some(kept) = &self.kept else {
            return Ok(None);
        };
        let sql = self.model_sql().await?;
        let Some(hs) = sql.history.as_ref() else {
            return Ok(None);
        };
        let mut h = kept.lock().await;
        self.start_recording(&mut h);
        if !h.loaded {
            let started = std::time::Instant::now();
            if let Err(e) = self.load_history(&mut h, hs).await {
                h.reset();
                return Err(e);
            }
            tracing::info!(source = %self.name, orders_kept = h.len(),
                approx_bytes = h.approx_bytes(),
                seconds = format_args!("{:.2}", started.elapsed().as_secs_f64()),
                serial_watermark = hs.serial,
                "status log read; from now on only new rows are read");
        }
        self.catch_up(&mut h, hs).await?;
        self.kept_ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(h))
    }

    /// Whether this source's transitions are observed (the daemon, `flow` on).
    pub fn observes_flow(&self) -> bool {
        self.flow
    }

    /// Starts recording transitions from the next read (a status log's start-up read
    /// records the rows above `persisted`; a table's first read, its rows above the persisted
    /// watermarks). Call before anything reads the source; a source a reload kept records
    /// already, and goes on as it was.
    pub fn record_transitions(&self, persisted: Watermarks) {
        if self.flow {
            *self.record_from.lock().expect("record lock") = Some(persisted);
        }
    }

    /// A status log's kept state starts recording when asked (see `record_transitions`).
    fn start_recording(&self, h: &mut History) {
        if !h.recording()
            && let Some(w) = self.record_from.lock().expect("record lock").take()
        {
            h.record(w, self.flow_label);
        }
    }

    /// The transitions since the last call: a status log's, as its kept state recorded them
    /// (brought up to date first); a table's, by one read (the first: the orders in flight
    /// now, then the rows past the watermarks). Empty until [`Source::record_transitions`].
    pub async fn transitions(&self) -> Result<FlowRead, SourceError> {
        if self.kept.is_some() {
            let Some(mut h) = self.history().await? else {
                return Ok(FlowRead::default());
            };
            let (transitions, dropped) = h.take_transitions();
            return Ok(FlowRead {
                transitions,
                dropped,
                watermarks: h.watermarks(),
                current: h.in_flight_once(),
                ..Default::default()
            });
        }
        let sql = self.model_sql().await?;
        let Some(ts) = sql.transitions.as_ref() else {
            return Ok(FlowRead::default());
        };
        let mut guard = self.table_flow.lock().await;
        if guard.is_none()
            && let Some(w) = self.record_from.lock().expect("record lock").take()
        {
            *guard = Some(TableFlow::new(
                &self.to_db(&self.terminal_statuses),
                TABLE_FLOW_OVERLAP_SECS,
                self.flow_label,
                w,
            ));
        }
        let Some(f) = guard.as_mut() else {
            return Ok(FlowRead::default());
        };
        let labels = self.model.labels.len();
        let pick = f.label_index();
        let row_of = |r: &Row| -> Option<TableRow> {
            let status: Option<String> = r.get(1);
            let id: Option<String> = r.get(2);
            let at: Option<chrono::DateTime<chrono::Utc>> = r.try_get(3).ok().flatten();
            Some(TableRow {
                status: status?,
                id: id?,
                at: at?.timestamp_micros(),
                label: pick.filter(|i| *i < labels).and_then(|i| r.get(4 + i)),
            })
        };
        let now_of = |rows: &[Row]| -> chrono::DateTime<chrono::Utc> {
            rows.first()
                .and_then(|r| r.try_get(0).ok())
                .unwrap_or_else(chrono::Utc::now)
        };
        let mut current = Vec::new();
        if !f.started() {
            // Streamed: a million orders in flight are never held as rows at once.
            let terminal = self.to_db(&self.terminal_statuses);
            let mut known: Vec<String> =
                self.to_db(&self.statuses.iter().flatten().cloned().collect::<Vec<_>>());
            known.extend(terminal.iter().cloned());
            f.begin_start(&known);
            let mut now: Option<chrono::DateTime<chrono::Utc>> = None;
            let extra = format!(
                "SET LOCAL statement_timeout = {}",
                self.load_timeout.as_millis()
            );
            self.query_each(&extra, &ts.current, &[&terminal], |row| {
                if now.is_none() {
                    now = row.try_get(0).ok();
                }
                if let Some(r) = row_of(row) {
                    f.start_row(r);
                }
            })
            .await?;
            current = f.finish_start(now.unwrap_or_else(chrono::Utc::now).timestamp_micros());
        }
        let ask = f.ask();
        let micros = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
        let statuses: Vec<String> = ask.statuses.iter().map(|(s, _, _)| s.clone()).collect();
        let cur_at: Vec<chrono::DateTime<chrono::Utc>> =
            ask.statuses.iter().map(|(_, at, _)| micros(*at)).collect();
        let cur_id: Vec<Option<String>> =
            ask.statuses.iter().map(|(_, _, id)| id.clone()).collect();
        let rows = self
            .query(
                &ts.read,
                &[
                    &statuses,
                    &cur_at,
                    &cur_id,
                    &micros(ask.default_at),
                    &micros(ask.late),
                    &TABLE_READ_LIMIT,
                ],
            )
            .await?;
        let now = now_of(&rows);
        let transitions = f.apply(
            now.timestamp_micros(),
            rows.iter().filter_map(row_of).collect(),
        );
        // Orders in flight for longer than the histograms reach (deleted, archived).
        f.expire(now.timestamp_micros() - IN_FLIGHT_EXPIRY_SECS * 1_000_000);
        let dropped = 0;
        let (in_flight, _) = f.sizes();
        Ok(FlowRead {
            transitions,
            dropped,
            watermarks: f.watermarks(),
            current,
            in_flight,
            approx_bytes: f.approx_bytes(),
        })
    }

    /// A status log's state read now, kept nowhere (for `check`).
    pub async fn read_history(&self) -> Result<History, SourceError> {
        let sql = self.model_sql().await?;
        let hs = sql.history.as_ref().ok_or_else(|| SourceError::Config {
            source_name: self.name.clone(),
            detail: "not a status log".into(),
        })?;
        let mut h = self.new_history();
        self.load_history(&mut h, hs).await?;
        self.catch_up(&mut h, hs).await?;
        Ok(h)
    }

    /// The start-up read: every row within the lookback, streamed.
    async fn load_history(&self, h: &mut History, hs: &HistorySql) -> Result<(), SourceError> {
        h.reset();
        if hs.serial {
            h.set_serial();
        }
        let labels = self.model.labels.len();
        let now: chrono::DateTime<chrono::Utc> =
            match self.query("SELECT now()", &[]).await?.first() {
                Some(r) => r.get(0),
                None => chrono::Utc::now(),
            };
        h.set_now(now);
        let extra = format!(
            "SET LOCAL statement_timeout = {}",
            self.load_timeout.as_millis()
        );
        self.query_each(&extra, &hs.load, &[], |row| {
            if let Some(r) = LogRow::from_row(row, 0, labels) {
                h.load_row(r);
            }
        })
        .await?;
        h.finish_load();
        Ok(())
    }

    /// The rows since the last read (and the overlap), and the orders read again whole.
    async fn catch_up(&self, h: &mut History, hs: &HistorySql) -> Result<(), SourceError> {
        let labels = self.model.labels.len();
        let rows = match h.floor() {
            Floor::Serial(n) => self.query(&hs.read, &[&n]).await?,
            Floor::Time(t) => self.query(&hs.read, &[&t]).await?,
        };
        let now: chrono::DateTime<chrono::Utc> = match rows.first() {
            Some(r) => r.get(0),
            None => chrono::Utc::now(),
        };
        let log: Vec<LogRow> = rows
            .iter()
            .filter_map(|r| LogRow::from_row(r, 1, labels))
            .collect();
        let again = h.apply(now, log);
        if !again.is_empty() {
            let rows = self.query_ids(&hs.refetch, &again).await?;
            let log: Vec<LogRow> = rows
                .iter()
                .filter_map(|r| LogRow::from_row(r, 0, labels))
                .collect();
            h.replace(&again, log);
        }
        Ok(())
    }

    /// On a standby, how far behind its primary it is, in seconds: 0 while its WAL receiver
    /// streams and everything received is replayed (an idle primary is not lag); while it
    /// streams but replay stands still with WAL waiting (paused, or blocked by a conflict),
    /// how long it has stood still; while it does not stream, the time since its last message
    /// from the primary (or since it was first seen not streaming). `None` on a primary.
    /// Without `pg_read_all_stats` the receiver's status is hidden; its presence is not, and
    /// it is then taken as streaming.
    pub async fn replication_lag(&self) -> Result<Option<f64>, SourceError> {
        let rows = self
            .query(
                "SELECT pg_is_in_recovery(), \
                   (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
                   (SELECT pid FROM pg_stat_wal_receiver LIMIT 1) IS NOT NULL, \
                   COALESCE(pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn(), false), \
                   EXTRACT(EPOCH FROM (now() - (SELECT last_msg_receipt_time FROM pg_stat_wal_receiver LIMIT 1)))::float8, \
                   pg_last_wal_replay_lsn()::text",
                &[],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        if !r.get::<_, bool>(0) {
            return Ok(None);
        }
        let status: Option<String> = r.get(1);
        let receiver: bool = r.get(2);
        let streaming = match status.as_deref() {
            Some(s) => s == "streaming",
            None => receiver,
        };
        let replayed_all: bool = r.get(3);
        let message_age: Option<f64> = r.get(4);
        let replay_lsn: String = r.get::<_, Option<String>>(5).unwrap_or_default();
        // Since when the standby has been in its present state (streaming with replay
        // standing still at this position, or not streaming).
        let key = match (streaming, replayed_all) {
            (true, true) => None,
            (true, false) => Some(format!("behind@{replay_lsn}")),
            (false, _) => Some("not streaming".to_string()),
        };
        let held_for = {
            let mut since = self.behind_since.lock().expect("lag lock");
            match (&*since, key) {
                (_, None) => {
                    *since = None;
                    0.0
                }
                (Some((k, t)), Some(key)) if *k == key => t.elapsed().as_secs_f64(),
                (_, Some(key)) => {
                    *since = Some((key, std::time::Instant::now()));
                    0.0
                }
            }
        };
        let lag = match (streaming, replayed_all) {
            (true, true) => 0.0,
            (true, false) => held_for,
            (false, _) => message_age.unwrap_or(held_for),
        };
        Ok(Some(lag.max(0.0)))
    }

    /// Runs `sql`, whose `$1` is `text[]` of order ids cast to the id column's own type (so a
    /// primary-key or (id, time) index serves it even for integer ids). Ids that cannot be in
    /// an integer column are left out rather than failing the cast.
    pub async fn query_ids(&self, sql: &str, ids: &[String]) -> Result<Vec<Row>, SourceError> {
        let integer = self.model_sql().await?.id_integer;
        let ids: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|i| !integer || i.parse::<i64>().is_ok())
            .collect();
        self.query(sql, &[&ids]).await
    }

    /// Runs one statement in its own read-only transaction (after `extra`), handing each row
    /// to `f` as it arrives: the rows are never all in memory.
    pub async fn query_each(
        &self,
        extra: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        mut f: impl FnMut(&Row),
    ) -> Result<u64, SourceError> {
        use futures_util::TryStreamExt;
        let tx = self.begin(extra).await?;
        let result = async {
            let typed = self.typed(&tx, sql, params).await?;
            let stream = tx
                .client()
                .query_typed_raw(sql, typed)
                .await
                .map_err(|e| self.query_error(&e))?;
            let mut stream = std::pin::pin!(stream);
            let mut n = 0;
            while let Some(row) = stream.try_next().await.map_err(|e| self.query_error(&e))? {
                f(&row);
                n += 1;
            }
            Ok(n)
        }
        .await;
        if result.is_err() {
            self.param_types.lock().expect("types lock").remove(sql);
        }
        tx.end().await;
        result
    }

    /// Where order `id` is in this source, `None` when the source does not hold it: one
    /// indexed read by id (the primary key, or a status log's `(id, time)`), and only the
    /// configured columns. Lookups of one source run one at a time, so they hold at most one
    /// of its pool's connections.
    pub async fn order(&self, id: &str) -> Result<Option<OrderFound>, SourceError> {
        let _one = self.lookups.acquire().await.expect("lookups never closed");
        let sql = self.model_sql().await?;
        let rows = self.query_ids(&sql.order, &[id.to_string()]).await?;
        let history = sql.history.is_some();
        // A status log's rows carry the tiebreak before the labels.
        let first_label = if history { 4 } else { 3 };
        let mut runs: Vec<(String, chrono::DateTime<chrono::Utc>)> = Vec::new();
        let mut labels = std::collections::BTreeMap::new();
        for row in &rows {
            // A NULL status or a time chrono cannot hold is skipped, never a panic.
            let (Ok(Some(raw)), Ok(Some(at))) = (
                row.try_get::<_, Option<String>>(1),
                row.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(2),
            ) else {
                continue;
            };
            let status = self.from_db(raw);
            if runs.last().is_none_or(|(s, _)| *s != status) {
                runs.push((status, at));
            }
            labels.clear();
            for (i, name) in self.model.labels.iter().enumerate() {
                if let Ok(Some(v)) = row.try_get::<_, Option<String>>(first_label + i) {
                    labels.insert(name.clone(), v);
                }
            }
        }
        if let Some((status, entered_at)) = runs.last().cloned() {
            return Ok(Some(OrderFound {
                status,
                entered_at: Some(entered_at),
                labels,
                history: if history { runs } else { Vec::new() },
            }));
        }
        // Not among the rows read above (a status log's rows older than its lookback, a time
        // that is NULL or infinite): the statement the `missing` rules judge by may still find
        // it, and then the order is here, its time unknown.
        let rows = self.query_ids(&sql.lookup, &[id.to_string()]).await?;
        Ok(rows
            .iter()
            .find_map(|r| r.try_get::<_, Option<String>>(1).ok().flatten())
            .map(|raw| OrderFound {
                status: self.from_db(raw),
                entered_at: None,
                labels: std::collections::BTreeMap::new(),
                history: Vec::new(),
            }))
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
        self.begin_as(false, extra).await
    }

    /// [`Self::begin`], at `REPEATABLE READ` when `repeatable` (several statements, one
    /// snapshot).
    async fn begin_as(&self, repeatable: bool, extra: &str) -> Result<ReadOnlyTx, SourceError> {
        let client = self.client().await?;
        let tx = ReadOnlyTx {
            client: Some(client),
            discard: false,
        };
        let begin = if repeatable {
            self.begin.replacen(
                "BEGIN READ ONLY",
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                1,
            )
        } else {
            self.begin.clone()
        };
        let sql = if extra.is_empty() {
            begin
        } else {
            format!("{begin}; {extra}")
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
        let result = self.run_in(&mut tx, sql, params).await;
        tx.end().await;
        result
    }

    /// Runs `sql` inside `tx`, marking the connection for closing where its rows made
    /// tokio-postgres cache type lookups on it.
    async fn run_in(
        &self,
        tx: &mut ReadOnlyTx,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, SourceError> {
        let result = self.run_unnamed(tx, sql, params).await;
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
        result
    }

    /// Runs `first`, its rows handed to `rows` one by one as they arrive, then `second` when
    /// `rows` says it is needed, both in one `REPEATABLE READ READ ONLY` transaction: the two
    /// see one snapshot (the rows and the exact counts of the same moment), the second costs
    /// nothing when it is not needed, and the first's rows are never all held. Returns how
    /// many rows the first gave, and the second's rows.
    #[tracing::instrument(name = "query", skip_all, fields(source = %self.name,
        otel.kind = "client", db.system = "postgresql", db.statement = %statement_head(first.0),
        rows = tracing::field::Empty, error = tracing::field::Empty))]
    pub async fn query_pair(
        &self,
        first: (&str, &[&(dyn ToSql + Sync)]),
        second: (&str, &[&(dyn ToSql + Sync)]),
        rows: &mut (dyn RowSink + Send),
    ) -> Result<(usize, Option<Vec<Row>>), SourceError> {
        let mut tx = self.begin_as(true, "").await?;
        let result = async {
            let n = self.run_each(&mut tx, first.0, first.1, rows).await?;
            let more = if rows.need_second() {
                Some(self.run_in(&mut tx, second.0, second.1).await?)
            } else {
                None
            };
            Ok((n, more))
        }
        .await;
        tx.end().await;
        match &result {
            Ok((n, _)) => tracing::Span::current().record("rows", *n),
            Err(e) => tracing::Span::current().record("error", tracing::field::display(e)),
        };
        result
    }

    /// `run_in`, each row handed to `rows` as it arrives: 100 000 rows are never held at
    /// once. Returns how many there were.
    async fn run_each(
        &self,
        tx: &mut ReadOnlyTx,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        rows: &mut (dyn RowSink + Send),
    ) -> Result<usize, SourceError> {
        let result = async {
            let typed = self.typed(tx, sql, params).await?;
            let stream = tx
                .client()
                .query_typed_raw(sql, typed.iter().map(|(v, t)| (*v, t.clone())))
                .await
                .map_err(|e| self.query_error(&e))?;
            // Rows are received on a task of their own while `rows` works through the ones
            // before, so the server sends and this process decodes at the same time; at most
            // `PIPELINE` batches of `PIPELINE_BATCH` rows wait in between.
            let (send, mut batches) = tokio::sync::mpsc::channel(PIPELINE);
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                let mut batch = Vec::with_capacity(PIPELINE_BATCH);
                loop {
                    let next = futures_util::TryStreamExt::try_next(&mut stream).await;
                    let full = match next {
                        Ok(Some(row)) => {
                            batch.push(row);
                            if batch.len() < PIPELINE_BATCH {
                                continue;
                            }
                            Ok(std::mem::replace(
                                &mut batch,
                                Vec::with_capacity(PIPELINE_BATCH),
                            ))
                        }
                        Ok(None) => {
                            if !batch.is_empty() {
                                let _ = send.send(Ok(batch)).await;
                            }
                            return;
                        }
                        Err(e) => Err(e),
                    };
                    let failed = full.is_err();
                    if send.send(full).await.is_err() || failed {
                        return;
                    }
                }
            });
            let mut n = 0;
            while let Some(batch) = batches.recv().await {
                for row in batch.map_err(|e| self.query_error(&e))? {
                    // As `run_in`: a type outside the built-in ones closes the connection
                    // after.
                    if n == 0
                        && row
                            .columns()
                            .iter()
                            .any(|c| Type::from_oid(c.type_().oid()).is_none())
                    {
                        tx.discard = true;
                    }
                    n += 1;
                    rows.row(row);
                }
            }
            Ok(n)
        }
        .await;
        if result.is_err() {
            self.param_types.lock().expect("types lock").remove(sql);
        }
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
        let typed = self.typed(tx, sql, params).await?;
        tx.client()
            .query_typed(sql, &typed)
            .await
            .map_err(|e| self.query_error(&e))
    }

    /// `params` with the types the unnamed statement needs (see `run_unnamed`).
    async fn typed<'p>(
        &self,
        tx: &ReadOnlyTx,
        sql: &str,
        params: &[&'p (dyn ToSql + Sync)],
    ) -> Result<Vec<(&'p (dyn ToSql + Sync), Type)>, SourceError> {
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
        Ok(params.iter().copied().zip(types).collect())
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

    /// `EXPLAIN (FORMAT JSON)` of `sql` with `params`, in a transaction that is rolled back.
    /// `as_run`: in the transaction the daemon runs it in, unchanged (the plan that runs);
    /// else with sequential scans discouraged (`enable_seqscan = off`): a Seq Scan in that
    /// plan means no index can serve the query, whatever the table's size today.
    pub async fn explain(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        as_run: bool,
    ) -> Result<serde_json::Value, SourceError> {
        let rows = self
            .query_in_tx(
                if as_run {
                    ""
                } else {
                    "SET LOCAL enable_seqscan = off"
                },
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
    /// Whether the source is at fault: it cannot be used as configured (a bad URL, a role
    /// refused), cannot be reached, or answered that it cannot serve (closed the connection,
    /// shutting down, out of resources, cancelled by a timeout, an internal error: SQLSTATE
    /// classes 08, 40, 53, 55, 57, 58 and XX). Not: the statement's own mistakes (a wrong
    /// column or type, a bad cast: class 42, 22, …) or errors decoding what came back, which
    /// are the rule's.
    pub fn is_source_fault(&self) -> bool {
        match self {
            SourceError::Config { .. } | SourceError::Connect { .. } => true,
            SourceError::Query { detail, .. } => detail
                .rsplit_once("(SQLSTATE ")
                .and_then(|(_, code)| code.get(..2))
                .is_some_and(|class| ["08", "40", "53", "55", "57", "58", "XX"].contains(&class)),
        }
    }

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
/// milliseconds, never rounded down to 0 = "no timeout"), JIT off unless the source allows it,
/// and the role check's two values.
fn begin_sql(timeout: Duration, time_zone: &str, jit: bool) -> String {
    format!(
        "BEGIN READ ONLY; SET LOCAL statement_timeout = {}; SET LOCAL TimeZone = '{}'; {}\
         SELECT current_user::text, current_setting('is_superuser')",
        timeout.as_millis().max(1),
        time_zone.replace('\'', "''"),
        if jit { "" } else { "SET LOCAL jit = off; " }
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

    #[test]
    fn a_quoted_value_is_left_out() {
        assert_eq!(
            without_quoted(r#"invalid input syntax for type integer: "anna@example.com""#),
            r#"invalid input syntax for type integer: "…""#
        );
        assert_eq!(without_quoted("no quotes"), "no quotes");
    }
}
