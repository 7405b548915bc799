//! A small client of the daemon's own API, for `orderwatch silence …` (as amtool is for
//! Alertmanager): basic auth and a private CA when the daemon's web config asks for them.

use std::path::Path;

use serde_json::{Value, json};

use crate::config::Loaded;

/// The daemon's base URL from its config: `listen` (a wildcard address becomes loopback),
/// https when the web config has TLS.
pub fn default_url(loaded: &Loaded) -> String {
    let mut addr = loaded.config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let scheme = if loaded.web.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}")
}

/// The daemon's API at one base URL.
pub struct Api {
    base: String,
    auth: Option<(String, String)>,
    client: reqwest::Client,
}

impl Api {
    /// A client of `base`, with basic-auth credentials and a CA certificate file (PEM) to
    /// trust besides the Mozilla roots.
    pub fn new(
        base: &str,
        auth: Option<(String, String)>,
        ca_file: Option<&Path>,
    ) -> Result<Api, String> {
        crate::tls::ensure_crypto_provider();
        let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
        if let Some(f) = ca_file {
            let pem = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: {e}", f.display()))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            auth,
            client: b.build().map_err(|e| e.to_string())?,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Creates a silence; returns its id.
    pub async fn silence_add(
        &self,
        matchers: &[String],
        duration: &str,
        comment: &str,
        author: &str,
    ) -> Result<String, String> {
        let body = json!({ "matchers": matchers, "duration": duration, "comment": comment, "createdBy": author });
        let v = answer(
            self.request(reqwest::Method::POST, "/api/v1/silences")
                .json(&body)
                .send()
                .await,
        )
        .await?;
        Ok(v["data"]["silenceId"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Lists silences, one line each.
    pub async fn silence_list(&self) -> Result<Vec<String>, String> {
        let v = answer(
            self.request(reqwest::Method::GET, "/api/v1/silences")
                .send()
                .await,
        )
        .await?;
        Ok(v["data"]["silences"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let m: Vec<String> = s["matchers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
                crate::report::printable(&format!(
                    "{}  {:<8} until {}  {}  by {}: {}",
                    s["id"].as_str().unwrap_or(""),
                    s["state"].as_str().unwrap_or(""),
                    s["endsAt"].as_str().unwrap_or(""),
                    m.join(","),
                    s["createdBy"].as_str().unwrap_or(""),
                    s["comment"].as_str().unwrap_or("")
                ))
            })
            .collect())
    }

    /// Where order `id` is (`GET /api/v1/orders/{id}`). An error starting "cannot reach"
    /// means the daemon did not answer at all.
    pub async fn order(&self, id: &str) -> Result<crate::lookup::OrderReport, String> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/orders/", self.base))
            .map_err(|e| format!("bad URL {}: {e}", self.base))?;
        url.path_segments_mut()
            .map_err(|()| format!("bad URL {}", self.base))?
            .pop_if_empty()
            .push(id);
        let r = self.client.get(url);
        let r = match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        };
        let v = answer(r.send().await).await?;
        serde_json::from_value(v["data"].clone()).map_err(|e| format!("bad answer: {e}"))
    }

    /// Expires a silence now.
    pub async fn silence_expire(&self, id: &str) -> Result<(), String> {
        answer(
            self.request(reqwest::Method::DELETE, &format!("/api/v1/silences/{id}"))
                .send()
                .await,
        )
        .await
        .map(|_| ())
    }
}

async fn answer(r: Result<reqwest::Response, reqwest::Error>) -> Result<Value, String> {
    let r = r.map_err(|e| {
        format!(
            "cannot reach orderwatch: {}",
            crate::outbound::error_text(e)
        )
    })?;
    let status = r.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err("401 unauthorized: give --user and the password ($ORDERWATCH_PASSWORD or --password-file)".into());
    }
    let body: Value = r
        .json()
        .await
        .map_err(|e| format!("bad answer (HTTP {status}): {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(body["error"].as_str().map_or_else(
            || format!("HTTP {status}"),
            |e| format!("HTTP {status}: {e}"),
        ))
    }
}
