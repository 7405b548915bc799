//! The one interface of the direct channels: deliver a [`Notification`] or say how it failed,
//! so the outbox knows whether to retry (connection errors, 5xx), wait (429 with
//! `Retry-After`), or give up (other 4xx).

use std::path::Path;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use crate::config::expand_secrets;

use super::message::Notification;

/// Why a delivery failed, and what the outbox should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Connection error, timeout, 5xx, SMTP 4xx: retry with backoff.
    #[error("temporary failure: {0}")]
    Retry(String),
    /// HTTP 429: retry, not before `retry_after` when the server said so.
    #[error("rate limited{}: {detail}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// The server's `Retry-After` (or Telegram's `parameters.retry_after`).
        retry_after: Option<Duration>,
        /// The response.
        detail: String,
    },
    /// Rejected (HTTP 4xx other than 429, SMTP 5xx): retrying would not help.
    #[error("rejected: {0}")]
    Permanent(String),
}

/// At most this much of a response body goes into an error (and so into the log).
pub const MAX_ERROR_BODY: usize = 500;

/// Turns an HTTP response into a delivery outcome: 2xx is success; 429 is `RateLimited` with
/// `Retry-After` (seconds) honoured; 5xx and 408 are `Retry`; any other status is `Permanent`.
/// The body (shortened) goes into the error so the log shows what the service said.
pub async fn classify_response(response: reqwest::Response) -> Result<String, DeliveryError> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let detail = format!(
        "HTTP {status}: {}",
        body.chars().take(MAX_ERROR_BODY).collect::<String>()
    );
    Err(match status.as_u16() {
        429 => DeliveryError::RateLimited {
            retry_after,
            detail,
        },
        408 | 500..=599 => DeliveryError::Retry(detail),
        _ => DeliveryError::Permanent(detail),
    })
}

/// A transport error (no response): always worth a retry. The message carries the cause chain
/// but never the URL's query or path secrets (reqwest errors name the URL; we strip it).
pub fn transport_error(e: reqwest::Error) -> DeliveryError {
    DeliveryError::Retry(error_text(e))
}

pub use crate::outbound::{error_text, http_client};

/// What every channel can be asked to do.
pub trait Deliver {
    /// The channel kind (`email`, `slack`, …), for logs and metrics.
    fn kind(&self) -> &'static str;
    /// Minimum time between two messages to the same destination (the service's rate limit).
    fn min_interval(&self) -> Duration {
        Duration::ZERO
    }
    /// Delivers one notification.
    fn deliver(
        &self,
        n: &Notification,
    ) -> impl std::future::Future<Output = Result<(), DeliveryError>> + Send;
}

/// Parses an http(s) URL with a host. The message names `what`, never the value: channel URLs
/// are credentials (Slack and Mattermost webhooks, tokens in query strings).
pub fn http_url(value: &str, what: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(value.trim())
        .map_err(|e| format!("{what} is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{what} must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} has no host"));
    }
    Ok(url)
}

/// Expands a secret field in place and checks that it is an http(s) URL, recording problems
/// at its location.
pub fn expand_http_url(
    field: &mut Spanned<String>,
    base: &Path,
    what: &str,
    problems: &mut Vec<(Location, String)>,
) {
    match expand_secrets(&field.value, base) {
        Ok(v) => {
            if let Err(e) = http_url(&v, what) {
                problems.push((field.referenced, e));
            }
            field.value = v;
        }
        Err(e) => problems.push((field.referenced, format!("{what}: {e}"))),
    }
}

/// POSTs `body`, JSON already encoded, and classifies the answer (see [`classify_response`]);
/// returns the response body on success.
pub async fn post_json_bytes(
    request: reqwest::RequestBuilder,
    body: Vec<u8>,
) -> Result<String, DeliveryError> {
    let response = request
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(transport_error)?;
    classify_response(response).await
}

/// POSTs `body` as JSON and classifies the answer (see [`classify_response`]); returns the
/// response body on success.
pub async fn post_json(
    request: reqwest::RequestBuilder,
    body: &impl serde::Serialize,
) -> Result<String, DeliveryError> {
    let response = request.json(body).send().await.map_err(transport_error)?;
    classify_response(response).await
}
