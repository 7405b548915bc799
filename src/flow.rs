//! The order flow: what the orders' transitions say about the business, as metrics.
//!
//! A source that observes its transitions (`flow`, on by default; see
//! `source::transitions`) hands them to its [`Tracker`] each `gauges_interval`:
//!
//! - `orderwatch_status_entries_total{source,status}`: one per order entering a status;
//! - `orderwatch_status_duration_seconds{source,status}`: the time it spent in the status it
//!   left (when the daemon saw it enter);
//! - `orderwatch_flow_duration_seconds{source,flow}`: for each flow of the main config
//!   (`flows: {lead_time: [SUBMITTED, SHIPPED]}`), the time from the first time an order
//!   entered its first status to the first time after that it entered its last.
//!
//! With a `flow_label` the three carry that column too (at most [`MAX_LABEL_VALUES`] values,
//! the rest `other`). Statuses are folded as the gauges fold them: outside a `statuses` list
//! (or beyond the first 50 without one) they are `other`.
//!
//! An order already in a flow's first status when a run first reads its source is timed from
//! when it entered it (the source says when); one further on is not.
//!
//! What a restart keeps (the state store, tables `flow_marks` and `flow_watermarks`): per
//! order in flight, when it entered each flow's first status (written as it happens, deleted
//! as the flow ends or the order finishes); per source, where its reads stood, so that the
//! next run counts what happened while it was down and nothing twice.

use std::collections::{HashMap, HashSet};

use crate::alert::{Store, StoreError};
use crate::metrics::FlowFamilies;
use crate::source::{InFlight, MAX_STATUS_LABELS, OTHER_STATUS, Source, Transition, Watermarks};

/// Values of a `flow_label` column that become label values; the rest are `other`.
pub const MAX_LABEL_VALUES: usize = 20;

/// The label value of an order whose `flow_label` column is NULL.
pub const NO_LABEL_VALUE: &str = "none";

/// A flow not ended after this long (seconds: the histograms' last bucket and a week) is
/// forgotten.
pub const MARK_EXPIRY_SECS: f64 = 2_419_200.0 + 604_800.0;

/// One flow of the main config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Its name (the `flow` label).
    pub name: String,
    /// The status it starts at (a name).
    pub start: String,
    /// The status it ends at (a name).
    pub end: String,
}

/// The flows of a config that `source` can time: both statuses in its `statuses` list when
/// it has one.
pub fn flows_for(
    flows: &std::collections::BTreeMap<String, serde_saphyr::Spanned<Vec<String>>>,
    source: &Source,
) -> Vec<Flow> {
    flows
        .iter()
        .filter(|(_, f)| f.value.len() == 2)
        .filter(|(_, f)| {
            source
                .statuses
                .as_ref()
                .is_none_or(|known| f.value.iter().all(|s| known.contains(s)))
        })
        .map(|(name, f)| Flow {
            name: name.clone(),
            start: f.value[0].clone(),
            end: f.value[1].clone(),
        })
        .collect()
}

/// A source's order flow: folds its transitions into the metrics and keeps, per order in
/// flight, when it entered each flow's first status.
pub struct Tracker {
    source: String,
    families: FlowFamilies,
    flows: Vec<Flow>,
    /// The source's `statuses`, when listed.
    listed: Option<HashSet<String>>,
    terminal: HashSet<String>,
    /// Per order: (flow index, when it entered the flow's first status, µs).
    marks: HashMap<Box<str>, Vec<(u16, i64)>>,
    /// Mark changes not yet written: set (Some) or deleted (None).
    unsaved: HashMap<MarkKey, Option<i64>>,
    /// The watermarks as last written.
    saved: Watermarks,
}

/// A mark: the order and the flow's index.
type MarkKey = (Box<str>, u16);

/// What one [`Tracker::apply`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Transitions applied.
    pub transitions: usize,
    /// Flow durations observed.
    pub flows: usize,
}

impl Tracker {
    /// A tracker for `source` with `flows`, its series in `families`, with what the store
    /// kept of the previous run: the marks of orders in flight and the watermarks (returned,
    /// for [`Source::record_transitions`]).
    pub fn load(
        store: &Store,
        source: &Source,
        flows: Vec<Flow>,
        families: FlowFamilies,
    ) -> Result<(Tracker, Watermarks), StoreError> {
        let name = source.name.clone();
        let flow_names: Vec<String> = flows.iter().map(|f| f.name.clone()).collect();
        let (marks, saved) = store.with(|conn| {
            conn.execute_batch(SCHEMA)?;
            let mut marks: HashMap<Box<str>, Vec<(u16, i64)>> = HashMap::new();
            let mut gone = false;
            {
                let mut stmt =
                    conn.prepare("SELECT order_id, flow, at FROM flow_marks WHERE source = ?1")?;
                let mut rows = stmt.query([&name])?;
                while let Some(r) = rows.next()? {
                    let flow: String = r.get(1)?;
                    match flow_names.iter().position(|f| *f == flow) {
                        Some(i) => marks
                            .entry(r.get::<_, String>(0)?.into())
                            .or_default()
                            .push((i as u16, r.get(2)?)),
                        None => gone = true,
                    }
                }
            }
            if gone {
                // Flows no longer configured.
                let keep = serde_json::to_string(&flow_names).unwrap_or_default();
                conn.execute(
                    "DELETE FROM flow_marks WHERE source = ?1 AND flow NOT IN (SELECT value FROM json_each(?2))",
                    rusqlite::params![name, keep],
                )?;
            }
            let mut w = Watermarks::default();
            let mut stmt =
                conn.prepare("SELECT key, value, id FROM flow_watermarks WHERE source = ?1")?;
            let mut rows = stmt.query([&name])?;
            while let Some(r) = rows.next()? {
                let key: String = r.get(0)?;
                let value: i64 = r.get(1)?;
                let id: Option<String> = r.get(2)?;
                match key.as_str() {
                    "serial" => w.serial = Some(value),
                    "log_at" => w.log_at = Some(value),
                    "read_at" => w.read_at = Some(value),
                    k => {
                        if let Some(s) = k.strip_prefix("status:") {
                            w.statuses.insert(s.to_string(), (value, id));
                        }
                    }
                }
            }
            Ok((marks, w))
        })?;
        let listed = source.statuses.clone();
        {
            // A reload that changes the flows starts their histogram again: a removed flow's
            // series go.
            let mut a = families.admitted.lock().expect("admitted");
            if a.flows != flow_names {
                families.flow_duration.reset();
                a.flows = flow_names.clone();
            }
        }
        let mut tracker = Tracker {
            source: name.clone(),
            families: families.clone(),
            flows,
            listed,
            terminal: source.terminal_statuses.iter().cloned().collect(),
            marks,
            unsaved: HashMap::new(),
            saved: saved.clone(),
        };
        // Every listed status (and every status a previous run saw, within the cap) starts at
        // 0, so the first entry is an increase; with a flow_label only what happens makes
        // series (the label values are not known before).
        if families.label.is_none() {
            let mut statuses: Vec<String> = tracker.listed.iter().flatten().cloned().collect();
            let mut seen: Vec<String> = saved
                .statuses
                .keys()
                .map(|s| source.from_db(s.clone()))
                .collect();
            seen.sort();
            statuses.extend(seen);
            for s in statuses {
                let label = tracker.status_label(&s);
                families.entries.with_label_values(&[&name, &label]);
            }
            for f in &tracker.flows {
                families.flow_duration.with_label_values(&[&name, &f.name]);
            }
        }
        tracker.expire_marks(chrono::Utc::now().timestamp_micros());
        Ok((tracker, saved))
    }

    fn status_label(&mut self, name: &str) -> String {
        let keep = match &self.listed {
            Some(l) => l.contains(name),
            None => {
                let mut a = self.families.admitted.lock().expect("admitted");
                a.statuses.contains(name)
                    || (a.statuses.len() < MAX_STATUS_LABELS && a.statuses.insert(name.to_string()))
            }
        };
        if keep && name != OTHER_STATUS {
            name.to_string()
        } else {
            OTHER_STATUS.to_string()
        }
    }

    fn label_value(&mut self, v: Option<&str>) -> String {
        let Some(v) = v else {
            return NO_LABEL_VALUE.to_string();
        };
        let mut a = self.families.admitted.lock().expect("admitted");
        if a.values.contains(v) || (a.values.len() < MAX_LABEL_VALUES && a.values.insert(v.into()))
        {
            v.to_string()
        } else {
            OTHER_STATUS.to_string()
        }
    }

    /// Forgets the marks older than the histograms' last bucket (orders deleted or archived
    /// in a flow never end it; one that does after this long would only add to `+Inf`).
    /// `now`: µs.
    pub fn expire_marks(&mut self, now: i64) -> usize {
        let horizon = now - (MARK_EXPIRY_SECS * 1_000_000.0) as i64;
        let mut n = 0;
        let unsaved = &mut self.unsaved;
        self.marks.retain(|id, marks| {
            marks.retain(|(i, at)| {
                let keep = *at >= horizon;
                if !keep {
                    unsaved.insert((id.clone(), *i), None);
                    n += 1;
                }
                keep
            });
            !marks.is_empty()
        });
        n
    }

    /// Times the flows of the orders in flight when the source was first read (a run's
    /// start): an order in a flow's first status is timed from when it entered it, unless it
    /// is timed already (a restart keeps its marks). An order further on is not: when it
    /// entered the first status is not known.
    pub fn start_from(&mut self, source: &Source, current: Vec<InFlight>) -> usize {
        if self.flows.is_empty() {
            return 0;
        }
        let mut n = 0;
        for o in current {
            let status = source.status_of(&o.status);
            for (i, f) in self.flows.iter().enumerate() {
                let i = i as u16;
                if f.start != *status {
                    continue;
                }
                let marks = self.marks.entry(o.id.clone()).or_default();
                if !marks.iter().any(|(j, _)| *j == i) {
                    marks.push((i, o.since));
                    self.unsaved.insert((o.id.clone(), i), Some(o.since));
                    n += 1;
                }
            }
        }
        n
    }

    /// Folds `transitions` (statuses as stored; `source` names them) into the metrics and
    /// the marks.
    pub fn apply(&mut self, source: &Source, transitions: Vec<Transition>) -> Applied {
        let mut done = Applied::default();
        let labelled = self.families.label.is_some();
        let src = self.source.clone();
        for t in transitions {
            done.transitions += 1;
            let to = source.status_of(&t.to);
            let to: &str = &to;
            let to_label = self.status_label(to);
            let value = labelled.then(|| self.label_value(t.label.as_deref()));
            let labels = |first: &str| -> Vec<String> {
                let mut v = vec![src.clone(), first.to_string()];
                v.extend(value.clone());
                v
            };
            let l = labels(&to_label);
            let refs: Vec<&str> = l.iter().map(String::as_str).collect();
            self.families.entries.with_label_values(&refs).inc();
            if let Some((from, since)) = &t.from
                && t.at >= *since
            {
                let from = source.status_of(from);
                let from_label = self.status_label(&from);
                let l = labels(&from_label);
                let refs: Vec<&str> = l.iter().map(String::as_str).collect();
                self.families
                    .status_duration
                    .with_label_values(&refs)
                    .observe((t.at - since) as f64 / 1e6);
            }
            for (i, f) in self.flows.iter().enumerate() {
                let i = i as u16;
                if f.start == to {
                    let marks = self.marks.entry(t.id.clone()).or_default();
                    if !marks.iter().any(|(j, _)| *j == i) {
                        marks.push((i, t.at));
                        self.unsaved.insert((t.id.clone(), i), Some(t.at));
                    }
                } else if f.end == to {
                    let Some(marks) = self.marks.get_mut(&t.id) else {
                        continue;
                    };
                    let Some(pos) = marks.iter().position(|(j, _)| *j == i) else {
                        continue;
                    };
                    let (_, started) = marks.swap_remove(pos);
                    if marks.is_empty() {
                        self.marks.remove(&t.id);
                    }
                    self.unsaved.insert((t.id.clone(), i), None);
                    if t.at >= started {
                        let l = labels(&f.name);
                        let refs: Vec<&str> = l.iter().map(String::as_str).collect();
                        self.families
                            .flow_duration
                            .with_label_values(&refs)
                            .observe((t.at - started) as f64 / 1e6);
                        done.flows += 1;
                    }
                }
            }
            // A finished order's flows that did not end never will.
            if self.terminal.contains(to)
                && let Some(marks) = self.marks.remove(&t.id)
            {
                for (i, _) in marks {
                    self.unsaved.insert((t.id.clone(), i), None);
                }
            }
        }
        done
    }

    /// Writes what changed since the last save: the marks set and deleted, and `watermarks`
    /// when they moved. Nothing when nothing changed. A failed write is kept and retried.
    pub fn save(&mut self, store: &Store, watermarks: &Watermarks) -> Result<usize, StoreError> {
        // The clock of the last read alone moving is no change: writes follow transitions.
        let moved = !watermarks.is_empty()
            && Watermarks {
                read_at: self.saved.read_at,
                ..watermarks.clone()
            } != self.saved;
        if self.unsaved.is_empty() && !moved {
            return Ok(0);
        }
        let changes: Vec<(MarkKey, Option<i64>)> = self.unsaved.drain().collect();
        let source = self.source.clone();
        let names: Vec<String> = self.flows.iter().map(|f| f.name.clone()).collect();
        let result = store.with(|conn| {
            let tx = conn.transaction()?;
            let mut written = 0;
            {
                let mut set = tx.prepare_cached(
                    "INSERT OR REPLACE INTO flow_marks (source, order_id, flow, at) VALUES (?1, ?2, ?3, ?4)",
                )?;
                let mut del = tx.prepare_cached(
                    "DELETE FROM flow_marks WHERE source = ?1 AND order_id = ?2 AND flow = ?3",
                )?;
                for ((id, i), at) in &changes {
                    let flow = &names[*i as usize];
                    written += match at {
                        Some(at) => set.execute(rusqlite::params![source, &**id, flow, at])?,
                        None => del.execute(rusqlite::params![source, &**id, flow])?,
                    };
                }
                if moved {
                    tx.execute("DELETE FROM flow_watermarks WHERE source = ?1", [&source])?;
                    let mut ins = tx.prepare_cached(
                        "INSERT INTO flow_watermarks (source, key, value, id) VALUES (?1, ?2, ?3, ?4)",
                    )?;
                    let w = watermarks;
                    let mut rows: Vec<(String, i64, Option<&str>)> = Vec::new();
                    rows.extend(w.serial.map(|v| ("serial".to_string(), v, None)));
                    rows.extend(w.log_at.map(|v| ("log_at".to_string(), v, None)));
                    rows.extend(w.read_at.map(|v| ("read_at".to_string(), v, None)));
                    rows.extend(
                        w.statuses
                            .iter()
                            .map(|(s, (at, id))| (format!("status:{s}"), *at, id.as_deref())),
                    );
                    for (k, v, id) in rows {
                        written += ins.execute(rusqlite::params![source, k, v, id])?;
                    }
                }
            }
            tx.commit()?;
            Ok(written)
        });
        match result {
            Ok(n) => {
                if moved {
                    self.saved = watermarks.clone();
                }
                Ok(n)
            }
            Err(e) => {
                // Kept for the next save (a newer change to the same mark wins).
                for (k, v) in changes {
                    self.unsaved.entry(k).or_insert(v);
                }
                Err(e)
            }
        }
    }

    /// Orders with a flow started and not ended, and their bytes, estimated.
    pub fn in_flight(&self) -> (usize, usize) {
        let bytes: usize = self
            .marks
            .iter()
            .map(|(id, m)| {
                (std::mem::size_of::<(Box<str>, Vec<(u16, i64)>)>() + 1) * 8 / 7
                    + crate::source::transitions::heap_bytes(id.len())
                    + crate::source::transitions::heap_bytes(
                        m.capacity() * std::mem::size_of::<(u16, i64)>(),
                    )
            })
            .sum();
        (self.marks.len(), bytes)
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS flow_marks (
        source   TEXT NOT NULL,
        order_id TEXT NOT NULL,
        flow     TEXT NOT NULL,
        at       INTEGER NOT NULL,
        PRIMARY KEY (source, order_id, flow)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS flow_watermarks (
        source TEXT NOT NULL,
        key    TEXT NOT NULL,
        value  INTEGER NOT NULL,
        id     TEXT,
        PRIMARY KEY (source, key)
    ) WITHOUT ROWID;";

/// Deletes what the store keeps of the order flow of sources not in `keep` (removed, renamed
/// or `flow: false`): when such a source is observed again it starts afresh rather than
/// taking weeks-old watermarks for a downtime.
pub fn forget_others(store: &Store, keep: &[String]) -> Result<usize, StoreError> {
    let keep = serde_json::to_string(keep).unwrap_or_default();
    store.with(|conn| {
        conn.execute_batch(SCHEMA)?;
        let mut n = 0;
        for table in ["flow_marks", "flow_watermarks"] {
            n += conn.execute(
                &format!(
                    "DELETE FROM {table} WHERE source NOT IN (SELECT value FROM json_each(?1))"
                ),
                [&keep],
            )?;
        }
        Ok(n)
    })
}
