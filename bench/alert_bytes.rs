//! Benchmark (not a test): what an alert costs in memory, counted by the allocator.
//!
//! Builds the alerts of one `stuck` rule as the daemon does (findings → observations → the
//! book), then prints the heap bytes held per alert: by the findings of one evaluation, by
//! the book once the findings are gone, and what a steady evaluation (every alert unchanged,
//! only touched) allocates. No database: the rule's source is never connected to.
//!
//! Run: `cargo bench --bench alert_bytes` (env `ALERTS`, default 100 000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use orderwatch::alert::{AlertBook, Coverage, RuleTiming};
use orderwatch::rule::observe::{Applier, RuleParts, observation, unchanged};
use orderwatch::rule::{Finding, Outcome};

/// The system allocator, counting the bytes live and allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        ALLOCATED.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        ALLOCATED.fetch_add(new, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    max_findings: 1000000\n    max_alerts: 1000000\n    labels: {team: sales}\n    annotations:\n      description: \"{{ order_id }} ({{ labels.order_type }}) has waited {{ age }}\"\n",
    )
    .unwrap();
    let main = "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: postgres://orderwatch@127.0.0.1:1/shop\n    orders: {table: orders, id: id, status: status, entered_at: at, labels: [order_type]}\n";
    let loaded =
        orderwatch::configure::load_str(&dir.path().join("orderwatch.yaml"), main).unwrap();
    let (_, mut rules) = orderwatch::engine::build_parts(&loaded, false).unwrap();
    let parts = RuleParts::new(rules.remove(0), "http://orderwatch/runbooks".into());
    let now = Utc::now();
    let types = ["ring", "earrings", "pendant"];

    let before = live();
    let outcome = Outcome {
        count: n as u64,
        findings: (0..n)
            .map(|i| Finding {
                order_id: format!("JW-{:08}", i),
                status: "SUBMITTED".into(),
                entered_at: now - chrono::Duration::hours(3)
                    + chrono::Duration::milliseconds(i as i64),
                age_seconds: 10_800.0,
                labels: BTreeMap::from([("order_type".to_string(), types[i % 3].to_string())])
                    .into(),
                other_status: None,
            })
            .collect(),
        ..Outcome::default()
    };
    let findings = live() - before;

    let timing = RuleTiming {
        for_: Duration::ZERO,
        keep_firing_for: Duration::ZERO,
        interval: Duration::from_secs(10),
    };
    let mut book = AlertBook::default();
    let before_book = live();
    let changes = book.apply(
        "submitted_over_1h",
        timing,
        now,
        (0..n)
            .map(|i| observation(&parts, &outcome.findings[i], i))
            .collect(),
        Coverage::All,
    );
    let with_transitions = live() - before_book;
    drop(changes);
    // What the store writes after the evaluation (the daemon takes it at once).
    drop(book.take_unsaved());
    let book_bytes = live() - before_book;

    // A steady evaluation as the daemon applies it (`Applier`, a chunk at a time): every
    // alert unchanged, only touched.
    let later = now + chrono::Duration::seconds(10);
    for f in &outcome.findings {
        assert!(unchanged(
            &parts,
            book.get("submitted_over_1h", &f.order_id).unwrap(),
            f
        ));
    }
    let mut chunks: Vec<Vec<Finding>> = outcome
        .findings
        .chunks(orderwatch::rule::CHUNK)
        .map(<[Finding]>::to_vec)
        .collect();
    let book = std::sync::RwLock::new(book);
    let parts = std::sync::Arc::new(parts);
    let allocated = ALLOCATED.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut applier = Applier::new(&book, parts.clone(), timing, later);
    for chunk in &mut chunks {
        applier.findings(chunk);
    }
    let mut streamed = Outcome {
        count: n as u64,
        streamed: n,
        ..Outcome::default()
    };
    assert!(applier.finish(&mut streamed).is_empty());
    let apply_time = started.elapsed();
    let steady = ALLOCATED.load(Ordering::Relaxed) - allocated;
    drop(outcome);
    let book = book.into_inner().unwrap();

    // One message's annotations, rendered when asked.
    let a = book.get("submitted_over_1h", "JW-00000007").unwrap();
    let notes = a.annotations();
    println!("{n} alerts of one stuck rule (one allow-listed label, a description template)");
    println!(
        "  findings of one evaluation          {:>8.1} MiB  {:>5} B an order",
        findings as f64 / 1048576.0,
        findings / n
    );
    println!(
        "  book + the transitions of creation  {:>8.1} MiB  {:>5} B an alert",
        with_transitions as f64 / 1048576.0,
        with_transitions / n
    );
    println!(
        "  book                                {:>8.1} MiB  {:>5} B an alert (own_bytes says {})",
        book_bytes as f64 / 1048576.0,
        book_bytes / n,
        a.own_bytes()
    );
    println!(
        "  a steady evaluation allocates       {:>8.1} MiB  {:>5} B an alert",
        steady as f64 / 1048576.0,
        steady / n
    );
    println!(
        "  a steady evaluation's bookkeeping   {:>8.1} ms   {:>5} ns an order",
        apply_time.as_secs_f64() * 1000.0,
        apply_time.as_nanos() / n as u128
    );
    println!("  annotations rendered for a message: {notes:?}");
}
