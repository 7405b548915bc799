//! The daemon: builds sources and rules from the config, restores alert state, runs every rule
//! on its schedule, refreshes the per-status gauges, watches source health, and serves HTTP.
//! `run` returns when the shutdown future completes and every task has finished.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::alert::{
    AlertBook, AlertState, Coverage, Observation, RuleTiming, Store, StoreError, Transition,
};
use crate::config::{Loaded, RuleKind};
use crate::human::human_duration;
use crate::metrics::Metrics;
use crate::notify::{AlertmanagerNotifier, Hub, LogNotifier};
use crate::rule::observe::{Applier, RuleParts, fixed_observation};
use crate::rule::{Check, Finding, FindingSink, Outcome, Rule};
use crate::source::{ModelKind, Source, SourceError, Unjudgeable};

pub use crate::rule::observe::OVERFLOW_KEY;

/// The pseudo-rule under which `SourceDown` alerts live (in the rule-name format, and
/// reserved: no user rule may take it).
pub const SOURCE_DOWN_RULE: &str = crate::config::RESERVED_RULE_NAMES[0];
/// The pseudo-rule under which `SourceStale` alerts live.
pub const SOURCE_STALE_RULE: &str = crate::config::RESERVED_RULE_NAMES[1];
/// How often the engine checks source health.
const SOURCE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

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
    fn lag_text(&self) -> String {
        human_duration(Duration::from_secs_f64(
            self.replication_lag_seconds.unwrap_or(0.0).min(1e9),
        ))
    }
}

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
    pub silences: Arc<RwLock<Vec<crate::notify::silence::Silence>>>,
    store: Arc<Store>,
    hub: Hub,
    /// When the engine last went round its source-health loop (for the systemd watchdog).
    heartbeat: Arc<std::sync::Mutex<std::time::Instant>>,
    /// The URL alerts link back to, once the listening address is known.
    base_url: std::sync::OnceLock<String>,
    /// The config's `inhibit_rules`, compiled once: the dispatcher and the status page use it.
    pub inhibitor: Arc<crate::notify::inhibit::Inhibitor>,
    /// What every order alert of a rule shares, by rule (see [`RuleParts`]).
    parts: std::sync::Mutex<std::collections::HashMap<String, Arc<RuleParts>>>,
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

/// The daemon, built and ready to run.
pub struct Daemon {
    shared: Arc<Shared>,
    log_rx: Option<tokio::sync::mpsc::UnboundedReceiver<Arc<Vec<Transition>>>>,
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
fn build_parts_keeping(
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
fn status_maps(
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

impl Daemon {
    /// Builds everything and restores alert state; does not touch the network yet.
    pub fn build(loaded: Loaded) -> Result<Daemon, StartError> {
        let (sources, rules) = build_parts(&loaded, true)?;
        let (store, opened) = Store::open(&loaded.config.state_dir)?;
        let store = Arc::new(store);
        let mut book = AlertBook::from_alerts(store.load_alerts()?);
        let outbox = Arc::new(crate::notify::outbox::Outbox::open(store.clone())?);
        let silences = Arc::new(RwLock::new(outbox.silences()?));
        // Alerts of rules that no longer exist resolve (and are announced as resolved).
        let mut keep: HashSet<String> = rules.iter().map(|r| r.name.clone()).collect();
        keep.insert(SOURCE_DOWN_RULE.to_string());
        keep.insert(SOURCE_STALE_RULE.to_string());
        book.resolve_rules_not_in(&keep, Utc::now());
        let metrics = Arc::new(Metrics::new());
        if opened.moved_aside.is_some() {
            metrics.state_store_recoveries.inc();
        }
        let mut hub = Hub::default();
        let log_rx = loaded
            .config
            .notifiers
            .log
            .as_ref()
            .map(|_| hub.subscribe());
        let (rule_status, source_status) = status_maps(&rules, &sources, None);
        let inhibitor = Arc::new(crate::notify::inhibit::Inhibitor::new(
            &loaded.config.inhibit_rules,
        ));
        let shared = Arc::new(Shared {
            config: loaded,
            sources,
            rules,
            metrics,
            book: Arc::new(RwLock::new(book)),
            rule_status: RwLock::new(rule_status),
            source_status: RwLock::new(source_status),
            outbox,
            silences,
            store,
            hub,
            heartbeat: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
            base_url: std::sync::OnceLock::new(),
            inhibitor,
            parts: Default::default(),
        });
        shared.persist();
        shared.refresh_alert_gauges();
        Ok(Daemon { shared, log_rx })
    }

    /// The shared state (for the HTTP server and tests). A reload replaces it; the HTTP
    /// handlers read the current one through [`Current`].
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Binds `listen` from the config and runs until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        self.run_with_reload(shutdown, None).await
    }

    /// Like [`Daemon::run`], and re-reads the config file on every message from `reload`
    /// (SIGHUP in `orderwatch run`).
    pub async fn run_with_reload(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        reload: Option<mpsc::Receiver<()>>,
    ) -> Result<(), StartError> {
        let addr = self.shared.config.config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        self.serve_with_reload(listener, shutdown, reload).await
    }

    /// Runs on an already bound listener until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        self.serve_with_reload(listener, shutdown, None).await
    }

    /// Runs on an already bound listener until `shutdown` completes, reloading the config on
    /// every message from `reload`.
    ///
    /// A reload re-reads and validates the config and every rule file and builds sources,
    /// rules and notifiers before touching anything; on any error the running set is kept and
    /// `orderwatch_config_last_reload_successful` drops to 0. Otherwise the running generation
    /// stops (evaluations in flight finish), the new one starts over the same alert state,
    /// outbox, silences and metrics, and the HTTP handlers switch to it at once. Alerts of rules
    /// that keep their name survive; alerts of removed rules resolve.
    pub async fn serve_with_reload(
        mut self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        mut reload: Option<mpsc::Receiver<()>>,
    ) -> Result<(), StartError> {
        let shared = self.shared.clone();
        let local = listener.local_addr().map_err(|source| StartError::Listen {
            addr: "?".into(),
            source,
        })?;
        // The log notifier ends when the hub's senders drop, i.e. after everything else.
        let silences = shared.silences.clone();
        let log_task = self
            .log_rx
            .take()
            .map(|rx| tokio::spawn(LogNotifier::new(rx, silences).run()));
        let mut generation = Generation::start(shared.clone(), local)?;
        shared.metrics.config_loaded(true);

        let (current_tx, current_rx) = watch::channel(shared.clone());
        let http_state = crate::http::server::HttpState::new(
            crate::http::server::HttpState::prepare(&shared.config, local).map_err(|detail| {
                StartError::Notifier {
                    name: "http".into(),
                    detail,
                }
            })?,
        );
        if let Some(why) = http_state.access().write_refusal() {
            tracing::warn!(listen = %local, "{why}");
        }
        let app =
            crate::http::server::app(crate::http::router(Current(current_rx)), http_state.clone());
        let (http_stop_tx, http_stop) = watch::channel(false);
        let served = http_state.clone();
        let http = tokio::spawn(async move {
            if let Err(e) = crate::http::server::serve(listener, app, served, http_stop).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(listen = %local, rules = shared.rules.len(), sources = shared.sources.len(), "orderwatch running");
        crate::systemd::notify("READY=1");
        // The watchdog is fed while the engine goes round its loops: a deadlocked or stalled
        // engine stops the pings and systemd restarts the service.
        let heartbeat = shared.heartbeat.clone();
        let watchdog = crate::systemd::watchdog_interval().map(|every| {
            tracing::debug!(every = ?every, "pinging the systemd watchdog");
            let stale_after = every.max(SOURCE_CHECK_INTERVAL * 3);
            tokio::spawn(async move {
                let mut warned = false;
                loop {
                    let age = heartbeat.lock().expect("heartbeat").elapsed();
                    if age <= stale_after {
                        crate::systemd::notify("WATCHDOG=1");
                        warned = false;
                    } else if !warned {
                        tracing::error!(stalled_for = ?age, "the engine has stalled; not feeding the systemd watchdog");
                        warned = true;
                    }
                    tokio::time::sleep(every).await;
                }
            })
        });
        drop(shared);

        let shutdown = std::pin::pin!(shutdown);
        let mut shutdown = shutdown;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = next_reload(&mut reload) => {
                    crate::systemd::notify("RELOADING=1");
                    let current = current_tx.borrow().clone();
                    let ok = match reload_config(&current, &mut generation, local, &http_state).await {
                        Ok(next) => {
                            tracing::info!(path = %next.config.path.display(), rules = next.rules.len(),
                                sources = next.sources.len(), "configuration reloaded");
                            let _ = current_tx.send(next);
                            true
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "reload failed; still running the previous configuration");
                            false
                        }
                    };
                    current.metrics.config_loaded(ok);
                    crate::systemd::notify("READY=1");
                }
            }
        }
        crate::systemd::notify("STOPPING=1");
        tracing::info!("shutting down: finishing evaluations in flight, flushing notifications");
        generation.stop().await;
        let _ = http_stop_tx.send(true);
        let _ = http.await;
        if let Some(w) = watchdog {
            w.abort();
        }
        drop(current_tx);
        drop(self);
        if let Some(t) = log_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The daemon's shared state as the HTTP handlers see it: the generation running now.
#[derive(Clone)]
pub struct Current(watch::Receiver<Arc<Shared>>);

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

/// The next reload request; never completes without a reload channel.
async fn next_reload(reload: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match reload {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The tasks of one configuration: rule loops, gauges, source health and the notifiers.
struct Generation {
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Generation {
    /// Builds the notifiers of `shared`'s config and spawns every task.
    fn start(shared: Arc<Shared>, local: std::net::SocketAddr) -> Result<Generation, StartError> {
        let base_url = base_url(&shared.config, local);
        let _ = shared.base_url.set(base_url.clone());
        crate::blocking::off_worker(|| shared.attach_notes());
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(am) = &shared.config.config.notifiers.alertmanager {
            let n = AlertmanagerNotifier::new(
                am,
                shared.book.clone(),
                shared.metrics.clone(),
                base_url.clone(),
            )
            .map_err(|e| StartError::Notifier {
                name: "alertmanager".into(),
                detail: e.to_string(),
            })?;
            tasks.spawn(n.run(shared.hub.wake_receiver(), stop_rx.clone()));
            shared
                .metrics
                .init_notifier("alertmanager", crate::metrics::ALERTMANAGER_OUTCOMES);
        }
        for name in shared.config.config.receivers.keys() {
            shared
                .metrics
                .init_notifier(name, crate::metrics::RECEIVER_OUTCOMES);
            shared
                .metrics
                .notification_latency
                .with_label_values(&[name.as_str()]);
        }
        if let Some(direct) =
            crate::notify::direct::Direct::build(&shared.config.config, &shared.outbox, &base_url)
                .map_err(|detail| StartError::Notifier {
                name: "receivers".into(),
                detail,
            })?
        {
            let shared_d = crate::notify::direct::DispatchShared {
                book: shared.book.clone(),
                silences: shared.silences.clone(),
                inhibitor: shared.inhibitor.clone(),
                outbox: shared.outbox.clone(),
                metrics: shared.metrics.clone(),
                wake: shared.hub.wake_receiver(),
                clock: Arc::new(crate::notify::clock::SystemClock),
            };
            direct.spawn(&mut tasks, shared_d, stop_rx.clone());
        }
        for rule in shared.rules.iter() {
            // Counters start at 0, so `rate()` and `increase()` see the first failure.
            let name = [rule.name.as_str()];
            shared.metrics.rule_evaluations.with_label_values(&name);
            shared
                .metrics
                .rule_evaluation_duration
                .with_label_values(&name);
            shared
                .metrics
                .rule_evaluation_failures
                .with_label_values(&name);
        }
        // Rules on the same source, statuses and schedule share one evaluation.
        for group in crate::rule::share_groups(&shared.rules) {
            tasks.spawn(rule_loop(shared.clone(), group, stop_rx.clone()));
        }
        for source in shared.sources.values().cloned() {
            shared
                .metrics
                .source_stale
                .with_label_values(&[source.name.as_str()]);
            tasks.spawn(replication_loop(
                shared.clone(),
                source.clone(),
                stop_rx.clone(),
            ));
            if source.gauges {
                tasks.spawn(gauges_loop(shared.clone(), source, stop_rx.clone()));
            }
        }
        tasks.spawn(source_down_loop(shared.clone(), stop_rx.clone()));
        Ok(Generation { stop, tasks })
    }

    /// Stops scheduling and waits for the evaluations in flight and the notification flush.
    async fn stop(&mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The URL alerts link back to: `external_url`, else the listen address.
fn base_url(loaded: &Loaded, local: std::net::SocketAddr) -> String {
    loaded
        .config
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"))
}

/// Re-reads the config at `current`'s path; on success stops `generation`, starts the next one
/// in its place and returns its state. Nothing running changes on an error.
async fn reload_config(
    current: &Arc<Shared>,
    generation: &mut Generation,
    local: std::net::SocketAddr,
    http: &crate::http::server::HttpState,
) -> Result<Arc<Shared>, String> {
    let path = current.config.path.clone();
    tracing::info!(path = %path.display(), "reloading configuration");
    let mut loaded = crate::config::load(&path).map_err(|e| e.to_string())?;
    // `--web.config.file` keeps overriding the config's own web_config_file.
    if let Some(web) = &current.config.web_override {
        loaded = loaded.with_web(web).map_err(|e| e.to_string())?;
    }
    // Users, proxies, headers and TLS (a renewed certificate) apply to new requests.
    let http_access = crate::http::server::HttpState::prepare(&loaded, local)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let (sources, rules) =
        build_parts_keeping(&loaded, true, Some(&current.sources)).map_err(|e| e.to_string())?;
    // The notifiers must build too before anything is stopped.
    if let Some(am) = &loaded.config.notifiers.alertmanager {
        AlertmanagerNotifier::new(
            am,
            current.book.clone(),
            current.metrics.clone(),
            String::new(),
        )
        .map_err(|e| format!("notifier alertmanager: {e}"))?;
    }
    crate::notify::direct::Direct::build(&loaded.config, &current.outbox, "")
        .map_err(|e| format!("receivers: {e}"))?;
    let old = &current.config.config;
    if loaded.config.listen != old.listen {
        tracing::warn!(old = %old.listen, new = %loaded.config.listen, "listen address changes take effect on restart");
    }
    if loaded.config.state_dir != old.state_dir {
        tracing::warn!(old = %old.state_dir.display(), new = %loaded.config.state_dir.display(),
            "state_dir changes take effect on restart");
    }
    if loaded.config.notifiers.log.is_some() != current.config.config.notifiers.log.is_some() {
        tracing::warn!("turning the log notifier on or off takes effect on restart");
    }

    generation.stop().await;
    http.install(http_access);
    let next = current.successor(loaded, sources, rules);
    match Generation::start(next.clone(), local) {
        Ok(g) => {
            *generation = g;
            Ok(next)
        }
        Err(e) => {
            // Cannot happen short of a state-store failure; keep the old set running.
            *generation = Generation::start(current.clone(), local).map_err(|e2| {
                format!("{e}; and restarting the previous configuration failed: {e2}")
            })?;
            Err(e.to_string())
        }
    }
}

impl Shared {
    /// The next generation's state: the new config, sources and rules over the same alert
    /// state, outbox, silences, metrics and notifier hub. Alerts of rules that are gone
    /// resolve (announced), and their series leave `/metrics`.
    fn successor(
        &self,
        loaded: Loaded,
        sources: BTreeMap<String, Arc<Source>>,
        rules: Vec<Arc<Rule>>,
    ) -> Arc<Shared> {
        let now = Utc::now();
        let mut keep: HashSet<String> = rules.iter().map(|r| r.name.clone()).collect();
        keep.insert(SOURCE_DOWN_RULE.to_string());
        keep.insert(SOURCE_STALE_RULE.to_string());
        let removed = self
            .book
            .write()
            .expect("book lock")
            .resolve_rules_not_in(&keep, now);
        let (rule_status, source_status) = status_maps(&rules, &sources, Some(self));
        let inhibitor = Arc::new(crate::notify::inhibit::Inhibitor::new(
            &loaded.config.inhibit_rules,
        ));
        let next = Arc::new(Shared {
            config: loaded,
            sources,
            rules,
            metrics: self.metrics.clone(),
            book: self.book.clone(),
            rule_status: RwLock::new(rule_status),
            source_status: RwLock::new(source_status),
            outbox: self.outbox.clone(),
            silences: self.silences.clone(),
            store: self.store.clone(),
            hub: self.hub.clone(),
            heartbeat: self.heartbeat.clone(),
            base_url: std::sync::OnceLock::new(),
            inhibitor,
            parts: Default::default(),
        });
        self.forget_series(&next);
        next.persist();
        next.refresh_alert_gauges();
        next.hub.publish(removed);
        next
    }

    /// Drops the series of rules and sources that `next` no longer has, or no longer labels
    /// the same way, so dashboards do not show a removed rule's last count for ever.
    fn forget_series(&self, next: &Shared) {
        let m = &self.metrics;
        let stuck_labels = |rules: &[Arc<Rule>]| -> HashSet<[String; 4]> {
            rules
                .iter()
                .flat_map(|r| {
                    r.statuses().iter().map(|st| {
                        [
                            r.name.clone(),
                            r.source.clone(),
                            st.clone(),
                            r.severity.as_str().to_string(),
                        ]
                    })
                })
                .collect()
        };
        let kept = stuck_labels(&next.rules);
        for l in stuck_labels(&self.rules).difference(&kept) {
            let l = [l[0].as_str(), l[1].as_str(), l[2].as_str(), l[3].as_str()];
            let _ = m.stuck_orders.remove_label_values(&l);
            let _ = m.stuck_oldest_age.remove_label_values(&l);
        }
        let names: HashSet<&str> = next.rules.iter().map(|r| r.name.as_str()).collect();
        for r in self
            .rules
            .iter()
            .filter(|r| !names.contains(r.name.as_str()))
        {
            let n = [r.name.as_str()];
            let _ = m.rule_evaluations.remove_label_values(&n);
            let _ = m.rule_evaluation_failures.remove_label_values(&n);
            let _ = m.rule_evaluation_duration.remove_label_values(&n);
            let _ = m.rule_last_evaluation.remove_label_values(&n);
            let _ = m.rule_findings_capped.remove_label_values(&n);
            for state in ["pending", "firing"] {
                let _ = m.alerts.remove_label_values(&[r.name.as_str(), state]);
            }
        }
        for name in self
            .sources
            .keys()
            .filter(|s| !next.sources.contains_key(*s))
        {
            let _ = m.source_up.remove_label_values(&[name.as_str()]);
            let _ = m.source_stale.remove_label_values(&[name.as_str()]);
            let gone = m
                .unjudgeable_series
                .lock()
                .expect("series lock")
                .remove(name.as_str())
                .unwrap_or_default();
            for (status, why) in gone {
                let _ = m.orders_unjudgeable.remove_label_values(&[
                    name.as_str(),
                    status.as_str(),
                    why,
                ]);
            }
            let _ = m
                .source_replication_lag
                .remove_label_values(&[name.as_str()]);
        }
    }
}

/// Builds the daemon from `loaded` and runs it until `shutdown` completes.
pub async fn run(
    loaded: Loaded,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    Daemon::build(loaded)?.run(shutdown).await
}

/// Evaluates the selected rules (all when `only` is empty) once, with no alert state: `once`.
pub async fn evaluate_once(
    loaded: &Loaded,
    only: &[String],
) -> Result<Vec<(Arc<Rule>, Result<Outcome, SourceError>)>, StartError> {
    // A status log is read the daemon's way (one streamed read of the log, then every rule
    // from that state): cheaper than a statement per rule probing every order that ever passed
    // through the watched statuses.
    let (_sources, rules) = build_parts(loaded, true)?;
    let selected: Vec<Arc<Rule>> = rules
        .into_iter()
        .filter(|r| only.is_empty() || only.contains(&r.name))
        .collect();
    // Rules that share their statements run them once.
    let futures = crate::rule::share_groups(&selected)
        .into_iter()
        .map(|group| async move {
            let results = Rule::evaluate_group(&group, None).await;
            group.into_iter().zip(results).collect::<Vec<_>>()
        });
    let mut done: Vec<(Arc<Rule>, Result<Outcome, SourceError>)> = futures_join_all(futures)
        .await
        .into_iter()
        .flatten()
        .collect();
    // In config order, as selected.
    done.sort_by_key(|(r, _)| selected.iter().position(|s| Arc::ptr_eq(s, r)));
    Ok(done)
}

async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("evaluation task panicked"));
    }
    out
}

/// The findings of a group's rules, each to its rule's [`Applier`].
struct Appliers<'a>(Vec<Applier<'a>>);

impl FindingSink for Appliers<'_> {
    fn findings(&mut self, rule: usize, chunk: &[Finding]) {
        self.0[rule].findings(chunk);
    }
}

/// Runs a group of rules that share their statements (one rule alone is a group) on their
/// schedule until `stop`.
async fn rule_loop(shared: Arc<Shared>, rules: Vec<Arc<Rule>>, mut stop: watch::Receiver<bool>) {
    let rule = rules[0].clone();
    // Interval rules run at once (users want an answer on start); cron rules wait for their time.
    let mut next = match rule.schedule {
        crate::rule::Schedule::Every(_) => Utc::now(),
        _ => rule.schedule.next_after(Utc::now()),
    };
    loop {
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let started = Utc::now();
        // An evaluation in flight is finished even during shutdown: its state is then persisted.
        shared.evaluate_group(&rules).await;
        next = rule.schedule.next_after(started).max(Utc::now());
        if *stop.borrow() {
            return;
        }
    }
}

/// Per-status counts, oldest ages and unjudgeable orders of one source: from a status log's
/// kept state, else from the gauge statement.
async fn read_gauges(source: &Source) -> Result<Gauges, SourceError> {
    let terminal = source.to_db(&source.terminal_statuses);
    if source.history().await?.is_some() {
        let sql = source.model_sql().await?;
        // Orders with a row without a time, read before the state so that only orders still
        // kept (not finished) count.
        let (nulls, timed) = match &sql.history {
            Some(hs) => null_rows(source, hs).await?,
            None => Default::default(),
        };
        let h = source.history().await?.expect("kept state");
        let counts = h.gauges();
        let mut unjudgeable: Vec<(String, Unjudgeable, i64)> = h.unjudgeable();
        unjudgeable.extend(null_time_counts(&nulls, |id| {
            h.contains(id) || !timed.contains(id)
        }));
        return Ok(Gauges {
            counts,
            unjudgeable,
        });
    }
    let sql = source.model_sql().await?;
    let Some(gauges) = &sql.gauges else {
        return Ok(Gauges::default());
    };
    let rows = source.query(gauges, &[&terminal]).await?;
    let mut out = Gauges::default();
    for r in &rows {
        let status: String = r.get(0);
        for (why, n) in [
            (Unjudgeable::NullTime, r.get::<_, i64>(3)),
            (Unjudgeable::FutureTime, r.get::<_, i64>(4)),
        ] {
            if n > 0 {
                out.unjudgeable.push((status.clone(), why, n));
            }
        }
        out.counts.push((status, r.get(1), r.get(2)));
    }
    Ok(out)
}

/// The `(status, id)` rows of a status log without a time in active statuses, and which of
/// those orders have timed rows too (finished ones among them are not counted).
async fn null_rows(
    source: &Source,
    hs: &crate::source::HistorySql,
) -> Result<(Vec<tokio_postgres::Row>, HashSet<String>), SourceError> {
    let terminal = source.to_db(&source.terminal_statuses);
    let rows = source.query(&hs.null_times, &[&terminal]).await?;
    if rows.is_empty() {
        return Ok((rows, HashSet::new()));
    }
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, String>(1))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let timed = source
        .query_ids(&hs.refetch, &ids)
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok((rows, timed))
}

/// `(status, id)` rows of `null_times` → count per status of the ids `live` says are live:
/// kept, or with no timed row at all.
fn null_time_counts(
    rows: &[tokio_postgres::Row],
    kept: impl Fn(&str) -> bool,
) -> Vec<(String, Unjudgeable, i64)> {
    let mut per: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows {
        let id: String = r.get(1);
        if kept(&id) {
            *per.entry(r.get(0)).or_default() += 1;
        }
    }
    per.into_iter()
        .map(|(s, n)| (s, Unjudgeable::NullTime, n))
        .collect()
}

/// What [`read_gauges`] found, statuses as stored.
#[derive(Default)]
struct Gauges {
    counts: Vec<(String, i64, Option<f64>)>,
    unjudgeable: Vec<(String, Unjudgeable, i64)>,
}

async fn gauges_loop(shared: Arc<Shared>, source: Arc<Source>, mut stop: watch::Receiver<bool>) {
    let every = shared.config.config.gauges_interval.0;
    let mut known: HashSet<String> = HashSet::new();
    loop {
        match read_gauges(&source).await {
            Ok(g) => {
                shared.source_ok(&source.name);
                let mut now_known = HashSet::new();
                let rows = crate::source::fold_statuses(
                    g.counts
                        .into_iter()
                        .map(|(s, n, age)| (source.from_db(s), n, age))
                        .collect(),
                    source.statuses.as_ref(),
                );
                for (status, n, age) in rows {
                    shared
                        .metrics
                        .orders
                        .with_label_values(&[&source.name, &status])
                        .set(n);
                    if let Some(age) = age {
                        shared
                            .metrics
                            .order_status_oldest_age
                            .with_label_values(&[&source.name, &status])
                            .set(age);
                    }
                    now_known.insert(status);
                }
                for gone in known.difference(&now_known) {
                    let _ = shared
                        .metrics
                        .orders
                        .remove_label_values(&[&source.name, gone]);
                    let _ = shared
                        .metrics
                        .order_status_oldest_age
                        .remove_label_values(&[&source.name, gone]);
                }
                known = now_known;
                // Unjudgeable orders: statuses folded as above (a status that is not a label of
                // the counts is `other`), so no data value becomes a label.
                let mut per: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
                for (status, why, n) in g.unjudgeable {
                    let name = source.from_db(status);
                    let label = if known.contains(&name) {
                        name
                    } else {
                        crate::source::OTHER_STATUS.to_string()
                    };
                    *per.entry((label, why.as_str())).or_default() += n;
                }
                let m = &shared.metrics.orders_unjudgeable;
                for ((status, why), n) in &per {
                    m.with_label_values(&[source.name.as_str(), status.as_str(), why])
                        .set(*n);
                }
                let now_unjudgeable: HashSet<(String, &'static str)> = per.into_keys().collect();
                let mut series = shared
                    .metrics
                    .unjudgeable_series
                    .lock()
                    .expect("series lock");
                let before = series.entry(source.name.clone()).or_default();
                for (status, why) in before.difference(&now_unjudgeable) {
                    let _ = m.remove_label_values(&[source.name.as_str(), status.as_str(), why]);
                }
                *before = now_unjudgeable;
            }
            Err(e) => shared.source_failed(&source.name, &e),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Watches whether a source is a standby and how far behind: the lag gauge, the stale flag
/// (which pauses its rules) and the log line when either changes.
async fn replication_loop(
    shared: Arc<Shared>,
    source: Arc<Source>,
    mut stop: watch::Receiver<bool>,
) {
    let every = SOURCE_CHECK_INTERVAL.min(shared.config.config.gauges_interval.0);
    // A status log is read at start even when no rule or gauge would ask yet: `/readyz`
    // waits for it. Rules retry it when it fails.
    if let Err(e) = source.history().await {
        shared.source_failed(&source.name, &e);
    }
    loop {
        if let Ok(lag) = source.replication_lag().await {
            shared.replication(&source, lag);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn source_down_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        shared.check_sources(Utc::now());
        *shared.heartbeat.lock().expect("heartbeat") = std::time::Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(SOURCE_CHECK_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

impl Shared {
    /// One evaluation of `rule`: query, metrics, alert state, persistence, notification.
    pub async fn evaluate(&self, rule: &Arc<Rule>) {
        self.evaluate_group(std::slice::from_ref(rule)).await
    }

    /// One evaluation of rules that share their statements (see `Rule::shares_with`; one
    /// rule alone is a group): the statements once, then each rule's metrics, alert state,
    /// persistence and notification. Each rule's evaluation time is the shared statements'.
    #[tracing::instrument(name = "evaluate", skip_all, fields(
        rule = %rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(","),
        source = %rules[0].source, kind = rules[0].kind.as_str(), count = tracing::field::Empty,
        error = tracing::field::Empty))]
    pub async fn evaluate_group(&self, rules: &[Arc<Rule>]) {
        let now = Utc::now();
        let live: Vec<Arc<Rule>> = rules
            .iter()
            .filter(|rule| {
                let Some(why) = self.stale_reason(rule) else {
                    return true;
                };
                // Stale data neither fires nor resolves: the rule waits for the standby.
                let mut st = self.rule_status.write().expect("status lock");
                if let Some(s) = st.get_mut(&rule.name) {
                    if s.error.as_deref() != Some(why.as_str()) {
                        tracing::warn!(rule = %rule.name, reason = %why, "rule paused: its alerts are kept as they are");
                    }
                    s.health = "err";
                    s.error = Some(why);
                    s.last_evaluation = Some(now);
                }
                false
            })
            .cloned()
            .collect();
        if live.is_empty() {
            return;
        }
        // Each rule's findings go to its alerts as they are decoded.
        let mut sink = Appliers(
            live.iter()
                .map(|rule| {
                    let timing = RuleTiming {
                        for_: rule.for_,
                        keep_firing_for: rule.keep_firing_for,
                        interval: rule.schedule.typical_interval(now),
                    };
                    Applier::new(&self.book, self.rule_parts(rule), timing, now)
                })
                .collect(),
        );
        let started = Instant::now();
        let results = Rule::evaluate_group(&live, Some(&mut sink)).await;
        let took = started.elapsed().as_secs_f64();
        for ((rule, result), applier) in live.iter().zip(results).zip(sink.0) {
            if let (Ok(o), 1) = (&result, live.len()) {
                tracing::Span::current().record("count", o.count);
            }
            self.record(rule, result, applier, now, took);
        }
    }

    /// What one rule's evaluation found (`result`, at `now`, taking `took` seconds; its
    /// findings so far applied by `applier`): metrics, alert state, persistence, notification.
    fn record(
        &self,
        rule: &Arc<Rule>,
        result: Result<Outcome, SourceError>,
        applier: Applier<'_>,
        now: DateTime<Utc>,
        took: f64,
    ) {
        let m = &self.metrics;
        m.rule_evaluations.with_label_values(&[&rule.name]).inc();
        m.rule_evaluation_duration
            .with_label_values(&[&rule.name])
            .observe(took);
        let mut status = RuleStatus {
            name: rule.name.clone(),
            kind: rule.kind,
            source: rule.source.clone(),
            health: "ok",
            last_evaluation: Some(now),
            evaluation_duration_seconds: Some(took),
            error: None,
            count: None,
            capped: false,
        };
        match result {
            Ok(mut outcome) => {
                self.source_ok(&rule.source);
                if let Some(other) = rule.other_source() {
                    self.source_ok(other);
                }
                m.rule_last_evaluation
                    .with_label_values(&[&rule.name])
                    .set(now.timestamp_millis() as f64 / 1000.0);
                let sev = rule.severity.as_str();
                for st in rule.statuses() {
                    let labels = [rule.name.as_str(), rule.source.as_str(), st.as_str(), sev];
                    match outcome.per_status.get(st) {
                        Some(s) => {
                            m.stuck_orders
                                .with_label_values(&labels)
                                .set(s.count as i64);
                            m.stuck_oldest_age
                                .with_label_values(&labels)
                                .set(s.oldest_age_seconds);
                        }
                        None => {
                            m.stuck_orders.with_label_values(&labels).set(0);
                            let _ = m.stuck_oldest_age.remove_label_values(&labels);
                        }
                    }
                }
                for (service, ratio) in &outcome.http_ratios {
                    m.http_5xx_ratio.with_label_values(&[service]).set(*ratio);
                }
                if let Check::SlowQueries(_) = rule.check {
                    let slowest = outcome
                        .signals
                        .iter()
                        .filter_map(|s| s.value)
                        .fold(0.0, f64::max);
                    m.db_slow_queries
                        .with_label_values(&[&rule.source])
                        .set(outcome.count as i64);
                    m.db_slowest_query_seconds
                        .with_label_values(&[&rule.source])
                        .set(slowest);
                }
                m.rule_findings_capped
                    .with_label_values(&[&rule.name])
                    .set(outcome.truncated() as i64);
                status.count = Some(outcome.count);
                status.capped = outcome.truncated();
                // The book's bookkeeping and the store's writes grow with the alerts: off the
                // async workers, so HTTP answers do not wait behind them.
                crate::blocking::off_worker(|| {
                    let changes = applier.finish(&mut outcome);
                    tracing::debug!(rule = %rule.name, source = %rule.source, count = outcome.count,
                        capped = outcome.truncated(), changes = changes.len(),
                        took_ms = (took * 1000.0).round() as u64, "rule evaluated");
                    self.after_change(changes, now);
                });
            }
            Err(e) => {
                // What it saw before failing stays; nothing resolves.
                let changes = applier.abandon();
                if !changes.is_empty() {
                    crate::blocking::off_worker(|| self.after_change(changes, now));
                }
                m.rule_evaluation_failures
                    .with_label_values(&[&rule.name])
                    .inc();
                let was_ok = self
                    .rule_status
                    .read()
                    .expect("status lock")
                    .get(&rule.name)
                    .is_none_or(|s| s.health != "err");
                if was_ok {
                    tracing::warn!(rule = %rule.name, source = %rule.source, error = %e, "rule evaluation failed; its alerts are kept as they are");
                } else {
                    tracing::debug!(rule = %rule.name, source = %rule.source, error = %e, "rule evaluation still failing");
                }
                tracing::Span::current().record("error", tracing::field::display(&e));
                self.source_failed(e.source_name(), &e);
                status.health = "err";
                status.error = Some(e.to_string());
                let prev = self
                    .rule_status
                    .read()
                    .expect("status lock")
                    .get(&rule.name)
                    .cloned();
                if let Some(prev) = prev {
                    status.count = prev.count;
                    status.capped = prev.capped;
                }
            }
        }
        self.rule_status
            .write()
            .expect("status lock")
            .insert(rule.name.clone(), status);
    }

    /// What every order alert of `rule` shares in this generation, made at its first use.
    fn rule_parts(&self, rule: &Arc<Rule>) -> Arc<RuleParts> {
        let mut parts = self.parts.lock().expect("parts lock");
        match parts.get(&rule.name) {
            Some(p) if Arc::ptr_eq(&p.rule, rule) => p.clone(),
            _ => {
                let p = Arc::new(RuleParts::new(rule.clone(), self.runbooks_url()));
                parts.insert(rule.name.clone(), p.clone());
                p
            }
        }
    }

    /// Gives the restored alerts of every rule its renderer (after a start or a reload).
    fn attach_notes(&self) {
        let mut book = self.book.write().expect("book lock");
        for rule in &self.rules {
            book.attach_notes(&rule.name, &self.rule_parts(rule).notes);
        }
    }

    /// Persists, updates gauges, forgets old resolved alerts, and tells the notifiers.
    fn after_change(&self, changes: Vec<Transition>, now: DateTime<Utc>) {
        self.book.write().expect("book lock").gc(now);
        self.persist();
        self.refresh_alert_gauges();
        self.hub.publish(changes);
    }

    /// Writes what changed in the book since the last write (nothing, in a steady state);
    /// a failed write is retried with the next.
    fn persist(&self) {
        if let Err(e) = self.store.save_book(&self.book) {
            tracing::error!(error = %e, "cannot persist alert state; will retry");
        }
    }

    fn refresh_alert_gauges(&self) {
        let book = self.book.read().expect("book lock");
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for r in self
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .chain([SOURCE_DOWN_RULE, SOURCE_STALE_RULE])
        {
            counts.insert((r, "pending"), 0);
            counts.insert((r, "firing"), 0);
        }
        for (rule, pending, firing) in book.active_counts() {
            for (state, n) in [("pending", pending), ("firing", firing)] {
                if n > 0 {
                    counts.insert((rule, state), n as i64);
                }
            }
        }
        for ((rule, state), n) in counts {
            self.metrics.alerts.with_label_values(&[rule, state]).set(n);
        }
    }

    /// Why `rule` must not run now: a source it reads is a standby too far behind.
    fn stale_reason(&self, rule: &Rule) -> Option<String> {
        let st = self.source_status.read().expect("status lock");
        [Some(rule.source.as_str()), rule.other_source()]
            .into_iter()
            .flatten()
            .find_map(|name| {
                let s = st.get(name)?;
                s.stale.then(|| {
                    format!(
                        "source {name} is a standby {} behind its primary (max_replication_lag): not evaluated on stale data",
                        s.lag_text()
                    )
                })
            })
    }

    /// Records a replication probe of `source` (`None`: a primary).
    fn replication(&self, source: &Source, lag: Option<f64>) {
        let name = source.name.as_str();
        let m = &self.metrics;
        match lag {
            Some(l) => m.source_replication_lag.with_label_values(&[name]).set(l),
            None => {
                let _ = m.source_replication_lag.remove_label_values(&[name]);
            }
        }
        let over = lag.is_some_and(|l| l > source.max_replication_lag.as_secs_f64());
        let mut st = self.source_status.write().expect("status lock");
        if let Some(s) = st.get_mut(name) {
            // Two probes in a row either way, so a lag hovering at the limit does not flap.
            let stale = if s.stale {
                over || s.over_lag
            } else {
                over && s.over_lag
            };
            s.over_lag = over;
            m.source_stale.with_label_values(&[name]).set(stale as i64);
            if stale != s.stale {
                if stale {
                    tracing::warn!(
                        source = name,
                        lag_seconds = lag.unwrap_or(0.0),
                        "source is a standby beyond max_replication_lag: its rules are paused"
                    );
                } else {
                    tracing::info!(source = name, "standby caught up: its rules run again");
                }
            }
            s.replication_lag_seconds = lag;
            s.stale = stale;
        }
    }

    fn source_ok(&self, name: &str) {
        // An `http_errors` rule's `source` (`prometheus`, `scrape`) is no database.
        if !self.sources.contains_key(name) {
            return;
        }
        self.metrics.source_up.with_label_values(&[name]).set(1);
        let mut st = self.source_status.write().expect("status lock");
        if let Some(s) = st.get_mut(name) {
            if s.failing_since.is_some() {
                tracing::info!(source = name, "source reachable again");
            }
            s.up = Some(true);
            s.reached = true;
            s.failing_since = None;
            s.last_error = None;
        }
    }

    fn source_failed(&self, name: &str, e: &SourceError) {
        if !self.sources.contains_key(name) {
            return;
        }
        self.metrics.source_up.with_label_values(&[name]).set(0);
        let mut st = self.source_status.write().expect("status lock");
        if let Some(s) = st.get_mut(name) {
            if s.failing_since.is_none() {
                tracing::warn!(source = name, address = %s.target, error = %e, "source failing (unreachable, refused or erroring); retrying");
                s.failing_since = Some(Utc::now());
            }
            s.up = Some(false);
            s.last_error = Some(e.to_string());
        }
    }

    /// Raises `SourceDown` for sources failing longer than `source_down_after`, resolves it for
    /// sources that answer again.
    fn check_sources(&self, now: DateTime<Utc>) {
        let after = self.config.config.source_down_after.0;
        let statuses = self.source_status.read().expect("status lock").clone();
        let mut obs = Vec::new();
        {
            let book = self.book.read().expect("book lock");
            for (name, s) in &statuses {
                let Some(since) = s.failing_since else {
                    continue;
                };
                let already = book
                    .get(SOURCE_DOWN_RULE, name)
                    .is_some_and(|a| a.state == AlertState::Firing);
                let down_for = (now - since).to_std().unwrap_or_default();
                if !already && down_for < after {
                    continue;
                }
                let error = s.last_error.clone().unwrap_or_default();
                let labels = BTreeMap::from([
                    ("alertname".to_string(), "SourceDown".to_string()),
                    ("rule".to_string(), SOURCE_DOWN_RULE.to_string()),
                    ("source".to_string(), name.clone()),
                    ("severity".to_string(), "critical".to_string()),
                ]);
                let annotations = BTreeMap::from([
                    (
                        "summary".to_string(),
                        format!(
                            "orderwatch cannot query source {name} ({}) for {}",
                            s.target,
                            human_duration(down_for)
                        ),
                    ),
                    (
                        "description".to_string(),
                        format!(
                            "Rules on {name} are not evaluated: their alerts are frozen, not resolved. Last error: {error}"
                        ),
                    ),
                ]);
                obs.push(fixed_observation(
                    name,
                    labels,
                    annotations,
                    &self.runbooks_url(),
                    "SourceDown",
                    since,
                    true,
                ));
            }
        }
        let timing = RuleTiming {
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            interval: SOURCE_CHECK_INTERVAL,
        };
        let changes = self.book.write().expect("book lock").apply(
            SOURCE_DOWN_RULE,
            timing,
            now,
            obs,
            Coverage::All,
        );
        if !changes.is_empty() {
            self.after_change(changes, now);
        }
        let runbooks = self.runbooks_url();
        let stale: Vec<Observation> = statuses
            .iter()
            .filter(|(_, s)| s.stale)
            .map(|(name, s)| {
                let lag = s.lag_text();
                fixed_observation(
                    name,
                    BTreeMap::from([
                        ("alertname".to_string(), "SourceStale".to_string()),
                        ("rule".to_string(), SOURCE_STALE_RULE.to_string()),
                        ("source".to_string(), name.clone()),
                        ("severity".to_string(), "critical".to_string()),
                    ]),
                    BTreeMap::from([
                        (
                            "summary".to_string(),
                            format!("Source {name} ({}) is a standby {lag} behind its primary", s.target),
                        ),
                        (
                            "description".to_string(),
                            format!(
                                "Replication lag {lag} is beyond max_replication_lag: rules on {name} are not evaluated (their alerts neither fire nor resolve) until it catches up. Check the standby's WAL receiver and replay (pg_stat_wal_receiver, pg_is_wal_replay_paused())."
                            ),
                        ),
                        ("lag".to_string(), lag),
                    ]),
                    &runbooks,
                    "SourceStale",
                    now,
                    true,
                )
            })
            .collect();
        let changes = self.book.write().expect("book lock").apply(
            SOURCE_STALE_RULE,
            timing,
            now,
            stale,
            Coverage::All,
        );
        if !changes.is_empty() {
            self.after_change(changes, now);
        }
    }
}

/// One line of `check`'s online report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Works.
    Ok,
    /// Works, but should be changed (e.g. the role may write).
    Warn,
    /// Does not work.
    Fail,
}

/// `check`'s lines about one source's order model: the columns as PostgreSQL types them,
/// statuses outside `statuses`, a `timestamp` column that looks like another zone's wall
/// clock, orders that cannot be judged, and whether the statements prepare.
async fn check_model(name: &str, s: &Source) -> Vec<(Verdict, String)> {
    let mut lines = Vec::new();
    let sql = match s.model_sql().await {
        Ok(sql) => sql,
        Err(e) => return vec![(Verdict::Fail, e.to_string())],
    };
    if let Some(known) = &s.statuses {
        match s.query(&sql.distinct_statuses, &[]).await {
            Ok(rows) => {
                let unknown: Vec<String> = rows
                    .iter()
                    .map(|r| s.from_db(r.get::<_, String>(0)))
                    .filter(|v| !known.contains(v))
                    .collect();
                if !unknown.is_empty() {
                    lines.push((
                        Verdict::Warn,
                        format!(
                            "source {name}: the orders hold statuses not in `statuses`: {} \
                             (exported as status=\"other\")",
                            unknown
                                .iter()
                                .map(|v| format!("{:?}", crate::report::printable(v)))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
            Err(e) => lines.push((Verdict::Fail, format!("source {name}: statuses: {e}"))),
        }
    }
    if sql.time == crate::source::TimeKind::Local && s.time_zone.is_none() {
        match s.query(&sql.newest, &[]).await {
            Ok(rows) => {
                let newest: Option<DateTime<Utc>> = rows.first().and_then(|r| r.get(0));
                let db_now = Utc::now();
                if let Some(ahead) = newest.map(|n| (n - db_now).num_seconds())
                    && ahead >= 20 * 60
                {
                    // The newest row is at most "now" in its own zone, so the zone is at
                    // least that far ahead; most offsets are whole hours.
                    let q = (ahead + 3599) / 3600 * 3600;
                    lines.push((
                        Verdict::Warn,
                        format!(
                            "source {name}: {} is a timestamp without time zone read as UTC, and its \
                             newest value lies {} ahead of now: it looks like wall-clock time at \
                             UTC+{:02}:{:02} or so. Set time_zone under sources.{name} (e.g. \
                             time_zone: Europe/Moscow), or every age is off by that much",
                            s.model.entered_at,
                            human_duration(Duration::from_secs(ahead as u64)),
                            q / 3600,
                            q % 3600 / 60
                        ),
                    ));
                }
            }
            Err(e) => lines.push((Verdict::Fail, format!("source {name}: newest time: {e}"))),
        }
    }
    let mut unjudgeable: Vec<(String, Unjudgeable, i64)> = Vec::new();
    match &sql.history {
        Some(hs) => {
            for (what, stmt) in [("incremental read", &hs.read), ("read by id", &hs.refetch)] {
                if let Err(e) = s.prepare(stmt).await {
                    lines.push((
                        Verdict::Fail,
                        format!("source {name}: status log {what}: {e}"),
                    ));
                }
            }
            // What the daemon's start-up read will keep, read now.
            let nulls = null_rows(s, hs).await;
            match (s.read_history().await, nulls) {
                (Ok(h), Ok((nulls, timed))) => {
                    lines.push((
                        Verdict::Ok,
                        format!(
                            "source {name}: status log read: {} orders not in a terminal status",
                            h.len()
                        ),
                    ));
                    unjudgeable.extend(h.unjudgeable());
                    unjudgeable.extend(null_time_counts(&nulls, |id| {
                        h.contains(id) || !timed.contains(id)
                    }));
                }
                (Err(e), _) | (_, Err(e)) => {
                    lines.push((Verdict::Fail, format!("source {name}: status log: {e}")))
                }
            }
        }
        None => {
            if sql.gauges.is_some() {
                match read_gauges(s).await {
                    Ok(g) => {
                        lines.push((
                            Verdict::Ok,
                            format!("source {name}: per-status gauge query ran"),
                        ));
                        unjudgeable.extend(g.unjudgeable);
                    }
                    Err(e) => {
                        lines.push((Verdict::Fail, format!("source {name}: gauge query: {e}")))
                    }
                }
            }
        }
    }
    for (status, why, n) in unjudgeable {
        let what = match why {
            Unjudgeable::NullTime => format!("no {}", s.model.entered_at),
            Unjudgeable::FutureTime => format!("a {} in the future", s.model.entered_at),
            Unjudgeable::Tie => {
                "latest rows at the same time with different statuses (set orders.tiebreak)"
                    .to_string()
            }
        };
        lines.push((
            Verdict::Warn,
            format!(
                "source {name}: {n} orders in {:?} have {what}: no rule can judge them \
                 (orderwatch_orders_unjudgeable{{reason=\"{}\"}})",
                crate::report::printable(&s.from_db(status)),
                why.as_str()
            ),
        ));
    }
    lines
}

/// `check` without `--offline`: reaches every source and prepares every rule's SQL, so missing
/// tables, columns or permissions show up before the daemon runs. One line per check.
pub async fn check_online(loaded: &Loaded) -> Result<Vec<(Verdict, String)>, StartError> {
    let (sources, rules) = build_parts(loaded, false)?;
    let mut lines = Vec::new();
    let verdict = |ok: bool| if ok { Verdict::Ok } else { Verdict::Fail };
    for (name, s) in &sources {
        match s.query("SELECT 1", &[]).await {
            Ok(_) => lines.push((
                Verdict::Ok,
                format!(
                    "source {name} ({}) reachable, statements run read-only",
                    s.target()
                ),
            )),
            Err(e) => {
                lines.push((Verdict::Fail, e.to_string()));
                continue;
            }
        }
        let tables = match &s.model.kind {
            ModelKind::Table(t) => vec![t.clone()],
            ModelKind::History { table, .. } => vec![table.clone()],
            ModelKind::Query(_) => vec![],
        };
        for t in tables {
            match s.may_write(&t).await {
                Ok(true) => lines.push((
                    Verdict::Warn,
                    format!(
                        "source {name}: the role may write {t} (INSERT/UPDATE/DELETE/TRUNCATE); \
                         orderwatch needs SELECT only (README: a least-privilege role)"
                    ),
                )),
                Ok(false) => {}
                Err(e) => lines.push((Verdict::Fail, format!("source {name}: {e}"))),
            }
        }
        lines.extend(check_model(name, s).await);
    }
    for r in &rules {
        let Some(source) = sources.get(&r.source) else {
            // http_errors reads Prometheus or the services, not a database.
            let what = r.sql().await.unwrap_or_default();
            lines.push((Verdict::Ok, format!("rule {}: reads {what}", r.name)));
            continue;
        };
        let result = match r.sql().await {
            Ok(sql) => source.prepare(&sql).await,
            Err(e) => Err(e),
        };
        lines.push((
            verdict(result.is_ok()),
            match result {
                Ok(()) => format!("rule {}: SQL prepared on {}", r.name, r.source),
                Err(e) => format!("rule {}: {e}", r.name),
            },
        ));
    }
    Ok(lines)
}
