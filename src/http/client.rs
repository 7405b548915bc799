//! A small client of the daemon's own API, for `orderwatch silence …` (as amtool is for
//! Alertmanager).

use serde_json::{Value, json};

fn client() -> reqwest::Client {
    crate::source::ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

async fn answer(r: Result<reqwest::Response, reqwest::Error>) -> Result<Value, String> {
    let r = r.map_err(|e| {
        format!(
            "cannot reach orderwatch: {}",
            crate::notify::channel::error_text(e)
        )
    })?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| format!("bad answer: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(body["error"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_string))
    }
}

/// Creates a silence; returns its id.
pub async fn silence_add(
    base: &str,
    matchers: &[String],
    duration: &str,
    comment: &str,
    author: &str,
) -> Result<String, String> {
    let body = json!({ "matchers": matchers, "duration": duration, "comment": comment, "createdBy": author });
    let v = answer(
        client()
            .post(format!("{base}/api/v1/silences"))
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
pub async fn silence_list(base: &str) -> Result<Vec<String>, String> {
    let v = answer(client().get(format!("{base}/api/v1/silences")).send().await).await?;
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
            format!(
                "{}  {:<8} until {}  {}  by {}: {}",
                s["id"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or(""),
                s["endsAt"].as_str().unwrap_or(""),
                m.join(","),
                s["createdBy"].as_str().unwrap_or(""),
                s["comment"].as_str().unwrap_or("")
            )
        })
        .collect())
}

/// Expires a silence now.
pub async fn silence_expire(base: &str, id: &str) -> Result<(), String> {
    answer(
        client()
            .delete(format!("{base}/api/v1/silences/{id}"))
            .send()
            .await,
    )
    .await
    .map(|_| ())
}
