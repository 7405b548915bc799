//! The `log` notifier: one log line per alert change (order ids and allow-listed labels only).

use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use crate::alert::{Transition, TransitionKind};
use crate::notify::mute::silence::Silence;

/// Prints alert changes (not the silenced ones).
pub struct LogNotifier {
    rx: mpsc::UnboundedReceiver<Arc<Vec<Transition>>>,
    silences: Arc<RwLock<Vec<Silence>>>,
}

impl LogNotifier {
    /// A notifier reading `rx`, honouring `silences`.
    pub fn new(
        rx: mpsc::UnboundedReceiver<Arc<Vec<Transition>>>,
        silences: Arc<RwLock<Vec<Silence>>>,
    ) -> Self {
        LogNotifier { rx, silences }
    }

    /// Runs until the hub is dropped.
    pub async fn run(mut self) {
        while let Some(batch) = self.rx.recv().await {
            let now = chrono::Utc::now();
            for t in batch.iter() {
                let a = &t.alert;
                let silenced = self
                    .silences
                    .read()
                    .expect("silences lock")
                    .iter()
                    .any(|s| s.is_active(now) && s.matches(&a.labels));
                if silenced {
                    continue;
                }
                let summary = a.annotation("summary").unwrap_or_default();
                let status = a.labels.get("status").unwrap_or("");
                match t.kind {
                    TransitionKind::Pending => tracing::debug!(
                        target: "orderwatch::alert", rule = %a.rule, key = %a.key, status, "alert pending: {summary}"
                    ),
                    TransitionKind::Firing => tracing::warn!(
                        target: "orderwatch::alert", rule = %a.rule, key = %a.key, status,
                        starts_at = %a.starts_at.to_rfc3339(), "FIRING: {summary}"
                    ),
                    TransitionKind::Resolved => tracing::info!(
                        target: "orderwatch::alert", rule = %a.rule, key = %a.key, status, "RESOLVED: {summary}"
                    ),
                }
            }
        }
    }
}
