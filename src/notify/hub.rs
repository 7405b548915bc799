//! The hand-off between the engine and the notifiers: state changes go to every subscriber's
//! queue; notifiers that work from the whole alert set (Alertmanager) are woken instead.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::alert::Transition;

/// The engine's side of the notifier channels.
#[derive(Clone)]
pub struct Hub {
    subscribers: Vec<mpsc::UnboundedSender<Arc<Vec<Transition>>>>,
    wake: watch::Sender<u64>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            subscribers: Vec::new(),
            wake: watch::channel(0).0,
        }
    }
}

impl Hub {
    /// A queue of every future batch of changes.
    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<Arc<Vec<Transition>>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push(tx);
        rx
    }

    /// A signal that the alert set changed.
    pub fn wake_receiver(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Publishes one evaluation's changes.
    pub fn publish(&self, changes: Vec<Transition>) {
        if changes.is_empty() {
            return;
        }
        let batch = Arc::new(changes);
        for s in &self.subscribers {
            let _ = s.send(batch.clone());
        }
        self.wake.send_modify(|v| *v += 1);
    }
}
