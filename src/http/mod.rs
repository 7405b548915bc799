//! The HTTP server (axum): `/` (status page), `/metrics`, `/healthz`, `/readyz`, `/api/v1/alerts`,
//! `/api/v1/rules`, `/api/v1/silences`.

mod api;
pub mod client;
pub mod runbooks;
pub mod server;
pub mod status;

pub use api::router;
