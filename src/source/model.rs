//! The order model of a source, and the SQL generated from it.
//!
//! The SQL depends on what the database says the columns are ([`Columns`], learnt once per
//! source): a status column is compared in its own type (text, an enum, an integer code), so
//! the index on (status, entered_at) serves the filter; a time column is compared in its own
//! domain (`timestamptz`; `timestamp` read in the source's `time_zone`, which every transaction
//! sets; integer epoch seconds or milliseconds), the bound converted rather than the column.
//!
//! Table and query models are first turned into one relation with the columns `order_id,
//! status, entered_at, l_0 … l_n` (the allow-listed labels). PostgreSQL flattens that subquery,
//! so the rule's filter reaches the table and becomes a range scan. A history table's current
//! state is computed per order: its latest row (ties broken by `tiebreak`) and the first row of
//! its latest run of that status. Only these columns are ever selected: personal data stays
//! in the database.

use crate::config::{EpochUnit, OrderModelConfig};

/// Where the orders are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelKind {
    /// One row per order with its current status.
    Table(String),
    /// A status log: one row per event; an order's latest row is its current status.
    History {
        /// The table.
        table: String,
        /// Ignore rows older than this many seconds.
        lookback_secs: Option<u64>,
    },
    /// A custom query returning the columns.
    Query(String),
}

/// A source's order model: where orders are and which columns may be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderModel {
    /// Where the orders are.
    pub kind: ModelKind,
    /// Order id column.
    pub id: String,
    /// Status column.
    pub status: String,
    /// Column with when the order entered its status (history: when the row was written).
    pub entered_at: String,
    /// Allow-listed label columns.
    pub labels: Vec<String>,
    /// History: the column ordering rows written at the same time.
    pub tiebreak: Option<String>,
    /// `entered_at` holds epoch seconds or milliseconds.
    pub unit: Option<EpochUnit>,
    /// History: how far back each incremental read re-reads, seconds.
    pub overlap_secs: u64,
}

/// What PostgreSQL says the model's columns are (`pg_typeof`, usable in a cast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The status column's type, e.g. `text`, `order_state`, `smallint`.
    pub status_type: String,
    /// The time column's type.
    pub entered_at_type: String,
    /// History: the tiebreak column's type.
    pub tiebreak_type: Option<String>,
    /// History: the tiebreak column is a serial or identity column.
    pub tiebreak_serial: bool,
    /// The id column's type.
    pub id_type: String,
}

/// A type as `pg_typeof` names it, as a cast target: `character` (a `char(n)` column) would
/// cast to `char(1)` and cut every value to its first letter; `bpchar` keeps them whole.
fn cast_type(t: &str) -> &str {
    if t == "character" { "bpchar" } else { t }
}

/// How the time column reads as a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeKind {
    /// `timestamptz`.
    Tz,
    /// `timestamp` (or `date`): wall-clock time in the session's TimeZone, which every
    /// transaction sets to the source's `time_zone`.
    Local,
    /// Integer epoch seconds or milliseconds.
    Epoch(EpochUnit),
}

const INTEGER_TYPES: [&str; 6] = [
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "double precision",
    "real",
];

impl TimeKind {
    /// From the column's type and `entered_at_unit`.
    pub fn of(ty: &str, unit: Option<EpochUnit>, column: &str) -> Result<TimeKind, String> {
        let numeric = INTEGER_TYPES.contains(&ty);
        match (ty, unit) {
            (_, Some(u)) if numeric => Ok(TimeKind::Epoch(u)),
            (_, Some(_)) => Err(format!(
                "entered_at_unit is set but column {column} is {ty}, not a number of seconds or milliseconds"
            )),
            ("timestamp with time zone", None) => Ok(TimeKind::Tz),
            ("timestamp without time zone" | "date", None) => Ok(TimeKind::Local),
            (_, None) if numeric => Err(format!(
                "column {column} is {ty}: set entered_at_unit: s (epoch seconds) or ms (milliseconds)"
            )),
            _ => Err(format!(
                "column {column} is {ty}; entered_at must be a timestamptz, a timestamp or epoch seconds/milliseconds"
            )),
        }
    }

    /// `e` (a value of the column) as a `timestamptz`.
    pub fn out(self, e: &str) -> String {
        match self {
            TimeKind::Tz => e.to_string(),
            TimeKind::Local => format!("({e})::timestamptz"),
            TimeKind::Epoch(EpochUnit::S) => format!("to_timestamp({e})"),
            TimeKind::Epoch(EpochUnit::Ms) => format!("to_timestamp(({e}) / 1000.0)"),
        }
    }

    /// ` AND isfinite(e)` for a timestamp column: `±infinity` has no age (and no decoding).
    pub fn finite(self, e: &str) -> String {
        match self {
            TimeKind::Epoch(_) => String::new(),
            _ => format!(" AND isfinite({e})"),
        }
    }

    /// `tz` (a `timestamptz` expression) in the column's own domain, so a comparison with the
    /// column is an index range scan. For integers it is rounded up: `col < ceil(x)` and
    /// `col >= ceil(x)` are exact for an integer column.
    pub fn bound(self, tz: &str) -> String {
        match self {
            TimeKind::Tz => format!("({tz})"),
            TimeKind::Local => format!("(({tz})::timestamp)"),
            TimeKind::Epoch(EpochUnit::S) => format!("ceil(EXTRACT(EPOCH FROM ({tz})))::int8"),
            TimeKind::Epoch(EpochUnit::Ms) => {
                format!("ceil(EXTRACT(EPOCH FROM ({tz})) * 1000)::int8")
            }
        }
    }
}

/// Quotes an identifier already checked to be plain (`[A-Za-z_][A-Za-z0-9_]*`), or a
/// `schema.table` pair of them.
pub fn quote(ident: &str) -> String {
    ident
        .split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

/// The lowest int8: where a NULL tiebreak sorts, as the daemon reads it.
const MIN: &str = "(-9223372036854775808)::int8";

/// The `$2` threshold: `now() - $2 seconds`.
const THRESHOLD: &str = "now() - make_interval(secs => $2::float8)";

/// Every statement of one source's model, built once its [`Columns`] are known.
#[derive(Debug, Clone)]
pub struct ModelSql {
    /// The id column is an integer: ids that are not numbers cannot be in it.
    pub id_integer: bool,
    /// How the time column reads.
    pub time: TimeKind,
    /// The matching orders of statuses `$1` older than `$2` seconds, oldest first, at most
    /// `$3`; no counts (see `stuck_stats`).
    pub stuck: String,
    /// `stuck` for a single status (`$1` holds one): that status's range scan alone.
    pub stuck_one: String,
    /// Exact count and oldest age per status and bucket of thresholds (`$1`, `$2` as
    /// `stuck`; `$3` the thresholds, seconds): see [`StuckStats`].
    pub stuck_stats: String,
    /// A `missing` rule's candidates, one keyset page.
    pub candidates: String,
    /// Id and current status of the orders `$1`.
    pub lookup: String,
    /// One order's row (`$1`: its id, as for `lookup`): id, status, entered_at, labels. For a
    /// status log, every row of the order within the lookback, oldest first: id, status,
    /// time, tiebreak, labels (the log's `refetch`).
    pub order: String,
    /// Count, oldest age and unjudgeable counts per active status (table and query models).
    pub gauges: Option<String>,
    /// Every distinct status value (for `check`).
    pub distinct_statuses: String,
    /// The newest time value as a `timestamptz` (for `check`).
    pub newest: String,
    /// The daemon's incremental reads of a status log.
    pub history: Option<HistorySql>,
    /// A table's (or a query's) transition reads (the order flow metrics).
    pub transitions: Option<TransitionSql>,
}

/// The statements that read a table's transitions (see `source::transitions`). Both return
/// `now(), status, id, time, l_0…` (one row of NULLs beside `now()` when there are none).
#[derive(Debug, Clone)]
pub struct TransitionSql {
    /// The orders in the statuses not in `$1` (terminal, as stored) now: one index range scan
    /// per status of a table.
    pub current: String,
    /// Per status, the rows after its cursor and, apart, those dated within the late-commit
    /// window at or before it, not in the future, in (time, id) order, at most `$6` each: `$1` statuses (as
    /// stored), `$2` and `$3` their cursors' times and ids (NULL: after every id of that
    /// time), `$4` the cursor time of a status not in `$1` (a table's statuses are found by a
    /// loose index scan each read; a query's are those given), `$5` the window's start.
    pub read: String,
}

impl ModelSql {
    /// The stuck rows statement for `statuses` statuses.
    pub fn stuck_for(&self, statuses: usize) -> &str {
        if statuses == 1 {
            &self.stuck_one
        } else {
            &self.stuck
        }
    }
}

/// The statements that keep a status log's current state (see `source::history`).
#[derive(Debug, Clone)]
pub struct HistorySql {
    /// New rows are read by the serial tiebreak column (else by time).
    pub serial: bool,
    /// Every row within the lookback, ordered by order id and time: the start-up read.
    pub load: String,
    /// The rows past `$1` (int8 tiebreak floor, or timestamptz time floor), each with `now()`;
    /// one row of NULLs beside `now()` when there are none.
    pub read: String,
    /// Every row of the orders `$1` (ids of the id column's type), ordered as `load`.
    pub refetch: String,
    /// Per active status (`$1` terminal statuses), the orders (at most 10 000 per status) that
    /// have a row with no time in it: (status, id).
    pub null_times: String,
}

impl OrderModel {
    /// From the validated config.
    pub fn from_config(c: &OrderModelConfig) -> OrderModel {
        let kind = if let Some(t) = &c.table {
            ModelKind::Table(t.value.clone())
        } else if let Some(t) = &c.history_table {
            ModelKind::History {
                table: t.value.clone(),
                lookback_secs: c.history_lookback.map(|d| d.0.as_secs()),
            }
        } else {
            ModelKind::Query(
                c.query
                    .as_ref()
                    .map(|q| q.value.clone())
                    .unwrap_or_default(),
            )
        };
        OrderModel {
            kind,
            id: c.id.value.clone(),
            status: c.status.value.clone(),
            entered_at: c.entered_at.value.clone(),
            labels: c.labels.iter().map(|l| l.value.clone()).collect(),
            tiebreak: c.tiebreak.as_ref().map(|t| t.value.clone()),
            unit: c.entered_at_unit,
            overlap_secs: c
                .history_overlap
                .map(|d| d.0)
                .unwrap_or(crate::config::DEFAULT_HISTORY_OVERLAP)
                .as_secs(),
        }
    }

    /// `history_lookback` in seconds (status logs only).
    pub fn lookback_secs(&self) -> Option<u64> {
        match &self.kind {
            ModelKind::History { lookback_secs, .. } => *lookback_secs,
            _ => None,
        }
    }

    /// The relation `(order_id, status, entered_at, l_0…)` over a table or a query, columns
    /// as they are stored.
    fn relation(&self) -> String {
        let (alias, from) = match &self.kind {
            ModelKind::Table(t) | ModelKind::History { table: t, .. } => {
                ("t", format!("{} t", quote(t)))
            }
            // On lines of its own, so a trailing `-- comment` cannot swallow the `) q`.
            ModelKind::Query(q) => (
                "q",
                format!("(\n{}\n) q", crate::config::without_trailing_semicolon(q)),
            ),
        };
        let mut cols = vec![
            format!("{alias}.{} AS order_id", quote(&self.id)),
            format!("{alias}.{} AS status", quote(&self.status)),
            format!("{alias}.{} AS entered_at", quote(&self.entered_at)),
        ];
        for (i, l) in self.labels.iter().enumerate() {
            cols.push(format!("{alias}.{} AS l_{i}", quote(l)));
        }
        format!("SELECT {} FROM {from}", cols.join(", "))
    }

    /// The statement that learns [`Columns`]: the types of the columns as PostgreSQL sees
    /// them (`LIMIT 0`: nothing is read), one row even when the relation is empty.
    pub fn columns_sql(&self) -> String {
        let from = match &self.kind {
            ModelKind::Table(t) | ModelKind::History { table: t, .. } => format!("{} t", quote(t)),
            ModelKind::Query(q) => {
                format!("(\n{}\n) t", crate::config::without_trailing_semicolon(q))
            }
        };
        let (tb_types, tb_col) = match (&self.kind, &self.tiebreak) {
            (ModelKind::History { table, .. }, Some(tb)) => (
                format!(
                    "pg_typeof(q.tiebreak)::text, pg_get_serial_sequence('{}', '{tb}') IS NOT NULL",
                    quote(table)
                ),
                format!(", t.{} AS tiebreak", quote(tb)),
            ),
            _ => ("NULL::text, false".to_string(), String::new()),
        };
        format!(
            "SELECT pg_typeof(q.status)::text, pg_typeof(q.entered_at)::text, {tb_types}, \
             pg_typeof(q.order_id)::text \
             FROM (SELECT 1) d LEFT JOIN \
             (SELECT t.{} AS status, t.{} AS entered_at, t.{} AS order_id{tb_col} FROM {from} LIMIT 0) q ON true",
            quote(&self.status),
            quote(&self.entered_at),
            quote(&self.id),
        )
    }

    /// Every statement, for columns `c`.
    pub fn sql(&self, c: &Columns) -> Result<ModelSql, String> {
        let time = TimeKind::of(&c.entered_at_type, self.unit, &self.entered_at)?;
        if let Some(tb) = &self.tiebreak
            && !c
                .tiebreak_type
                .as_deref()
                .is_some_and(|t| ["smallint", "integer", "bigint"].contains(&t))
        {
            return Err(format!(
                "tiebreak column {tb} is {}; it must be an integer (the log's serial id)",
                c.tiebreak_type.as_deref().unwrap_or("unknown")
            ));
        }
        let st = cast_type(&c.status_type);
        let idt = cast_type(&c.id_type);
        let history = matches!(self.kind, ModelKind::History { .. });
        let (with_any, from_any) = self.current(time, &format!("= ANY($1::text[]::{st}[])"));
        let (with_one, from_one) = self.current(time, &format!("= $1::text::{st}"));
        let labels: String = (0..self.labels.len())
            .map(|i| format!(", o.l_{i}::text"))
            .collect();
        let out = |e: &str| time.out(e);
        let below = time.bound(THRESHOLD);
        // Rows only, oldest first, no window, one past the cap (only when that row comes
        // does the daemon run `stuck_stats` for the exact counts, in the same snapshot). For a
        // table or a query, one index range scan per status (`= s.status`, LATERAL): the index
        // on (status, entered_at) yields each status's rows in order, so each scan stops at
        // the limit and only those rows are merged; `= ANY(…)` over several statuses would
        // read and sort every matching row first.
        let stuck = if with_any.is_empty() {
            let (from_each, label_cols, label_out) = (
                self.current(time, "= s.status").1,
                (0..self.labels.len())
                    .map(|i| format!(", o.l_{i}::text AS l_{i}"))
                    .collect::<String>(),
                (0..self.labels.len())
                    .map(|i| format!(", x.l_{i}"))
                    .collect::<String>(),
            );
            format!(
                "SELECT x.id, x.st, x.at, x.age{label_out} \
                 FROM (SELECT DISTINCT unnest($1::text[]::{st}[])) AS s(status) \
                 CROSS JOIN LATERAL ( \
                   SELECT o.order_id::text AS id, o.status::text AS st, {at} AS at, \
                   EXTRACT(EPOCH FROM (now() - {at}))::float8 AS age{label_cols}, \
                   o.entered_at AS k1, o.order_id AS k2 \
                   FROM {from_each} \
                   WHERE o.status = s.status AND o.entered_at < {below}{fin} \
                   ORDER BY o.entered_at, o.order_id LIMIT $3::int8) x \
                 ORDER BY x.k1, x.k2 \
                 LIMIT $3::int8",
                at = out("o.entered_at"),
                fin = time.finite("o.entered_at"),
            )
        } else {
            format!(
                "{with_any}SELECT o.order_id::text, o.status::text, {at}, \
                 EXTRACT(EPOCH FROM (now() - {at}))::float8 AS age_seconds{labels} \
                 FROM {from_any} \
                 WHERE o.status = ANY($1::text[]::{st}[]) AND o.entered_at < {below}{fin} \
                 ORDER BY o.entered_at, o.order_id \
                 LIMIT $3::int8",
                at = out("o.entered_at"),
                fin = time.finite("o.entered_at"),
            )
        };
        // One status (most rules): its range scan alone, in index order.
        let stuck_one = if with_any.is_empty() {
            format!(
                "SELECT o.order_id::text, o.status::text, {at}, \
                 EXTRACT(EPOCH FROM (now() - {at}))::float8 AS age_seconds{labels} \
                 FROM {from_any} \
                 WHERE o.status = ($1::text[])[1]::{st} AND o.entered_at < {below}{fin} \
                 ORDER BY o.entered_at, o.order_id \
                 LIMIT $3::int8",
                at = out("o.entered_at"),
                fin = time.finite("o.entered_at"),
            )
        } else {
            stuck.clone()
        };
        // Exact counts and oldest ages per status for one threshold or several (rules on the
        // same statuses share it): one scan of the rows older than the lowest threshold `$2`,
        // each counted in the bucket of the thresholds `$3` (seconds) it passes, by
        // `width_bucket` over their edges (computed once, ascending: the longest threshold
        // first). A row passes threshold j (longest first, from 1) when its bucket is below j.
        let operand = match time {
            // floor: exact against the integer edges (`v < e` ⇔ `floor(v) < e`), where a cast
            // would round a fractional epoch up past its edge.
            TimeKind::Epoch(_) => "floor(o.entered_at)::int8",
            _ => "o.entered_at",
        };
        let stuck_stats = format!(
            "{with_any}SELECT o.status::text, width_bucket({operand}, \
             (SELECT ARRAY(SELECT {edge} FROM unnest($3::float8[]) AS s(secs) ORDER BY 1))), \
             count(*), EXTRACT(EPOCH FROM (now() - {oldest}))::float8 \
             FROM {from_any} \
             WHERE o.status = ANY($1::text[]::{st}[]) AND o.entered_at < {below}{fin} \
             GROUP BY 1, 2",
            edge = time.bound("now() - make_interval(secs => s.secs)"),
            oldest = out("min(o.entered_at)"),
            fin = time.finite("o.entered_at"),
        );
        // One status at a time, so the index on (status, entered_at) yields the rows in order
        // and a page costs its own size; the redundant `entered_at >= $3` makes it a range
        // scan from the cursor.
        let candidates = format!(
            "{with_one}SELECT o.order_id::text, o.status::text, {at}, \
             EXTRACT(EPOCH FROM (now() - {at}))::float8{labels} \
             FROM {from_one} \
             WHERE o.status = $1::text::{st} AND o.entered_at < {below}{fin} \
             AND o.entered_at >= {cursor} \
             AND (NOT $5::bool OR ({at}, o.order_id::text) > ($3::timestamptz, $4::text)) \
             ORDER BY o.entered_at, o.order_id::text \
             LIMIT $6::int8",
            at = out("o.entered_at"),
            cursor = time.bound("$3::timestamptz - interval '1 millisecond'"),
            fin = time.finite("o.entered_at"),
        );
        let lookup = match &self.kind {
            ModelKind::History { table, .. } => {
                let (id, s, at) = (
                    quote(&self.id),
                    quote(&self.status),
                    quote(&self.entered_at),
                );
                format!(
                    "SELECT DISTINCT ON (h.{id}) h.{id}::text, h.{s}::text FROM {t} h \
                     WHERE h.{id} = ANY($1::text[]::{idt}[]) AND h.{at} IS NOT NULL{fin} \
                     ORDER BY h.{id}, h.{at} DESC, {last}",
                    fin = time.finite(&format!("h.{at}")),
                    t = quote(table),
                    last = self.tie_order("h"),
                )
            }
            _ => format!(
                "SELECT o.order_id::text, o.status::text FROM ({}) o WHERE o.order_id = ANY($1::text[]::{idt}[])",
                self.relation()
            ),
        };
        let order = format!(
            "SELECT o.order_id::text, o.status::text, {at}{labels} FROM ({}) o \
             WHERE o.order_id = ANY($1::text[]::{idt}[]) AND o.entered_at IS NOT NULL{fin}",
            self.relation(),
            at = out("o.entered_at"),
            fin = time.finite("o.entered_at"),
        );
        let now = time.bound("now()");
        let gauges = match &self.kind {
            ModelKind::Table(t) => {
                let (t, s, at) = (quote(t), quote(&self.status), quote(&self.entered_at));
                Some(format!(
                    "{} \
                     SELECT s.status::text, c.n, EXTRACT(EPOCH FROM (now() - {oldest}))::float8, c.nulls, c.future \
                     FROM s CROSS JOIN LATERAL \
                       (SELECT count(*) AS n, min(t.{at}) FILTER (WHERE t.{at} <= {now}) AS oldest, \
                        count(*) FILTER (WHERE t.{at} IS NULL) AS nulls, \
                        count(*) FILTER (WHERE t.{at} > {now}) AS future \
                        FROM {t} t WHERE t.{s} = s.status) c \
                     WHERE s.status IS NOT NULL AND s.status::text <> ALL($1::text[])",
                    statuses_cte(&t, &s),
                    oldest = out("c.oldest"),
                ))
            }
            ModelKind::Query(_) => Some(format!(
                "SELECT o.status::text, count(*), \
                 EXTRACT(EPOCH FROM (now() - {oldest}))::float8, \
                 count(*) FILTER (WHERE o.entered_at IS NULL), \
                 count(*) FILTER (WHERE o.entered_at > {now}) \
                 FROM ({}) o WHERE o.status::text <> ALL($1::text[]) GROUP BY o.status",
                self.relation(),
                oldest = out("min(o.entered_at) FILTER (WHERE o.entered_at <= {now})")
                    .replace("{now}", &now),
            )),
            ModelKind::History { .. } => None,
        };
        let (distinct_statuses, newest) = match &self.kind {
            ModelKind::Table(t) | ModelKind::History { table: t, .. } => {
                let (t, s, at) = (quote(t), quote(&self.status), quote(&self.entered_at));
                (
                    format!(
                        "{} SELECT s.status::text FROM s WHERE s.status IS NOT NULL LIMIT 1000",
                        statuses_cte(&t, &s)
                    ),
                    format!(
                        "{} SELECT {} FROM s CROSS JOIN LATERAL \
                         (SELECT max(t.{at}) AS v FROM {t} t WHERE t.{s} = s.status) m \
                         WHERE s.status IS NOT NULL",
                        statuses_cte(&t, &s),
                        out("max(m.v)"),
                    ),
                )
            }
            ModelKind::Query(_) => (
                format!(
                    "SELECT DISTINCT o.status::text FROM ({}) o WHERE o.status IS NOT NULL LIMIT 1000",
                    self.relation()
                ),
                format!(
                    "SELECT {} FROM ({}) o",
                    out("max(o.entered_at)"),
                    self.relation()
                ),
            ),
        };
        let history = if history {
            Some(self.history_sql(time, c.tiebreak_serial, idt))
        } else {
            None
        };
        let order = history.as_ref().map_or(order, |h| h.refetch.clone());
        let transitions = (!matches!(self.kind, ModelKind::History { .. }))
            .then(|| self.transition_sql(time, st));
        Ok(ModelSql {
            id_integer: ["smallint", "integer", "bigint"].contains(&idt),
            time,
            stuck_one,
            stuck,
            stuck_stats,
            candidates,
            lookup,
            order,
            gauges,
            distinct_statuses,
            newest,
            history,
            transitions,
        })
    }

    /// A table's or a query's transition reads (see [`TransitionSql`]).
    fn transition_sql(&self, time: TimeKind, st: &str) -> TransitionSql {
        let labels: String = (0..self.labels.len())
            .map(|i| format!(", o.l_{i}::text"))
            .collect();
        let at = time.out("o.entered_at");
        let fin = time.finite("o.entered_at");
        let rel = self.relation();
        let (with, body) = match &self.kind {
            ModelKind::Table(t) => (
                format!("{} ", statuses_cte(&quote(t), &quote(&self.status))),
                // OFFSET 0 keeps the subquery a per-status index scan: flattened, the planner
                // joins the statuses to a scan of the whole table (bench/flow.rs: 10 times the
                // buffers at 5 000 000 orders).
                format!(
                    "SELECT s.status::text, o.order_id::text, {at}{labels} \
                     FROM s CROSS JOIN LATERAL (SELECT o.* FROM ({rel}) o \
                       WHERE o.status = s.status AND o.entered_at IS NOT NULL{fin} OFFSET 0) o \
                     WHERE s.status IS NOT NULL AND s.status::text <> ALL($1::text[])"
                ),
            ),
            _ => (
                String::new(),
                format!(
                    "SELECT o.status::text, o.order_id::text, {at}{labels} FROM ({rel}) o \
                     WHERE o.status IS NOT NULL AND o.status::text <> ALL($1::text[]) \
                     AND o.entered_at IS NOT NULL{fin}"
                ),
            ),
        };
        // Always one row, so the database's clock comes back even with nothing in flight.
        let current = format!(
            "{with}SELECT now(), x.* FROM (SELECT 1) d LEFT JOIN LATERAL ({body}) x ON true"
        );
        let (with, all) = match &self.kind {
            ModelKind::Table(t) => (
                format!("{}, ", statuses_cte(&quote(t), &quote(&self.status))),
                "SELECT x.status, COALESCE(f.cur_at, $4::timestamptz), f.cur_id FROM \
                 (SELECT s.status::text AS status FROM s WHERE s.status IS NOT NULL \
                  UNION SELECT f.status FROM f) x LEFT JOIN f ON f.status = x.status",
            ),
            _ => (
                "WITH ".to_string(),
                "SELECT f.status, f.cur_at, f.cur_id FROM f",
            ),
        };
        // Per status, two index range scans, each a parameter of the outer row: the rows after
        // its cursor in (time, id) order (ids compared byte-wise, as the daemon compares
        // them), and apart from them the late-commit window's rows (`$5`) at or before the
        // cursor, read again for the ones committed late. Apart, so that a window full of rows
        // read before never keeps the new ones out of a read's limit.
        let after = format!(
            "CASE WHEN a.cur_id IS NULL THEN {at} > a.cur_at \
             ELSE ({at}, o.order_id::text COLLATE \"C\") > (a.cur_at, a.cur_id COLLATE \"C\") END"
        );
        let scan = |from: &str, cond: &str| {
            format!(
                "(SELECT o.* FROM ({rel}) o \
                  WHERE o.status = a.status::{st} \
                  AND o.entered_at >= {from} AND o.entered_at <= {now}{fin} AND {cond} \
                  ORDER BY o.entered_at, o.order_id::text COLLATE \"C\" LIMIT $6::int8)",
                from = time.bound(from),
                now = time.bound("now()"),
            )
        };
        let read = format!(
            "{with}f(status, cur_at, cur_id) AS \
               (SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[])), \
             a(status, cur_at, cur_id) AS ({all}) \
             SELECT now(), x.* FROM (SELECT 1) d LEFT JOIN LATERAL ( \
               SELECT a.status, o.order_id::text, {at}{labels} FROM a CROSS JOIN LATERAL ( \
                 {new} UNION ALL {late}) o) x ON true",
            new = scan("a.cur_at", &after),
            late = scan(
                "$5::timestamptz",
                &format!("{at} >= $5::timestamptz AND NOT ({after})")
            ),
        );
        TransitionSql { current, read }
    }

    /// The last ORDER BY key among rows of one order at the same time: the tiebreak column,
    /// else the status text (so of a tie the greatest status is named, as the daemon does).
    fn tie_order(&self, alias: &str) -> String {
        match &self.tiebreak {
            // A NULL tiebreak orders first, as the daemon reads it (`i64::MIN`).
            Some(tb) => format!("{alias}.{} DESC NULLS LAST", quote(tb)),
            None => format!("{alias}.{}::text DESC", quote(&self.status)),
        }
    }

    /// `(WITH …, FROM …)` of the current state restricted to statuses matching `pred`
    /// (`= ANY(…)` or `= …`): for a table or query the relation itself; for a history table,
    /// per candidate order (one that has a row in such a status older than the threshold) its
    /// latest row and the start of its latest run, `entered_at` NULL for an unbreakable tie.
    fn current(&self, time: TimeKind, pred: &str) -> (String, String) {
        let ModelKind::History {
            table,
            lookback_secs,
        } = &self.kind
        else {
            return (String::new(), format!("({}) o", self.relation()));
        };
        let (t, id, s, at) = (
            quote(table),
            quote(&self.id),
            quote(&self.status),
            quote(&self.entered_at),
        );
        let lb = |a: &str| {
            let fin = time.finite(&format!("{a}.{at}"));
            match lookback_secs {
                Some(secs) => format!(
                    " AND {a}.{at} >= {}{fin}",
                    time.bound(&format!("now() - make_interval(secs => {secs})"))
                ),
                None => fin,
            }
        };
        let below = time.bound(THRESHOLD);
        let (tb_col, tb_p, after, prev_order) = match &self.tiebreak {
            Some(tb) => {
                let tb = quote(tb);
                (
                    format!(", h.{tb} AS tb"),
                    format!(", p.{tb} AS tb"),
                    format!(
                        "(h.{at}, COALESCE(h.{tb}, {MIN})) > (prev.at, COALESCE(prev.tb, {MIN}))"
                    ),
                    format!(", p.{tb} DESC NULLS LAST"),
                )
            }
            None => (
                String::new(),
                String::new(),
                format!("h.{at} > prev.at"),
                String::new(),
            ),
        };
        let labels: String = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| format!(", h.{} AS l_{i}", quote(l)))
            .collect();
        let cur_labels: String = (0..self.labels.len())
            .map(|i| format!(", cur.l_{i}"))
            .collect();
        let with = format!(
            "WITH c AS MATERIALIZED ( \
               SELECT DISTINCT h.{id} AS id FROM {t} h \
               WHERE h.{s} {pred} AND h.{at} < {below}{lbh}), \
             cur AS ( \
               SELECT c.id, l.* FROM c CROSS JOIN LATERAL ( \
                 SELECT h.{s} AS status, h.{at} AS at{tb_col}{labels} FROM {t} h \
                 WHERE h.{id} = c.id AND h.{at} IS NOT NULL{lbh} \
                 ORDER BY h.{at} DESC, {last} LIMIT 1) l \
               WHERE l.status {pred}), \
             run AS ( \
               SELECT cur.id AS order_id, cur.status, r.start AS entered_at{cur_labels} \
               FROM cur LEFT JOIN LATERAL ( \
                 SELECT p.{at} AS at{tb_p} FROM {t} p \
                 WHERE p.{id} = cur.id AND p.{s} <> cur.status AND p.{at} IS NOT NULL{lbp} \
                 ORDER BY p.{at} DESC{prev_order} LIMIT 1) prev ON true \
               CROSS JOIN LATERAL ( \
                 SELECT min(h.{at}) AS start FROM {t} h \
                 WHERE h.{id} = cur.id AND h.{at} IS NOT NULL{lbh} \
                 AND (prev.at IS NULL OR {after})) r) ",
            lbh = lb("h"),
            lbp = lb("p"),
            last = self.tie_order("h"),
        );
        (with, "run o".to_string())
    }

    /// The daemon's reads of a status log (see [`HistorySql`]).
    fn history_sql(&self, time: TimeKind, serial: bool, idt: &str) -> HistorySql {
        let ModelKind::History {
            table,
            lookback_secs,
        } = &self.kind
        else {
            unreachable!("history_sql on a history model only")
        };
        let (t, id, s, at) = (
            quote(table),
            quote(&self.id),
            quote(&self.status),
            quote(&self.entered_at),
        );
        let tb = self.tiebreak.as_ref().map(|x| quote(x));
        let labels: String = self
            .labels
            .iter()
            .map(|l| format!(", h.{}::text", quote(l)))
            .collect();
        let cols = format!(
            "h.{id}::text, h.{s}::text, {}, {}{labels}",
            time.out(&format!("h.{at}")),
            tb.as_ref()
                .map(|tb| format!("h.{tb}::int8"))
                .unwrap_or_else(|| "NULL::int8".into()),
        );
        let fin = time.finite(&format!("h.{at}"));
        let lb = match lookback_secs {
            Some(secs) => format!(
                " AND h.{at} >= {}{fin}",
                time.bound(&format!("now() - make_interval(secs => {secs})"))
            ),
            None => fin.clone(),
        };
        let order = match &tb {
            Some(tb) => format!("h.{id}, h.{at}, h.{tb} NULLS FIRST"),
            None => format!("h.{id}, h.{at}"),
        };
        let past = match (&tb, serial) {
            (Some(tb), true) => format!("h.{tb} > $1::int8"),
            _ => format!("h.{at} >= {}", time.bound("$1::timestamptz")),
        };
        HistorySql {
            serial: serial && tb.is_some(),
            load: format!("SELECT {cols} FROM {t} h WHERE h.{at} IS NOT NULL{lb} ORDER BY {order}"),
            read: format!(
                "SELECT now(), x.* FROM (SELECT 1) d LEFT JOIN LATERAL \
                 (SELECT {cols} FROM {t} h WHERE {past} AND h.{at} IS NOT NULL{fin}) x ON true"
            ),
            refetch: format!(
                "SELECT {cols} FROM {t} h WHERE h.{id} = ANY($1::text[]::{idt}[]) AND h.{at} IS NOT NULL{lb} ORDER BY {order}"
            ),
            null_times: format!(
                "{} SELECT s.status::text, n.id FROM s CROSS JOIN LATERAL \
                   (SELECT DISTINCT h.{id}::text AS id FROM {t} h \
                    WHERE h.{s} = s.status AND h.{at} IS NULL LIMIT 10000) n \
                 WHERE s.status IS NOT NULL AND s.status::text <> ALL($1::text[])",
                statuses_cte(&t, &s)
            ),
        }
    }
}

/// `WITH RECURSIVE s(status)`: the distinct statuses of quoted table `t`, column `s`, by a
/// loose index scan (one index probe per status, however many rows each has).
fn statuses_cte(t: &str, s: &str) -> String {
    format!(
        "WITH RECURSIVE s(status) AS ( \
           (SELECT t.{s} FROM {t} t WHERE t.{s} IS NOT NULL ORDER BY t.{s} LIMIT 1) \
           UNION ALL \
           SELECT (SELECT t.{s} FROM {t} t WHERE t.{s} > s.status ORDER BY t.{s} LIMIT 1) \
           FROM s WHERE s.status IS NOT NULL)"
    )
}

/// The label value every status outside the known ones is exported under.
pub const OTHER_STATUS: &str = "other";
/// Without a `statuses` list, at most this many distinct values become labels.
pub const MAX_STATUS_LABELS: usize = 50;

/// Per-status gauge rows (status, count, oldest age in seconds) with every status that is not
/// `known` (or, without a list, beyond the first [`MAX_STATUS_LABELS`]) folded into `other`:
/// counts added, the oldest age kept. A data value never becomes an unbounded label.
pub fn fold_statuses(
    rows: Vec<(String, i64, Option<f64>)>,
    known: Option<&std::collections::HashSet<String>>,
) -> Vec<(String, i64, Option<f64>)> {
    let mut out: Vec<(String, i64, Option<f64>)> = Vec::new();
    let mut other: Option<(i64, Option<f64>)> = None;
    for (status, n, age) in rows {
        let keep = match known {
            Some(k) => k.contains(&status),
            None => out.len() < MAX_STATUS_LABELS,
        };
        if keep && status != OTHER_STATUS {
            out.push((status, n, age));
        } else {
            let (count, oldest) = other.get_or_insert((0, None));
            *count += n;
            *oldest = match (*oldest, age) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    if let Some((n, age)) = other {
        out.push((OTHER_STATUS.to_string(), n, age));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_statuses_fold_into_other() {
        let known: std::collections::HashSet<String> = ["SUBMITTED", "PACKAGING"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rows = vec![
            ("SUBMITTED".to_string(), 3, Some(10.0)),
            ("x'); DROP".to_string(), 2, Some(50.0)),
            ("anna@example.com".to_string(), 1, None),
            ("PACKAGING".to_string(), 4, Some(5.0)),
        ];
        assert_eq!(
            fold_statuses(rows.clone(), Some(&known)),
            vec![
                ("SUBMITTED".to_string(), 3, Some(10.0)),
                ("PACKAGING".to_string(), 4, Some(5.0)),
                ("other".to_string(), 3, Some(50.0)),
            ]
        );
        let many: Vec<_> = (0..80).map(|i| (format!("S{i}"), 1, None)).collect();
        let folded = fold_statuses(many, None);
        assert_eq!(folded.len(), MAX_STATUS_LABELS + 1);
        assert_eq!(folded.last().unwrap(), &("other".to_string(), 30, None));
    }

    fn model(kind: ModelKind) -> OrderModel {
        OrderModel {
            kind,
            id: "id".into(),
            status: "status".into(),
            entered_at: "status_changed_at".into(),
            labels: vec!["order_type".into()],
            tiebreak: None,
            unit: None,
            overlap_secs: 300,
        }
    }

    fn columns(status: &str, at: &str) -> Columns {
        Columns {
            status_type: status.into(),
            entered_at_type: at.into(),
            tiebreak_type: None,
            tiebreak_serial: false,
            id_type: "text".into(),
        }
    }

    #[test]
    fn table_sql_selects_only_allowed_columns_and_binds_parameters() {
        let sql = model(ModelKind::Table("shop.orders".into()))
            .sql(&columns("text", "timestamp with time zone"))
            .unwrap()
            .stuck;
        assert!(sql.contains("FROM \"shop\".\"orders\" t"), "{sql}");
        assert!(sql.contains("t.\"order_type\" AS l_0"), "{sql}");
        // One range scan per status, each stopping at the limit; no window over all rows.
        assert!(sql.contains("unnest($1::text[]::text[])"), "{sql}");
        assert!(sql.contains("o.status = s.status"), "{sql}");
        assert!(sql.contains("make_interval(secs => $2::float8)"), "{sql}");
        assert_eq!(sql.matches("LIMIT $3::int8").count(), 2, "{sql}");
        assert!(!sql.contains('*') && !sql.contains("OVER"), "{sql}");
        // One status: its range scan alone, in index order.
        let m = model(ModelKind::Table("shop.orders".into()))
            .sql(&columns("text", "timestamp with time zone"))
            .unwrap();
        let one = m.stuck_for(1);
        assert!(
            one.contains("o.status = ($1::text[])[1]::text") && !one.contains("unnest"),
            "{one}"
        );
        assert_eq!(m.stuck_for(2), m.stuck);
        assert!(!sql.contains("SELECT t.*"));
    }

    #[test]
    fn statuses_and_times_are_compared_in_the_columns_own_types() {
        let m = model(ModelKind::Table("orders".into()));
        let sql = m
            .sql(&columns("order_state", "timestamp with time zone"))
            .unwrap();
        assert!(
            sql.stuck.contains("unnest($1::text[]::order_state[])")
                && sql.stuck_stats.contains("= ANY($1::text[]::order_state[])"),
            "{}",
            sql.stuck
        );
        let mut epoch = m.clone();
        epoch.unit = Some(EpochUnit::Ms);
        let sql = epoch.sql(&columns("smallint", "bigint")).unwrap();
        assert!(
            sql.stuck
                .contains("o.entered_at < ceil(EXTRACT(EPOCH FROM (now() - make_interval"),
            "{}",
            sql.stuck
        );
        assert!(sql.stuck.contains("to_timestamp((o.entered_at) / 1000.0)"));
        let err = m.sql(&columns("text", "bigint")).unwrap_err();
        assert!(err.contains("set entered_at_unit"), "{err}");
    }

    #[test]
    fn history_sql_takes_the_latest_run_and_lookback() {
        let sql = model(ModelKind::History {
            table: "order_status_history".into(),
            lookback_secs: Some(86400),
        })
        .sql(&columns("text", "timestamp with time zone"))
        .unwrap();
        assert!(
            sql.stuck.contains("min(h.\"status_changed_at\") AS start"),
            "{}",
            sql.stuck
        );
        assert!(
            sql.stuck.contains("make_interval(secs => 86400)"),
            "{}",
            sql.stuck
        );
        assert!(sql.history.is_some() && sql.gauges.is_none());
    }

    #[test]
    fn query_model_wraps_the_query() {
        let sql = model(ModelKind::Query(
            "SELECT id, status, status_changed_at, order_type FROM v; -- the view".into(),
        ))
        .sql(&columns("text", "timestamp with time zone"))
        .unwrap()
        .stuck;
        assert!(
            sql.contains("FROM (\nSELECT id, status, status_changed_at, order_type FROM v\n) q"),
            "{sql}"
        );
    }
}
