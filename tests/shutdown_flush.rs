//! Shutdown of a delivery loop, in virtual time: once `stop` turns true it still sends the
//! messages already due (keeping the channel's rate limit) for up to `SHUTDOWN_FLUSH`, leaves
//! the rest in the outbox for the next start, and ends.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use orderwatch::alert::Store;
use orderwatch::metrics::Metrics;
use orderwatch::notify::clock::{Clock, TokioClock};
use orderwatch::notify::dispatch::{LogEntry, Outgoing};
use orderwatch::notify::outbox::{
    DeliveryContext, Outbox, RetryPolicy, SHUTDOWN_FLUSH, deliver_loop,
};
use orderwatch::notify::{Deliver, DeliveryError, Notification};
use tokio::sync::{Notify, watch};

/// A channel that takes `each` per message and records the group keys it delivered.
#[derive(Clone)]
struct Slow {
    each: Duration,
    got: Arc<Mutex<Vec<String>>>,
}

impl Deliver for Slow {
    fn kind(&self) -> &'static str {
        "slow"
    }
    fn min_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        tokio::time::sleep(self.each).await;
        self.got.lock().unwrap().push(n.group_key.clone());
        Ok(())
    }
}

/// Queues `n` messages for receiver `r`, starts its delivery loop, lets it send the first,
/// then stops it; returns what was delivered, what is left queued, and how long the loop ran on.
async fn stop_with_queue(n: usize, each: Duration) -> (Vec<String>, i64, Duration) {
    let start = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(Arc::new(Store::open(dir.path()).unwrap().0)).unwrap());
    let items: Vec<Outgoing> = (0..n)
        .map(|i| {
            let mut m = Notification::sample("r", "http://ow");
            m.group_key = format!("g{i}");
            Outgoing {
                notification: m,
                log: LogEntry {
                    firing: BTreeSet::new(),
                    resolved: BTreeSet::new(),
                    at: Some(start),
                },
            }
        })
        .collect();
    outbox.enqueue(&items, start).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let (stop, stop_rx) = watch::channel(false);
    let ctx = DeliveryContext {
        outbox: outbox.clone(),
        metrics: Arc::new(Metrics::new()),
        policy: RetryPolicy::default(),
        clock,
    };
    let channel = Slow {
        each,
        got: got.clone(),
    };
    let task = tokio::spawn(deliver_loop(
        "r".into(),
        channel,
        ctx,
        Arc::new(Notify::new()),
        stop_rx,
    ));
    // The first message goes out at once; stop while the rest wait for the rate limit.
    tokio::time::sleep(each + Duration::from_millis(100)).await;
    assert_eq!(got.lock().unwrap().len(), 1);
    let stopped = tokio::time::Instant::now();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(3600), task)
        .await
        .expect("the loop ends")
        .unwrap();
    let ran_on = stopped.elapsed();
    let left = *outbox.lengths().unwrap().get("r").unwrap_or(&0);
    let delivered = got.lock().unwrap().clone();
    (delivered, left, ran_on)
}

#[tokio::test(start_paused = true)]
async fn due_messages_are_flushed_on_shutdown() {
    let (delivered, left, ran_on) = stop_with_queue(4, Duration::from_millis(10)).await;
    assert_eq!(delivered, vec!["g0", "g1", "g2", "g3"]);
    assert_eq!(left, 0);
    assert!(ran_on < SHUTDOWN_FLUSH, "{ran_on:?}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_channel_is_cut_off_and_the_rest_stays_queued() {
    // 4 s a message: within the 10 s flush, two more go out; the third is cut off mid-delivery.
    let (delivered, left, ran_on) = stop_with_queue(6, Duration::from_secs(4)).await;
    assert_eq!(delivered, vec!["g0", "g1", "g2"], "{ran_on:?}");
    assert_eq!(left, 3, "undelivered messages stay in the outbox");
    assert!(
        ran_on <= SHUTDOWN_FLUSH + Duration::from_millis(1),
        "{ran_on:?}"
    );
}
