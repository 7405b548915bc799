//! What the engine's tasks and the HTTP server share: the running configuration's sources
//! and rules, the alert book, per-rule and per-source status; how start-up fails; building
//! sources and rules from a loaded config.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::alert::{AlertBook, Store, StoreError};
use crate::config::{Loaded, RuleKind};
use crate::human::human_duration;
use crate::metrics::Metrics;
use crate::notify::Hub;
use crate::rule::Rule;
use crate::rule::observe::RuleParts;
use crate::source::{Source, SourceError};

/// The pseudo-rule under which `SourceDown` alerts live (in the rule-name format, and
/// reserved: no user rule may take it).
pub const SOURCE_DOWN_RULE: &str = crate::config::RESERVED_RULE_NAMES[0];
/// The pseudo-rule under which `SourceStale` alerts live.
pub const SOURCE_STALE_RULE: &str = crate::config::RESERVED_RULE_NAMES[1];
/// The pseudo-rule under which `RuleFailing` alerts live (one per failing rule, keyed by its
/// name).
pub const RULE_FAILING_RULE: &str = crate::config::RESERVED_RULE_NAMES[2];
/// The alerts orderwatch raises about itself, each under its pseudo-rule.
pub const OWN_RULES: [&str; 3] = [SOURCE_DOWN_RULE, SOURCE_STALE_RULE, RULE_FAILING_RULE];
/// How often the engine checks source health.
pub(super) const SOURCE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Start-up failures: the only errors that end the process.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A source could not be built.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A rule could not be built.
    #[error("rule {rule}: {detail}")]
    Rule {
        /// The rule.
        rule: String,
        /// What went wrong.
        detail: String,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A notifier could not be built.
    #[error("notifier {name}: {detail}")]
    Notifier {
        /// The notifier.
        name: String,
        /// What went wrong.
        detail: String,
    },
}

/// What `/api/v1/rules` shows for one rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    /// Rule name.
    pub name: String,
    /// Kind.
    pub kind: RuleKind,
    /// Source.
    pub source: String,
    /// `ok`, `err`, or `unknown` before the first evaluation.
    pub health: &'static str,
    /// When the last evaluation started.
    pub last_evaluation: Option<DateTime<Utc>>,
    /// How long it took, seconds.
    pub evaluation_duration_seconds: Option<f64>,
    /// The last error, if the last evaluation failed.
    pub error: Option<String>,
    /// Since when its evaluations fail (the first failure after a success).
    pub failing_since: Option<DateTime<Utc>>,
    /// Exact number of matching orders at the last successful evaluation.
    pub count: Option<u64>,
    /// Whether fetched rows were capped at the last successful evaluation.
    pub capped: bool,
}

/// What `/readyz` and the SourceDown logic know about a source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// host:port/db.
    pub target: String,
    /// Last query outcome; None before the first.
    pub up: Option<bool>,
    /// Whether any query ever succeeded.
    pub reached: bool,
    /// Since when queries fail.
    pub failing_since: Option<DateTime<Utc>>,
    /// The last error.
    pub last_error: Option<String>,
    /// A standby's replication lag, seconds (None on a primary or before the first probe).
    pub replication_lag_seconds: Option<f64>,
    /// A standby beyond `max_replication_lag`: its rules neither fire nor resolve.
    pub stale: bool,
    /// The last probe found the lag beyond `max_replication_lag`.
    #[serde(skip)]
    pub over_lag: bool,
}

impl SourceStatus {
    /// The replication lag in words ("3m 20s").
    pub(super) fn lag_text(&self) -> String {
        human_duration(Duration::from_secs_f64(
            self.replication_lag_seconds.unwrap_or(0.0).min(1e9),
        ))
    }
}

/// How far back the status page shows each rule's count.
pub const TREND_WINDOW: Duration = Duration::from_secs(6 * 3600);
/// One point of a rule's trend per this long (the latest count in it).
const TREND_STEP: Duration = Duration::from_secs(60);

/// How each rule's count (orders found) moved over the last [`TREND_WINDOW`], for the status
/// page: in memory only (a restart starts it afresh), at most one point a minute, so at most
/// 360 points of 16 bytes per rule.
#[derive(Default)]
pub struct Trends(std::sync::Mutex<BTreeMap<String, Points>>);

/// A rule's points: when, and the count then, oldest first.
type Points = std::collections::VecDeque<(DateTime<Utc>, u64)>;

impl Trends {
    /// Records `rule`'s count at `at`.
    pub fn record(&self, rule: &str, at: DateTime<Utc>, count: u64) {
        let mut all = self.0.lock().expect("trends lock");
        let points = all.entry(rule.to_string()).or_default();
        match points.back_mut() {
            Some(last) if (at - last.0).to_std().unwrap_or_default() < TREND_STEP => {
                last.1 = count;
            }
            _ => points.push_back((at, count)),
        }
        let oldest = at - chrono::Duration::from_std(TREND_WINDOW).expect("window fits");
        while points.front().is_some_and(|(t, _)| *t < oldest) {
            points.pop_front();
        }
    }

    /// Forgets the rules not in `names` (a reload removed or renamed them).
    pub fn retain(&self, names: &std::collections::HashSet<&str>) {
        self.0
            .lock()
            .expect("trends lock")
            .retain(|k, _| names.contains(k.as_str()));
    }

    /// Every rule's points, oldest first.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<(DateTime<Utc>, u64)>> {
        self.0
            .lock()
            .expect("trends lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().copied().collect()))
            .collect()
    }
}

/// At most this many order lookups at once; beyond, the API answers 429.
pub const MAX_LOOKUPS: usize = 4;

/// State shared by the engine's tasks and the HTTP server.
pub struct Shared {
    /// The loaded config.
    pub config: Loaded,
    /// Sources by name.
    pub sources: BTreeMap<String, Arc<Source>>,
    /// Rules in config order.
    pub rules: Vec<Arc<Rule>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Alert state.
    pub book: Arc<RwLock<AlertBook>>,
    /// Per-rule status.
    pub rule_status: RwLock<BTreeMap<String, RuleStatus>>,
    /// Per-source status.
    pub source_status: RwLock<BTreeMap<String, SourceStatus>>,
    /// Direct-channel messages waiting for delivery, and the silences.
    pub outbox: Arc<crate::notify::outbox::Outbox>,
    /// Silences, shared with the dispatcher, the log notifier and the API.
    pub silences: Arc<RwLock<Vec<crate::notify::mute::silence::Silence>>>,
    pub(super) store: Arc<Store>,
    pub(super) hub: Hub,
    /// When the engine last went round its source-health loop (for the systemd watchdog).
    pub(super) heartbeat: Arc<std::sync::Mutex<std::time::Instant>>,
    /// The URL alerts link back to, once the listening address is known.
    pub(super) base_url: std::sync::OnceLock<String>,
    /// The config's `inhibit_rules`, compiled once: the dispatcher and the status page use it.
    pub inhibitor: Arc<crate::notify::mute::inhibit::Inhibitor>,
    /// Order lookups running now (`/api/v1/orders/{id}`, the order page): at most
    /// [`MAX_LOOKUPS`], across reloads (every generation shares it).
    pub lookups: Arc<tokio::sync::Semaphore>,
    /// Each rule's count over the last hours (the status page), across reloads.
    pub trends: Arc<Trends>,
    /// What every order alert of a rule shares, by rule (see [`RuleParts`]).
    pub(super) parts: std::sync::Mutex<std::collections::HashMap<String, Arc<RuleParts>>>,
}

impl Shared {
    /// This daemon's runbooks page: `external_url`, else the address it listens on, +
    /// `/runbooks` (the same base as `generatorURL`).
    pub fn runbooks_url(&self) -> String {
        let base = self
            .base_url
            .get()
            .cloned()
            .unwrap_or_else(|| base_url(&self.config, self.config.config.listen));
        format!("{}/runbooks", base.trim_end_matches('/'))
    }

    /// Ready: config loaded, every source reached at least once and every status log's
    /// start-up read done.
    pub fn ready(&self) -> bool {
        self.source_status
            .read()
            .expect("status lock")
            .values()
            .all(|s| s.reached)
            && self.sources.values().all(|s| s.kept_ready())
    }
}

/// The daemon's shared state as the HTTP handlers see it: the generation running now.
#[derive(Clone)]
pub struct Current(pub(super) watch::Receiver<Arc<Shared>>);

impl Current {
    /// The state of the generation running now.
    pub fn get(&self) -> Arc<Shared> {
        self.0.borrow().clone()
    }

    /// A fixed state (tests, or a server without reload).
    pub fn fixed(shared: Arc<Shared>) -> Current {
        let (tx, rx) = watch::channel(shared);
        // The receiver keeps the last value after the sender is gone.
        drop(tx);
        Current(rx)
    }
}

/// Sources by name, and rules in config order.
pub type Parts = (BTreeMap<String, Arc<Source>>, Vec<Arc<Rule>>);

/// Builds sources and rules from a loaded config (the daemon, `once`, tests that evaluate a
/// rule more than once); `keep_state`: the daemon's sources keep a
/// status log's current state (see `Source::history`).
pub fn build_parts(loaded: &Loaded, keep_state: bool) -> Result<Parts, StartError> {
    build_parts_keeping(loaded, keep_state, None)
}

/// [`build_parts`], keeping each source of `prev` whose configuration is unchanged (its pool
/// and a status log's kept state: a reload does not read the log again).
pub(super) fn build_parts_keeping(
    loaded: &Loaded,
    keep_state: bool,
    prev: Option<&BTreeMap<String, Arc<Source>>>,
) -> Result<Parts, StartError> {
    let mut sources = BTreeMap::new();
    for (name, cfg) in &loaded.config.sources {
        let built = Arc::new(Source::build(name, &cfg.value, keep_state)?);
        let kept = prev
            .and_then(|p| p.get(name))
            .filter(|old| old.same_config(&built))
            .cloned();
        sources.insert(name.clone(), kept.unwrap_or(built));
    }
    let mut rules = Vec::new();
    for (_, rc) in &loaded.rules {
        let rule = Rule::build(rc, &sources).map_err(|detail| StartError::Rule {
            rule: rc.name.value.clone(),
            detail,
        })?;
        rules.push(Arc::new(rule));
    }
    Ok((sources, rules))
}

/// Status rows of freshly built rules and sources, carrying over what `prev` knew of those
/// that keep their name (and, for sources, their target): readiness survives a reload.
pub(super) fn status_maps(
    rules: &[Arc<Rule>],
    sources: &BTreeMap<String, Arc<Source>>,
    prev: Option<&Shared>,
) -> (BTreeMap<String, RuleStatus>, BTreeMap<String, SourceStatus>) {
    let prev_rules = prev.map(|p| p.rule_status.read().expect("status lock").clone());
    let prev_sources = prev.map(|p| p.source_status.read().expect("status lock").clone());
    let rule_status = rules
        .iter()
        .map(|r| {
            let kept = prev_rules
                .as_ref()
                .and_then(|m| m.get(&r.name))
                .filter(|s| s.kind == r.kind && s.source == r.source)
                .cloned();
            let status = kept.unwrap_or_else(|| RuleStatus {
                name: r.name.clone(),
                kind: r.kind,
                source: r.source.clone(),
                health: "unknown",
                last_evaluation: None,
                evaluation_duration_seconds: None,
                error: None,
                failing_since: None,
                count: None,
                capped: false,
            });
            (r.name.clone(), status)
        })
        .collect();
    let source_status = sources
        .iter()
        .map(|(n, s)| {
            let kept = prev_sources
                .as_ref()
                .and_then(|m| m.get(n))
                .filter(|st| st.target == s.target())
                .cloned();
            let status = kept.unwrap_or_else(|| SourceStatus {
                target: s.target().to_string(),
                up: None,
                reached: false,
                failing_since: None,
                last_error: None,
                replication_lag_seconds: None,
                stale: false,
                over_lag: false,
            });
            (n.clone(), status)
        })
        .collect();
    (rule_status, source_status)
}

/// The URL alerts link back to: `external_url`, else the listen address.
pub(super) fn base_url(loaded: &Loaded, local: std::net::SocketAddr) -> String {
    loaded
        .config
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"))
}
