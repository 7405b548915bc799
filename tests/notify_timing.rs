//! Routing, grouping, repeat, mute windows and silences in virtual time
//! (`tokio::time::pause`): the real dispatcher task, the real outbox in SQLite and the real
//! delivery loop, with a channel that records what it is given and when.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use orderwatch::alert::{AlertBook, Coverage, Observation, RuleTiming, Store};
use orderwatch::config::{RouteConfig, TimeIntervalConfig};
use orderwatch::metrics::Metrics;
use orderwatch::notify::clock::{Clock, TokioClock};
use orderwatch::notify::direct::{DispatchShared, dispatch_loop};
use orderwatch::notify::dispatch::Dispatcher;
use orderwatch::notify::mute::silence::Silence;
use orderwatch::notify::outbox::{DeliveryContext, Outbox, RetryPolicy, deliver_loop};
use orderwatch::notify::routing::route::{Route, TimeWindow};
use orderwatch::notify::{Deliver, DeliveryError, Notification};
use tokio::sync::{Notify, watch};

/// Messages with the (virtual) time they were delivered.
type Inbox = Arc<Mutex<Vec<(DateTime<Utc>, Notification)>>>;

/// A channel that records each message with the (virtual) time it was delivered.
#[derive(Clone)]
struct Recorder {
    got: Inbox,
    clock: Arc<dyn Clock>,
}

impl Deliver for Recorder {
    fn kind(&self) -> &'static str {
        "recorder"
    }
    fn min_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        self.got.lock().unwrap().push((self.clock.now(), n.clone()));
        Ok(())
    }
}

struct World {
    start: DateTime<Utc>,
    book: Arc<RwLock<AlertBook>>,
    silences: Arc<RwLock<Vec<Silence>>>,
    wake: watch::Sender<u64>,
    got: Inbox,
    clock: Arc<dyn Clock>,
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

const ROUTE: &str = r#"
receiver: oncall
group_by: [rule]
group_wait: 30s
group_interval: 5m
repeat_interval: 4h
routes:
  - matchers: ['severity="warning"']
    receiver: oncall
    mute_time_intervals: [night]
"#;

impl World {
    fn start() -> World {
        // Tuesday 2026-11-24 12:00 UTC.
        let start = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap().0);
        let outbox = Arc::new(Outbox::open(store).unwrap());
        let cfg: RouteConfig = serde_saphyr::from_str(ROUTE).unwrap();
        let root = Route::build(&cfg, None, "0".into(), &mut Vec::new());
        let night: TimeIntervalConfig =
            serde_saphyr::from_str("times: [{start_time: '22:00', end_time: '24:00'}, {start_time: '00:00', end_time: '08:00'}]")
                .unwrap();
        let windows =
            HashMap::from([("night".to_string(), vec![TimeWindow::new(&night).unwrap()])]);
        let dispatcher = Dispatcher::new(root, windows, HashMap::new(), "http://ow".into());
        let book = Arc::new(RwLock::new(AlertBook::default()));
        let silences = Arc::new(RwLock::new(Vec::new()));
        let (wake, wake_rx) = watch::channel(0u64);
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let got = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        let recorder = Recorder {
            got: got.clone(),
            clock: clock.clone(),
        };
        let ctx = DeliveryContext {
            outbox: outbox.clone(),
            metrics: metrics.clone(),
            policy: RetryPolicy::default(),
            clock: clock.clone(),
        };
        tokio::spawn(deliver_loop(
            "oncall".into(),
            recorder,
            ctx,
            notify.clone(),
            stop_rx.clone(),
        ));
        let shared = DispatchShared {
            book: book.clone(),
            silences: silences.clone(),
            inhibitor: Default::default(),
            outbox,
            metrics,
            wake: wake_rx,
            clock: clock.clone(),
        };
        tokio::spawn(dispatch_loop(
            dispatcher,
            shared,
            HashMap::from([("oncall".to_string(), notify)]),
            stop_rx,
        ));
        World {
            start,
            book,
            silences,
            wake,
            got,
            clock,
            _dir: dir,
            _stop: stop,
        }
    }

    /// One evaluation of `rule` finding `orders` (all others of the rule are gone).
    fn evaluate(&self, rule: &str, severity: &str, orders: &[&str]) {
        let now = self.clock.now();
        let obs = orders
            .iter()
            .map(|id| Observation {
                key: (*id).into(),
                labels: BTreeMap::from([
                    ("alertname".to_string(), "StuckOrder".to_string()),
                    ("rule".into(), rule.into()),
                    ("severity".into(), severity.into()),
                    ("order_id".into(), id.to_string()),
                ])
                .into(),
                notes: Default::default(),
                starts_at: now,
                entered_at: Some(now - chrono::Duration::hours(2)),
                may_create: true,
            })
            .collect();
        let timing = RuleTiming {
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            interval: Duration::from_secs(30),
        };
        self.book
            .write()
            .unwrap()
            .apply(rule, timing, now, obs, Coverage::All);
        self.wake.send_modify(|v| *v += 1);
    }

    /// Messages so far: (seconds since start, rule, firing ids, resolved ids).
    fn messages(&self) -> Vec<(i64, String, Vec<String>, Vec<String>)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(t, n)| {
                let ids = |s: &str| {
                    n.alerts
                        .iter()
                        .filter(|a| a.status.as_str() == s)
                        .map(|a| a.labels["order_id"].clone())
                        .collect()
                };
                (
                    (*t - self.start).num_seconds(),
                    n.group_labels["rule"].clone(),
                    ids("firing"),
                    ids("resolved"),
                )
            })
            .collect()
    }

    async fn sleep_until(&self, secs: i64) {
        let now = (self.clock.now() - self.start).num_seconds();
        tokio::time::sleep(Duration::from_secs((secs - now).max(0) as u64)).await;
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn group_wait_interval_repeat_and_resolution() {
    let w = World::start();
    w.evaluate("submitted_over_1h", "critical", &["A", "B"]);
    w.sleep_until(29).await;
    assert!(
        w.messages().is_empty(),
        "group_wait holds the first message"
    );
    w.sleep_until(32).await;
    assert_eq!(
        w.messages(),
        vec![(30, "submitted_over_1h".into(), ids(&["A", "B"]), vec![])]
    );

    // A third order: told at the next group_interval (t = 330), in one message.
    w.sleep_until(60).await;
    w.evaluate("submitted_over_1h", "critical", &["A", "B", "C"]);
    w.sleep_until(329).await;
    assert_eq!(w.messages().len(), 1);
    w.sleep_until(332).await;
    assert_eq!(
        w.messages()[1],
        (
            330,
            "submitted_over_1h".into(),
            ids(&["A", "B", "C"]),
            vec![]
        )
    );

    // Unchanged: repeated after repeat_interval (4 h after the last message), not before.
    w.sleep_until(330 + 4 * 3600 - 10).await;
    assert_eq!(w.messages().len(), 2);
    w.sleep_until(330 + 4 * 3600 + 310).await;
    let m = w.messages();
    assert_eq!(m.len(), 3);
    assert!(
        (330 + 4 * 3600..=330 + 4 * 3600 + 300).contains(&m[2].0),
        "repeat at {}",
        m[2].0
    );

    // B recovers: one message naming it.
    let t = (w.clock.now() - w.start).num_seconds();
    w.evaluate("submitted_over_1h", "critical", &["A", "C"]);
    w.sleep_until(t + 310).await;
    let m = w.messages();
    assert_eq!(m.len(), 4);
    assert_eq!(
        (m[3].2.clone(), m[3].3.clone()),
        (ids(&["A", "C"]), ids(&["B"]))
    );
}

#[tokio::test(start_paused = true)]
async fn warnings_wait_out_the_night_and_criticals_do_not() {
    let w = World::start();
    // 22:00:10 UTC: both rules start firing.
    w.sleep_until(10 * 3600 + 10).await;
    w.evaluate("packaging_over_1d", "warning", &["P1"]);
    w.evaluate("submitted_over_1h", "critical", &["S1"]);
    // The critical goes out after group_wait; the warning's route is muted from 22:00.
    w.sleep_until(11 * 3600).await;
    let m = w.messages();
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].1, "submitted_over_1h");
    // The critical keeps repeating every 4 h through the night; the warning waits for 08:00
    // and goes out at the first group tick after it.
    let warnings = |w: &World| {
        w.messages()
            .into_iter()
            .filter(|m| m.1 == "packaging_over_1d")
            .collect::<Vec<_>>()
    };
    w.sleep_until(20 * 3600 - 60).await;
    assert!(warnings(&w).is_empty());
    assert_eq!(w.messages().len(), 3, "critical at 22:00, 02:00, 06:00");
    w.sleep_until(20 * 3600 + 301).await;
    let m = warnings(&w);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        (20 * 3600..=20 * 3600 + 300).contains(&m[0].0),
        "delivered at {}",
        m[0].0
    );
}

#[tokio::test(start_paused = true)]
async fn silences_hold_back_matching_orders() {
    let w = World::start();
    let now = w.clock.now();
    w.silences.write().unwrap().push(Silence::new(
        vec!["order_id=\"A\"".parse().unwrap()],
        now,
        now + chrono::Duration::minutes(20),
        "calling the customer",
        "anna",
    ));
    w.evaluate("submitted_over_1h", "critical", &["A", "B"]);
    w.sleep_until(40).await;
    assert_eq!(
        w.messages(),
        vec![(30, "submitted_over_1h".into(), ids(&["B"]), vec![])]
    );
    // The silence ends at 20 min: A is new, announced at the next group tick.
    w.sleep_until(20 * 60 + 310).await;
    let m = w.messages();
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[1].2, ids(&["A", "B"]));
    assert!((1200..=1500).contains(&m[1].0), "at {}", m[1].0);
}
