//! The direct channels at run time: a dispatcher task turns alert state into grouped messages
//! in the outbox, and one delivery loop per receiver sends them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::clock::Clock;
use super::dispatch::Dispatcher;
use super::mute::silence::Silence;
use super::outbox::{DeliveryContext, Outbox, RetryPolicy, deliver_loop};
use super::routing::receiver::Channel;
use super::routing::route::{Route, TimeWindow};
use crate::alert::AlertBook;
use crate::config::Config;
use crate::metrics::Metrics;

/// How often groups are looked at even when no alert changed (timers: group_wait, repeats).
const TICK: Duration = Duration::from_secs(1);

/// Built channels and dispatcher, ready to spawn.
pub struct Direct {
    dispatcher: Dispatcher,
    channels: Vec<(String, Channel)>,
    policy: RetryPolicy,
}

impl Direct {
    /// Builds the route tree, the channels and the dispatcher (with its restored log); `None`
    /// when no route is configured.
    pub fn build(
        config: &Config,
        outbox: &Outbox,
        base_url: &str,
    ) -> Result<Option<Direct>, String> {
        let Some(route) = &config.route else {
            return Ok(None);
        };
        let mut problems = Vec::new();
        let root = Route::build(route, None, "0".into(), &mut problems);
        if let Some((_, p)) = problems.first() {
            return Err(p.clone());
        }
        let mut windows = HashMap::new();
        for (name, list) in &config.time_intervals {
            let w: Result<Vec<TimeWindow>, String> =
                list.value.iter().map(TimeWindow::new).collect();
            windows.insert(name.clone(), w?);
        }
        let mut channels = Vec::new();
        for (name, r) in &config.receivers {
            channels.push((name.clone(), Channel::build(name, &r.value)?));
        }
        let log = outbox.load_log().map_err(|e| e.to_string())?;
        let d = &config.delivery;
        Ok(Some(Direct {
            dispatcher: Dispatcher::new(root, windows, log, base_url.to_string()),
            channels,
            policy: RetryPolicy {
                initial_backoff: d.initial_backoff.0,
                max_backoff: d.max_backoff.0,
                max_age: d.max_age.0,
            },
        }))
    }

    /// Spawns the dispatcher and one delivery loop per receiver onto `tasks`.
    pub fn spawn(
        self,
        tasks: &mut tokio::task::JoinSet<()>,
        shared: DispatchShared,
        stop: watch::Receiver<bool>,
    ) {
        let mut wakers: HashMap<String, Arc<Notify>> = HashMap::new();
        let ctx = DeliveryContext {
            outbox: shared.outbox.clone(),
            metrics: shared.metrics.clone(),
            policy: self.policy,
            clock: shared.clock.clone(),
        };
        for (name, channel) in self.channels {
            let notify = Arc::new(Notify::new());
            wakers.insert(name.clone(), notify.clone());
            tasks.spawn(deliver_loop(
                name,
                channel,
                ctx.clone(),
                notify,
                stop.clone(),
            ));
        }
        tasks.spawn(dispatch_loop(self.dispatcher, shared, wakers, stop));
    }
}

/// What the dispatcher task reads and writes.
#[derive(Clone)]
pub struct DispatchShared {
    /// Alert state (read).
    pub book: Arc<RwLock<AlertBook>>,
    /// Silences (read).
    pub silences: Arc<RwLock<Vec<Silence>>>,
    /// The config's `inhibit_rules`.
    pub inhibitor: Arc<super::mute::inhibit::Inhibitor>,
    /// Where messages go.
    pub outbox: Arc<Outbox>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Woken when alerts change.
    pub wake: watch::Receiver<u64>,
    /// The time.
    pub clock: Arc<dyn Clock>,
}

/// Turns alert state into grouped messages in the outbox, on every alert change and every
/// second (group timers), until `stop` turns true; wakes the receivers' delivery loops.
pub async fn dispatch_loop(
    mut dispatcher: Dispatcher,
    shared: DispatchShared,
    wakers: HashMap<String, Arc<Notify>>,
    mut stop: watch::Receiver<bool>,
) {
    let DispatchShared {
        book,
        silences,
        inhibitor,
        outbox,
        clock,
        mut wake,
        ..
    } = shared;
    let mut logged_groups = usize::MAX;
    loop {
        let now = clock.now();
        let out = {
            let book = book.read().expect("book lock");
            let silences = silences.read().expect("silences lock");
            let inhibited = if inhibitor.is_empty() {
                Default::default()
            } else {
                inhibitor.inhibited(book.all())
            };
            dispatcher.update(book.all(), &silences, &inhibited, now);
            dispatcher.flush_due(&book, now)
        };
        if !out.is_empty() {
            match outbox.enqueue(&out, now) {
                Ok(()) => {
                    for o in &out {
                        tracing::debug!(receiver = %o.notification.receiver, group = %o.notification.group_key,
                            alerts = o.notification.alerts.len(), "queued a message");
                        if let Some(w) = wakers.get(&o.notification.receiver) {
                            w.notify_one();
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot queue messages in the outbox"),
            }
        }
        // Groups that ended take their log entries with them.
        let keys: Vec<String> = dispatcher.log_keys().cloned().collect();
        if !out.is_empty() || keys.len() != logged_groups {
            match outbox.retain_log(&keys) {
                Ok(()) => logged_groups = keys.len(),
                Err(e) => tracing::error!(error = %e, "cannot prune the notification log"),
            }
        }
        let wait = dispatcher
            .next_due()
            .and_then(|t| (t - clock.now()).to_std().ok())
            .unwrap_or(TICK)
            .min(TICK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = wake.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// `orderwatch notify-test NAME`: sends one sample message straight to receiver `name`
/// (no routing, no outbox), so a new channel can be checked before it is relied on.
pub async fn notify_test(config: &Config, name: &str) -> Result<String, String> {
    use super::channel::Deliver;
    let Some(r) = config.receivers.get(name) else {
        let known: Vec<&str> = config.receivers.keys().map(String::as_str).collect();
        return Err(format!(
            "no receiver {name:?}; configured receivers: {}",
            known.join(", ")
        ));
    };
    let channel = Channel::build(name, &r.value)?;
    let base = config
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let sample = super::message::Notification::sample(name, &base);
    channel.deliver(&sample).await.map_err(|e| e.to_string())?;
    Ok(format!(
        "sent a sample {} message to receiver {name}",
        channel.kind()
    ))
}
