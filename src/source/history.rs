//! A status log's current state, kept by the daemon so that a steady evaluation reads only the
//! rows added since the last one.
//!
//! Semantics (the same as the SQL `once` runs, see `model.rs`): an order's current status is
//! its latest row, ordered by time and then by the `tiebreak` column; without one, rows of the
//! same order at the same time and status are one row, and latest rows at the same time with
//! different statuses are a tie: the order cannot be judged (`reason="tie"`). The time it
//! entered that status is the first row of its latest run of it: the rows after the last row
//! of another status. Repeats never reset the age; duplicates never make two orders; an order
//! that went back to an earlier status has the age of its return.
//!
//! What is kept: per order not in a terminal status, its status, run start, latest row's time
//! and tiebreak, and its label values; plus the rows of the last `history_overlap` (their keys
//! only), so that the next read, which re-reads that window for rows committed late, skips
//! the rows already applied. A row below the watermark that was not seen before (committed
//! late), or older than its order's latest row, makes that order be read again whole by id:
//! the state stays exact without keeping finished orders.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::transitions::{InFlight, MAX_CATCH_UP_SECS, Recorded, Transition, Watermarks};

/// One row of the log as read: id, status, time (µs since the epoch), tiebreak, labels.
#[derive(Debug, Clone)]
pub struct LogRow {
    /// The order id, as text.
    pub id: String,
    /// The status as stored (a code for coded statuses), as text.
    pub status: String,
    /// When, in microseconds since the epoch.
    pub at: i64,
    /// The tiebreak value; `i64::MIN` without a tiebreak column.
    pub tb: i64,
    /// The label columns' values.
    pub labels: Vec<Option<String>>,
}

impl LogRow {
    /// From the columns `id, status, at, tb, l_0…` starting at `first`; `None` for the row of
    /// NULLs an empty read returns.
    pub fn from_row(row: &tokio_postgres::Row, first: usize, labels: usize) -> Option<LogRow> {
        let id: Option<String> = row.get(first);
        let status: Option<String> = row.get(first + 1);
        // ±infinity is filtered out by the SQL; a value chrono cannot hold is skipped, never a panic.
        let at: Option<DateTime<Utc>> = row.try_get(first + 2).ok().flatten();
        let tb: Option<i64> = row.get(first + 3);
        Some(LogRow {
            id: id?,
            status: status?,
            at: at?.timestamp_micros(),
            tb: tb.unwrap_or(i64::MIN),
            labels: (0..labels).map(|i| row.get(first + 4 + i)).collect(),
        })
    }
}

/// One order's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Index into the interned statuses.
    status: u16,
    /// Its latest rows tie: the order cannot be judged.
    tie: bool,
    /// Start of the latest run, µs.
    start: i64,
    /// The latest row's time and tiebreak.
    at: i64,
    tb: i64,
    labels: Box<[Option<Box<str>>]>,
}

/// What applying one row did.
enum Step {
    Applied,
    /// The row is older than the order's latest: the order must be read again whole.
    OutOfOrder,
}

/// Why an order cannot be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unjudgeable {
    /// No time.
    NullTime,
    /// A time in the future.
    FutureTime,
    /// Latest rows at the same time with different statuses, and nothing to break the tie.
    Tie,
}

impl Unjudgeable {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Unjudgeable::NullTime => "null_time",
            Unjudgeable::FutureTime => "future_time",
            Unjudgeable::Tie => "tie",
        }
    }
}

/// Where the next incremental read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// Rows whose serial tiebreak is above this.
    Serial(i64),
    /// Rows at or after this time.
    Time(DateTime<Utc>),
}

/// One order as a rule sees it.
#[derive(Debug, Clone)]
pub struct CurrentOrder<'a> {
    /// The id.
    pub id: &'a str,
    /// The status as stored.
    pub status: &'a str,
    /// Start of the latest run.
    pub entered_at: DateTime<Utc>,
    /// Seconds since then, by the database's clock at the last read.
    pub age_seconds: f64,
    /// Label values, in the model's order.
    pub labels: Vec<Option<&'a str>>,
}

/// The kept state of one status log.
#[derive(Debug)]
pub struct History {
    names: Vec<Box<str>>,
    index: HashMap<Box<str>, u16>,
    terminal_names: HashSet<String>,
    terminal: Vec<bool>,
    orders: HashMap<Box<str>, Kept>,
    /// Rows of the last `overlap` (by the log's newest time): key → time.
    seen: HashMap<(Box<str>, i64, u16, i64), i64>,
    /// Serial mode: the serials read above the floor (a serial names its row).
    seen_serials: HashSet<i64>,
    max_at: i64,
    max_tb: i64,
    overlap: i64,
    serial: bool,
    /// The database's clock at the last read, µs.
    now: i64,
    /// The start-up read is done.
    pub loaded: bool,
    /// The order whose rows the start-up read is at.
    loading: Option<String>,
    /// Serial mode: (database time, highest serial before it) of each read of the last
    /// `overlap`, and the floor before there are any.
    reads: std::collections::VecDeque<(i64, i64)>,
    start_floor: i64,
    /// Orders to read again whole, until a read succeeds.
    pending: HashSet<String>,
    /// `history_lookback`, µs.
    lookback: Option<i64>,
    /// Transitions are recorded (the order flow metrics): see [`History::record`].
    recorder: Option<Box<Recorder>>,
}

/// What a status log records of its transitions.
#[derive(Debug, Default)]
struct Recorder {
    out: Recorded,
    /// The `flow_label` column's index among the labels.
    label: Option<usize>,
    /// The start-up read records the rows above this (what the previous run did not read).
    above: Option<Watermarks>,
    /// Orders to read again whole: the keys (time, tiebreak, status) of their rows that were
    /// new when read, so that only those count once the order is read again.
    fresh: HashMap<String, HashSet<(i64, i64, u16)>>,
    /// The orders in flight after the start-up read were handed out.
    told: bool,
}

impl History {
    /// An empty state: `terminal` statuses as stored, whether new rows are read by a serial
    /// tiebreak, the overlap in seconds.
    pub fn new(terminal: &[String], serial: bool, overlap_secs: u64) -> History {
        History {
            names: Vec::new(),
            index: HashMap::new(),
            terminal_names: terminal.iter().cloned().collect(),
            terminal: Vec::new(),
            orders: HashMap::new(),
            seen: HashMap::new(),
            seen_serials: HashSet::new(),
            max_at: i64::MIN,
            max_tb: i64::MIN,
            overlap: overlap_secs as i64 * 1_000_000,
            serial,
            now: 0,
            loaded: false,
            loading: None,
            reads: Default::default(),
            start_floor: i64::MIN + 1,
            pending: HashSet::new(),
            lookback: None,
            recorder: None,
        }
    }

    /// Records transitions from now on (the order flow metrics). `persisted`: where the
    /// previous run's reads stopped; the start-up read records the rows above it (none
    /// without it: a first start counts what happens from then on). `label`: the index of
    /// the `flow_label` column among the model's labels.
    pub fn record(&mut self, persisted: Watermarks, label: Option<usize>) {
        self.recorder = Some(Box::new(Recorder {
            label,
            above: (!persisted.is_empty()).then_some(persisted),
            ..Default::default()
        }));
    }

    /// Whether transitions are recorded.
    pub fn recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// The transitions recorded since the last take, and how many were dropped.
    pub fn take_transitions(&mut self) -> (Vec<Transition>, u64) {
        self.recorder
            .as_mut()
            .map(|r| r.out.take())
            .unwrap_or_default()
    }

    /// Once, after the start-up read: the orders in flight (not tied), for flows to time from.
    pub fn in_flight_once(&mut self) -> Vec<InFlight> {
        let Some(rec) = self.recorder.as_mut() else {
            return Vec::new();
        };
        if rec.told || !self.loaded {
            return Vec::new();
        }
        rec.told = true;
        self.orders
            .iter()
            .filter(|(_, k)| !k.tie)
            .map(|(id, k)| InFlight {
                id: id.clone(),
                status: self.names[k.status as usize].clone(),
                since: k.start,
            })
            .collect()
    }

    /// Where this run's reads stand (persisted, so that a restart counts the rows above).
    pub fn watermarks(&self) -> Watermarks {
        if !self.loaded || self.max_at == i64::MIN {
            return self
                .recorder
                .as_ref()
                .and_then(|r| r.above.clone())
                .unwrap_or_default();
        }
        if self.serial {
            Watermarks {
                serial: Some(self.max_tb),
                ..Default::default()
            }
        } else {
            Watermarks {
                log_at: Some(self.max_at),
                ..Default::default()
            }
        }
    }

    /// Whether the start-up read records `r`: it lies above where the previous run stopped.
    fn above_persisted(&self, r: &LogRow) -> bool {
        let Some(w) = self.recorder.as_ref().and_then(|r| r.above.as_ref()) else {
            return false;
        };
        // A long downtime's backlog is not counted as one burst: an hour at most.
        if r.at < self.now - MAX_CATCH_UP_SECS * 1_000_000 {
            return false;
        }
        match (w.serial, w.log_at) {
            (Some(n), _) if self.serial => r.tb > n,
            (_, Some(at)) => r.at > at,
            // Persisted by serial, read by time now (or the reverse): nothing to go by.
            _ => false,
        }
    }

    fn intern(&mut self, s: &str) -> u16 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        // More distinct statuses than a u16 holds is not a status column; they share the last.
        let i = self.names.len().min(u16::MAX as usize) as u16;
        if (i as usize) == self.names.len() {
            self.names.push(s.into());
            self.terminal.push(self.terminal_names.contains(s));
        }
        self.index.insert(s.into(), i);
        i
    }

    /// Applies `r` (status `st`) to the order's state; with `record`, an entry into a new
    /// status (a first row, or a row starting a run of another status) is recorded.
    fn step(&mut self, r: &LogRow, st: u16, record: bool) -> Step {
        let record = record && self.recorder.is_some();
        let labels = || -> Box<[Option<Box<str>>]> {
            r.labels
                .iter()
                .map(|l| l.as_deref().map(Box::from))
                .collect()
        };
        let Some(k) = self.orders.get_mut(r.id.as_str()) else {
            if record {
                self.push_transition(r, st, None);
            }
            self.orders.insert(
                r.id.as_str().into(),
                Kept {
                    status: st,
                    tie: false,
                    start: r.at,
                    at: r.at,
                    tb: r.tb,
                    labels: labels(),
                },
            );
            return Step::Applied;
        };
        match (r.at, r.tb).cmp(&(k.at, k.tb)) {
            std::cmp::Ordering::Less => Step::OutOfOrder,
            std::cmp::Ordering::Equal => {
                if st != k.status {
                    // Same time (and tiebreak) and another status: nothing orders them. Of a
                    // tie the greatest status is named, as the SQL does.
                    k.tie = true;
                    if self.names[st as usize] > self.names[k.status as usize] {
                        k.status = st;
                        k.labels = labels();
                    }
                    // A tie records nothing: the entry its first row recorded goes.
                    if record
                        && let Some(rec) = self.recorder.as_mut()
                        && rec
                            .out
                            .list
                            .last()
                            .is_some_and(|t| *t.id == *r.id && t.at == r.at)
                    {
                        rec.out.list.pop();
                    }
                }
                Step::Applied
            }
            std::cmp::Ordering::Greater => {
                // A row settling a tie is an entry, from a status not known; otherwise a
                // row of another status is one, from the run it ends.
                let entry = if !record {
                    None
                } else if k.tie {
                    Some(None)
                } else if st != k.status {
                    Some(Some((k.status, k.start)))
                } else {
                    None
                };
                if k.tie || st != k.status {
                    k.status = st;
                    k.start = r.at;
                    k.tie = false;
                }
                k.at = r.at;
                k.tb = r.tb;
                k.labels = labels();
                if let Some(from) = entry {
                    self.push_transition(r, st, from);
                }
                Step::Applied
            }
        }
    }

    fn push_transition(&mut self, r: &LogRow, st: u16, from: Option<(u16, i64)>) {
        let Some(rec) = self.recorder.as_mut() else {
            return;
        };
        let label = rec
            .label
            .and_then(|i| r.labels.get(i).cloned().flatten())
            .map(Into::into);
        rec.out.push(Transition {
            id: r.id.as_str().into(),
            to: self.names[st as usize].clone(),
            at: r.at,
            from: from.map(|(s, at)| (self.names[s as usize].clone(), at)),
            label,
        });
    }

    /// Drops the orders among `ids` that are in a terminal status (not tied).
    fn drop_finished<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            if let Some(k) = self.orders.get(id)
                && !k.tie
                && self.terminal[k.status as usize]
            {
                self.orders.remove(id);
            }
        }
    }

    /// Remembers a row read; false when it was read before.
    fn remember(&mut self, r: &LogRow, st: u16) -> bool {
        if self.serial {
            return self.seen_serials.insert(r.tb);
        }
        self.seen
            .insert((r.id.as_str().into(), r.at, st, r.tb), r.at)
            .is_none()
    }

    /// Lets go of the rows the next read will not re-read.
    fn prune(&mut self) {
        if self.serial {
            let floor = self.serial_floor();
            self.seen_serials.retain(|tb| *tb > floor);
        } else {
            let keep_from = self.max_at.saturating_sub(self.overlap);
            self.seen.retain(|_, at| *at >= keep_from);
        }
    }

    /// The highest serial read as of `overlap` ago: a row allocated since then and committed
    /// late lies above it. Until the daemon has read for that long, the highest serial of the
    /// start-up read (a row in flight during that read and committed below it is seen at the
    /// next start).
    fn serial_floor(&self) -> i64 {
        let horizon = self.now - self.overlap;
        self.reads
            .iter()
            .rev()
            .find(|(at, _)| *at <= horizon)
            .map(|(_, tb)| *tb)
            .unwrap_or(self.start_floor)
    }

    /// One row of the start-up read, which gives every row ordered by order id, time and
    /// tiebreak; [`History::finish_load`] ends it.
    pub fn load_row(&mut self, r: LogRow) {
        if self.loading.as_deref() != Some(r.id.as_str()) {
            if let Some(prev) = self.loading.take() {
                self.drop_finished([prev.as_str()]);
            }
            self.loading = Some(r.id.clone());
        }
        let st = self.intern(&r.status);
        self.advance(&r);
        // Serial mode starts above the start-up read: nothing of it is re-read.
        if !self.serial {
            self.remember(&r, st);
            // The overlap is measured from the newest row, known only at the end: rows far
            // older than the newest so far are let go as the read goes on.
            if self.seen.len() > 200_000 {
                self.prune();
            }
        }
        let record = self.above_persisted(&r);
        let _ = self.step(&r, st, record);
    }

    /// Ends the start-up read.
    pub fn finish_load(&mut self) {
        if let Some(prev) = self.loading.take() {
            self.drop_finished([prev.as_str()]);
        }
        self.start_floor = self.max_tb;
        self.prune();
        self.loaded = true;
    }

    /// Moves the watermarks past `r`. A time in the future does not move the time watermark
    /// beyond the database's clock: one such row would hide every row written until then.
    fn advance(&mut self, r: &LogRow) {
        let at = if self.now == 0 {
            r.at
        } else {
            r.at.min(self.now)
        };
        self.max_at = self.max_at.max(at);
        self.max_tb = self.max_tb.max(r.tb);
    }

    /// The database's clock, before the start-up read.
    pub fn set_now(&mut self, now: DateTime<Utc>) {
        self.now = now.timestamp_micros();
    }

    /// New rows are read by the serial tiebreak column.
    pub fn set_serial(&mut self) {
        self.serial = true;
    }

    /// Forgets everything (a failed start-up read starts again) but what it records.
    pub fn reset(&mut self) {
        let lookback = self.lookback;
        let recorder = self.recorder.take().map(|r| {
            Box::new(Recorder {
                label: r.label,
                above: r.above,
                ..Default::default()
            })
        });
        *self = History::new(
            &self.terminal_names.iter().cloned().collect::<Vec<_>>(),
            self.serial,
            (self.overlap / 1_000_000) as u64,
        );
        self.lookback = lookback;
        self.recorder = recorder;
    }

    /// Where the next read starts: `history_overlap` below the newest row, so rows committed
    /// late are read too.
    pub fn floor(&self) -> Floor {
        if self.serial {
            Floor::Serial(self.serial_floor())
        } else {
            let at = if self.max_at == i64::MIN {
                0
            } else {
                self.max_at - self.overlap
            };
            Floor::Time(DateTime::from_timestamp_micros(at).unwrap_or_default())
        }
    }

    /// Applies an incremental read (`now`: the database's clock). Returns the ids of orders
    /// that must be read again whole ([`History::replace`]).
    pub fn apply(&mut self, now: DateTime<Utc>, mut rows: Vec<LogRow>) -> Vec<String> {
        self.now = now.timestamp_micros();
        rows.sort_by(|a, b| (a.at, a.tb, &a.status).cmp(&(b.at, b.tb, &b.status)));
        let (prev_at, prev_tb) = (self.max_at, self.max_tb);
        if self.serial {
            // What this read starts from; floors older than needed are let go.
            self.reads.push_back((self.now, prev_tb));
            let horizon = self.now - self.overlap;
            while self.reads.len() > 1 && self.reads[1].0 <= horizon {
                self.reads.pop_front();
            }
        }
        let mut refetch: HashSet<String> = HashSet::new();
        let mut touched: Vec<String> = Vec::new();
        let recorded_before = self.recorder.as_ref().map_or(0, |r| r.out.list.len());
        // Rows new in this read, per order, in case the order is read again whole.
        let mut fresh: HashMap<&str, Vec<(i64, i64, u16)>> = HashMap::new();
        for r in &rows {
            let st = self.intern(&r.status);
            if !self.remember(r, st) {
                continue; // re-read from the overlap, applied before
            }
            if self.recorder.is_some() {
                fresh.entry(&r.id).or_default().push((r.at, r.tb, st));
            }
            self.advance(r);
            if refetch.contains(&r.id) {
                continue;
            }
            let late = if self.serial {
                r.tb <= prev_tb
            } else {
                r.at < prev_at
            };
            // A first row of an order not kept, dated at or before what was read: the order
            // may have finished after it (a re-sent event), or tie with its last row.
            let backdated =
                !self.orders.contains_key(r.id.as_str()) && prev_at != i64::MIN && r.at <= prev_at;
            if late || backdated {
                refetch.insert(r.id.clone());
                continue;
            }
            match self.step(r, st, true) {
                Step::Applied => touched.push(r.id.clone()),
                Step::OutOfOrder => {
                    refetch.insert(r.id.clone());
                }
            }
        }
        self.drop_finished(
            touched
                .iter()
                .filter(|id| !refetch.contains(*id))
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        // Orders whose every row lies beyond the lookback are no longer read (as `once`).
        if let Some(lb) = self.lookback {
            let horizon = self.now - lb;
            self.orders.retain(|_, k| k.at >= horizon);
        }
        self.prune();
        if let Some(rec) = self.recorder.as_mut() {
            // An order read again whole records from that read (its new rows only), not
            // from the rows applied before it was found out of order.
            if !refetch.is_empty() {
                let tail = rec
                    .out
                    .list
                    .split_off(recorded_before.min(rec.out.list.len()));
                rec.out
                    .list
                    .extend(tail.into_iter().filter(|t| !refetch.contains(&*t.id)));
                for id in &refetch {
                    if let Some(keys) = fresh.remove(id.as_str()) {
                        rec.fresh.entry(id.clone()).or_default().extend(keys);
                    }
                }
            }
        }
        // Orders to read again stay pending until read: a failed read is retried, since the
        // rows that called for it will not be re-read as new.
        self.pending.extend(refetch);
        let mut out: Vec<String> = self.pending.iter().cloned().collect();
        out.sort();
        out
    }

    /// Whether `id` is kept (not finished).
    pub fn contains(&self, id: &str) -> bool {
        self.orders.contains_key(id)
    }

    /// Ignore rows older than this many seconds (`history_lookback`).
    pub fn set_lookback(&mut self, secs: Option<u64>) {
        self.lookback = secs.map(|s| s as i64 * 1_000_000);
    }

    /// Replaces the state of the orders read again whole: `rows` ordered by id, time and
    /// tiebreak; `ids` not among them have no rows left.
    pub fn replace(&mut self, ids: &[String], rows: Vec<LogRow>) {
        let mut fresh: HashMap<String, HashSet<(i64, i64, u16)>> = HashMap::new();
        for id in ids {
            self.orders.remove(id.as_str());
            self.pending.remove(id);
            if let Some(keys) = self.recorder.as_mut().and_then(|r| r.fresh.remove(id)) {
                fresh.insert(id.clone(), keys);
            }
        }
        let mut current: Option<String> = None;
        // The last entry recorded from a new row of the current order: when an entry counted
        // before follows it, the time in the status before was observed then already.
        let mut last_new: Option<usize> = None;
        for r in rows {
            if current.as_deref() != Some(r.id.as_str()) {
                if let Some(prev) = current.take() {
                    self.drop_finished([prev.as_str()]);
                }
                current = Some(r.id.clone());
                last_new = None;
            }
            let st = self.intern(&r.status);
            // Only the rows that were new when read count: the others were counted then.
            let new = fresh
                .get(&r.id)
                .is_some_and(|k| k.contains(&(r.at, r.tb, st)));
            let recorded = self.recorder.as_ref().map_or(0, |rec| rec.out.list.len());
            let before = self.orders.get(r.id.as_str()).map(|k| (k.status, k.start));
            let _ = self.step(&r, st, new);
            let Some(rec) = self.recorder.as_mut() else {
                continue;
            };
            if new {
                if rec.out.list.len() > recorded {
                    last_new = Some(recorded);
                }
            } else if let Some(i) = last_new {
                let after = self.orders.get(r.id.as_str()).map(|k| (k.status, k.start));
                if after != before {
                    if let Some(t) = rec.out.list.get_mut(i) {
                        t.from = None;
                    }
                    last_new = None;
                }
            }
        }
        if let Some(prev) = current {
            self.drop_finished([prev.as_str()]);
        }
    }

    /// The database's clock at the last read.
    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.now).unwrap_or_default()
    }

    /// Orders kept (not in a terminal status).
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// No order is kept.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    fn current<'a>(&'a self, id: &'a str, k: &'a Kept) -> CurrentOrder<'a> {
        CurrentOrder {
            id,
            status: &self.names[k.status as usize],
            entered_at: DateTime::from_timestamp_micros(k.start).unwrap_or_default(),
            age_seconds: (self.now - k.start) as f64 / 1e6,
            labels: k.labels.iter().map(|l| l.as_deref()).collect(),
        }
    }

    /// Judgeable orders in one of `statuses` (as stored) since before `older_than_secs` ago,
    /// oldest first (then by id).
    pub fn stuck(&self, statuses: &[String], older_than_secs: f64) -> Vec<CurrentOrder<'_>> {
        let wanted: HashSet<u16> = statuses
            .iter()
            .filter_map(|s| self.index.get(s.as_str()).copied())
            .collect();
        let below = self.now - (older_than_secs * 1e6) as i64;
        let mut out: Vec<CurrentOrder<'_>> = self
            .orders
            .iter()
            .filter(|(_, k)| !k.tie && wanted.contains(&k.status) && k.start < below)
            .map(|(id, k)| self.current(id, k))
            .collect();
        out.sort_by(|a, b| (a.entered_at, a.id).cmp(&(b.entered_at, b.id)));
        out
    }

    /// Per status (as stored) of the kept orders: count and the oldest judgeable age.
    pub fn gauges(&self) -> Vec<(String, i64, Option<f64>)> {
        let mut per: HashMap<u16, (i64, Option<i64>)> = HashMap::new();
        for k in self.orders.values() {
            let e = per.entry(k.status).or_insert((0, None));
            e.0 += 1;
            if !k.tie && k.start <= self.now {
                e.1 = Some(e.1.map_or(k.start, |o: i64| o.min(k.start)));
            }
        }
        let mut out: Vec<(String, i64, Option<f64>)> = per
            .into_iter()
            .map(|(st, (n, oldest))| {
                (
                    self.names[st as usize].to_string(),
                    n,
                    oldest.map(|o| (self.now - o) as f64 / 1e6),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Orders that cannot be judged, per status (as stored) and reason: ties and run starts
    /// in the future.
    pub fn unjudgeable(&self) -> Vec<(String, Unjudgeable, i64)> {
        let mut per: HashMap<(u16, Unjudgeable), i64> = HashMap::new();
        for k in self.orders.values() {
            let why = if k.tie {
                Unjudgeable::Tie
            } else if k.start > self.now {
                Unjudgeable::FutureTime
            } else {
                continue;
            };
            *per.entry((k.status, why)).or_default() += 1;
        }
        let mut out: Vec<_> = per
            .into_iter()
            .map(|((st, why), n)| (self.names[st as usize].to_string(), why, n))
            .collect();
        out.sort();
        out
    }

    /// Bytes held, estimated: what ARCHITECTURE.md states per kept order.
    pub fn approx_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<(Box<str>, Kept)>() + 1;
        let orders: usize = self
            .orders
            .iter()
            .map(|(id, k)| {
                per_entry
                    + id.len()
                    + k.labels.len() * std::mem::size_of::<Option<Box<str>>>()
                    + k.labels.iter().flatten().map(|l| l.len()).sum::<usize>()
            })
            .sum();
        let seen = self.seen.len()
            * (std::mem::size_of::<((Box<str>, i64, u16, i64), i64)>() + 1 + 16)
            + self.seen_serials.len() * (std::mem::size_of::<i64>() + 1);
        // hashbrown keeps at most 7/8 of its buckets full.
        (orders + seen) * 8 / 7
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, status: &str, at: i64, tb: i64) -> LogRow {
        LogRow {
            id: id.into(),
            status: status.into(),
            at: at * 1_000_000,
            tb,
            labels: vec![],
        }
    }

    fn load(h: &mut History, rows: Vec<LogRow>) {
        for r in rows {
            h.load_row(r);
        }
        h.finish_load();
    }

    fn now(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn states(h: &History) -> Vec<(String, String, i64, bool)> {
        let mut v: Vec<_> = h
            .orders
            .iter()
            .map(|(id, k)| {
                (
                    id.to_string(),
                    h.names[k.status as usize].to_string(),
                    k.start / 1_000_000,
                    k.tie,
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn repeats_keep_the_age_returns_start_a_new_run_and_ties_are_marked() {
        let mut h = History::new(&["CLOSED".into()], false, 300);
        load(
            &mut h,
            vec![
                // Comment repeating SUBMITTED: still entered at 10.
                row("a", "SUBMITTED", 10, i64::MIN),
                row("a", "SUBMITTED", 20, i64::MIN),
                row("a", "SUBMITTED", 20, i64::MIN),
                // Back to an earlier status: the age of the return.
                row("b", "SUBMITTED", 10, i64::MIN),
                row("b", "PRICE_CALCULATED", 15, i64::MIN),
                row("b", "SUBMITTED", 30, i64::MIN),
                // Two statuses at the same latest time.
                row("c", "SUBMITTED", 10, i64::MIN),
                row("c", "PACKAGING", 40, i64::MIN),
                row("c", "SHIPPED", 40, i64::MIN),
                // Finished.
                row("d", "SUBMITTED", 10, i64::MIN),
                row("d", "CLOSED", 50, i64::MIN),
            ],
        );
        assert_eq!(
            states(&h),
            [
                ("a".into(), "SUBMITTED".into(), 10, false),
                ("b".into(), "SUBMITTED".into(), 30, false),
                ("c".into(), "SHIPPED".into(), 40, true),
            ]
        );
        // A later row breaks the tie and starts a run; a late row is read again whole.
        let again = h.apply(
            now(100),
            vec![
                row("c", "SHIPPED", 60, i64::MIN),
                row("a", "PACKAGING", 45, i64::MIN),
                row("e", "SUBMITTED", 55, i64::MIN),
            ],
        );
        assert_eq!(again, ["a"]);
        assert_eq!(h.stuck(&["SUBMITTED".into()], 30.0).len(), 3);
        h.replace(
            &again,
            vec![
                row("a", "SUBMITTED", 10, i64::MIN),
                row("a", "SUBMITTED", 20, i64::MIN),
                row("a", "PACKAGING", 45, i64::MIN),
            ],
        );
        let stuck: Vec<&str> = h
            .stuck(&["SUBMITTED".into()], 30.0)
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(stuck, ["b", "e"]);
        assert_eq!(states(&h)[2], ("c".into(), "SHIPPED".into(), 60, false));
        // Re-read from the overlap: nothing changes.
        let before = states(&h);
        assert!(
            h.apply(now(101), vec![row("c", "SHIPPED", 60, i64::MIN)])
                .is_empty()
        );
        assert_eq!(states(&h), before);
    }

    #[test]
    fn a_tiebreak_orders_rows_at_the_same_time() {
        let mut h = History::new(&[], true, 300);
        load(
            &mut h,
            vec![row("a", "SUBMITTED", 10, 1), row("a", "PACKAGING", 10, 2)],
        );
        assert_eq!(states(&h), [("a".into(), "PACKAGING".into(), 10, false)]);
        assert_eq!(h.floor(), Floor::Serial(2));
        // New serials are applied; re-read ones are skipped.
        assert!(
            h.apply(now(20), vec![row("b", "SUBMITTED", 12, 3)])
                .is_empty()
        );
        assert!(
            h.apply(now(21), vec![row("b", "SUBMITTED", 12, 3)])
                .is_empty()
        );
        // A serial below the newest, never seen: committed late, the order is read again.
        assert_eq!(h.apply(now(22), vec![row("c", "SUBMITTED", 12, 1)]), ["c"]);
    }

    /// (order, status entered, status left and since when, s).
    type Taken = (String, String, Option<(String, i64)>);

    fn taken(h: &mut History) -> Vec<Taken> {
        h.take_transitions()
            .0
            .into_iter()
            .map(|t| {
                (
                    t.id.to_string(),
                    t.to.to_string(),
                    t.from.map(|(s, at)| (s.to_string(), at / 1_000_000)),
                )
            })
            .collect()
    }

    #[test]
    fn transitions_are_new_runs_counted_once_and_a_late_row_counts_its_own_entry() {
        let mut h = History::new(&["CLOSED".into()], true, 300);
        h.record(Watermarks::default(), None);
        load(
            &mut h,
            vec![row("a", "SUBMITTED", 10, 1), row("b", "SUBMITTED", 11, 2)],
        );
        // A first start counts nothing of the start-up read.
        assert!(taken(&mut h).is_empty());
        // A repeat is no entry; a move is, with the time in the status left; a new order's
        // first row is an entry from nowhere; a re-read row is nothing.
        h.apply(
            now(100),
            vec![
                row("a", "SUBMITTED", 20, 3),
                row("a", "PRICE_CALCULATED", 40, 4),
                row("c", "SUBMITTED", 41, 5),
            ],
        );
        h.apply(now(101), vec![row("a", "PRICE_CALCULATED", 40, 4)]);
        assert_eq!(
            taken(&mut h),
            [
                (
                    "a".into(),
                    "PRICE_CALCULATED".into(),
                    Some(("SUBMITTED".into(), 10))
                ),
                ("c".into(), "SUBMITTED".into(), None),
            ]
        );
        // b: PACKAGING at 50 arrives, then a late row (a serial below the newest) puts
        // PRICE_CALCULATED at 30 before it. The order is read again whole; only the late row
        // counts now, and without the time in SUBMITTED: PACKAGING was counted when it came,
        // from SUBMITTED, which observed that stay already.
        h.apply(now(102), vec![row("b", "PACKAGING", 50, 6)]);
        assert_eq!(
            taken(&mut h),
            [(
                "b".into(),
                "PACKAGING".into(),
                Some(("SUBMITTED".into(), 11))
            )]
        );
        let again = h.apply(now(103), vec![row("b", "PRICE_CALCULATED", 30, 5)]);
        assert!(again.is_empty(), "serial 5 was read before: {again:?}");
        let again = h.apply(now(104), vec![row("b", "PRICE_CALCULATED", 30, 0)]);
        assert_eq!(again, ["b"]);
        assert!(taken(&mut h).is_empty(), "nothing before the order is read");
        h.replace(
            &again,
            vec![
                row("b", "SUBMITTED", 11, 2),
                row("b", "PRICE_CALCULATED", 30, 0),
                row("b", "PACKAGING", 50, 6),
            ],
        );
        assert_eq!(
            taken(&mut h),
            [("b".into(), "PRICE_CALCULATED".into(), None)]
        );
        // Where the reads stand, for a restart.
        assert_eq!(h.watermarks().serial, Some(6));
    }

    #[test]
    fn a_tie_records_nothing_until_a_later_row_settles_it() {
        let mut h = History::new(&[], false, 300);
        h.record(Watermarks::default(), None);
        load(&mut h, vec![row("a", "SUBMITTED", 1, i64::MIN)]);
        h.apply(
            now(100),
            vec![
                row("a", "PACKAGING", 2, i64::MIN),
                row("a", "SHIPPED", 2, i64::MIN),
            ],
        );
        assert!(taken(&mut h).is_empty(), "tied: nothing");
        h.apply(now(101), vec![row("a", "PACKAGING", 5, i64::MIN)]);
        assert_eq!(taken(&mut h), [("a".into(), "PACKAGING".into(), None)]);
        h.apply(now(102), vec![row("a", "SHIPPED", 7, i64::MIN)]);
        assert_eq!(
            taken(&mut h),
            [("a".into(), "SHIPPED".into(), Some(("PACKAGING".into(), 5)))]
        );
    }

    #[test]
    fn a_restart_records_the_rows_above_the_persisted_watermark() {
        let mut h = History::new(&["CLOSED".into()], true, 300);
        h.record(
            Watermarks {
                serial: Some(2),
                ..Default::default()
            },
            None,
        );
        load(
            &mut h,
            vec![
                row("a", "SUBMITTED", 10, 1),
                row("a", "PRICE_CALCULATED", 20, 3),
                row("a", "CLOSED", 30, 4),
                row("b", "SUBMITTED", 12, 2),
            ],
        );
        // a moved twice while the daemon was down (and finished); b's row was read before.
        assert_eq!(
            taken(&mut h),
            [
                (
                    "a".into(),
                    "PRICE_CALCULATED".into(),
                    Some(("SUBMITTED".into(), 10))
                ),
                (
                    "a".into(),
                    "CLOSED".into(),
                    Some(("PRICE_CALCULATED".into(), 20))
                ),
            ]
        );
        assert_eq!(h.in_flight_once().len(), 1);
        assert!(h.in_flight_once().is_empty(), "handed out once");
    }
}
