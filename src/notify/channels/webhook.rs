//! The `webhook` channel: POSTs each notification as Alertmanager's webhook body (version 4),
//! so anything that takes Alertmanager webhooks (incident tools, custom receivers) takes ours.
//!
//! Also home of the config checks the HTTP channels share: a secret that must expand to an
//! http(s) URL, reported without ever echoing the value.

use std::path::Path;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_saphyr::Location;

use crate::config::WebhookConfig;
use crate::config::expand_secrets;
use crate::notify::channel::{
    Deliver, DeliveryError, expand_http_url, http_client, http_url, post_json_bytes,
};
use crate::notify::message::Notification;

/// Headers our JSON body depends on; a configured value would contradict it.
const RESERVED_HEADERS: &[&str] = &["content-type", "content-length", "host"];

/// Expands `${ENV}`/`${file:PATH}` in `url` and the header values in place (relative to
/// `base`) and checks them; returns each problem with the location of the offending value.
pub fn validate(c: &mut WebhookConfig, base: &Path) -> Vec<(Location, String)> {
    let mut problems = Vec::new();
    expand_http_url(&mut c.url, base, "url", &mut problems);
    for (name, value) in &mut c.headers {
        let at = value.referenced;
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push((at, format!("headers: {name:?} is not a valid header name")));
        } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            problems.push((
                at,
                format!("headers: {name} is set by orderwatch (the body is JSON)"),
            ));
        }
        match expand_secrets(&value.value, base) {
            // The value is a secret: the message names the header, never the value.
            Ok(v) if HeaderValue::from_str(&v).is_err() => problems.push((
                at,
                format!("headers: the value of {name} is not a valid header value"),
            )),
            Ok(v) => value.value = v,
            Err(e) => problems.push((at, format!("headers: {name}: {e}"))),
        }
    }
    if c.timeout.0.is_zero() {
        problems.push((Location::UNKNOWN, "timeout must be greater than 0".into()));
    }
    problems
}

/// The runtime `webhook` channel.
pub struct Webhook {
    name: String,
    url: reqwest::Url,
    headers: HeaderMap,
    max_alerts: usize,
    client: reqwest::Client,
}

impl std::fmt::Debug for Webhook {
    /// Names the channel only: the URL and the header values are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Builds the channel from a validated config (secrets expanded).
    pub fn new(name: &str, cfg: &WebhookConfig) -> Result<Webhook, String> {
        let url = http_url(&cfg.url.value, "url")?;
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let key = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("headers: {k:?} is not a valid header name"))?;
            let mut value = HeaderValue::from_str(&v.value)
                .map_err(|_| format!("headers: the value of {k} is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        Ok(Webhook {
            name: name.to_string(),
            url,
            headers,
            max_alerts: cfg.max_alerts,
            client: http_client(cfg.timeout.0),
        })
    }

    /// The channel's name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The request body: the notification's webhook body with alerts beyond `max_alerts`
    /// dropped and counted in `truncatedAlerts`.
    pub fn body(&self, n: &Notification) -> Vec<u8> {
        n.webhook_bytes(self.max_alerts)
    }
}

impl Deliver for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone());
        post_json_bytes(request, self.body(n)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::config::Dur;

    use serde_saphyr::Spanned;

    fn spanned(s: &str) -> Spanned<String> {
        Spanned::new(s.to_string(), Location::UNKNOWN, Location::UNKNOWN)
    }

    fn config(url: &str, max_alerts: usize) -> WebhookConfig {
        WebhookConfig {
            url: spanned(url),
            headers: BTreeMap::from([("Authorization".into(), spanned("Bearer s3cret"))]),
            max_alerts,
            timeout: Dur(Duration::from_secs(10)),
        }
    }

    #[test]
    fn truncates_like_alertmanager() {
        let n = Notification::sample("ops", "http://ow");
        let body = |max| -> serde_json::Value {
            serde_json::from_slice(
                &Webhook::new("w", &config("http://h/x", max))
                    .unwrap()
                    .body(&n),
            )
            .unwrap()
        };
        let all = body(0);
        assert_eq!(all, n.webhook_body());
        assert_eq!(all["version"], "4");
        assert_eq!(all["alerts"].as_array().unwrap().len(), 3);
        assert_eq!(all["truncatedAlerts"], 0);
        let two = body(2);
        assert_eq!(two["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(two["truncatedAlerts"], 1);
        assert_eq!(
            two["commonLabels"], all["commonLabels"],
            "computed on all alerts"
        );
    }

    #[test]
    fn problems_never_echo_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config("ftp://user:s3cret@h/x", 0);
        c.headers
            .insert("Bad Name".into(), spanned("Bearer s3cret"));
        c.headers
            .insert("X-Token".into(), spanned("s3cret\nInjected: yes"));
        c.headers
            .insert("Content-Type".into(), spanned("text/plain"));
        let problems = validate(&mut c, dir.path());
        let text = format!("{problems:?}");
        assert_eq!(problems.len(), 4, "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("must be an http"), "{text}");
        let mut ok = config("https://hooks.example/x?token=s3cret", 0);
        assert!(validate(&mut ok, dir.path()).is_empty());
        let e = Webhook::new("w", &config("not a url s3cret", 0)).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
