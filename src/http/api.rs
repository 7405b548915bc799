//! Routes. JSON shapes follow Prometheus's `/api/v1/alerts` and `/api/v1/rules` loosely:
//! `{"status": "success", "data": …}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use crate::engine::Shared;

/// All routes over the daemon's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/rules", get(rules))
        .with_state(shared)
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

async fn alerts(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let book = s.book.read().expect("book lock");
    let list: Vec<_> = book
        .all()
        .filter(|a| q.get("rule").is_none_or(|r| &a.rule == r))
        .filter(|a| q.get("state").is_none_or(|st| a.state.as_str() == st))
        .map(|a| {
            json!({
                "rule": a.rule, "key": a.key, "state": a.state.as_str(), "labels": a.labels,
                "annotations": a.annotations, "activeAt": a.active_at, "startsAt": a.starts_at,
                "firedAt": a.fired_at, "lastSeen": a.last_seen, "resolvedAt": a.resolved_at,
            })
        })
        .collect();
    Json(json!({ "status": "success", "data": { "alerts": list } })).into_response()
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
