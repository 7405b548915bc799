//! Orders seen entering a status ([`Transition`]), as the order flow metrics count them.
//!
//! A status log gives them exactly: its kept state ([`super::History`]) records one whenever
//! a newly read row starts a new run (a repeat of the current status is not an entry). A table
//! holding each order's current status gives them as [`TableFlow`] reads them: per status, the
//! rows whose time lies past that status's watermark, one index range scan on `(status,
//! entered_at)` each, re-reading an overlap for clock skew and late commits; what the daemon
//! saw of an order before (its status and since when) gives the time it spent there.

use std::collections::{HashMap, HashSet};

/// An order seen entering a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The order id.
    pub id: Box<str>,
    /// The status entered, as stored.
    pub to: Box<str>,
    /// When, µs since the epoch.
    pub at: i64,
    /// The status it left (as stored) and when it had entered it, when the daemon saw it.
    pub from: Option<(Box<str>, i64)>,
    /// The value of the source's `flow_label` column, when it has one.
    pub label: Option<Box<str>>,
}

/// An order in flight when a run starts reading: its status (as stored) and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// The order id.
    pub id: Box<str>,
    /// Its status, as stored.
    pub status: Box<str>,
    /// When it entered it, µs.
    pub since: i64,
}

/// Transitions waiting to be taken, bounded: past [`MAX_WAITING`] the newest are dropped and
/// counted (nobody takes them: the flow loop is stuck).
#[derive(Debug, Default)]
pub struct Recorded {
    /// Oldest first.
    pub list: Vec<Transition>,
    /// Dropped since the last take.
    pub dropped: u64,
}

/// See [`Recorded`].
pub const MAX_WAITING: usize = 500_000;

impl Recorded {
    /// Adds one.
    pub fn push(&mut self, t: Transition) {
        if self.list.len() >= MAX_WAITING {
            self.dropped += 1;
        } else {
            self.list.push(t);
        }
    }

    /// Everything recorded, and how many were dropped.
    pub fn take(&mut self) -> (Vec<Transition>, u64) {
        (
            std::mem::take(&mut self.list),
            std::mem::replace(&mut self.dropped, 0),
        )
    }
}

/// Where a restarted daemon's previous run stopped reading: rows above it were not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermarks {
    /// A status log read by a serial tiebreak: the highest serial read.
    pub serial: Option<i64>,
    /// A status log read by time: the newest time read, µs.
    pub log_at: Option<i64>,
    /// A table: per status (as stored), the last row read in it: time (µs) and id (none: after
    /// every id of that time).
    pub statuses: HashMap<String, (i64, Option<String>)>,
    /// A table: the database's clock at the last read, µs (statuses not listed start there).
    pub read_at: Option<i64>,
}

impl Watermarks {
    /// Nothing persisted: the first run.
    pub fn is_empty(&self) -> bool {
        *self == Watermarks::default()
    }
}

/// Rows read of one status per read, at most: a status whose backlog is longer is read on
/// over the next reads, from where the last read stopped (its cursor).
pub const TABLE_READ_LIMIT: i64 = 10_000;

/// After a restart, transitions older than this before the first read are not counted: a
/// long downtime's backlog would arrive as one burst (an intake surge that never was).
pub const MAX_CATCH_UP_SECS: i64 = 3600;

/// Bytes the allocator gives a `len`-byte string (glibc: 8 bytes of header, 16-byte steps,
/// 32 at least).
pub fn heap_bytes(len: usize) -> usize {
    (len + 8).div_ceil(16).max(2) * 16
}

/// Where a status's reads stand: the last row read in `(time, id)` order; an id of `None`
/// stands after every id of that time (a start: what is at or before it is not counted).
type Cursor = (i64, Option<Box<str>>);

/// Whether row `(at, id)` lies after cursor `c`.
fn after(at: i64, id: &str, c: &Cursor) -> bool {
    match &c.1 {
        None => at > c.0,
        Some(cid) => (at, id) > (c.0, &**cid),
    }
}

/// A table's transition reader: a cursor per status, the rows of the late-commit window
/// already counted, and the orders in flight (status and since when) the daemon has seen.
///
/// A read asks, per status, the rows after its cursor (ordered by time, then id in byte
/// order, at most [`TABLE_READ_LIMIT`]) and the rows dated within the overlap before the
/// last read's clock (committed late, or on a skewed clock), which are counted once by their
/// keys. A bulk update stamping more rows with one time than a read takes is read on by the
/// id; an idle status re-reads nothing.
#[derive(Debug)]
pub struct TableFlow {
    names: Vec<Box<str>>,
    index: HashMap<Box<str>, u16>,
    terminal: HashSet<String>,
    /// Per status (interned): the last row read.
    cursor: HashMap<u16, Cursor>,
    /// Per status: rows at or before this are not counted (the first read after a start).
    base: HashMap<u16, Cursor>,
    /// Rows read within the late-commit window: (status, id, time).
    seen: HashSet<(u16, Box<str>, i64)>,
    /// Orders in a non-terminal status as last seen: status and when it was entered.
    in_flight: HashMap<Box<str>, (u16, i64)>,
    overlap: i64,
    /// The database's clock at the last read, µs; 0 before the first.
    read_at: i64,
    /// The first read is done.
    started: bool,
    label: Option<usize>,
    /// What the previous run persisted, until the first read.
    persisted: Watermarks,
    /// The orders in flight of the first read, as it streams in.
    starting: Vec<InFlight>,
}

/// One row of a table's transition read: status (as stored), id, time µs, label.
#[derive(Debug, Clone)]
pub struct TableRow {
    /// The status as stored.
    pub status: String,
    /// The order id.
    pub id: String,
    /// Its `entered_at`, µs.
    pub at: i64,
    /// The `flow_label` column's value.
    pub label: Option<String>,
}

/// What one read asks: per status (as stored) its cursor; the cursor of a status not listed
/// (found by the read); the start of the late-commit window, µs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Status, cursor time (µs), cursor id.
    pub statuses: Vec<(String, i64, Option<String>)>,
    /// A status not listed starts after this time.
    pub default_at: i64,
    /// Rows dated at or after this are read again (late commits).
    pub late: i64,
}

impl TableFlow {
    /// An empty reader: terminal statuses as stored, the overlap in seconds, the index of the
    /// `flow_label` column among the model's labels, what the previous run persisted.
    pub fn new(
        terminal: &[String],
        overlap_secs: u64,
        label: Option<usize>,
        persisted: Watermarks,
    ) -> TableFlow {
        TableFlow {
            names: Vec::new(),
            index: HashMap::new(),
            terminal: terminal.iter().cloned().collect(),
            cursor: HashMap::new(),
            base: HashMap::new(),
            seen: HashSet::new(),
            in_flight: HashMap::new(),
            overlap: overlap_secs as i64 * 1_000_000,
            read_at: 0,
            started: false,
            label,
            persisted,
            starting: Vec::new(),
        }
    }

    /// The `flow_label` column's index among the model's labels.
    pub fn label_index(&self) -> Option<usize> {
        self.label
    }

    fn intern(&mut self, s: &str) -> u16 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.names.len().min(u16::MAX as usize) as u16;
        if (i as usize) == self.names.len() {
            self.names.push(s.into());
        }
        self.index.insert(s.into(), i);
        i
    }

    /// Whether the first read has been done.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Before the first read: the orders in flight now (status as stored, id, time; what a
    /// transition leaves), the database's clock now, and statuses known besides (listed,
    /// terminal: a query's statuses are only those). Rows after what the previous run
    /// persisted are counted, back to [`MAX_CATCH_UP_SECS`] before `now`; without anything
    /// persisted the first read counts nothing up to `now` (a first start counts what happens
    /// from then on). Returns the orders in flight, for flows to time from.
    pub fn start(&mut self, current: Vec<TableRow>, now: i64, known: &[String]) -> Vec<InFlight> {
        self.begin_start(known);
        for r in current {
            self.start_row(r);
        }
        self.finish_start(now)
    }

    /// [`TableFlow::start`] as its rows stream in: first this (again after a failed read).
    pub fn begin_start(&mut self, known: &[String]) {
        self.in_flight.clear();
        self.starting.clear();
        for s in known {
            self.intern(s);
        }
    }

    /// One order in flight of the first read.
    pub fn start_row(&mut self, r: TableRow) {
        let st = self.intern(&r.status);
        if !self.terminal.contains(&r.status) {
            let id: Box<str> = r.id.into();
            self.starting.push(InFlight {
                id: id.clone(),
                status: self.names[st as usize].clone(),
                since: r.at,
            });
            self.in_flight.insert(id, (st, r.at));
        }
    }

    /// Ends the first read's orders in flight, at the database's clock `now`.
    pub fn finish_start(&mut self, now: i64) -> Vec<InFlight> {
        let persisted = std::mem::take(&mut self.persisted);
        let out = std::mem::take(&mut self.starting);
        let oldest = now - MAX_CATCH_UP_SECS * 1_000_000;
        let clamp = |c: Cursor| -> Cursor {
            if c.0 < oldest {
                (oldest, None)
            } else if c.0 > now {
                (now, None)
            } else {
                c
            }
        };
        let default: Cursor = if persisted.is_empty() {
            (now, None)
        } else {
            clamp((persisted.read_at.unwrap_or(now), None))
        };
        for (s, (at, id)) in &persisted.statuses {
            let st = self.intern(s);
            self.cursor
                .insert(st, clamp((*at, id.as_deref().map(Box::from))));
        }
        self.read_at = default.0;
        for st in 0..self.names.len() as u16 {
            let c = self
                .cursor
                .entry(st)
                .or_insert_with(|| default.clone())
                .clone();
            self.base.insert(st, c);
        }
        out
    }

    /// What the next read asks.
    pub fn ask(&self) -> Ask {
        let mut statuses: Vec<(String, i64, Option<String>)> = self
            .cursor
            .iter()
            .map(|(st, (at, id))| {
                (
                    self.names[*st as usize].to_string(),
                    *at,
                    id.as_deref().map(str::to_string),
                )
            })
            .collect();
        statuses.sort();
        Ask {
            statuses,
            default_at: self.read_at,
            late: self.read_at - self.overlap,
        }
    }

    /// Applies one read (`now`: the database's clock); returns the orders that entered a
    /// status since the last read.
    pub fn apply(&mut self, now: i64, rows: Vec<TableRow>) -> Vec<Transition> {
        let first = !self.started;
        let default: Cursor = (self.read_at, None);
        let mut out = Vec::new();
        for r in rows {
            let st = self.intern(&r.status);
            let base = self
                .base
                .entry(st)
                .or_insert_with(|| default.clone())
                .clone();
            let c = self.cursor.entry(st).or_insert_with(|| default.clone());
            if after(r.at, &r.id, c) {
                *c = (r.at, Some(r.id.as_str().into()));
            }
            if !self.seen.insert((st, r.id.as_str().into(), r.at)) {
                continue;
            }
            if first && !after(r.at, &r.id, &base) {
                // Before this run (or the run before) began counting: its entry was counted
                // then, or happened before the daemon watched.
                if !self.terminal.contains(&r.status) {
                    self.in_flight
                        .entry(r.id.as_str().into())
                        .or_insert((st, r.at));
                }
                continue;
            }
            let from = match self.in_flight.get(r.id.as_str()) {
                Some(&(ps, pt)) if (ps, pt) != (st, r.at) && pt <= r.at => {
                    Some((self.names[ps as usize].clone(), pt))
                }
                _ => None,
            };
            if self.terminal.contains(&r.status) {
                self.in_flight.remove(r.id.as_str());
            } else {
                self.in_flight.insert(r.id.as_str().into(), (st, r.at));
            }
            out.push(Transition {
                id: r.id.into(),
                to: self.names[st as usize].clone(),
                at: r.at,
                from,
                label: r.label.map(Into::into),
            });
        }
        self.read_at = self.read_at.max(now);
        self.started = true;
        self.base.clear();
        // The next read re-reads only the late-commit window; rows below it will not come
        // again (a row after a cursor is new by definition).
        let late = self.read_at - self.overlap;
        self.seen.retain(|(_, _, at)| *at >= late);
        out
    }

    /// Forgets orders in flight since before `horizon` (µs): orders deleted or archived
    /// never leave by a transition; one that does after this long has its time in status
    /// beyond the histograms' last bucket anyway.
    pub fn expire(&mut self, horizon: i64) -> usize {
        let before = self.in_flight.len();
        self.in_flight.retain(|_, (_, since)| *since >= horizon);
        before - self.in_flight.len()
    }

    /// What to persist: the cursors as they stand.
    pub fn watermarks(&self) -> Watermarks {
        Watermarks {
            statuses: self
                .cursor
                .iter()
                .map(|(st, (at, id))| {
                    (
                        self.names[*st as usize].to_string(),
                        (*at, id.as_deref().map(str::to_string)),
                    )
                })
                .collect(),
            read_at: (self.read_at != 0).then_some(self.read_at),
            ..Default::default()
        }
    }

    /// Orders in flight as seen, and rows of the late-commit window kept.
    pub fn sizes(&self) -> (usize, usize) {
        (self.in_flight.len(), self.seen.len())
    }

    /// Bytes held, estimated with the allocator's rounding (ARCHITECTURE.md states it per
    /// order in flight).
    pub fn approx_bytes(&self) -> usize {
        let flight: usize = self
            .in_flight
            .keys()
            .map(|id| {
                (std::mem::size_of::<(Box<str>, (u16, i64))>() + 1) * 8 / 7 + heap_bytes(id.len())
            })
            .sum();
        let seen: usize = self
            .seen
            .iter()
            .map(|(_, id, _)| {
                (std::mem::size_of::<(u16, Box<str>, i64)>() + 1) * 8 / 7 + heap_bytes(id.len())
            })
            .sum();
        flight + seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, id: &str, at: i64) -> TableRow {
        TableRow {
            status: status.into(),
            id: id.into(),
            at: at * 1_000_000,
            label: None,
        }
    }

    type Seen = (String, String, Option<(String, i64)>);

    fn got(out: Vec<Transition>) -> Vec<Seen> {
        out.into_iter()
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
    fn a_first_start_counts_from_then_and_the_overlap_counts_once() {
        let mut f = TableFlow::new(&["CLOSED".into()], 60, None, Watermarks::default());
        let current = f.start(
            vec![row("SUBMITTED", "a", 10), row("SUBMITTED", "b", 90)],
            100_000_000,
            &[],
        );
        assert_eq!(current.len(), 2);
        // The first read re-reads the overlap: nothing before the start counts.
        let out = f.apply(
            100_000_000,
            vec![row("SUBMITTED", "b", 90), row("CLOSED", "z", 95)],
        );
        assert!(out.is_empty());
        // a moves on; b closes; c is new; the next read sees b's row of the overlap again.
        let out = f.apply(
            130_000_000,
            vec![
                row("PRICE_CALCULATED", "a", 120),
                row("CLOSED", "b", 125),
                row("SUBMITTED", "c", 126),
                row("CLOSED", "z", 95),
            ],
        );
        assert_eq!(
            got(out),
            [
                (
                    "a".into(),
                    "PRICE_CALCULATED".into(),
                    Some(("SUBMITTED".into(), 10))
                ),
                ("b".into(), "CLOSED".into(), Some(("SUBMITTED".into(), 90))),
                ("c".into(), "SUBMITTED".into(), None),
            ]
        );
        // Read again: the window holds them; a late commit dated inside it counts once.
        let ask = f.ask();
        assert_eq!(ask.late, 70_000_000);
        assert!(
            ask.statuses
                .contains(&("CLOSED".into(), 125_000_000, Some("b".into())))
        );
        let out = f.apply(
            131_000_000,
            vec![
                row("PRICE_CALCULATED", "a", 120),
                row("SUBMITTED", "d", 110),
            ],
        );
        assert_eq!(got(out), [("d".into(), "SUBMITTED".into(), None)]);
        assert_eq!(f.sizes().0, 3); // a, c, d
    }

    #[test]
    fn a_bulk_update_with_one_time_is_read_on_by_the_id() {
        let mut f = TableFlow::new(&["CLOSED".into()], 60, None, Watermarks::default());
        f.start(vec![], 100_000_000, &["CLOSED".into()]);
        f.apply(100_000_000, vec![]);
        // 3 of 5 orders closed at 150 arrive in one read (its limit), the other 2 in the next,
        // which asks for the rows after the last id read.
        let out = f.apply(
            200_000_000,
            vec![
                row("CLOSED", "1", 150),
                row("CLOSED", "2", 150),
                row("CLOSED", "3", 150),
            ],
        );
        assert_eq!(out.len(), 3);
        assert_eq!(
            f.ask().statuses,
            [("CLOSED".into(), 150_000_000, Some("3".into()))]
        );
        let out = f.apply(
            201_000_000,
            vec![row("CLOSED", "4", 150), row("CLOSED", "5", 150)],
        );
        assert_eq!(out.len(), 2);
        // Once the window has passed, nothing is re-read.
        f.apply(400_000_000, vec![]);
        assert_eq!(f.sizes().1, 0);
    }

    #[test]
    fn a_restart_counts_what_lies_after_the_persisted_cursors_only() {
        let persisted = Watermarks {
            statuses: [(
                "SUBMITTED".to_string(),
                (100_000_000, Some("a".to_string())),
            )]
            .into(),
            read_at: Some(100_000_000),
            ..Default::default()
        };
        let mut f = TableFlow::new(&["CLOSED".into()], 60, None, persisted);
        f.start(
            vec![
                row("SUBMITTED", "a", 100),
                row("SUBMITTED", "a2", 100),
                row("SUBMITTED", "b", 150),
            ],
            200_000_000,
            &[],
        );
        let out = f.apply(
            200_000_000,
            vec![
                row("SUBMITTED", "a", 100),
                row("SUBMITTED", "a2", 100),
                row("SUBMITTED", "b", 150),
                row("CLOSED", "c", 180),
            ],
        );
        assert_eq!(
            got(out),
            [
                ("a2".into(), "SUBMITTED".into(), None),
                ("b".into(), "SUBMITTED".into(), None),
                ("c".into(), "CLOSED".into(), None),
            ]
        );
    }

    #[test]
    fn a_long_downtime_is_caught_up_for_an_hour_at_most() {
        let persisted = Watermarks {
            statuses: [("SUBMITTED".to_string(), (0, None))].into(),
            read_at: Some(0),
            ..Default::default()
        };
        let mut f = TableFlow::new(&[], 60, None, persisted);
        let now = 10 * 3600;
        f.start(vec![], now * 1_000_000, &[]);
        let ask = f.ask();
        assert_eq!(ask.statuses[0].1, (now - 3600) * 1_000_000);
        let out = f.apply(
            now * 1_000_000,
            vec![
                row("SUBMITTED", "old", 3600),
                row("SUBMITTED", "new", now - 60),
            ],
        );
        assert_eq!(got(out), [("new".into(), "SUBMITTED".into(), None)]);
    }
}
