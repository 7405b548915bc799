//! `kind: http_errors`: the share of HTTP 5xx answers per service (Shop API, CRM API, MES API),
//! the seed's "the share of 5xx answers went up within 5 minutes".
//!
//! Two inputs: a Prometheus-compatible query API (PromQL over the services' request counters),
//! or scraping the services' `/metrics` directly and computing the ratio over a sliding window
//! here, so it works without a Prometheus server. A service is a finding when its ratio is above
//! `threshold`, or (with `growth`) grew by that factor against the previous window.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::finding::{Outcome, Signal};
use crate::config::RuleConfig;
use crate::source::SourceError;

/// A growth alert needs at least this ratio, so 0.01 % → 0.03 % is not news.
pub const GROWTH_FLOOR: f64 = 0.01;

#[derive(Debug)]
enum Input {
    Prometheus {
        url: String,
        query: String,
    },
    Scrape {
        targets: Vec<(String, String)>,
        history: Mutex<VecDeque<Sample>>,
    },
}

/// Counter totals of every scraped service at one moment.
#[derive(Debug, Clone)]
struct Sample {
    at: DateTime<Utc>,
    /// service → (all requests, 5xx answers).
    totals: BTreeMap<String, (f64, f64)>,
}

/// The compiled check.
#[derive(Debug)]
pub struct HttpErrorsCheck {
    input: Input,
    metric: String,
    window: Duration,
    threshold: f64,
    growth: Option<f64>,
    client: reqwest::Client,
    /// The `source` label (`prometheus` or `scrape` unless configured).
    pub source_label: String,
    description: String,
}

/// The default PromQL: 5xx rate over all requests per service, over `window`. A service
/// without any 5xx series still gets its 0 (`or … * 0`), so it shows in the gauge.
pub fn default_query(metric: &str, window: Duration) -> String {
    let w = format!("{}s", window.as_secs());
    format!(
        "(sum by (service) (rate({metric}{{code=~\"5..\"}}[{w}])) or sum by (service) (rate({metric}[{w}])) * 0) \
         / sum by (service) (rate({metric}[{w}]))"
    )
}

fn err(source: &str, target: &str, detail: String) -> SourceError {
    SourceError::Query {
        source_name: source.to_string(),
        target: crate::config::redact_urls(target),
        detail: crate::config::redact_urls(&detail),
    }
}

impl HttpErrorsCheck {
    /// From the rule's config (validated).
    pub fn new(cfg: &RuleConfig) -> HttpErrorsCheck {
        let input = match &cfg.prometheus_url {
            Some(u) => Input::Prometheus {
                url: u.value.trim_end_matches('/').to_string(),
                query: cfg.query.as_ref().map_or_else(
                    || default_query(&cfg.metric, cfg.window.0),
                    |q| q.value.clone(),
                ),
            },
            None => Input::Scrape {
                targets: cfg
                    .scrape
                    .iter()
                    .map(|t| (t.service.clone(), t.url.value.clone()))
                    .collect(),
                history: Mutex::new(VecDeque::new()),
            },
        };
        let source_label = match (&input, cfg.source.value.as_str()) {
            (_, s) if !s.is_empty() => s.to_string(),
            (Input::Prometheus { .. }, _) => "prometheus".to_string(),
            (Input::Scrape { .. }, _) => "scrape".to_string(),
        };
        // Shown in `check`, the API and the status page: without URL passwords.
        let description = crate::config::redact_urls(&Self::describe_input(&input));
        HttpErrorsCheck {
            description,
            input,
            metric: cfg.metric.clone(),
            window: cfg.window.0,
            threshold: cfg.threshold,
            growth: cfg.growth,
            client: crate::outbound::http_client(Duration::from_secs(10)),
            source_label,
        }
    }

    /// What the rule reads: the PromQL, or the scraped URLs (for `check`, `once` and logs).
    pub fn describe(&self) -> &str {
        &self.description
    }

    fn describe_input(input: &Input) -> String {
        match input {
            Input::Prometheus { query, .. } => query.clone(),
            Input::Scrape { targets, .. } => {
                format!(
                    "scrape {}",
                    targets
                        .iter()
                        .map(|t| t.1.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
    }

    /// Ratio per service at `now` and one window earlier.
    async fn ratios(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(BTreeMap<String, f64>, BTreeMap<String, f64>), SourceError> {
        match &self.input {
            Input::Prometheus { url, query } => {
                let before = now - chrono::Duration::from_std(self.window).unwrap_or_default();
                Ok((
                    self.prom_query(url, query, now).await?,
                    self.prom_query(url, query, before).await?,
                ))
            }
            Input::Scrape { targets, history } => {
                let sample = self.scrape(targets, now).await?;
                let mut h = history.lock().expect("history lock");
                h.push_back(sample.clone());
                // Keep two windows (and one sample more to span them).
                let keep = chrono::Duration::from_std(self.window * 2).unwrap_or_default();
                while h.len() > 2 && h.get(1).is_some_and(|s| sample.at - s.at >= keep) {
                    h.pop_front();
                }
                let w = chrono::Duration::from_std(self.window).unwrap_or_default();
                // The window opens at the newest sample at least a window old (else the oldest);
                // the previous window is the one before that.
                let opens_before =
                    |t: DateTime<Utc>| h.iter().rev().find(|s| t - s.at >= w).cloned();
                let open = opens_before(sample.at).or_else(|| h.front().cloned());
                let now_r = open
                    .as_ref()
                    .map(|o| ratio_between(o, &sample))
                    .unwrap_or_default();
                let prev_r = open
                    .as_ref()
                    .and_then(|o| opens_before(o.at).map(|p| ratio_between(&p, o)))
                    .unwrap_or_default();
                Ok((now_r, prev_r))
            }
        }
    }

    async fn prom_query(
        &self,
        url: &str,
        query: &str,
        at: DateTime<Utc>,
    ) -> Result<BTreeMap<String, f64>, SourceError> {
        let target = format!("{url}/api/v1/query");
        let time = format!("{:.3}", at.timestamp_millis() as f64 / 1000.0);
        let target =
            reqwest::Url::parse_with_params(&target, &[("query", query), ("time", time.as_str())])
                .map_err(|e| err(&self.source_label, url, format!("bad URL: {e}")))?;
        let resp = self
            .client
            .get(target)
            .send()
            .await
            .map_err(|e| SourceError::Connect {
                source_name: self.source_label.clone(),
                target: crate::config::redact_urls(url),
                detail: crate::outbound::error_text(e),
            })?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.map_err(|e| {
            err(
                &self.source_label,
                url,
                format!("HTTP {status}: not JSON: {e}"),
            )
        })?;
        if body["status"] != "success" {
            return Err(err(
                &self.source_label,
                url,
                format!(
                    "HTTP {status}: {}",
                    body["error"].as_str().unwrap_or("query failed")
                ),
            ));
        }
        let mut out = BTreeMap::new();
        for r in body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let service = r["metric"]["service"].as_str().unwrap_or("").to_string();
            if let Some(v) = r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok())
                && v.is_finite()
            {
                out.insert(service, v);
            }
        }
        Ok(out)
    }

    async fn scrape(
        &self,
        targets: &[(String, String)],
        at: DateTime<Utc>,
    ) -> Result<Sample, SourceError> {
        let mut totals = BTreeMap::new();
        for (service, url) in targets {
            let text = self
                .client
                .get(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| SourceError::Connect {
                    source_name: self.source_label.clone(),
                    target: service.clone(),
                    detail: crate::outbound::error_text(e),
                })?
                .text()
                .await
                .map_err(|e| err(&self.source_label, service, crate::outbound::error_text(e)))?;
            let scrape =
                prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
                    .map_err(|e| err(&self.source_label, service, format!("bad /metrics: {e}")))?;
            let base = self.metric.trim_end_matches("_total");
            let (mut all, mut errors) = (0.0, 0.0);
            for s in &scrape.samples {
                if s.metric != self.metric && s.metric != base {
                    continue;
                }
                let v = match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                    _ => continue,
                };
                all += v;
                if s.labels.get("code").is_some_and(|c| c.starts_with('5')) {
                    errors += v;
                }
            }
            totals.insert(service.clone(), (all, errors));
        }
        Ok(Sample { at, totals })
    }

    /// One evaluation: every service's ratio (for `orderwatch_http_5xx_ratio`), and a finding
    /// per service over the threshold or growing too fast.
    pub async fn evaluate(&self) -> Result<Outcome, SourceError> {
        self.evaluate_at(Utc::now()).await
    }

    /// [`evaluate`](Self::evaluate) as of `now` (the scrape is stamped with it; Prometheus is
    /// asked for that moment), so a test can replay a burst of minutes in a moment.
    pub async fn evaluate_at(&self, now: DateTime<Utc>) -> Result<Outcome, SourceError> {
        let (now, prev) = self.ratios(now).await?;
        let mut out = Outcome::default();
        for (service, ratio) in &now {
            let before = prev.get(service).copied();
            let grew = match (self.growth, before) {
                (Some(g), Some(b)) => *ratio >= GROWTH_FLOOR && (b <= 0.0 || *ratio >= g * b),
                _ => false,
            };
            if *ratio > self.threshold || grew {
                out.count += 1;
                let labels = BTreeMap::from([("service".to_string(), service.clone())]);
                let mut details = BTreeMap::from([(
                    "window".to_string(),
                    humantime::format_duration(self.window).to_string(),
                )]);
                if let Some(b) = before {
                    details.insert("previous_ratio".to_string(), format!("{b:.4}"));
                }
                out.signals.push(Signal {
                    key: service.clone(),
                    value: Some(*ratio),
                    since: None,
                    labels,
                    details,
                });
            }
        }
        out.http_ratios = now;
        Ok(out)
    }
}

/// 5xx share per service between two samples (counter resets give no ratio).
fn ratio_between(a: &Sample, b: &Sample) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (service, (all_b, err_b)) in &b.totals {
        let Some((all_a, err_a)) = a.totals.get(service) else {
            continue;
        };
        let (all, errors) = (all_b - all_a, err_b - err_a);
        if all > 0.0 && errors >= 0.0 {
            out.insert(service.clone(), errors / all);
        } else if all == 0.0 {
            out.insert(service.clone(), 0.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_query_is_the_ratio_per_service() {
        assert_eq!(
            default_query("http_requests_total", Duration::from_secs(300)),
            "(sum by (service) (rate(http_requests_total{code=~\"5..\"}[300s])) or sum by (service) (rate(http_requests_total[300s])) * 0) \
             / sum by (service) (rate(http_requests_total[300s]))"
        );
    }

    #[test]
    fn ratio_between_samples_handles_resets() {
        let s = |at: i64, all: f64, err: f64| Sample {
            at: DateTime::from_timestamp(at, 0).unwrap(),
            totals: BTreeMap::from([("shop-api".to_string(), (all, err))]),
        };
        assert_eq!(
            ratio_between(&s(0, 100.0, 1.0), &s(60, 200.0, 21.0))["shop-api"],
            0.2
        );
        assert!(
            ratio_between(&s(0, 100.0, 1.0), &s(60, 10.0, 0.0)).is_empty(),
            "counter reset"
        );
        assert_eq!(
            ratio_between(&s(0, 100.0, 1.0), &s(60, 100.0, 1.0))["shop-api"],
            0.0
        );
    }
}
