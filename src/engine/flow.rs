//! The order flow loop: each `gauges_interval`, a source's transitions into its tracker's
//! metrics, and what changed into the state store.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::shared::Shared;
use crate::flow::{Tracker, flows_for};
use crate::source::Source;

/// Sets up the order flow of every source that observes its transitions, before anything
/// reads them: its tracker from what the store kept, recording from the previous run's
/// watermarks. Returns the loops to spawn. Families of sources no longer observed go.
pub(super) fn prepare(shared: &Arc<Shared>) -> Vec<(Arc<Source>, Tracker)> {
    let observed: HashSet<String> = shared
        .sources
        .values()
        .filter(|s| s.observes_flow())
        .map(|s| s.name.clone())
        .collect();
    shared.metrics.flow.retain(&observed);
    let mut keep: Vec<String> = observed.iter().cloned().collect();
    keep.sort();
    if let Err(e) = crate::flow::forget_others(&shared.store, &keep) {
        tracing::warn!(error = %e, "order flow: the state of sources no longer observed could not be deleted");
    }
    let mut out = Vec::new();
    for source in shared.sources.values() {
        if !source.observes_flow() {
            continue;
        }
        let label = shared
            .config
            .config
            .sources
            .get(&source.name)
            .and_then(|c| c.value.flow_label.as_ref())
            .map(|l| l.value.as_str());
        let families = shared.metrics.flow.source(&source.name, label);
        let flows = flows_for(&shared.config.config.flows, source);
        match Tracker::load(&shared.store, source, flows, families) {
            Ok((tracker, persisted)) => {
                source.record_transitions(persisted);
                out.push((source.clone(), tracker));
            }
            Err(e) => tracing::warn!(source = %source.name, error = %e,
                "order flow metrics off for this source: the state store could not be read"),
        }
    }
    out
}

/// One source's transitions into its tracker, every `gauges_interval`.
pub(super) async fn flow_loop(
    shared: Arc<Shared>,
    source: Arc<Source>,
    mut tracker: Tracker,
    mut stop: watch::Receiver<bool>,
) {
    let every = shared.config.config.gauges_interval.0;
    let mut failing = false;
    let mut expired = std::time::Instant::now();
    loop {
        if expired.elapsed() >= std::time::Duration::from_secs(3600) {
            expired = std::time::Instant::now();
            let n = tracker.expire_marks(chrono::Utc::now().timestamp_micros());
            if n > 0 {
                tracing::info!(source = %source.name, flows = n,
                    "order flow: forgot flows not ended within 5 weeks (orders deleted or archived?)");
            }
        }
        match source.transitions().await {
            Ok(read) => {
                if failing {
                    tracing::info!(source = %source.name, "order flow: transitions read again");
                }
                failing = false;
                if read.dropped > 0 {
                    tracing::warn!(source = %source.name, dropped = read.dropped,
                        "order flow: transitions dropped, too many waited to be counted");
                }
                let started = tracker.start_from(&source, read.current);
                if started > 0 {
                    tracing::info!(source = %source.name, orders = started,
                        "order flow: orders already in a flow's first status are timed from when they entered it");
                }
                let applied = tracker.apply(&source, read.transitions);
                if let Err(e) = tracker.save(&shared.store, &read.watermarks) {
                    tracing::warn!(source = %source.name, error = %e,
                        "order flow: saving its state failed (retried with the next read)");
                }
                if applied.transitions > 0 {
                    let (marks, bytes) = tracker.in_flight();
                    tracing::debug!(source = %source.name, transitions = applied.transitions,
                        flows = applied.flows, in_flight = read.in_flight,
                        reader_bytes = read.approx_bytes, flows_in_flight = marks,
                        flow_bytes = bytes, "order flow read");
                }
            }
            // The source's own loops report it down; a wrong model fails its rules too.
            Err(e) => {
                if !failing {
                    tracing::warn!(source = %source.name, error = %e,
                        "order flow: reading transitions failed (retried each gauges_interval)");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
