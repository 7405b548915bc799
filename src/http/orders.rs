//! What the order API and the order page share: the id's bounds, the lookup with the daemon's
//! sources, rules and alerts, and its limit of lookups at once.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use crate::engine::{MAX_LOOKUPS, Shared};

/// An order id as a lookup takes it: non-empty, at most 200 characters, no control characters.
pub fn valid_order_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.chars().count() > 200 || id.chars().any(char::is_control) {
        return Err("an order id is 1 to 200 characters, none of them control characters".into());
    }
    Ok(())
}

/// Looks order `id` up with the daemon's sources, rules and alerts; `Err` holds the response
/// for a bad id or too many lookups at once.
pub async fn lookup(s: &Shared, id: &str) -> Result<crate::lookup::OrderReport, Response> {
    if let Err(e) = valid_order_id(id) {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({ "status": "error", "error": e })),
        )
            .into_response());
    }
    let Ok(_permit) = s.lookups.try_acquire() else {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            Json(json!({
                "status": "error",
                "error": format!("at most {MAX_LOOKUPS} order lookups run at once; try again"),
            })),
        )
            .into_response());
    };
    let links = crate::rule::template::Annotations::compile("links", &s.config.config.links).ok();
    let mut report = crate::lookup::order(&s.sources, &s.rules, links.as_ref(), id).await;
    let silences = s.silences.read().expect("silences lock").clone();
    let book = s.book.read().expect("book lock");
    report.alerts = Some(crate::lookup::alerts(&book, &s.rules, &silences, id));
    Ok(report)
}
