//! The Alertmanager notifier, with Prometheus's own semantics: firing alerts are re-sent every
//! `resend_delay` with `endsAt = now + 4 × max(interval, resend_delay)`; resolved alerts are
//! sent with `endsAt` = resolution time and re-sent while they are retained (15 minutes);
//! batches hold at most 256 alerts; every URL gets every alert, and what a URL did not accept
//! is retried with backoff until it does.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::alert::{Alert, AlertBook, AlertState};
use crate::config::AlertmanagerConfig;
use crate::metrics::Metrics;
use crate::outbound::error_chain;

/// Maximum alerts per POST (Prometheus's `maxBatchSize`).
pub const MAX_BATCH: usize = 256;
const NAME: &str = "alertmanager";

/// One alert as `POST /api/v2/alerts` takes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PostableAlert {
    /// Identifying labels.
    pub labels: crate::labels::Labels,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// When the condition began.
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// When Alertmanager may consider it resolved.
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    /// Link back to us.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The Alertmanager form of an alert at `now`.
pub fn to_postable(
    a: &Alert,
    now: DateTime<Utc>,
    resend: Duration,
    base_url: &str,
) -> PostableAlert {
    let ends_at = match a.state {
        AlertState::Resolved => a.resolved_at.unwrap_or(now),
        _ => {
            let valid = 4 * Duration::from_secs(a.interval_secs).max(resend);
            now + chrono::Duration::from_std(valid).unwrap_or(chrono::Duration::minutes(4))
        }
    };
    PostableAlert {
        labels: a.labels.clone(),
        annotations: a.annotations_at(now),
        starts_at: ts(a.starts_at),
        ends_at: ts(ends_at),
        generator_url: format!(
            "{}/api/v1/alerts?rule={}",
            base_url.trim_end_matches('/'),
            a.rule
        ),
    }
}

/// Delivery bookkeeping of one Alertmanager URL, without a record per alert: it has every
/// alert up to the book's version `delivered` ([`Alert::version`]), and everything as of
/// `everything_at`. Due: what changed since, and everything once `resend_delay` has passed
/// (Prometheus re-sends every active alert each `resendDelay` alike).
#[derive(Default)]
struct Delivery {
    delivered: u64,
    everything_at: Option<DateTime<Utc>>,
    failures: u32,
}

/// Pushes alerts to every configured Alertmanager.
pub struct AlertmanagerNotifier {
    urls: Vec<String>,
    auth: Option<crate::config::HttpAuth>,
    resend: Duration,
    client: reqwest::Client,
    book: Arc<RwLock<AlertBook>>,
    metrics: Arc<Metrics>,
    base_url: String,
}

impl AlertmanagerNotifier {
    /// A notifier over the shared alert book.
    pub fn new(
        cfg: &AlertmanagerConfig,
        book: Arc<RwLock<AlertBook>>,
        metrics: Arc<Metrics>,
        base_url: String,
    ) -> Result<Self, reqwest::Error> {
        crate::tls::ensure_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout.0)
            .user_agent(concat!("orderwatch/", env!("CARGO_PKG_VERSION")));
        // Validated (files read, config built) at load: a failure here cannot happen.
        if let Some(tls) = cfg.resolved_tls.as_ref().and_then(|t| t.config().ok()) {
            builder = builder.use_preconfigured_tls(tls);
        }
        let client = builder.build()?;
        Ok(AlertmanagerNotifier {
            urls: cfg
                .urls
                .iter()
                .map(|u| u.value.trim_end_matches('/').to_string())
                .collect(),
            resend: cfg.resend_delay.0,
            auth: cfg.resolved_auth.clone(),
            client,
            book,
            metrics,
            base_url,
        })
    }

    /// Runs until `shutdown` turns true; on shutdown makes one last attempt to deliver.
    fn authorized(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(crate::config::HttpAuth::Basic(u, p)) => r.basic_auth(u, Some(p)),
            Some(crate::config::HttpAuth::Header(kind, c)) => {
                r.header(reqwest::header::AUTHORIZATION, format!("{kind} {c}"))
            }
            None => r,
        }
    }

    pub async fn run(self, mut wake: watch::Receiver<u64>, mut shutdown: watch::Receiver<bool>) {
        let mut deliveries: Vec<Delivery> = self.urls.iter().map(|_| Delivery::default()).collect();
        loop {
            let now = Utc::now();
            let mut next = self.resend;
            for (url, d) in self.urls.iter().zip(deliveries.iter_mut()) {
                self.deliver(url, d, now).await;
                if d.failures > 0 {
                    // Retry sooner than the resend delay: 1 s, 2 s, 4 s … capped by it.
                    let backoff = Duration::from_secs(1u64 << d.failures.min(6)).min(self.resend);
                    next = next.min(backoff);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                r = wake.changed() => if r.is_err() { break },
                _ = shutdown.changed() => {
                    let now = Utc::now();
                    for (url, d) in self.urls.iter().zip(deliveries.iter_mut()) {
                        self.deliver(url, d, now).await;
                    }
                    break;
                }
            }
        }
    }

    /// Sends what `url` needs now: new or changed alerts, and everything due for a re-send.
    /// The book is walked in order, one batch at a time: each batch is built and encoded under
    /// the book's read lock, sent without it, and only then is the next one built, so memory
    /// follows the batch (256 alerts), not the book.
    async fn deliver(&self, url: &str, d: &mut Delivery, now: DateTime<Utc>) {
        let resend =
            chrono::Duration::from_std(self.resend).unwrap_or(chrono::Duration::minutes(1));
        let everything = d.everything_at.is_none_or(|at| now - at >= resend);
        let delivered = d.delivered;
        let is_due =
            |a: &Alert| a.state != AlertState::Pending && (everything || a.version > delivered);
        // First, off the async workers: count what is due, as of which version.
        let (mut queued, through) = crate::blocking::off_worker(|| {
            let book = self.book.read().expect("alert book lock");
            (book.all().filter(|a| is_due(a)).count(), book.version())
        });
        let queue = self
            .metrics
            .notification_queue_length
            .with_label_values(&[NAME]);
        queue.set(queued as i64);
        let mut cursor: Option<(String, String)> = None;
        let (mut failed, mut sent_any) = (false, false);
        loop {
            // One batch: the next due alerts after the cursor, encoded.
            let (body, n, walked_to) = crate::blocking::off_worker(|| {
                let book = self.book.read().expect("alert book lock");
                let mut batch: Vec<PostableAlert> = Vec::new();
                let mut last = None;
                for a in book.all_after(cursor.as_ref()) {
                    last = Some(a);
                    if is_due(a) {
                        batch.push(to_postable(a, now, self.resend, &self.base_url));
                        if batch.len() == MAX_BATCH {
                            break;
                        }
                    }
                }
                let body = (!batch.is_empty())
                    .then(|| serde_json::to_vec(&batch).expect("alerts serialize"));
                (
                    body,
                    batch.len(),
                    last.map(|a| (a.rule.to_string(), a.key.to_string())),
                )
            });
            let Some(body) = body else {
                break;
            };
            let span = tracing::info_span!(
                "notify",
                notifier = NAME,
                alerts = n,
                otel.kind = "client",
                error = tracing::field::Empty
            );
            let result = tracing::Instrument::instrument(
                self.authorized(self.client.post(format!("{url}/api/v2/alerts")))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send(),
                span.clone(),
            )
            .await;
            if let Err(e) = &result {
                span.record("error", tracing::field::display(e));
            }
            let outcome = match result {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    Err(format!(
                        "HTTP {status}: {}",
                        text.chars().take(300).collect::<String>()
                    ))
                }
                Err(e) => Err(crate::config::redact_urls(&error_chain(&e))),
            };
            match outcome {
                Ok(()) => {
                    self.metrics
                        .notifications
                        .with_label_values(&[NAME, "sent"])
                        .inc_by(n as u64);
                    queued = queued.saturating_sub(n);
                    queue.set(queued as i64);
                    sent_any = true;
                }
                Err(e) => {
                    self.metrics
                        .notifications
                        .with_label_values(&[NAME, "failed"])
                        .inc_by(n as u64);
                    if d.failures == 0 {
                        tracing::warn!(notifier = NAME, url = %crate::config::redact_urls(url), alerts = n, error = %e, "cannot deliver alerts; will retry");
                    } else {
                        tracing::debug!(notifier = NAME, url = %crate::config::redact_urls(url), alerts = n, error = %e, "retry failed");
                    }
                    failed = true;
                    break;
                }
            }
            cursor = walked_to;
        }
        if failed {
            // What changed is sent again from the start next time (Alertmanager takes an
            // alert it already has as a refresh).
            d.failures = d.failures.saturating_add(1);
            return;
        }
        d.delivered = through;
        if everything {
            d.everything_at = Some(now);
        }
        if d.failures > 0 && sent_any {
            tracing::info!(
                notifier = NAME,
                url,
                "Alertmanager reachable again; alerts delivered"
            );
        }
        d.failures = 0;
        queue.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Notes;
    use chrono::TimeZone;

    #[test]
    fn firing_ends_at_four_times_the_longer_interval_and_resolved_at_resolution() {
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        let mut a = Alert {
            rule: "r".into(),
            key: "JW-1".into(),
            labels: crate::labels::Labels::from(BTreeMap::from([(
                "alertname".into(),
                "StuckOrder".into(),
            )])),
            notes: Notes::None,
            state: AlertState::Firing,
            active_at: now,
            starts_at: Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap(),
            fired_at: Some(now),
            last_seen: now,
            resolved_at: None,
            entered_at: None,
            interval_secs: 30,
            version: 0,
        };
        let p = to_postable(&a, now, Duration::from_secs(60), "http://h:1/");
        assert_eq!(p.starts_at, "2026-11-22T09:00:00.000Z");
        assert_eq!(p.ends_at, "2026-11-22T10:04:00.000Z");
        assert_eq!(p.generator_url, "http://h:1/api/v1/alerts?rule=r");
        a.interval_secs = 300;
        assert_eq!(
            to_postable(&a, now, Duration::from_secs(60), "").ends_at,
            "2026-11-22T10:20:00.000Z"
        );
        a.state = AlertState::Resolved;
        a.resolved_at = Some(Utc.with_ymd_and_hms(2026, 11, 22, 9, 59, 0).unwrap());
        assert_eq!(
            to_postable(&a, now, Duration::from_secs(60), "").ends_at,
            "2026-11-22T09:59:00.000Z"
        );
    }
}
