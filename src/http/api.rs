//! Routes. JSON shapes follow Prometheus's `/api/v1/alerts` and `/api/v1/rules` loosely:
//! `{"status": "success", "data": …}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use crate::engine::{Current, Shared};
use crate::notify::mute::silence::{MAX_ACTIVE, RETENTION, SilenceRequest};

/// Handlers take `State<Arc<Shared>>`: the generation running at the time of the request
/// (a reload swaps it).
impl axum::extract::FromRef<Current> for Arc<Shared> {
    fn from_ref(current: &Current) -> Arc<Shared> {
        current.get()
    }
}

/// All routes over the daemon's current shared state.
pub fn router(current: Current) -> Router {
    Router::new()
        .route("/", get(super::status::page))
        .route("/metrics", get(metrics))
        .route("/runbooks", get(super::runbooks::page))
        .route("/healthz", get(|| async { "ok\n" }))
        // The pages carry no icon; a browser asks anyway, and a 404 is a console error.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/readyz", get(readyz))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/orders/{id}", get(order))
        .route("/orders", get(super::order_page::search))
        .route("/api/v1/silences", get(list_silences).post(create_silence))
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(expire_silence),
        )
        .with_state(current)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let sources = s.source_status.read().expect("status lock").clone();
    let body = json!({ "ready": s.ready(), "sources": sources });
    let code = if s.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /api/v1/alerts[?rule=…][&state=…][&limit=N][&after=FINGERPRINT]`: the alerts in
/// fingerprint order (`rule/key`). With `limit`, at most that many, and `nextAfter` names the
/// last one when more follow (pass it as `after` for the next page); without, every alert.
/// Built and encoded off the async workers: a big book does not hold up `/metrics`.
async fn alerts(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => usize::MAX,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => return bad_request("limit must be a positive integer".into()),
    };
    let after = match q
        .get("after")
        .filter(|a| !a.is_empty())
        .map(|a| a.split_once('/'))
    {
        None => None,
        Some(Some((rule, key))) => Some((rule.to_string(), key.to_string())),
        Some(None) => {
            return bad_request("after must be an alert's fingerprint (rule/key)".into());
        }
    };
    crate::blocking::off_worker(|| {
        let book = s.book.read().expect("book lock");
        let mut next = None;
        let mut list = Vec::new();
        for a in book
            .all_after(after.as_ref())
            .filter(|a| q.get("rule").is_none_or(|r| *a.rule == **r))
            .filter(|a| q.get("state").is_none_or(|st| a.state.as_str() == st))
        {
            if list.len() == limit {
                next = list
                    .last()
                    .map(|v: &serde_json::Value| v["fingerprint"].clone());
                break;
            }
            list.push(json!({
                "fingerprint": crate::notify::dispatch::fingerprint(a),
                "rule": a.rule, "key": a.key, "state": a.state.as_str(), "labels": a.labels,
                "annotations": a.annotations(), "activeAt": a.active_at, "startsAt": a.starts_at,
                "firedAt": a.fired_at, "lastSeen": a.last_seen, "resolvedAt": a.resolved_at,
            }));
        }
        let mut data = json!({ "alerts": list });
        if let Some(n) = next {
            data["nextAfter"] = n;
        }
        let body = serde_json::to_vec(&json!({ "status": "success", "data": data }))
            .expect("alerts serialize");
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    })
}

/// `GET /api/v1/orders/{id}`: the order in every source, the rules it matches, its
/// lost-message verdicts, alerts and links (see `lookup`).
async fn order(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match super::orders::lookup(&s, &id).await {
        Ok(report) => Json(json!({ "status": "success", "data": report })).into_response(),
        Err(response) => response,
    }
}

async fn rules(State(s): State<Arc<Shared>>) -> Response {
    let status = s.rule_status.read().expect("status lock");
    let list: Vec<_> = s
        .rules
        .iter()
        .map(|r| {
            let st = status.get(&r.name);
            json!({
                "name": r.name, "kind": r.kind, "source": r.source, "severity": r.severity,
                "statuses": r.statuses(), "older_than_seconds": r.older_than().as_secs(),
                "health": st.map_or("unknown", |s| s.health),
                "lastEvaluation": st.and_then(|s| s.last_evaluation),
                "evaluationTime": st.and_then(|s| s.evaluation_duration_seconds),
                "lastError": st.and_then(|s| s.error.clone()),
                "count": st.and_then(|s| s.count),
                "capped": st.is_some_and(|s| s.capped),
            })
        })
        .collect();
    Json(json!({ "status": "success", "data": { "rules": list } })).into_response()
}

async fn list_silences(State(s): State<Arc<Shared>>) -> Response {
    let now = chrono::Utc::now();
    let list: Vec<_> = s
        .silences
        .read()
        .expect("silences lock")
        .iter()
        .map(|x| {
            let mut v = serde_json::to_value(x).expect("silence serializes");
            v["state"] = x.state(now).into();
            v
        })
        .collect();
    Json(json!({ "status": "success", "data": { "silences": list } })).into_response()
}

/// `POST /api/v1/silences`: `{"matchers": ["rule=\"x\""], "duration": "2h" | "endsAt": "…",
/// "startsAt"?: "…", "comment": "…", "createdBy": "…"}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    matchers: Vec<String>,
    #[serde(default, rename = "startsAt")]
    starts_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, rename = "endsAt")]
    ends_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    comment: String,
    #[serde(default, rename = "createdBy")]
    created_by: String,
}

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "status": "error", "error": msg })),
    )
        .into_response()
}

async fn create_silence(
    State(s): State<Arc<Shared>>,
    user: Option<axum::Extension<crate::http::server::User>>,
    body: axum::body::Bytes,
) -> Response {
    let req: NewSilence = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("bad silence: {e}")),
    };
    let now = chrono::Utc::now();
    // An authenticated user is who created it, whatever the body says.
    let created_by = user.and_then(|u| u.0.0.clone()).unwrap_or(req.created_by);
    let request = SilenceRequest {
        matchers: req.matchers,
        starts_at: req.starts_at,
        ends_at: req.ends_at,
        duration: req.duration,
        comment: req.comment,
        created_by,
    };
    let silence = match request.build(now) {
        Ok(x) => x,
        Err(e) => return bad_request(e),
    };
    // Counted, stored and added under one lock, so parallel requests cannot pass the bound;
    // silences expired beyond the retention are dropped here too.
    let mut list = s.silences.write().expect("silences lock");
    let gone: Vec<String> = list
        .iter()
        .filter(|x| x.ends_at < now - RETENTION)
        .map(|x| x.id.clone())
        .collect();
    for id in &gone {
        let _ = s.outbox.delete_silence(id);
    }
    list.retain(|x| x.ends_at >= now - RETENTION);
    if list.iter().filter(|x| x.ends_at > now).count() >= MAX_ACTIVE {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "status": "error",
                "error": format!("at most {MAX_ACTIVE} silences may be pending or active; expire some first") })),
        )
            .into_response();
    }
    if let Err(e) = s.outbox.put_silence(&silence) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "status": "error", "error": e.to_string() })),
        )
            .into_response();
    }
    let matchers: Vec<String> = silence.matchers.iter().map(|m| m.to_string()).collect();
    tracing::info!(silence = %silence.id, matchers = ?matchers, ends_at = %silence.ends_at, by = ?silence.created_by, "silence created");
    let id = silence.id.clone();
    list.push(silence);
    Json(json!({ "status": "success", "data": { "silenceId": id } })).into_response()
}

async fn expire_silence(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let now = chrono::Utc::now();
    let updated = {
        let mut list = s.silences.write().expect("silences lock");
        list.iter_mut().find(|x| x.id == id).map(|x| {
            if x.ends_at > now {
                x.ends_at = now;
            }
            x.clone()
        })
    };
    match updated {
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "status": "error", "error": format!("no silence {id}") })),
        )
            .into_response(),
        Some(x) => match s.outbox.put_silence(&x) {
            Ok(()) => {
                tracing::info!(silence = %id, "silence expired");
                Json(json!({ "status": "success" })).into_response()
            }
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "status": "error", "error": e.to_string() })),
            )
                .into_response(),
        },
    }
}
