//! Work that must not hold an async worker: SQLite, big encodes, a whole book's bookkeeping.
//!
//! [`off_worker`] runs it where the async workers keep answering (`/metrics`, `/healthz`):
//! on the multi-threaded runtime the calling worker hands its queue to a fresh one for the
//! duration (`block_in_place`); elsewhere (a plain thread, a single-threaded test runtime) it
//! simply runs.

/// Runs `f` without holding up the runtime's other tasks (see the module docs).
pub fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::off_worker;

    #[test]
    fn runs_outside_a_runtime() {
        assert_eq!(off_worker(|| 2 + 2), 4);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_on_a_single_threaded_runtime() {
        assert_eq!(off_worker(|| 3), 3);
    }

    /// While the only worker runs a long blocking job, another task still runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn other_tasks_go_on_meanwhile() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let ticks = std::sync::Arc::new(AtomicU32::new(0));
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Spawned, so it runs on the worker (the test's own future does not).
        let job = tokio::spawn(async move {
            off_worker(|| {
                std::thread::sleep(std::time::Duration::from_millis(400));
                ticks.load(Ordering::SeqCst)
            })
        });
        assert_eq!(job.await.unwrap(), 5, "the ticker ran meanwhile");
        ticker.await.unwrap();
    }
}
