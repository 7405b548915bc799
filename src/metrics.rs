//! The registry and every metric the daemon exports. Owned by the daemon and passed in; no
//! globals. Names follow `orderwatch_<thing>_<unit>`; order ids never become labels.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Outcomes of the Alertmanager notifier (`orderwatch_notifications_total{outcome}`).
pub const ALERTMANAGER_OUTCOMES: &[&str] = &["sent", "failed"];
/// Outcomes of a direct receiver.
pub const RECEIVER_OUTCOMES: &[&str] = &["sent", "retry", "rate_limited", "rejected", "expired"];

/// The prometheus crate's process collector, with `process_start_time_seconds` taken from
/// the clock at start when the collector cannot read the boot time (systemd's
/// `ProcSubset=pid`, as the shipped unit sets, hides `/proc/stat`).
#[cfg(target_os = "linux")]
struct Process {
    inner: prometheus::process_collector::ProcessCollector,
    started: f64,
}

#[cfg(target_os = "linux")]
impl Process {
    fn new() -> Process {
        Process {
            inner: prometheus::process_collector::ProcessCollector::for_self(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
                .floor(),
        }
    }
}

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for Process {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.inner.collect();
        for f in &mut families {
            if f.name() == "process_start_time_seconds" {
                for m in f.mut_metric() {
                    if m.get_gauge().get_value() == 0.0 {
                        let mut g = prometheus::proto::Gauge::default();
                        g.set_value(self.started);
                        m.set_gauge(g);
                    }
                }
            }
        }
        families
    }
}

/// Every metric.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// `orderwatch_stuck_orders{rule,source,status,severity}`: exact count per rule and status.
    pub stuck_orders: IntGaugeVec,
    /// `orderwatch_stuck_oldest_age_seconds{rule,source,status,severity}`.
    pub stuck_oldest_age: GaugeVec,
    /// `orderwatch_orders{source,status}`: orders per active status.
    pub orders: IntGaugeVec,
    /// `orderwatch_order_status_oldest_age_seconds{source,status}`.
    pub order_status_oldest_age: GaugeVec,
    /// `orderwatch_source_replication_lag_seconds{source}` (standbys only).
    pub source_replication_lag: GaugeVec,
    /// `orderwatch_source_stale{source}`: a standby beyond `max_replication_lag`.
    pub source_stale: IntGaugeVec,
    /// `orderwatch_orders_unjudgeable{source,status,reason}`: orders in an active status whose
    /// time cannot be read (`null_time`, `future_time`) or whose latest rows tie (`tie`).
    pub orders_unjudgeable: IntGaugeVec,
    /// The `orders_unjudgeable` series set per source, across reloads (so one that goes away
    /// is removed, whichever generation set it).
    pub unjudgeable_series: std::sync::Mutex<
        std::collections::HashMap<String, std::collections::HashSet<(String, &'static str)>>,
    >,
    /// `orderwatch_alerts{rule,state}`: pending and firing alerts.
    pub alerts: IntGaugeVec,
    /// `orderwatch_rule_evaluations_total{rule}`.
    pub rule_evaluations: IntCounterVec,
    /// `orderwatch_rule_evaluation_failures_total{rule}`.
    pub rule_evaluation_failures: IntCounterVec,
    /// `orderwatch_rule_evaluation_duration_seconds{rule}`.
    pub rule_evaluation_duration: HistogramVec,
    /// `orderwatch_rule_last_evaluation_timestamp_seconds{rule}`.
    pub rule_last_evaluation: GaugeVec,
    /// `orderwatch_rule_findings_capped{rule}`: 1 when more orders matched than were fetched.
    pub rule_findings_capped: IntGaugeVec,
    /// `orderwatch_lost_orders_total{source,rule}`: orders a `missing` rule newly found lost.
    pub lost_orders: IntCounterVec,
    /// `orderwatch_source_up{source}`.
    pub source_up: IntGaugeVec,
    /// `orderwatch_http_5xx_ratio{service}`: share of 5xx answers over an `http_errors` window.
    pub http_5xx_ratio: GaugeVec,
    /// `orderwatch_db_slow_queries{source}`: non-analytic queries running over the threshold.
    pub db_slow_queries: IntGaugeVec,
    /// `orderwatch_db_slowest_query_seconds{source}`: how long the slowest of them has run.
    pub db_slowest_query_seconds: GaugeVec,
    /// `orderwatch_notifications_total{notifier,outcome}`.
    pub notifications: IntCounterVec,
    /// `orderwatch_notification_queue_length{notifier}`.
    pub notification_queue_length: IntGaugeVec,
    /// `orderwatch_notification_latency_seconds{notifier}`: from queueing to delivery.
    pub notification_latency: HistogramVec,
    /// `orderwatch_build_info{version}`.
    pub build_info: IntGaugeVec,
    /// `orderwatch_config_last_reload_successful`.
    pub config_last_reload_successful: IntGauge,
    /// `orderwatch_config_last_reload_success_timestamp_seconds`: the start, or the last
    /// reload that succeeded.
    pub config_last_reload_success_timestamp: prometheus::Gauge,
    /// `orderwatch_state_store_recoveries_total`: corrupt state stores moved aside at start.
    pub state_store_recoveries: prometheus::IntCounter,
    /// The order flow families, per source (their label names differ by `flow_label`).
    pub flow: FlowMetrics,
}

/// The order flow's families (kept per source by [`FlowMetrics`], outside the registry).
pub const FLOW_FAMILIES: [&str; 3] = [
    "orderwatch_status_entries_total",
    "orderwatch_status_duration_seconds",
    "orderwatch_flow_duration_seconds",
];

/// Buckets of the order flow histograms, seconds: 1 minute to 4 weeks.
pub const FLOW_BUCKETS: &[f64] = &[
    60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
    172800.0, 259200.0, 432000.0, 604800.0, 1209600.0, 2419200.0,
];

/// One source's order flow families: `orderwatch_status_entries_total{source,status}`,
/// `orderwatch_status_duration_seconds{source,status}` and
/// `orderwatch_flow_duration_seconds{source,flow}`, each with the source's `flow_label`
/// column as a label too when it has one. Clones share the series.
#[derive(Clone)]
pub struct FlowFamilies {
    /// The `flow_label` column, the extra label's name.
    pub label: Option<String>,
    /// Orders that entered each status.
    pub entries: IntCounterVec,
    /// Time an order spent in a status before leaving it.
    pub status_duration: HistogramVec,
    /// Time from a flow's first status to its last.
    pub flow_duration: HistogramVec,
    /// The statuses and label values that became series (capped), and the flows: shared by
    /// every configuration generation, so a reload admits no more than the caps.
    pub admitted: std::sync::Arc<std::sync::Mutex<Admitted>>,
}

/// What [`FlowFamilies`] have let in as label values.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Statuses that became `status` values (without a `statuses` list, capped).
    pub statuses: std::collections::HashSet<String>,
    /// `flow_label` values that became label values (capped).
    pub values: std::collections::HashSet<String>,
    /// The flows the series were made for (a reload that changes them starts the flow
    /// histogram again).
    pub flows: Vec<String>,
}

impl FlowFamilies {
    fn new(label: Option<&str>) -> FlowFamilies {
        let names = |first: &'static str| -> Vec<&str> {
            let mut v = vec!["source", first];
            v.extend(label);
            v
        };
        FlowFamilies {
            label: label.map(str::to_string),
            entries: IntCounterVec::new(Opts::new(FLOW_FAMILIES[0], "Orders that entered each status (in a status log a repeat of the current status is not an entry; in a table a new entered_at is)."), &names("status")).unwrap(),
            status_duration: HistogramVec::new(HistogramOpts::new(FLOW_FAMILIES[1], "Time an order spent in a status before leaving it: exact for a status log; for a table, from when the daemon saw it enter.").buckets(FLOW_BUCKETS.to_vec()), &names("status")).unwrap(),
            flow_duration: HistogramVec::new(HistogramOpts::new(FLOW_FAMILIES[2], "Time from a flow's first status to its last (the flows of the main config), per order that reached both.").buckets(FLOW_BUCKETS.to_vec()), &names("flow")).unwrap(),
            admitted: Default::default(),
        }
    }
}

/// The order flow families of every observed source. Sources may carry different label
/// names (each its own `flow_label`), which one registered vector cannot: each source has
/// its own vectors, merged into one family per name when `/metrics` is rendered.
#[derive(Default)]
pub struct FlowMetrics {
    sources: std::sync::Mutex<std::collections::BTreeMap<String, FlowFamilies>>,
}

impl FlowMetrics {
    /// `source`'s families, made when it has none or its label changed (a reload).
    pub fn source(&self, source: &str, label: Option<&str>) -> FlowFamilies {
        let mut m = self.sources.lock().expect("flow metrics");
        match m.get(source) {
            Some(f) if f.label.as_deref() == label => f.clone(),
            _ => {
                let f = FlowFamilies::new(label);
                m.insert(source.to_string(), f.clone());
                f
            }
        }
    }

    /// Drops the families of sources not in `keep` (no longer configured or observed).
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        self.sources
            .lock()
            .expect("flow metrics")
            .retain(|name, _| keep.contains(name));
    }

    /// Every family, one per name, its series from every source.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        let m = self.sources.lock().expect("flow metrics");
        let mut by_name: std::collections::BTreeMap<String, prometheus::proto::MetricFamily> =
            Default::default();
        for f in m.values() {
            let families = f
                .entries
                .collect()
                .into_iter()
                .chain(f.status_duration.collect())
                .chain(f.flow_duration.collect());
            for mut fam in families {
                if fam.get_metric().is_empty() {
                    continue;
                }
                match by_name.get_mut(fam.name()) {
                    Some(into) => into.mut_metric().extend(fam.take_metric()),
                    None => {
                        by_name.insert(fam.name().to_string(), fam);
                    }
                }
            }
        }
        // In label order, as the registry renders its own families.
        let mut out: Vec<prometheus::proto::MetricFamily> = by_name.into_values().collect();
        for fam in &mut out {
            fam.mut_metric().sort_by_cached_key(|m| {
                m.get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect::<Vec<_>>()
            });
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let rss = ["rule", "source", "status", "severity"];
        let m = Metrics {
            stuck_orders: reg(&r, IntGaugeVec::new(Opts::new("orderwatch_stuck_orders", "Orders a rule finds stuck, per status (exact count)."), &rss).unwrap()),
            stuck_oldest_age: reg(&r, GaugeVec::new(Opts::new("orderwatch_stuck_oldest_age_seconds", "Age in the status of the oldest order a rule finds stuck."), &rss).unwrap()),
            orders: reg(&r, IntGaugeVec::new(Opts::new("orderwatch_orders", "Orders per active (non-terminal) status."), &["source", "status"]).unwrap()),
            order_status_oldest_age: reg(&r, GaugeVec::new(Opts::new("orderwatch_order_status_oldest_age_seconds", "Age of the oldest order in each active status."), &["source", "status"]).unwrap()),
            source_replication_lag: reg(&r, GaugeVec::new(Opts::new("orderwatch_source_replication_lag_seconds", "How far a standby source is behind its primary: 0 while it streams and has replayed all it received."), &["source"]).unwrap()),
            source_stale: reg(&r, IntGaugeVec::new(Opts::new("orderwatch_source_stale", "1 while a standby source lags beyond max_replication_lag: its rules neither fire nor resolve."), &["source"]).unwrap()),
            orders_unjudgeable: reg(&r, IntGaugeVec::new(Opts::new("orderwatch_orders_unjudgeable", "Orders in an active status that no rule can judge: no time (null_time), a time in the future (future_time), or latest rows that tie (tie)."), &["source", "status", "reason"]).unwrap()),
            unjudgeable_series: Default::default(),
            alerts: reg(&r, IntGaugeVec::new(Opts::new("orderwatch_alerts", "Alerts per rule and state."), &["rule", "state"]).unwrap()),
            rule_evaluations: reg(&r, IntCounterVec::new(Opts::new("orderwatch_rule_evaluations_total", "Rule evaluations."), &["rule"]).unwrap()),
            rule_evaluation_failures: reg(&r, IntCounterVec::new(Opts::new("orderwatch_rule_evaluation_failures_total", "Rule evaluations that failed (source unreachable, query error)."), &["rule"]).unwrap()),
            rule_evaluation_duration: reg(&r, HistogramVec::new(HistogramOpts::new("orderwatch_rule_evaluation_duration_seconds", "Duration of rule evaluations.").buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]), &["rule"]).unwrap()),
            rule_last_evaluation: reg(&r, GaugeVec::new(Opts::new("orderwatch_rule_last_evaluation_timestamp_seconds", "Unix time of the last successful evaluation."), &["rule"]).unwrap()),
            lost_orders: reg(&r, IntCounterVec::new(Opts::new("orderwatch_lost_orders_total", "Orders a missing rule newly found lost (absent from the other source), each once per episode; over max_alerts they are counted in the overflow alert, not here."), &["source", "rule"]).unwrap()),
            rule_findings_capped: reg(&r, IntGaugeVec::new(Opts::new("orderwatch_rule_findings_capped", "1 when a rule matched more orders than it fetches (max_findings); counts stay exact."), &["rule"]).unwrap()),
            source_up: reg(&r, IntGaugeVec::new(Opts::new("orderwatch_source_up", "1 when the last query to the source succeeded."), &["source"]).unwrap()),
            http_5xx_ratio: reg(&r, GaugeVec::new(Opts::new("orderwatch_http_5xx_ratio", "Share of HTTP 5xx answers per service over an http_errors rule's window."), &["service"]).unwrap()),
            db_slow_queries: reg(&r, IntGaugeVec::new(Opts::new("orderwatch_db_slow_queries", "Active non-analytic queries running longer than a slow_queries rule's threshold."), &["source"]).unwrap()),
            db_slowest_query_seconds: reg(&r, GaugeVec::new(Opts::new("orderwatch_db_slowest_query_seconds", "Run time of the slowest such query (0 when none)."), &["source"]).unwrap()),
            notifications: reg(&r, IntCounterVec::new(Opts::new("orderwatch_notifications_total", "Notification attempts by outcome: sent, failed (Alertmanager), retry, rate_limited, rejected, expired."), &["notifier", "outcome"]).unwrap()),
            notification_queue_length: reg(&r, IntGaugeVec::new(Opts::new("orderwatch_notification_queue_length", "Notifications waiting to be delivered."), &["notifier"]).unwrap()),
            notification_latency: reg(&r, HistogramVec::new(HistogramOpts::new("orderwatch_notification_latency_seconds", "Time from queueing a notification to its delivery.").buckets(vec![0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0]), &["notifier"]).unwrap()),
            build_info: reg(&r, IntGaugeVec::new(Opts::new("orderwatch_build_info", "Build information."), &["version"]).unwrap()),
            config_last_reload_successful: reg(&r, IntGauge::new("orderwatch_config_last_reload_successful", "1 when the last configuration load succeeded.").unwrap()),
            config_last_reload_success_timestamp: reg(&r, prometheus::Gauge::new("orderwatch_config_last_reload_success_timestamp_seconds", "Unix time of the last successful configuration load (the start or a reload).").unwrap()),
            state_store_recoveries: reg(&r, prometheus::IntCounter::new("orderwatch_state_store_recoveries_total", "Corrupt state stores moved aside at start (a fresh store was started; firing alerts were announced again).").unwrap()),
            flow: FlowMetrics::default(),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m.config_last_reload_successful.set(1);
        // The standard process_* metrics (CPU, memory, open files, start time), as every
        // Prometheus client library exports them.
        #[cfg(target_os = "linux")]
        let _ = m.registry.register(Box::new(Process::new()));
        m
    }

    /// Every outcome of `notifier` at 0, so `increase()` sees the first failure.
    pub fn init_notifier(&self, notifier: &str, outcomes: &[&str]) {
        for o in outcomes {
            self.notifications.with_label_values(&[notifier, o]);
        }
    }

    /// Records a configuration load (at start or a reload): whether it succeeded, and when
    /// the last one that did.
    pub fn config_loaded(&self, ok: bool) {
        self.config_last_reload_successful.set(ok as i64);
        if !ok {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.config_last_reload_success_timestamp
            .set(now.as_secs_f64().floor());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.flow.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        TextEncoder::new()
            .encode(&families, &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}
