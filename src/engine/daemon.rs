//! The daemon's life: build it from a config (restoring alert state), start a generation
//! of tasks (rule loops, gauges, source health, notifiers), reload the config into a new
//! generation over the same alert state, stop. Serving HTTP is not the engine's job: see
//! `crate::serve`.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::evaluate::rule_loop;
use super::health::{gauges_loop, replication_loop, source_down_loop};
use super::shared::{
    Current, MAX_LOOKUPS, OWN_RULES, SOURCE_CHECK_INTERVAL, Shared, StartError, base_url,
    build_parts, build_parts_keeping, status_maps,
};
use crate::alert::{AlertBook, Store, Transition};
use crate::config::Loaded;
use crate::metrics::Metrics;
use crate::notify::{AlertmanagerNotifier, Hub, LogNotifier};
use crate::rule::Rule;
use crate::source::Source;
use std::net::SocketAddr;

/// The daemon, built and ready to run.
pub struct Daemon {
    shared: Arc<Shared>,
    log_rx: Option<tokio::sync::mpsc::UnboundedReceiver<Arc<Vec<Transition>>>>,
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
        keep.extend(OWN_RULES.map(String::from));
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
        let inhibitor = Arc::new(crate::notify::mute::inhibit::Inhibitor::new(
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
            lookups: Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)),
            trends: Default::default(),
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

    /// Starts the daemon's tasks; `local` is the address the HTTP server listens on (alerts
    /// link back to it unless `external_url` is set). The HTTP server itself is the caller's
    /// (`crate::serve`): it reads the running generation through [`Running::current`].
    pub fn start(mut self, local: SocketAddr) -> Result<Running, StartError> {
        let shared = self.shared.clone();
        // The log notifier ends when the hub's senders drop, i.e. after everything else.
        let silences = shared.silences.clone();
        let log_task = self
            .log_rx
            .take()
            .map(|rx| tokio::spawn(LogNotifier::new(rx, silences).run()));
        let generation = Generation::start(shared.clone(), local)?;
        shared.metrics.config_loaded(true);
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
        let (current, _) = watch::channel(shared);
        // `self` goes here: the running generation's state lives in `current` (and its tasks),
        // so a reload frees the first generation's sources and rules.
        Ok(Running {
            current,
            generation,
            local,
            log_task,
            watchdog,
        })
    }
}

/// A started daemon: the generation of tasks running now, and what the HTTP server reads.
pub struct Running {
    current: watch::Sender<Arc<Shared>>,
    generation: Generation,
    local: SocketAddr,
    log_task: Option<tokio::task::JoinHandle<()>>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The state of the generation running now, as the HTTP handlers read it: it follows
    /// every reload.
    pub fn current(&self) -> Current {
        Current(self.current.subscribe())
    }

    /// Re-reads the config file and runs the next generation on it.
    ///
    /// The config and every rule file are read and validated, and sources, rules and
    /// notifiers built, before anything is touched; `prepare` then checks what the caller
    /// needs of the new config (the HTTP server's users and TLS) and its result is returned
    /// for the caller to install. On any error the running set is kept and
    /// `orderwatch_config_last_reload_successful` drops to 0. Otherwise the running generation
    /// stops (evaluations in flight finish) and the new one starts over the same alert state,
    /// outbox, silences and metrics. Alerts of rules that keep their name survive; alerts of
    /// removed rules resolve.
    pub async fn reload<T>(
        &mut self,
        prepare: impl FnOnce(&Loaded) -> Result<T, String>,
    ) -> Result<T, String> {
        let current = self.current.borrow().clone();
        let result = reload_config(&current, &mut self.generation, self.local, prepare).await;
        match &result {
            Ok((next, _)) => {
                tracing::info!(path = %next.config.path.display(), rules = next.rules.len(),
                    sources = next.sources.len(), "configuration reloaded");
                self.current.send_replace(next.clone());
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed; still running the previous configuration");
            }
        }
        current.metrics.config_loaded(result.is_ok());
        result.map(|(_, t)| t)
    }

    /// Stops: scheduling ends, evaluations in flight finish and notifications are flushed;
    /// then `after` (the caller's HTTP server stopping, which holds the state) runs, and the
    /// log notifier writes what is left.
    pub async fn stop(mut self, after: impl Future<Output = ()>) {
        tracing::info!("shutting down: finishing evaluations in flight, flushing notifications");
        self.generation.stop().await;
        after.await;
        if let Some(w) = self.watchdog {
            w.abort();
        }
        drop(self.current);
        if let Some(t) = self.log_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        tracing::info!("stopped");
    }
}

/// The tasks of one configuration: rule loops, gauges, source health and the notifiers.
struct Generation {
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Generation {
    /// Builds the notifiers of `shared`'s config and spawns every task.
    pub(super) fn start(
        shared: Arc<Shared>,
        local: std::net::SocketAddr,
    ) -> Result<Generation, StartError> {
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
        // Before anything reads a source: recording starts with its first read.
        for (source, tracker) in super::flow::prepare(&shared) {
            tasks.spawn(super::flow::flow_loop(
                shared.clone(),
                source,
                tracker,
                stop_rx.clone(),
            ));
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
            if rule.kind == crate::config::RuleKind::Missing {
                shared
                    .metrics
                    .lost_orders
                    .with_label_values(&[rule.source.as_str(), rule.name.as_str()]);
            }
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
    pub(super) async fn stop(&mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Re-reads the config at `current`'s path; on success stops `generation`, starts the next one
/// in its place and returns its state. Nothing running changes on an error.
async fn reload_config<T>(
    current: &Arc<Shared>,
    generation: &mut Generation,
    local: SocketAddr,
    prepare: impl FnOnce(&Loaded) -> Result<T, String>,
) -> Result<(Arc<Shared>, T), String> {
    let path = current.config.path.clone();
    tracing::info!(path = %path.display(), "reloading configuration");
    let mut loaded = crate::configure::load(&path).map_err(|e| e.to_string())?;
    // `--web.config.file` keeps overriding the config's own web_config_file.
    if let Some(web) = &current.config.web_override {
        loaded = loaded.with_web(web).map_err(|e| e.to_string())?;
    }
    // What the caller needs of the new config (the HTTP server's users and TLS).
    let prepared = prepare(&loaded)?;
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
    let next = current.successor(loaded, sources, rules);
    match Generation::start(next.clone(), local) {
        Ok(g) => {
            *generation = g;
            Ok((next, prepared))
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
        keep.extend(OWN_RULES.map(String::from));
        let removed = self
            .book
            .write()
            .expect("book lock")
            .resolve_rules_not_in(&keep, now);
        let (rule_status, source_status) = status_maps(&rules, &sources, Some(self));
        let inhibitor = Arc::new(crate::notify::mute::inhibit::Inhibitor::new(
            &loaded.config.inhibit_rules,
        ));
        // The status page's trends of rules that are gone go with them.
        self.trends
            .retain(&rules.iter().map(|r| r.name.as_str()).collect());
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
            lookups: self.lookups.clone(),
            trends: self.trends.clone(),
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
            let _ = m
                .lost_orders
                .remove_label_values(&[r.source.as_str(), r.name.as_str()]);
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
