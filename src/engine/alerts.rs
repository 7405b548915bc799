//! The alert state machine, per (rule, key) where the key is an order id (or `_overflow`, or a
//! source name for `SourceDown`): pending → firing → resolved, with `for` and
//! `keep_firing_for` as in Prometheus. Pure logic: time is passed in, so tests need no clock.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long a resolved alert is kept and re-sent to Alertmanager (Prometheus: 15 minutes).
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Found, waiting for `for` to pass.
    Pending,
    /// Announced.
    Firing,
    /// Announced, then recovered.
    Resolved,
}

impl Alert {
    /// A digest of what a restart must restore exactly: the state and its times, the labels,
    /// the interval. `last_seen` and the annotations (the current age, counts) are left out:
    /// they change every evaluation and the first evaluation after a restart renews them.
    pub fn durable_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &self.state,
            &self.active_at,
            &self.starts_at,
            &self.fired_at,
            &self.resolved_at,
            &self.entered_at,
            &self.labels,
            self.interval_secs,
        )
            .hash(&mut h);
        h.finish()
    }
}

impl AlertState {
    /// The label/JSON value.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule.
    pub rule: String,
    /// Order id, `_overflow`, or the source name for `SourceDown`.
    pub key: String,
    /// Labels as sent to Alertmanager.
    pub labels: BTreeMap<String, String>,
    /// Annotations as sent to Alertmanager.
    pub annotations: BTreeMap<String, String>,
    /// Current state.
    pub state: AlertState,
    /// When we first saw it (start of the `for` wait).
    pub active_at: DateTime<Utc>,
    /// Alertmanager's `startsAt`: when the order crossed its threshold.
    pub starts_at: DateTime<Utc>,
    /// When it started firing.
    pub fired_at: Option<DateTime<Utc>>,
    /// The last evaluation that found it.
    pub last_seen: DateTime<Utc>,
    /// When it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When the order entered its status, if the alert is about an order.
    pub entered_at: Option<DateTime<Utc>>,
    /// The rule's evaluation interval, seconds (for `endsAt`).
    pub interval_secs: u64,
}

/// What an evaluation saw for one key.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The key (order id, …).
    pub key: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// When the threshold was crossed.
    pub starts_at: DateTime<Utc>,
    /// When the order entered its status.
    pub entered_at: Option<DateTime<Utc>>,
    /// False for orders beyond the rule's alert cap: they keep an existing alert alive but do
    /// not create one (the overflow alert counts them).
    pub may_create: bool,
}

/// Which absent keys an evaluation vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Every matching key was observed: anything absent is gone.
    All,
    /// Rows were capped (oldest first) at this `entered_at`: an absent alert entered before
    /// it is gone; a younger one may simply not have been fetched, so it is left alone.
    EnteredBefore(DateTime<Utc>),
    /// Only what was observed is vouched for: nothing absent is gone (a slow-query rule's
    /// first pg_stat_statements sample after a start or reload, a baseline).
    Seen,
}

/// The kind of a state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// New, waiting for `for`.
    Pending,
    /// Started firing: announce.
    Firing,
    /// Recovered: announce the resolution.
    Resolved,
}

/// A state change, for notifiers.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// What happened.
    pub kind: TransitionKind,
    /// The alert after the change.
    pub alert: Alert,
}

/// Timing of one rule.
#[derive(Debug, Clone, Copy)]
pub struct RuleTiming {
    /// `for`.
    pub for_: Duration,
    /// `keep_firing_for`.
    pub keep_firing_for: Duration,
    /// Evaluation interval.
    pub interval: Duration,
}

/// All alerts, keyed by (rule, key).
#[derive(Debug, Default, Clone)]
pub struct AlertBook {
    alerts: BTreeMap<(String, String), Alert>,
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or(Duration::ZERO)
}

impl AlertBook {
    /// A book holding `alerts` (restored from the store).
    pub fn from_alerts(alerts: impl IntoIterator<Item = Alert>) -> Self {
        AlertBook {
            alerts: alerts
                .into_iter()
                .map(|a| ((a.rule.clone(), a.key.clone()), a))
                .collect(),
        }
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

    /// Resolves every active alert of rules not in `keep` (a rule removed from the config).
    pub fn resolve_rules_not_in(
        &mut self,
        keep: &HashSet<String>,
        now: DateTime<Utc>,
    ) -> Vec<Transition> {
        let mut changes = Vec::new();
        self.alerts.retain(|(rule, _), a| {
            if keep.contains(rule) {
                return true;
            }
            match a.state {
                AlertState::Pending => false,
                AlertState::Firing => {
                    a.state = AlertState::Resolved;
                    a.resolved_at = Some(now);
                    changes.push(Transition {
                        kind: TransitionKind::Resolved,
                        alert: a.clone(),
                    });
                    true
                }
                AlertState::Resolved => true,
            }
        });
        changes
    }

    /// Forgets resolved alerts older than [`RESOLVED_RETENTION`]; returns the rules touched.
    pub fn gc(&mut self, now: DateTime<Utc>) -> HashSet<String> {
        let mut touched = HashSet::new();
        self.alerts.retain(|(rule, _), a| {
            let keep = a
                .resolved_at
                .is_none_or(|t| elapsed(t, now) < RESOLVED_RETENTION);
            if !keep {
                touched.insert(rule.clone());
            }
            keep
        });
        touched
    }

    /// The alerts of one rule.
    pub fn rule_alerts<'a>(&'a self, rule: &'a str) -> impl Iterator<Item = &'a Alert> + 'a {
        self.alerts
            .range((rule.to_string(), String::new())..)
            .take_while(move |(id, _)| id.0 == rule)
            .map(|(_, a)| a)
    }

    /// Every alert after `(rule, key)` (all when `None`), in (rule, key) order.
    pub fn all_after(&self, after: Option<&(String, String)>) -> impl Iterator<Item = &Alert> {
        use std::ops::Bound;
        let from = match after {
            Some(id) => Bound::Excluded(id.clone()),
            None => Bound::Unbounded,
        };
        self.alerts.range((from, Bound::Unbounded)).map(|(_, a)| a)
    }

    /// Every alert.
    pub fn all(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// Looks one alert up.
    pub fn get(&self, rule: &str, key: &str) -> Option<&Alert> {
        self.alerts.get(&(rule.to_string(), key.to_string()))
    }
}

/// One evaluation of one rule applied to the book piece by piece: observations go in as they
/// are built, in chunks, so an evaluation of 100 000 orders never holds them all at once (nor
/// the book's lock while building them); [`Pass::finish`] then settles what was not seen.
pub struct Pass {
    rule: String,
    timing: RuleTiming,
    now: DateTime<Utc>,
    seen: HashSet<String>,
    changes: Vec<Transition>,
}

impl Pass {
    /// A pass of `rule` at `now`.
    pub fn new(rule: &str, timing: RuleTiming, now: DateTime<Utc>) -> Pass {
        Pass {
            rule: rule.to_string(),
            timing,
            now,
            seen: HashSet::new(),
            changes: Vec::new(),
        }
    }

    /// Whether this pass has observed `key`.
    pub fn has_seen(&self, key: &str) -> bool {
        self.seen.contains(key)
    }

    /// Applies one observation.
    pub fn observe(&mut self, book: &mut AlertBook, o: Observation) {
        let (rule, timing, now) = (&self.rule, self.timing, self.now);
        let changes = &mut self.changes;
        let id = (rule.clone(), o.key.clone());
        self.seen.insert(o.key.clone());
        match book.alerts.get_mut(&id) {
            Some(a) if a.state != AlertState::Resolved => {
                a.labels = o.labels;
                a.annotations = o.annotations;
                a.last_seen = now;
                a.entered_at = o.entered_at;
                a.interval_secs = timing.interval.as_secs();
                if a.state == AlertState::Pending && elapsed(a.active_at, now) >= timing.for_ {
                    a.state = AlertState::Firing;
                    a.fired_at = Some(now);
                    changes.push(Transition {
                        kind: TransitionKind::Firing,
                        alert: a.clone(),
                    });
                }
            }
            _ if !o.may_create => {}
            _ => {
                // New, or a recurrence of a resolved alert: a new episode.
                let firing = timing.for_.is_zero();
                let a = Alert {
                    rule: rule.clone(),
                    key: o.key,
                    labels: o.labels,
                    annotations: o.annotations,
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
                };
                let kind = if firing {
                    TransitionKind::Firing
                } else {
                    TransitionKind::Pending
                };
                changes.push(Transition {
                    kind,
                    alert: a.clone(),
                });
                book.alerts.insert(id, a);
            }
        }
    }

    /// Settles the alerts of the rule the pass did not see (by `coverage`) and returns every
    /// state change of the pass.
    pub fn finish(mut self, book: &mut AlertBook, coverage: Coverage) -> Vec<Transition> {
        let (rule, timing, now) = (&self.rule, self.timing, self.now);
        let mut drop = Vec::new();
        for (id, a) in book.alerts.range_mut((rule.clone(), String::new())..) {
            if &id.0 != rule {
                break;
            }
            if self.seen.contains(&id.1) || a.state == AlertState::Resolved {
                continue;
            }
            let gone = match coverage {
                Coverage::All => true,
                Coverage::EnteredBefore(edge) => a.entered_at.is_some_and(|t| t < edge),
                Coverage::Seen => false,
            };
            if !gone {
                continue;
            }
            match a.state {
                AlertState::Pending => drop.push(id.clone()),
                AlertState::Firing if elapsed(a.last_seen, now) >= timing.keep_firing_for => {
                    a.state = AlertState::Resolved;
                    a.resolved_at = Some(now);
                    self.changes.push(Transition {
                        kind: TransitionKind::Resolved,
                        alert: a.clone(),
                    });
                }
                _ => {}
            }
        }
        for id in drop {
            book.alerts.remove(&id);
        }
        self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_at: t(entered + 3600),
            entered_at: Some(t(entered)),
            may_create: true,
        }
    }
    fn kinds(ts: &[Transition]) -> Vec<(TransitionKind, String)> {
        ts.iter().map(|t| (t.kind, t.alert.key.clone())).collect()
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
        assert!(b.gc(t(60 + 14 * 60)).is_empty());
        assert_eq!(b.gc(t(60 + 15 * 60)).len(), 1);
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
        assert_eq!(c[0].alert.rule, "b");
    }
}
