//! The alert state machine, per (rule, key) where the key is an order id (or `_overflow`, or a
//! source name for `SourceDown`): pending → firing → resolved, with `for` and
//! `keep_firing_for` as in Prometheus. Pure logic: time is passed in, so tests need no clock.
//!
//! An alert costs what it must: its labels share the rule-wide part ([`Labels`]), and an
//! order's annotations are not kept but rendered when a message is made ([`Notes`]), from the
//! alert's own data and its rule's templates.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use indexmap::IndexMap;

use super::state::{
    Alert, AlertState, Coverage, Notes, Observation, RESOLVED_RETENTION, RuleTiming, Transition,
    TransitionKind,
};
use crate::labels::Str;

/// All alerts, by rule, then key, and what changed in them since the store last saved.
#[derive(Debug, Default, Clone)]
pub struct AlertBook {
    rules: BTreeMap<Str, RuleAlerts>,
    log: ChangeLog,
}

/// The alerts of one rule by key, in the order evaluations first met them (a new one
/// last). An evaluation looks up every order it fetched: rows come in the order of the
/// evaluation before (oldest first), so the next alert in that order is tried first and
/// met in sequence, memory read ahead; only an order out of that sequence is found by
/// hashing (at 100 000 alerts a sorted map's search, a pointer chased per key compared,
/// cost more than decoding the row). Walks in key order (API pages, Alertmanager batches)
/// follow a list of the positions sorted by key, made when first asked for after keys came
/// or went, so a steady evaluation, which adds and removes none, never sorts.
#[derive(Debug, Default, Clone)]
struct RuleAlerts {
    by_key: IndexMap<Str, Arc<Alert>>,
    order: OnceLock<Box<[u32]>>,
}

impl RuleAlerts {
    fn get(&self, key: &str) -> Option<&Arc<Alert>> {
        self.by_key.get(key)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Arc<Alert>> {
        self.by_key.get_mut(key)
    }

    /// The alert of `key` and its position, trying position `next` first.
    fn find_from(&mut self, next: usize, key: &str) -> Option<(usize, &mut Arc<Alert>)> {
        if self
            .by_key
            .get_index(next)
            .is_some_and(|(k, _)| **k == *key)
        {
            return self.by_key.get_index_mut(next).map(|(_, a)| (next, a));
        }
        self.by_key.get_full_mut(key).map(|(i, _, a)| (i, a))
    }

    fn insert(&mut self, a: Arc<Alert>) {
        if self.by_key.insert(a.key.clone(), a).is_none() {
            self.order.take();
        }
    }

    /// Keeps the alerts `keep` says to (it may change them).
    fn retain(&mut self, mut keep: impl FnMut(&mut Arc<Alert>) -> bool) {
        let before = self.by_key.len();
        self.by_key.retain(|_, a| keep(a));
        if self.by_key.len() != before {
            self.order.take();
        }
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }

    fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// In no set order.
    fn values(&self) -> impl Iterator<Item = &Arc<Alert>> {
        self.by_key.values()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Arc<Alert>> {
        self.by_key.values_mut()
    }

    /// The alerts whose key sorts after `after` (all when `None`), in key order.
    fn after<'a>(&'a self, after: Option<&str>) -> impl Iterator<Item = &'a Alert> + 'a {
        let key = |i: u32| &**self.by_key.get_index(i as usize).expect("a position").0;
        let order = self.order.get_or_init(|| {
            let mut order: Vec<u32> = (0..self.by_key.len() as u32).collect();
            order.sort_unstable_by(|a, b| key(*a).cmp(key(*b)));
            order.into()
        });
        let start = after.map_or(0, |k| order.partition_point(|i| key(*i) <= k));
        (order[start..].iter())
            .map(|i| &**self.by_key.get_index(*i as usize).expect("a position").1)
    }
}

/// What changed durably in the book (an alert made, its state, times, labels or interval
/// changed, an alert forgotten) since the store last took it ([`AlertBook::take_unsaved`]):
/// the store writes only these, so a steady evaluation writes nothing and nobody keeps a
/// digest per alert to find out. Past [`LOG_LIMIT`] changes (an incident's first
/// evaluation) the keys are no longer listed: the store then takes every alert whose
/// version is newer than what it saved, found by one walk of the book.
#[derive(Debug, Default, Clone)]
struct ChangeLog {
    /// Bumped at every change.
    version: u64,
    /// The version the store has (as of its last take).
    saved: u64,
    /// (rule, key) of the alerts changed since, unless `rescan`.
    changed: Vec<(Str, Str)>,
    /// Too many changed to list: find them by version.
    rescan: bool,
    /// (rule, key) of the alerts forgotten since.
    removed: Vec<(Str, Str)>,
}

/// Changed alerts listed by key before the store finds them by version instead.
const LOG_LIMIT: usize = 4096;

impl ChangeLog {
    /// Alert `a` was made or changed durably: it gets the next version.
    fn changed(&mut self, a: &mut Arc<Alert>) {
        self.version += 1;
        let m = Arc::make_mut(a);
        m.version = self.version;
        if self.rescan {
            return;
        }
        if self.changed.len() == LOG_LIMIT {
            self.rescan = true;
            self.changed = Vec::new();
        } else {
            self.changed.push((m.rule.clone(), m.key.clone()));
        }
    }

    /// Alert `a` left the book.
    fn removed(&mut self, a: &Alert) {
        self.version += 1;
        self.removed.push((a.rule.clone(), a.key.clone()));
    }
}

/// What the store must write to catch up with the book ([`AlertBook::take_unsaved`]).
#[derive(Debug, Default)]
pub struct Unsaved {
    /// Alerts to write (insert or replace), as they are now.
    pub upserts: Vec<Arc<Alert>>,
    /// (rule, key) of alerts to delete.
    pub deletes: Vec<(Str, Str)>,
    /// The book's version the store had before (for [`AlertBook::requeue`]).
    pub since: u64,
}

impl Unsaved {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or(Duration::ZERO)
}

impl AlertBook {
    /// A book holding `alerts` (restored from the store).
    pub fn from_alerts(alerts: impl IntoIterator<Item = Alert>) -> Self {
        let mut book = AlertBook::default();
        for a in alerts {
            book.insert(a);
        }
        book
    }

    /// The version of the last change ([`Alert::version`]).
    pub fn version(&self) -> u64 {
        self.log.version
    }

    /// What changed since the last call, as the store must write it: each changed alert as it
    /// is now (once, however often it changed), each forgotten one as a delete. After a
    /// failed write, [`AlertBook::requeue`] puts it back.
    pub fn take_unsaved(&mut self) -> Unsaved {
        let log = &mut self.log;
        let since = std::mem::replace(&mut log.saved, log.version);
        let mut out = Unsaved {
            since,
            ..Unsaved::default()
        };
        if std::mem::take(&mut log.rescan) {
            out.upserts = (self.rules.values())
                .flat_map(RuleAlerts::values)
                .filter(|a| a.version > since)
                .cloned()
                .collect();
            // As the listed ones: in (rule, key) order.
            out.upserts
                .sort_unstable_by(|a, b| (&a.rule, &a.key).cmp(&(&b.rule, &b.key)));
        } else {
            let mut keys = std::mem::take(&mut log.changed);
            keys.sort_unstable();
            keys.dedup();
            out.upserts = keys
                .iter()
                .filter_map(|(rule, key)| self.rules.get(rule)?.get(key).cloned())
                .collect();
        }
        let mut gone = std::mem::take(&mut log.removed);
        gone.sort_unstable();
        gone.dedup();
        // A key forgotten and made again is written, not deleted.
        out.deletes = gone
            .into_iter()
            .filter(|(rule, key)| self.get(rule, key).is_none())
            .collect();
        out
    }

    /// Marks what `unsaved` held unsaved again (its write failed): the next
    /// [`AlertBook::take_unsaved`] gives it, as it is then.
    pub fn requeue(&mut self, unsaved: Unsaved) {
        let log = &mut self.log;
        log.saved = log.saved.min(unsaved.since);
        log.rescan = true;
        log.changed = Vec::new();
        log.removed.extend(unsaved.deletes);
    }

    fn insert(&mut self, a: Alert) {
        self.rules
            .entry(a.rule.clone())
            .or_default()
            .insert(Arc::new(a));
    }

    /// Applies one successful evaluation of `rule` and returns the state changes.
    pub fn apply(
        &mut self,
        rule: &str,
        timing: RuleTiming,
        now: DateTime<Utc>,
        observations: Vec<Observation>,
        coverage: Coverage,
    ) -> Vec<Transition> {
        let mut pass = Pass::new(rule, timing, now);
        for o in observations {
            pass.observe(self, o);
        }
        pass.finish(self, coverage)
    }

    /// Gives the alerts of `rule` whose annotations are rendered from their data, and those
    /// restored without any, `notes` (the rule's renderer, after a start or a reload).
    pub fn attach_notes(&mut self, rule: &str, notes: &Notes) {
        if let Some(alerts) = self.rules.get_mut(rule) {
            for a in alerts.values_mut() {
                if matches!(a.notes, Notes::Rendered(_) | Notes::None) && !a.notes.same(notes) {
                    Arc::make_mut(a).notes = notes.clone();
                }
            }
        }
    }

    /// Resolves every active alert of rules not in `keep` (a rule removed from the config).
    pub fn resolve_rules_not_in(
        &mut self,
        keep: &HashSet<String>,
        now: DateTime<Utc>,
    ) -> Vec<Transition> {
        let mut changes = Vec::new();
        let log = &mut self.log;
        for (rule, alerts) in self.rules.iter_mut() {
            if keep.contains(rule.as_ref()) {
                continue;
            }
            alerts.retain(|a| match a.state {
                AlertState::Pending => {
                    log.removed(a);
                    false
                }
                AlertState::Firing => {
                    let m = Arc::make_mut(a);
                    m.state = AlertState::Resolved;
                    m.resolved_at = Some(now);
                    m.freeze_notes();
                    log.changed(a);
                    changes.push(Transition {
                        kind: TransitionKind::Resolved,
                        alert: a.clone(),
                    });
                    true
                }
                AlertState::Resolved => true,
            });
        }
        self.rules.retain(|_, alerts| !alerts.is_empty());
        changes
    }

    /// Forgets resolved alerts older than [`RESOLVED_RETENTION`] (the change log records each
    /// for the store); returns how many.
    pub fn gc(&mut self, now: DateTime<Utc>) -> usize {
        let mut forgotten = 0;
        let log = &mut self.log;
        for alerts in self.rules.values_mut() {
            alerts.retain(|a| {
                let keep = a
                    .resolved_at
                    .is_none_or(|t| elapsed(t, now) < RESOLVED_RETENTION);
                if !keep {
                    forgotten += 1;
                    log.removed(a);
                }
                keep
            });
        }
        self.rules.retain(|_, alerts| !alerts.is_empty());
        forgotten
    }

    /// The alerts of one rule, in no set order.
    pub fn rule_alerts<'a>(&'a self, rule: &str) -> impl Iterator<Item = &'a Alert> + 'a {
        self.rules
            .get(rule)
            .into_iter()
            .flat_map(|alerts| alerts.values().map(|a| &**a))
    }

    /// Every alert after `(rule, key)` (all when `None`), in (rule, key) order.
    pub fn all_after(&self, after: Option<&(String, String)>) -> impl Iterator<Item = &Alert> {
        use std::ops::Bound;
        let (first, rest) = match after {
            Some((rule, key)) => (
                (self.rules.get(rule.as_str())).map(|alerts| alerts.after(Some(key))),
                self.rules
                    .range::<str, _>((Bound::Excluded(rule.as_str()), Bound::Unbounded)),
            ),
            None => (None, self.rules.range::<str, _>(..)),
        };
        first
            .into_iter()
            .flatten()
            .chain(rest.flat_map(|(_, alerts)| alerts.after(None)))
    }

    /// Every alert, by rule, in no set order within a rule (cheaper than [`AlertBook::all_after`]
    /// for whoever looks at each alert anyway: counts, groups, sets).
    pub fn all(&self) -> impl Iterator<Item = &Alert> {
        self.rules
            .values()
            .flat_map(|alerts| alerts.values().map(|a| &**a))
    }

    /// Per rule with alerts: how many are pending and how many firing.
    pub fn active_counts(&self) -> impl Iterator<Item = (&str, usize, usize)> {
        self.rules.iter().map(|(rule, alerts)| {
            let (mut pending, mut firing) = (0, 0);
            for a in alerts.values() {
                match a.state {
                    AlertState::Pending => pending += 1,
                    AlertState::Firing => firing += 1,
                    AlertState::Resolved => {}
                }
            }
            (&**rule, pending, firing)
        })
    }

    /// How many alerts.
    pub fn len(&self) -> usize {
        self.rules.values().map(RuleAlerts::len).sum()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Looks one alert up.
    pub fn get(&self, rule: &str, key: &str) -> Option<&Alert> {
        self.rules.get(rule)?.get(key).map(|a| &**a)
    }
}

/// What [`Pass::touch_if`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Marked seen: nothing else to do.
    Touched,
    /// Active, but its row says something else, or the pass saw it already: observe it.
    Differs,
    /// No active alert.
    Absent,
}

/// One evaluation of one rule applied to the book piece by piece: observations go in as they
/// are built, in chunks, so an evaluation of 100 000 orders never holds them all at once (nor
/// the book's lock while building them); [`Pass::finish`] then settles what was not seen.
///
/// An alert the pass has seen is one whose `last_seen` is the pass's `now`: no set of keys.
pub struct Pass {
    rule: Str,
    timing: RuleTiming,
    now: DateTime<Utc>,
    changes: Vec<Transition>,
    /// Active alerts observed in full (not just touched), each with the digest of its
    /// durable part before: whether it changed is settled once the pass has seen all its
    /// rows, so a key returned twice that ends as it was writes nothing.
    observed: Vec<(Str, u64)>,
    /// The position in the rule's alerts after the last one looked up: where the next row's
    /// alert is, when rows come in the order they came before.
    next: usize,
}

impl Pass {
    /// A pass of `rule` at `now`.
    pub fn new(rule: &str, timing: RuleTiming, now: DateTime<Utc>) -> Pass {
        Pass {
            rule: crate::labels::intern(rule),
            timing,
            now,
            changes: Vec::new(),
            observed: Vec::new(),
            next: 0,
        }
    }

    /// Logs the alerts observed in full whose durable part ends other than it began.
    fn log_observed(&mut self, book: &mut AlertBook) {
        let mut observed = std::mem::take(&mut self.observed);
        // The first digest of a key is the one from before the pass.
        observed.sort_by(|a, b| a.0.cmp(&b.0));
        observed.dedup_by(|later, first| later.0 == first.0);
        let Some(alerts) = book.rules.get_mut(&self.rule) else {
            return;
        };
        for (key, before) in observed {
            if let Some(a) = alerts.get_mut(&key)
                && a.durable_digest() != before
            {
                book.log.changed(a);
            }
        }
    }

    /// Marks the active alert of `key` seen, unchanged but for `notes` (its rule's renderer
    /// now), when `same` says its row says what it does and the pass has not seen it yet;
    /// otherwise says why not (the caller then observes the row in full, or not at all).
    pub fn touch_if(
        &mut self,
        book: &mut AlertBook,
        key: &str,
        notes: &Notes,
        same: impl FnOnce(&Alert) -> bool,
    ) -> Touch {
        let found = (book.rules.get_mut(&self.rule)).and_then(|m| m.find_from(self.next, key));
        let Some((at, a)) = found else {
            return Touch::Absent;
        };
        self.next = at + 1;
        if a.state == AlertState::Resolved {
            return Touch::Absent;
        }
        if a.last_seen == self.now || !same(a) {
            return Touch::Differs;
        }
        let m = Arc::make_mut(a);
        m.last_seen = self.now;
        let interval = self.timing.interval.as_secs();
        let moved = m.interval_secs != interval;
        m.interval_secs = interval;
        if !m.notes.same(notes) {
            m.notes = notes.clone();
        }
        if moved {
            book.log.changed(a);
        }
        self.settle(&mut book.log, a);
        Touch::Touched
    }

    /// Pending long enough: fires.
    fn settle(&mut self, log: &mut ChangeLog, a: &mut Arc<Alert>) {
        if a.state == AlertState::Pending && elapsed(a.active_at, self.now) >= self.timing.for_ {
            let m = Arc::make_mut(a);
            m.state = AlertState::Firing;
            m.fired_at = Some(self.now);
            log.changed(a);
            self.changes.push(Transition {
                kind: TransitionKind::Firing,
                alert: a.clone(),
            });
        }
    }

    /// Applies one observation.
    pub fn observe(&mut self, book: &mut AlertBook, o: Observation) {
        let (timing, now) = (self.timing, self.now);
        let alerts = book.rules.entry(self.rule.clone()).or_default();
        let log = &mut book.log;
        match alerts.get_mut(&o.key) {
            Some(a) if a.state != AlertState::Resolved => {
                self.observed.push((o.key.clone(), a.durable_digest()));
                let m = Arc::make_mut(a);
                // Always taken, even when equal: the observation's share the rule's list (a
                // restored alert's do not), so the next evaluation finds it unchanged.
                m.labels = o.labels;
                if !m.notes.same(&o.notes) {
                    m.notes = o.notes;
                }
                m.last_seen = now;
                m.entered_at = o.entered_at;
                m.interval_secs = timing.interval.as_secs();
                self.settle(log, a);
            }
            _ if !o.may_create => {}
            _ => {
                // New, or a recurrence of a resolved alert: a new episode.
                let firing = timing.for_.is_zero();
                let mut a = Arc::new(Alert {
                    rule: self.rule.clone(),
                    key: o.key.clone(),
                    labels: o.labels,
                    notes: o.notes,
                    state: if firing {
                        AlertState::Firing
                    } else {
                        AlertState::Pending
                    },
                    active_at: now,
                    starts_at: o.starts_at,
                    fired_at: firing.then_some(now),
                    last_seen: now,
                    resolved_at: None,
                    entered_at: o.entered_at,
                    interval_secs: timing.interval.as_secs(),
                    version: 0,
                });
                log.changed(&mut a);
                let kind = if firing {
                    TransitionKind::Firing
                } else {
                    TransitionKind::Pending
                };
                self.changes.push(Transition {
                    kind,
                    alert: a.clone(),
                });
                alerts.insert(a);
            }
        }
    }

    /// Ends the pass without settling anything (its evaluation failed part-way): returns the
    /// state changes so far.
    pub fn abandon(mut self, book: &mut AlertBook) -> Vec<Transition> {
        self.log_observed(book);
        self.changes
    }

    /// Settles the alerts of the rule the pass did not see (by `coverage`) and returns every
    /// state change of the pass.
    pub fn finish(mut self, book: &mut AlertBook, coverage: Coverage) -> Vec<Transition> {
        self.log_observed(book);
        let (timing, now) = (self.timing, self.now);
        let log = &mut book.log;
        if let Some(alerts) = book.rules.get_mut(&self.rule) {
            alerts.retain(|a| {
                if a.last_seen == now || a.state == AlertState::Resolved {
                    return true;
                }
                let gone = match coverage {
                    Coverage::All => true,
                    Coverage::EnteredBefore(edge) => a.entered_at.is_some_and(|t| t < edge),
                    Coverage::Seen => false,
                };
                if !gone {
                    return true;
                }
                match a.state {
                    AlertState::Pending => {
                        log.removed(a);
                        false
                    }
                    AlertState::Firing if elapsed(a.last_seen, now) >= timing.keep_firing_for => {
                        let m = Arc::make_mut(a);
                        m.state = AlertState::Resolved;
                        m.resolved_at = Some(now);
                        m.freeze_notes();
                        log.changed(a);
                        self.changes.push(Transition {
                            kind: TransitionKind::Resolved,
                            alert: a.clone(),
                        });
                        true
                    }
                    _ => true,
                }
            });
            if alerts.is_empty() {
                book.rules.remove(&self.rule);
            }
        }
        self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }
    fn timing(for_: u64, keep: u64) -> RuleTiming {
        RuleTiming {
            for_: Duration::from_secs(for_),
            keep_firing_for: Duration::from_secs(keep),
            interval: Duration::from_secs(30),
        }
    }
    fn obs(key: &str, entered: i64) -> Observation {
        Observation {
            key: key.into(),
            labels: Labels::default(),
            notes: Notes::None,
            starts_at: t(entered + 3600),
            entered_at: Some(t(entered)),
            may_create: true,
        }
    }
    fn kinds(ts: &[Transition]) -> Vec<(TransitionKind, String)> {
        ts.iter()
            .map(|t| (t.kind, t.alert.key.to_string()))
            .collect()
    }

    /// The store gets each change once, as the alert is then: listed by key, or past the
    /// list's limit found by version; a failed write comes back with what changed since.
    #[test]
    fn the_store_gets_each_change_once_listed_or_found_by_version() {
        let keys = |u: &Unsaved| {
            let mut k: Vec<String> = u.upserts.iter().map(|a| a.key.to_string()).collect();
            k.sort();
            k
        };
        let mut b = AlertBook::default();
        let all: Vec<Observation> = (0..LOG_LIMIT + 10)
            .map(|i| obs(&format!("K{i:05}"), -7200))
            .collect();
        b.apply("r", timing(0, 0), t(0), all.clone(), Coverage::All);
        let u = b.take_unsaved();
        assert_eq!(u.upserts.len(), LOG_LIMIT + 10, "found by version");
        assert!(u.deletes.is_empty());
        b.apply("r", timing(0, 0), t(30), all.clone(), Coverage::All);
        assert!(b.take_unsaved().is_empty(), "steady: nothing");
        // Two resolve; their write fails; one more is made: the three come back.
        b.apply("r", timing(0, 0), t(60), all[2..].to_vec(), Coverage::All);
        let u = b.take_unsaved();
        assert_eq!(keys(&u), ["K00000", "K00001"]);
        b.requeue(u);
        let mut more = all[2..].to_vec();
        more.push(obs("N", -7200));
        b.apply("r", timing(0, 0), t(90), more, Coverage::All);
        let u = b.take_unsaved();
        assert_eq!(keys(&u), ["K00000", "K00001", "N"]);
        assert_eq!(u.upserts[0].state, AlertState::Resolved);
        assert!(b.take_unsaved().is_empty());
        // Forgotten: deleted.
        b.gc(t(60 + 15 * 60));
        let u = b.take_unsaved();
        assert!(u.upserts.is_empty());
        assert_eq!(
            u.deletes,
            [("r".into(), "K00000".into()), ("r".into(), "K00001".into())]
        );
    }

    #[test]
    fn zero_for_fires_at_once_and_resolves_when_gone() {
        let mut b = AlertBook::default();
        let c = b.apply(
            "r",
            timing(0, 0),
            t(0),
            vec![obs("A", -7200)],
            Coverage::All,
        );
        assert_eq!(kinds(&c), vec![(TransitionKind::Firing, "A".into())]);
        assert_eq!(b.get("r", "A").unwrap().starts_at, t(-3600));
        // Still there: nothing new to say.
        assert!(
            b.apply(
                "r",
                timing(0, 0),
                t(30),
                vec![obs("A", -7200)],
                Coverage::All
            )
            .is_empty()
        );
        let c = b.apply("r", timing(0, 0), t(60), vec![], Coverage::All);
        assert_eq!(kinds(&c), vec![(TransitionKind::Resolved, "A".into())]);
        assert_eq!(b.get("r", "A").unwrap().resolved_at, Some(t(60)));
        // Kept for re-sending, then forgotten.
        assert_eq!(b.gc(t(60 + 14 * 60)), 0);
        assert_eq!(b.gc(t(60 + 15 * 60)), 1);
        assert!(b.get("r", "A").is_none());
    }

    #[test]
    fn for_keeps_alert_pending_and_pending_vanishes_silently() {
        let mut b = AlertBook::default();
        let c = b.apply(
            "r",
            timing(120, 0),
            t(0),
            vec![obs("A", -7200), obs("B", -7000)],
            Coverage::All,
        );
        assert_eq!(
            c.iter()
                .filter(|t| t.kind == TransitionKind::Pending)
                .count(),
            2
        );
        assert!(
            b.apply(
                "r",
                timing(120, 0),
                t(60),
                vec![obs("A", -7200), obs("B", -7000)],
                Coverage::All
            )
            .is_empty()
        );
        // B leaves while pending: no notification at all.
        let c = b.apply(
            "r",
            timing(120, 0),
            t(120),
            vec![obs("A", -7200)],
            Coverage::All,
        );
        assert_eq!(kinds(&c), vec![(TransitionKind::Firing, "A".into())]);
        assert!(b.get("r", "B").is_none());
    }

    #[test]
    fn keep_firing_for_delays_resolution() {
        let mut b = AlertBook::default();
        b.apply(
            "r",
            timing(0, 90),
            t(0),
            vec![obs("A", -7200)],
            Coverage::All,
        );
        assert!(
            b.apply("r", timing(0, 90), t(30), vec![], Coverage::All)
                .is_empty()
        );
        assert!(
            b.apply("r", timing(0, 90), t(60), vec![], Coverage::All)
                .is_empty()
        );
        assert_eq!(b.get("r", "A").unwrap().state, AlertState::Firing);
        // Back before keep_firing_for ran out: still the same episode.
        assert!(
            b.apply(
                "r",
                timing(0, 90),
                t(90),
                vec![obs("A", -7200)],
                Coverage::All
            )
            .is_empty()
        );
        assert!(
            b.apply("r", timing(0, 90), t(150), vec![], Coverage::All)
                .is_empty()
        );
        let c = b.apply("r", timing(0, 90), t(180), vec![], Coverage::All);
        assert_eq!(kinds(&c), vec![(TransitionKind::Resolved, "A".into())]);
    }

    #[test]
    fn capped_rows_only_resolve_what_was_covered() {
        let mut b = AlertBook::default();
        b.apply(
            "r",
            timing(0, 0),
            t(0),
            vec![obs("old", -9000), obs("young", -5000)],
            Coverage::All,
        );
        // Rows capped at entered_at -6000: "young" was not fetched, "old" was and is absent.
        let c = b.apply(
            "r",
            timing(0, 0),
            t(30),
            vec![obs("x", -8000)],
            Coverage::EnteredBefore(t(-6000)),
        );
        assert_eq!(
            kinds(&c),
            vec![
                (TransitionKind::Firing, "x".into()),
                (TransitionKind::Resolved, "old".into())
            ]
        );
        assert_eq!(b.get("r", "young").unwrap().state, AlertState::Firing);
    }

    #[test]
    fn over_the_cap_keeps_but_does_not_create() {
        let mut b = AlertBook::default();
        let mut o = obs("A", -7200);
        o.may_create = false;
        assert!(
            b.apply("r", timing(0, 0), t(0), vec![o.clone()], Coverage::All)
                .is_empty()
        );
        assert!(b.get("r", "A").is_none());
        b.apply(
            "r",
            timing(0, 0),
            t(30),
            vec![obs("A", -7200)],
            Coverage::All,
        );
        assert!(
            b.apply("r", timing(0, 0), t(60), vec![o], Coverage::All)
                .is_empty()
        );
        assert_eq!(b.get("r", "A").unwrap().state, AlertState::Firing);
    }

    #[test]
    fn recurrence_after_resolution_is_a_new_episode() {
        let mut b = AlertBook::default();
        b.apply(
            "r",
            timing(0, 0),
            t(0),
            vec![obs("A", -7200)],
            Coverage::All,
        );
        b.apply("r", timing(0, 0), t(30), vec![], Coverage::All);
        let c = b.apply(
            "r",
            timing(0, 0),
            t(60),
            vec![obs("A", -100)],
            Coverage::All,
        );
        assert_eq!(kinds(&c), vec![(TransitionKind::Firing, "A".into())]);
        assert_eq!(b.get("r", "A").unwrap().active_at, t(60));
    }

    #[test]
    fn rules_are_independent_and_removed_rules_resolve() {
        let mut b = AlertBook::default();
        b.apply(
            "a",
            timing(0, 0),
            t(0),
            vec![obs("1", -7200)],
            Coverage::All,
        );
        b.apply(
            "b",
            timing(0, 0),
            t(0),
            vec![obs("1", -7200)],
            Coverage::All,
        );
        b.apply("a", timing(0, 0), t(30), vec![], Coverage::All);
        assert_eq!(b.get("b", "1").unwrap().state, AlertState::Firing);
        let keep: HashSet<String> = ["a".to_string()].into();
        let c = b.resolve_rules_not_in(&keep, t(60));
        assert_eq!(kinds(&c), vec![(TransitionKind::Resolved, "1".into())]);
        assert_eq!(&*c[0].alert.rule, "b");
    }
}
