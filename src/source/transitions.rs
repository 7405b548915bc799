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
    /// A table: per status (as stored), the newest time read in it, µs.
    pub statuses: HashMap<String, i64>,
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
/// over the next reads (its watermark advances by what was read).
pub const TABLE_READ_LIMIT: i64 = 50_000;

/// A table's transition reader: watermarks per status, the rows of the overlap already
/// counted, and the orders in flight (status and since when) the daemon has seen.
#[derive(Debug)]
pub struct TableFlow {
    names: Vec<Box<str>>,
    index: HashMap<Box<str>, u16>,
    terminal: HashSet<String>,
    /// Per status (interned): the newest time read, µs (capped at the database's clock).
    wm: HashMap<u16, i64>,
    /// Per status: rows up to this time are not counted (the first read after a start).
    base: HashMap<u16, i64>,
    /// Rows read within the overlap: (status, id, time).
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
            wm: HashMap::new(),
            base: HashMap::new(),
            seen: HashSet::new(),
            in_flight: HashMap::new(),
            overlap: overlap_secs as i64 * 1_000_000,
            read_at: 0,
            started: false,
            label,
            persisted,
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
    /// terminal: a query's statuses are only those). Rows above what the previous run
    /// persisted are counted; without anything persisted the first read counts nothing up to
    /// `now` (a first start counts what happens from then on).
    /// Returns the orders in flight (status as stored, id, time), for flows to time from.
    pub fn start(&mut self, current: Vec<TableRow>, now: i64, known: &[String]) -> Vec<InFlight> {
        let persisted = std::mem::take(&mut self.persisted);
        for s in known {
            self.intern(s);
        }
        let mut out = Vec::with_capacity(current.len());
        for r in current {
            let st = self.intern(&r.status);
            if !self.terminal.contains(&r.status) {
                let id: Box<str> = r.id.into();
                out.push(InFlight {
                    id: id.clone(),
                    status: self.names[st as usize].clone(),
                    since: r.at,
                });
                self.in_flight.insert(id, (st, r.at));
            }
        }
        let default = if persisted.is_empty() {
            now
        } else {
            persisted.read_at.unwrap_or(now).min(now)
        };
        for (s, at) in &persisted.statuses {
            let st = self.intern(s);
            self.wm.insert(st, (*at).min(now));
        }
        self.read_at = default;
        let statuses: Vec<u16> = (0..self.names.len() as u16).collect();
        for st in statuses {
            let w = *self.wm.entry(st).or_insert(default);
            self.base.insert(st, w);
        }
        out
    }

    /// What the next read asks, per status (as stored): rows at or after this time (µs); and
    /// the time a status not listed starts from.
    pub fn floors(&self) -> (Vec<(String, i64)>, i64) {
        let mut out: Vec<(String, i64)> = self
            .wm
            .iter()
            .map(|(st, at)| (self.names[*st as usize].to_string(), at - self.overlap))
            .collect();
        out.sort();
        (out, self.read_at - self.overlap)
    }

    /// Applies one read (`now`: the database's clock), rows in time order per status; records
    /// the orders that entered a status since the last read into `out`.
    pub fn apply(&mut self, now: i64, rows: Vec<TableRow>, out: &mut Recorded) {
        let first = !self.started;
        let default = self.read_at;
        for r in rows {
            let st = self.intern(&r.status);
            let base = *self.base.entry(st).or_insert(default);
            let w = self.wm.entry(st).or_insert(default);
            *w = (*w).max(r.at.min(now));
            if !self.seen.insert((st, r.id.as_str().into(), r.at)) {
                continue;
            }
            if first && r.at <= base {
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
        // Rows below every floor the next read asks will not come again.
        let wm = &self.wm;
        let overlap = self.overlap;
        self.seen
            .retain(|(st, _, at)| wm.get(st).is_some_and(|w| *at >= w - overlap));
        self.base.clear();
    }

    /// What to persist: the watermarks as they stand.
    pub fn watermarks(&self) -> Watermarks {
        Watermarks {
            statuses: self
                .wm
                .iter()
                .map(|(st, at)| (self.names[*st as usize].to_string(), *at))
                .collect(),
            read_at: (self.read_at != 0).then_some(self.read_at),
            ..Default::default()
        }
    }

    /// Orders in flight as seen, and rows of the overlap kept.
    pub fn sizes(&self) -> (usize, usize) {
        (self.in_flight.len(), self.seen.len())
    }

    /// Bytes held, estimated (ARCHITECTURE.md states it per order in flight).
    pub fn approx_bytes(&self) -> usize {
        let flight: usize = self
            .in_flight
            .keys()
            .map(|id| std::mem::size_of::<(Box<str>, (u16, i64))>() + 1 + id.len())
            .sum();
        let seen: usize = self
            .seen
            .iter()
            .map(|(_, id, _)| std::mem::size_of::<(u16, Box<str>, i64)>() + 1 + id.len())
            .sum();
        (flight + seen) * 8 / 7
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

    fn got(out: &mut Recorded) -> Vec<Seen> {
        out.take()
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
    fn a_first_start_counts_from_then_and_the_overlap_counts_once() {
        let mut f = TableFlow::new(&["CLOSED".into()], 60, None, Watermarks::default());
        let current = f.start(
            vec![row("SUBMITTED", "a", 10), row("SUBMITTED", "b", 90)],
            100_000_000,
            &[],
        );
        assert_eq!(current.len(), 2);
        let mut out = Recorded::default();
        // The first read re-reads the overlap: nothing before the start counts.
        f.apply(
            100_000_000,
            vec![row("SUBMITTED", "b", 90), row("CLOSED", "z", 95)],
            &mut out,
        );
        assert!(got(&mut out).is_empty());
        // a moves on; b closes; c is new; the next read sees b's row of the overlap again.
        f.apply(
            130_000_000,
            vec![
                row("PRICE_CALCULATED", "a", 120),
                row("CLOSED", "b", 125),
                row("SUBMITTED", "c", 126),
                row("CLOSED", "z", 95),
            ],
            &mut out,
        );
        assert_eq!(
            got(&mut out),
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
        // Read again: the overlap holds them; a late commit dated inside it counts once.
        f.apply(
            131_000_000,
            vec![
                row("PRICE_CALCULATED", "a", 120),
                row("SUBMITTED", "d", 110),
            ],
            &mut out,
        );
        assert_eq!(got(&mut out), [("d".into(), "SUBMITTED".into(), None)]);
        assert_eq!(f.sizes().0, 3); // a, c, d
    }

    #[test]
    fn a_restart_counts_what_lies_above_the_persisted_watermarks_only() {
        let persisted = Watermarks {
            statuses: [("SUBMITTED".to_string(), 100_000_000)].into(),
            read_at: Some(100_000_000),
            ..Default::default()
        };
        let mut f = TableFlow::new(&["CLOSED".into()], 60, None, persisted);
        f.start(
            vec![row("SUBMITTED", "a", 90), row("SUBMITTED", "b", 150)],
            200_000_000,
            &[],
        );
        let mut out = Recorded::default();
        f.apply(
            200_000_000,
            vec![
                row("SUBMITTED", "a", 90),
                row("SUBMITTED", "b", 150),
                row("CLOSED", "c", 180),
            ],
            &mut out,
        );
        assert_eq!(
            got(&mut out),
            [
                ("b".into(), "SUBMITTED".into(), None),
                ("c".into(), "CLOSED".into(), None),
            ]
        );
    }
}
