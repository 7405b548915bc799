//! The HTTP server (axum): `/metrics`, `/healthz`, `/readyz`, `/api/v1/alerts`, `/api/v1/rules`.

mod api;
pub mod client;

pub use api::router;
