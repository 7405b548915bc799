//! An alert and its life: states, what an evaluation observed, the changes notifiers hear of.
//! Plain data; the book ([`super::AlertBook`]) moves alerts between states.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::labels::{Labels, Str};

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

/// Renders the annotations of alerts whose annotations are made from their data (an order's
/// summary, age, links): one per rule, shared by its alerts.
pub trait Annotate: Send + Sync {
    /// The annotations of `alert` as of `now`.
    fn annotations(&self, alert: &Alert, now: DateTime<Utc>) -> BTreeMap<String, String>;
}

/// Where an alert's annotations come from.
#[derive(Clone, Default)]
pub enum Notes {
    /// Rendered from the alert's data when asked (orders).
    Rendered(Arc<Box<dyn Annotate>>),
    /// Kept as they were made (slow queries, 5xx, custom SQL rows, the overflow alert, a
    /// source down): few alerts, with data that is not kept otherwise.
    Fixed(Arc<BTreeMap<String, String>>),
    /// None known: an order's alert restored from the store whose rule is gone.
    #[default]
    None,
}

impl Notes {
    /// Annotations rendered by `r` (one per rule, shared by its alerts; a thin pointer, so an
    /// alert's `Notes` is 16 bytes).
    pub fn rendered(r: impl Annotate + 'static) -> Notes {
        Notes::Rendered(Arc::new(Box::new(r)))
    }

    /// Kept annotations.
    pub fn fixed(map: BTreeMap<String, String>) -> Notes {
        Notes::Fixed(Arc::new(map))
    }

    /// The same source (no need to replace one with the other).
    pub(super) fn same(&self, other: &Notes) -> bool {
        match (self, other) {
            (Notes::Rendered(a), Notes::Rendered(b)) => Arc::ptr_eq(a, b),
            (Notes::Fixed(a), Notes::Fixed(b)) => Arc::ptr_eq(a, b) || a == b,
            (Notes::None, Notes::None) => true,
            _ => false,
        }
    }
}

impl std::fmt::Debug for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notes::Rendered(_) => f.write_str("Rendered"),
            Notes::Fixed(m) => f.debug_tuple("Fixed").field(m).finish(),
            Notes::None => f.write_str("None"),
        }
    }
}

/// One alert.
#[derive(Debug, Clone)]
pub struct Alert {
    /// The rule.
    pub rule: Str,
    /// Order id, `_overflow`, or the source name for `SourceDown`.
    pub key: Str,
    /// Labels as sent to Alertmanager.
    pub labels: Labels,
    /// Where the annotations come from ([`Alert::annotations`]).
    pub notes: Notes,
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
    /// The book's version when this alert was made or its durable part last changed
    /// ([`AlertBook::version`]; 0 when restored): a notifier re-sends what changed since it
    /// last delivered by comparing versions, without a record per alert. Not stored.
    pub version: u64,
}

impl PartialEq for Alert {
    fn eq(&self, o: &Alert) -> bool {
        self.rule == o.rule
            && self.key == o.key
            && self.labels == o.labels
            && self.state == o.state
            && self.active_at == o.active_at
            && self.starts_at == o.starts_at
            && self.fired_at == o.fired_at
            && self.last_seen == o.last_seen
            && self.resolved_at == o.resolved_at
            && self.entered_at == o.entered_at
            && self.interval_secs == o.interval_secs
            && match (&self.notes, &o.notes) {
                (Notes::Fixed(a), Notes::Fixed(b)) => a == b,
                (Notes::Fixed(_), _) | (_, Notes::Fixed(_)) => false,
                // Rendered from the data compared above.
                _ => true,
            }
    }
}

impl Alert {
    /// Annotations as sent to Alertmanager, as of now.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.annotations_at(Utc::now())
    }

    /// Annotations as of `now` (an order's age is counted to it).
    pub fn annotations_at(&self, now: DateTime<Utc>) -> BTreeMap<String, String> {
        match &self.notes {
            Notes::Rendered(r) => r.annotations(self, now),
            Notes::Fixed(m) => (**m).clone(),
            Notes::None => BTreeMap::new(),
        }
    }

    /// Sets one annotation: the annotations are kept from then on (made now if rendered).
    pub fn set_annotation(&mut self, name: &str, value: &str) {
        let mut map = match std::mem::take(&mut self.notes) {
            Notes::Fixed(m) => Arc::unwrap_or_clone(m),
            other => {
                self.notes = other;
                self.annotations()
            }
        };
        map.insert(name.to_string(), value.to_string());
        self.notes = Notes::fixed(map);
    }

    /// Resolved: its annotations stop moving (an order's age is the age it was last seen at),
    /// and are kept from then on, so the resolution says what the alert said, restarts
    /// included. An alert restored without any (its rule gone) gets a line that says so.
    pub(super) fn freeze_notes(&mut self) {
        self.notes = match &self.notes {
            Notes::Rendered(_) => Notes::fixed(self.annotations_at(self.last_seen)),
            Notes::None => Notes::fixed(BTreeMap::from([(
                "summary".to_string(),
                format!("{}: rule {} is no longer configured", self.key, self.rule),
            )])),
            Notes::Fixed(m) => Notes::Fixed(m.clone()),
        };
    }

    /// One annotation, as of now.
    pub fn annotation(&self, name: &str) -> Option<String> {
        match &self.notes {
            Notes::Fixed(m) => m.get(name).cloned(),
            _ => self.annotations().remove(name),
        }
    }

    /// A digest of what a restart must restore exactly: the state and its times, the labels,
    /// the interval, and whether the annotations are kept or rendered. `last_seen` and the
    /// annotations themselves (the current age, a query's running time) are left out: they
    /// change every evaluation and the first evaluation after a restart renews them.
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
        matches!(self.notes, Notes::Fixed(_)).hash(&mut h);
        h.finish()
    }

    /// Bytes this alert holds beyond what it shares with its rule's other alerts (the figure
    /// in ARCHITECTURE.md).
    pub fn own_bytes(&self) -> usize {
        std::mem::size_of::<Alert>()
            + self.labels.own_bytes()
            + self.key.len()
            + 16
            + match &self.notes {
                Notes::Fixed(m) => m.iter().map(|(k, v)| k.len() + v.len() + 64).sum(),
                _ => 0,
            }
    }
}

/// What an evaluation saw for one key.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The key (order id, …).
    pub key: Str,
    /// Labels.
    pub labels: Labels,
    /// Where its annotations come from.
    pub notes: Notes,
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
#[derive(Debug, Clone)]
pub struct Transition {
    /// What happened.
    pub kind: TransitionKind,
    /// The alert after the change (shared with the book until either changes).
    pub alert: Arc<Alert>,
}

impl Transition {
    /// Whether this starts a new episode of its alert (created, or back after it resolved),
    /// not a pending alert going on to fire.
    pub fn starts_episode(&self) -> bool {
        match self.kind {
            TransitionKind::Pending => true,
            TransitionKind::Firing => self.alert.fired_at == Some(self.alert.active_at),
            TransitionKind::Resolved => false,
        }
    }
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
