//! The durable outbox: every message for a direct channel is written to the state store (with
//! the group's notification log, in one transaction) before anyone tries to send it, and
//! deleted only once delivered, rejected or too old. One delivery loop per receiver takes its
//! messages in order: connection errors and 5xx are retried with exponential backoff and
//! jitter, a 429 waits for `Retry-After`, other 4xx are logged with the response and dropped,
//! and the service's rate limit is kept. A restart resumes where it stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use chrono::Utc;
use rand::Rng;
use rusqlite::{OptionalExtension, params};
use tokio::sync::{Notify, watch};

use super::channel::{Deliver, DeliveryError};
use super::clock::Clock;
use super::dispatch::{LogEntry, Outgoing};
use super::message::Notification;
use super::mute::silence::Silence;
use crate::alert::{Store, StoreError};
use crate::metrics::Metrics;

/// One queued message.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Row id (delivery order).
    pub id: i64,
    /// The message.
    pub notification: Notification,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this.
    pub next_attempt_at: DateTime<Utc>,
}

/// Retry policy of the delivery loops.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// A message still undelivered after this long is dropped (and counted as `expired`).
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// Backoff before attempt `attempts + 1`: doubling from `initial_backoff`, capped, with
    /// "equal jitter" (half fixed, half random) so many daemons do not retry in step.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempts.min(20))
            .min(self.max_backoff);
        let half = exp / 2;
        half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

/// The outbox tables in the state store.
pub struct Outbox {
    store: Arc<Store>,
}

impl Outbox {
    /// Creates the tables if needed.
    pub fn open(store: Arc<Store>) -> Result<Outbox, StoreError> {
        store.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS outbox (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     receiver TEXT NOT NULL,
                     body TEXT NOT NULL,
                     created_at INTEGER NOT NULL,
                     attempts INTEGER NOT NULL DEFAULT 0,
                     next_attempt_at INTEGER NOT NULL,
                     last_error TEXT);
                 CREATE INDEX IF NOT EXISTS outbox_receiver ON outbox (receiver, id);
                 CREATE TABLE IF NOT EXISTS nflog (group_key TEXT PRIMARY KEY, body TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, body TEXT NOT NULL);",
            )
        })?;
        Ok(Outbox { store })
    }

    /// Queues messages and records the groups' logs, atomically.
    pub fn enqueue(&self, items: &[Outgoing], now: DateTime<Utc>) -> Result<(), StoreError> {
        let rows: Vec<(String, String, String, String)> = items
            .iter()
            .map(|o| {
                Ok((
                    o.notification.receiver.clone(),
                    serde_json::to_string(&o.notification)?,
                    o.notification.group_key.clone(),
                    serde_json::to_string(&o.log)?,
                ))
            })
            .collect::<Result<_, serde_json::Error>>()?;
        self.store.with(|c| {
            let tx = c.transaction()?;
            for (receiver, body, key, log) in &rows {
                tx.execute(
                    "INSERT INTO outbox (receiver, body, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?3)",
                    params![receiver, body, ms(now)],
                )?;
                tx.execute(
                    "INSERT INTO nflog (group_key, body) VALUES (?1, ?2)
                     ON CONFLICT (group_key) DO UPDATE SET body = excluded.body",
                    params![key, log],
                )?;
            }
            tx.commit()
        })
    }

    /// The notification log, as persisted.
    pub fn load_log(&self) -> Result<HashMap<String, LogEntry>, StoreError> {
        let rows: Vec<(String, String)> = self.store.with(|c| {
            let mut st = c.prepare("SELECT group_key, body FROM nflog")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        })?;
        rows.into_iter()
            .map(|(k, b)| Ok((k, serde_json::from_str(&b)?)))
            .collect()
    }

    /// Forgets log entries of groups that no longer exist.
    pub fn retain_log(&self, keep: &[String]) -> Result<(), StoreError> {
        let keep = serde_json::to_string(keep)?;
        self.store.with(|c| {
            c.execute(
                "DELETE FROM nflog WHERE group_key NOT IN (SELECT value FROM json_each(?1))",
                params![keep],
            )
            .map(|_| ())
        })
    }

    /// The oldest queued message of `receiver`.
    pub fn head(&self, receiver: &str) -> Result<Option<Queued>, StoreError> {
        let row: Option<(i64, String, i64, u32, i64)> = self.store.with(|c| {
            c.query_row(
                "SELECT id, body, created_at, attempts, next_attempt_at FROM outbox WHERE receiver = ?1 ORDER BY id LIMIT 1",
                params![receiver],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
        })?;
        row.map(|(id, body, created, attempts, next)| {
            Ok(Queued {
                id,
                notification: serde_json::from_str(&body)?,
                created_at: from_ms(created),
                attempts,
                next_attempt_at: from_ms(next),
            })
        })
        .transpose()
    }

    /// Removes a message (delivered, rejected or expired).
    pub fn remove(&self, id: i64) -> Result<(), StoreError> {
        self.store.with(|c| {
            c.execute("DELETE FROM outbox WHERE id = ?1", params![id])
                .map(|_| ())
        })
    }

    /// Records a failed attempt.
    pub fn postpone(
        &self,
        id: i64,
        attempts: u32,
        next: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.store.with(|c| {
            c.execute(
                "UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE id = ?1",
                params![id, attempts, ms(next), error],
            )
            .map(|_| ())
        })
    }

    /// Messages waiting, per receiver.
    pub fn lengths(&self) -> Result<HashMap<String, i64>, StoreError> {
        self.store.with(|c| {
            let mut st = c.prepare("SELECT receiver, count(*) FROM outbox GROUP BY receiver")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        })
    }

    /// Every stored silence.
    pub fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        let bodies: Vec<String> = self.store.with(|c| {
            let mut st = c.prepare("SELECT body FROM silences")?;
            st.query_map([], |r| r.get(0))?.collect()
        })?;
        let mut out = Vec::new();
        for b in &bodies {
            // Checked before the matchers are compiled: a silence stored by an older version
            // with thousands of regexes must not cost the start minutes and gigabytes.
            let v: serde_json::Value = serde_json::from_str(b)?;
            let matchers = v["matchers"].as_array().map_or(0, Vec::len);
            let longest = v["matchers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str())
                .map(str::len)
                .max()
                .unwrap_or(0);
            if matchers > super::mute::silence::MAX_MATCHERS
                || longest > 2 * super::mute::silence::MAX_MATCHER_BYTES + 8
            {
                tracing::warn!(
                    silence = v["id"].as_str().unwrap_or("?"),
                    matchers,
                    "stored silence is beyond the bounds (at most 100 matchers of 1 KiB); dropped"
                );
                continue;
            }
            // A silence that does not load is skipped, never a reason not to start.
            let silence: Silence = match serde_json::from_value(v) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "stored silence does not load; dropped");
                    continue;
                }
            };
            if !silence.within_bounds() {
                tracing::warn!(silence = %silence.id, "stored silence is beyond the bounds (at most 1 year); dropped");
            } else if silence.ends_at < chrono::Utc::now() - super::mute::silence::RETENTION {
                // Expired for longer than the retention: deleted, as Alertmanager does.
                let _ = self.delete_silence(&silence.id);
            } else {
                out.push(silence);
            }
        }
        Ok(out)
    }

    /// Deletes a silence.
    pub fn delete_silence(&self, id: &str) -> Result<(), StoreError> {
        self.store.with(|c| {
            c.execute("DELETE FROM silences WHERE id = ?1", [id])
                .map(drop)
        })
    }

    /// Creates or replaces a silence.
    pub fn put_silence(&self, s: &Silence) -> Result<(), StoreError> {
        let body = serde_json::to_string(s)?;
        self.store.with(|c| {
            c.execute(
                "INSERT INTO silences (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                params![s.id, body],
            )
            .map(|_| ())
        })
    }
}

/// What a delivery loop needs besides its channel.
#[derive(Clone)]
pub struct DeliveryContext {
    /// The outbox.
    pub outbox: Arc<Outbox>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Retries.
    pub policy: RetryPolicy,
    /// The time.
    pub clock: Arc<dyn Clock>,
}

/// How long a delivery loop keeps sending messages that are already due once shutdown has
/// begun; what is left stays in the outbox for the next start.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// Delivers the outbox messages of one receiver until `stop` turns true, then those already
/// due for up to [`SHUTDOWN_FLUSH`].
pub async fn deliver_loop<D: Deliver>(
    receiver: String,
    channel: D,
    ctx: DeliveryContext,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let DeliveryContext {
        outbox,
        metrics,
        policy,
        clock,
    } = ctx;
    let name = receiver.as_str();
    let mut last_sent: Option<tokio::time::Instant> = None;
    // Set once `stop` turns true: until then, messages already due are still sent.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        if drain_until.is_none() && *stop.borrow() {
            drain_until = Some(tokio::time::Instant::now() + SHUTDOWN_FLUSH);
        }
        if drain_until.is_some_and(|d| tokio::time::Instant::now() >= d) {
            tracing::warn!(
                receiver = name,
                "shutdown flush timed out; the rest waits in the outbox"
            );
            return;
        }
        if let Ok(lengths) = outbox.lengths() {
            metrics
                .notification_queue_length
                .with_label_values(&[name])
                .set(*lengths.get(name).unwrap_or(&0));
        }
        let head = match outbox.head(name) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(receiver = name, error = %e, "outbox unreadable");
                None
            }
        };
        let now = clock.now();
        let wait = match &head {
            None => None,
            Some(q) if q.next_attempt_at > now => {
                Some((q.next_attempt_at - now).to_std().unwrap_or_default())
            }
            Some(_) => {
                // Keep the service's rate limit (e.g. about one message a second per chat).
                let gap = channel.min_interval();
                last_sent
                    .map(|t| gap.saturating_sub(t.elapsed()))
                    .filter(|d| !d.is_zero())
            }
        };
        if let Some(deadline) = drain_until {
            // Shutting down: send what is due (keeping the rate limit), leave the rest queued.
            let due = head.as_ref().is_some_and(|q| q.next_attempt_at <= now);
            match wait {
                _ if !due => return,
                Some(gap) if tokio::time::Instant::now() + gap >= deadline => return,
                Some(gap) => {
                    tokio::time::sleep(gap).await;
                    continue;
                }
                None => {}
            }
        } else if head.is_none() || wait.is_some() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let q = head.expect("checked above");
        let age = (now - q.created_at).to_std().unwrap_or_default();
        if age > policy.max_age {
            tracing::warn!(receiver = name, group = %q.notification.group_key, attempts = q.attempts, "dropping a message older than max_age");
            metrics
                .notifications
                .with_label_values(&[name, "expired"])
                .inc();
            let _ = outbox.remove(q.id);
            continue;
        }
        let started = tokio::time::Instant::now();
        let span = tracing::info_span!(
            "notify",
            receiver = name,
            kind = channel.kind(),
            alerts = q.notification.alerts.len(),
            attempt = q.attempts + 1,
            otel.kind = "client",
            error = tracing::field::Empty
        );
        let delivery =
            tracing::Instrument::instrument(channel.deliver(&q.notification), span.clone());
        let result = match drain_until {
            None => delivery.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, delivery).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        receiver = name,
                        "shutdown flush timed out during a delivery; the message stays queued"
                    );
                    return;
                }
            },
        };
        last_sent = Some(tokio::time::Instant::now());
        if let Err(e) = &result {
            span.record("error", tracing::field::display(e));
        }
        let outcome = match result {
            Ok(()) => {
                metrics
                    .notification_latency
                    .with_label_values(&[name])
                    .observe(age.as_secs_f64() + started.elapsed().as_secs_f64());
                if q.attempts > 0 {
                    tracing::info!(
                        receiver = name,
                        attempts = q.attempts,
                        "delivered after retries"
                    );
                }
                outbox.remove(q.id).map(|_| "sent")
            }
            Err(DeliveryError::Permanent(detail)) => {
                tracing::warn!(receiver = name, kind = channel.kind(), group = %q.notification.group_key, response = %detail, "message rejected; not retrying");
                outbox.remove(q.id).map(|_| "rejected")
            }
            Err(e) => {
                let backoff = policy.backoff(q.attempts);
                let (delay, outcome) = match &e {
                    DeliveryError::RateLimited {
                        retry_after: Some(d),
                        ..
                    } => (*d, "rate_limited"),
                    DeliveryError::RateLimited { .. } => (backoff, "rate_limited"),
                    _ => (backoff, "retry"),
                };
                if q.attempts == 0 {
                    tracing::warn!(receiver = name, kind = channel.kind(), error = %e, retry_in = ?delay, "delivery failed; will retry");
                } else {
                    tracing::debug!(receiver = name, error = %e, attempts = q.attempts + 1, retry_in = ?delay, "delivery failed again");
                }
                let next = clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
                outbox
                    .postpone(q.id, q.attempts + 1, next, &e.to_string())
                    .map(|_| outcome)
            }
        };
        match outcome {
            Ok(o) => metrics.notifications.with_label_values(&[name, o]).inc(),
            Err(e) => tracing::error!(receiver = name, error = %e, "outbox update failed"),
        }
    }
}
