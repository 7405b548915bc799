//! What a direct channel (email, chat, webhook) is asked to deliver: one notification per alert
//! group. The shape is Alertmanager's webhook payload (version 4), so the `webhook` channel
//! sends it as is and anything that takes Alertmanager webhooks takes ours; the other channels
//! render it through templates (see [`super::template`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Firing or resolved, for a group (firing while any alert in it fires) or one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyStatus {
    /// At least one alert fires.
    Firing,
    /// Everything recovered.
    Resolved,
}

impl NotifyStatus {
    /// `firing` / `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyStatus::Firing => "firing",
            NotifyStatus::Resolved => "resolved",
        }
    }
}

/// One alert inside a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifiedAlert {
    /// Firing or resolved.
    pub status: NotifyStatus,
    /// Labels (alertname, rule, source, status, severity, order_id, …).
    pub labels: BTreeMap<String, String>,
    /// Annotations (summary, description, age, entered_at, links ending in `_url`, …).
    pub annotations: BTreeMap<String, String>,
    /// When the condition began (the order crossed its threshold).
    #[serde(rename = "startsAt")]
    pub starts_at: DateTime<Utc>,
    /// When it resolved; `0001-01-01T00:00:00Z` while firing, as Alertmanager sends it.
    #[serde(rename = "endsAt")]
    pub ends_at: DateTime<Utc>,
    /// Link back to the daemon.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// Stable identity of the alert (rule and key).
    pub fingerprint: String,
}

/// One notification for one group of alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The receiver (channel) name from the config.
    pub receiver: String,
    /// Group status.
    pub status: NotifyStatus,
    /// The alerts: firing first, oldest first; then resolved.
    pub alerts: Vec<NotifiedAlert>,
    /// The labels the group is keyed by (route's `group_by`).
    #[serde(rename = "groupLabels")]
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert shares.
    #[serde(rename = "commonLabels")]
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert shares.
    #[serde(rename = "commonAnnotations")]
    pub common_annotations: BTreeMap<String, String>,
    /// Base URL of the daemon (status page, API).
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// Identity of the group (route and group labels).
    #[serde(rename = "groupKey")]
    pub group_key: String,
    /// Alerts left out of `alerts` (none: we send all; kept for webhook compatibility).
    #[serde(rename = "truncatedAlerts")]
    pub truncated_alerts: u64,
}

/// Alertmanager's `endsAt` of a firing alert: the zero time.
pub fn zero_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).expect("0001-01-01 is representable")
}

impl Notification {
    /// Labels and annotations every alert shares.
    pub fn common(
        alerts: &[NotifiedAlert],
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        fn intersect<'a>(
            maps: impl Iterator<Item = &'a BTreeMap<String, String>>,
        ) -> BTreeMap<String, String> {
            let mut iter = maps;
            let Some(first) = iter.next() else {
                return BTreeMap::new();
            };
            let mut common = first.clone();
            for m in iter {
                common.retain(|k, v| m.get(k) == Some(v));
            }
            common
        }
        (
            intersect(alerts.iter().map(|a| &a.labels)),
            intersect(alerts.iter().map(|a| &a.annotations)),
        )
    }

    /// A sample notification (what `orderwatch notify-test` sends, and what tests render).
    pub fn sample(receiver: &str, external_url: &str) -> Notification {
        let now = Utc::now();
        let alert = |id: &str, kind: &str, hours: i64, status: NotifyStatus| {
            let entered = now - chrono::Duration::hours(hours);
            NotifiedAlert {
                status,
                labels: BTreeMap::from([
                    ("alertname".into(), "StuckOrder".into()),
                    ("rule".into(), "submitted_over_1h".into()),
                    ("source".into(), "shop".into()),
                    ("status".into(), "SUBMITTED".into()),
                    ("severity".into(), "critical".into()),
                    ("order_id".into(), id.into()),
                    ("order_type".into(), kind.into()),
                    ("team".into(), "sales".into()),
                ]),
                annotations: BTreeMap::from([
                    (
                        "summary".into(),
                        format!("Order {id} ({kind}) has had no price for {hours}h (test message)"),
                    ),
                    (
                        "description".into(),
                        "orderwatch notify-test: a sample alert, nothing is wrong.".into(),
                    ),
                    ("entered_at".into(), entered.to_rfc3339()),
                    ("age".into(), format!("{hours}h 00m")),
                ]),
                starts_at: entered + chrono::Duration::hours(1),
                ends_at: if status == NotifyStatus::Resolved {
                    now
                } else {
                    zero_time()
                },
                generator_url: format!("{external_url}/api/v1/alerts?rule=submitted_over_1h"),
                fingerprint: format!("submitted_over_1h/{id}"),
            }
        };
        let alerts = vec![
            alert("JW-00000042", "ring", 3, NotifyStatus::Firing),
            alert(
                "JW-00000043",
                "pendant & chain <test>",
                2,
                NotifyStatus::Firing,
            ),
            alert("JW-00000017", "earrings", 5, NotifyStatus::Resolved),
        ];
        let (common_labels, common_annotations) = Notification::common(&alerts);
        Notification {
            receiver: receiver.to_string(),
            status: NotifyStatus::Firing,
            group_labels: BTreeMap::from([("rule".into(), "submitted_over_1h".into())]),
            common_labels,
            common_annotations,
            external_url: external_url.to_string(),
            group_key: "{}:{rule=\"submitted_over_1h\"}".into(),
            truncated_alerts: 0,
            alerts,
        }
    }

    /// The sample with hostile data: mentions in a label, `javascript:` and `data:` links, and
    /// a link with characters that end Markdown and Slack link syntax.
    #[cfg(test)]
    pub fn hostile() -> Notification {
        let mut n = Notification::sample("ops", "http://ow:9187");
        for a in &mut n.alerts {
            a.labels
                .insert("team".into(), "@all <!channel> @here <@U123>".into());
            a.annotations
                .insert("evil_url".into(), " JavaScript:alert(1)".into());
            a.annotations.insert(
                "data_url".into(),
                "data:text/html,<script>x</script>".into(),
            );
            a.annotations.insert(
                "trace_url".into(),
                "https://jaeger/search?q=a b(c)|d&who=@all".into(),
            );
        }
        n
    }

    /// The Alertmanager webhook body (version 4) for this notification.
    pub fn webhook_body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.webhook_bytes(0)).expect("the body is JSON")
    }

    /// The webhook body (version 4) encoded, with at most `max_alerts` alerts (0: all) and
    /// the others counted in `truncatedAlerts`, as Alertmanager's `max_alerts` does. Encoded
    /// straight from the notification: no copy of it, no JSON tree.
    pub fn webhook_bytes(&self, max_alerts: usize) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            version: &'static str,
            receiver: &'a str,
            status: NotifyStatus,
            alerts: &'a [NotifiedAlert],
            #[serde(rename = "groupLabels")]
            group_labels: &'a BTreeMap<String, String>,
            #[serde(rename = "commonLabels")]
            common_labels: &'a BTreeMap<String, String>,
            #[serde(rename = "commonAnnotations")]
            common_annotations: &'a BTreeMap<String, String>,
            #[serde(rename = "externalURL")]
            external_url: &'a str,
            #[serde(rename = "groupKey")]
            group_key: &'a str,
            #[serde(rename = "truncatedAlerts")]
            truncated_alerts: u64,
        }
        let kept = match max_alerts {
            0 => self.alerts.len(),
            n => n.min(self.alerts.len()),
        };
        serde_json::to_vec(&Body {
            version: "4",
            receiver: &self.receiver,
            status: self.status,
            alerts: &self.alerts[..kept],
            group_labels: &self.group_labels,
            common_labels: &self.common_labels,
            common_annotations: &self.common_annotations,
            external_url: &self.external_url,
            group_key: &self.group_key,
            truncated_alerts: self.truncated_alerts + (self.alerts.len() - kept) as u64,
        })
        .expect("notification serializes")
    }
}
