//! Outgoing HTTP: the one client builder the notifiers and the `http_errors` rule use
//! (rustls, a timeout, our user agent), and errors as people on call read them, on one line
//! and without the URL (which may carry a token).

use std::time::Duration;

/// An HTTP client: rustls, a timeout, our user agent.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    crate::tls::ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("orderwatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client with a crypto provider installed")
}

/// A reqwest error's text with its causes but without its URL (which may carry a token).
pub fn error_text(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
