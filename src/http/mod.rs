//! The HTTP server (axum): `/` (status page), `/metrics`, `/healthz`, `/readyz`, `/api/v1/alerts`,
//! `/api/v1/rules`, `/api/v1/silences`, `/api/v1/orders/{id}`, `/orders?id=…` (the order page).

mod api;
pub mod client;
pub mod order_page;
mod orders;
pub mod runbooks;
pub mod server;
pub mod status;

pub use api::router;
pub use orders::{lookup, valid_order_id};
