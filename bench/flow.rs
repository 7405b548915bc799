//! Benchmark (not a test): what observing the order flow costs (issue 16).
//!
//! Two tables of orders in one throwaway PostgreSQL, `big` with `ORDERS` orders (default
//! 5 000 000) and `small` with a tenth of them, each with `ACTIVE` orders in flight (default
//! 100 000; the rest CLOSED over the last year). Every `INTERVAL` seconds (default 30, real
//! time: the reads re-read a 2-minute overlap) `RATE` / 2 orders (default `RATE` 1 000 a
//! minute) move one status on in each table, and the daemon's transition read runs on each
//! (`Source::transitions`, as the flow loop calls it), beside the shipped kind of stuck rule
//! (SUBMITTED over 1 hour) through the daemon. Prints per table: the first read (the orders in
//! flight), the steady read's median time and its plan (index scans only), the stuck rule's
//! median, their ratios big/small, the transitions counted against the truth, and the memory
//! per order in flight (the reader's estimate and the process's RSS around the first read).
//! Run: `cargo bench --bench flow` (env `ORDERS`, `ACTIVE`, `RATE`, `INTERVAL`, `READS`).

use std::time::{Duration, Instant};

use orderwatch::pg_sandbox::PgSandbox;
use rand::{Rng, SeedableRng};
use tokio_postgres::NoTls;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

const STATUSES: [&str; 8] = [
    "SUBMITTED",
    "PRICE_CALCULATED",
    "MANUFACTURING_APPROVED",
    "MANUFACTURING_STARTED",
    "MANUFACTURING_COMPLETED",
    "PACKAGING",
    "SHIPPED",
    "CLOSED",
];

/// Fills `table` with `n` orders, `active` of them in flight (ids 1..=active, statuses in
/// turn, entered within the last 3 days), the rest CLOSED within the last year.
async fn fill(c: &tokio_postgres::Client, table: &str, n: i64, active: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id text PRIMARY KEY, status text NOT NULL, entered_at timestamptz NOT NULL,
           order_type text, customer_email text)"
    ))
    .await
    .unwrap();
    let step = 500_000;
    let mut from = 1;
    while from <= n {
        let to = (from + step - 1).min(n);
        c.batch_execute(&format!(
            "INSERT INTO {table}
             SELECT o::text,
                    CASE WHEN o <= {active} THEN (ARRAY['SUBMITTED','PRICE_CALCULATED','MANUFACTURING_APPROVED',
                      'MANUFACTURING_STARTED','MANUFACTURING_COMPLETED','PACKAGING','SHIPPED'])[1 + o % 7] ELSE 'CLOSED' END,
                    now() - make_interval(secs => CASE WHEN o <= {active} THEN 3600 + o % (3 * 86400)
                                                       ELSE 3 * 86400 + o % (365 * 86400) END),
                    (ARRAY['ring','pendant','earrings','bracelet'])[1 + o % 4],
                    'c' || o || '@example.com'
             FROM generate_series({from}, {to}) o"
        ))
        .await
        .unwrap();
        from = to + 1;
    }
    c.batch_execute(&format!("CREATE INDEX ON {table} (status, entered_at)"))
        .await
        .unwrap();
    c.batch_execute(&format!("VACUUM ANALYZE {table}"))
        .await
        .unwrap();
}

/// Moves `ids` one status on, now; returns how many moved.
async fn advance(c: &tokio_postgres::Client, table: &str, ids: &[String]) -> u64 {
    c.execute(
        &format!(
            "UPDATE {table} SET entered_at = now(), status = (SELECT s.next FROM
               (SELECT unnest($2::text[]) AS cur, unnest($3::text[]) AS next) s WHERE s.cur = status)
             WHERE id = ANY($1) AND status <> 'CLOSED'"
        ),
        &[
            &ids,
            &STATUSES[..7].to_vec(),
            &STATUSES[1..].to_vec(),
        ],
    )
    .await
    .unwrap()
}

#[derive(Default)]
struct Figures {
    first_ms: f64,
    in_flight: usize,
    reader_bytes: usize,
    rss_delta_kib: u64,
    steady: Vec<Duration>,
    stuck: Vec<Duration>,
    counted: u64,
    moved: u64,
    plan_ms: f64,
    seq_scans: usize,
    plan_rows: u64,
    current_ms: f64,
    current_rows: u64,
    current_blocks: u64,
}

#[tokio::main]
async fn main() {
    let orders = env_num("ORDERS", 5_000_000) as i64;
    let active = env_num("ACTIVE", 100_000) as i64;
    let rate = env_num("RATE", 1_000);
    let interval = Duration::from_secs(env_num("INTERVAL", 30));
    let reads = env_num("READS", 8) as usize;
    let per_read = (rate as f64 * interval.as_secs_f64() / 60.0).round() as usize;

    let pg = tokio::task::spawn_blocking(|| PgSandbox::start().expect("PostgreSQL"))
        .await
        .unwrap();
    pg.create_database("shop").unwrap();
    let url = pg.url("shop");
    let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let t = Instant::now();
    fill(&c, "orders_big", orders, active).await;
    fill(&c, "orders_small", orders / 10, active).await;
    println!(
        "loaded {orders} + {} orders ({active} in flight each) in {:.1?}",
        orders / 10,
        t.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let model = "id: id, status: status, entered_at: entered_at, labels: [order_type]";
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\n\
             flows:\n  price_calculation: [SUBMITTED, PRICE_CALCULATED]\n  lead_time: [SUBMITTED, SHIPPED]\n\
             sources:\n\
             \x20 big:\n    url: \"{url}?sslmode=disable\"\n    allow_superuser: true\n    statement_timeout: 120s\n    flow_label: order_type\n\
             \x20   orders: {{ table: orders_big, {model} }}\n\
             \x20 small:\n    url: \"{url}?sslmode=disable\"\n    allow_superuser: true\n    statement_timeout: 120s\n    flow_label: order_type\n\
             \x20   orders: {{ table: orders_small, {model} }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n\
         \x20 - { name: big_submitted_over_1h, source: big, status: SUBMITTED, older_than: 1h }\n\
         \x20 - { name: small_submitted_over_1h, source: small, status: SUBMITTED, older_than: 1h }\n",
    )
    .unwrap();
    let loaded = orderwatch::configure::load(&dir.path().join("orderwatch.yaml")).unwrap();
    let flows = loaded.config.flows.clone();
    let daemon = orderwatch::engine::Daemon::build(loaded).unwrap();
    let shared = daemon.shared();
    let (store, _) = orderwatch::alert::Store::open(&dir.path().join("state")).unwrap();
    let metrics = orderwatch::metrics::Metrics::new();

    let mut figures: Vec<(String, Figures)> = Vec::new();
    let mut trackers = Vec::new();
    for name in ["big", "small"] {
        let source = shared.sources[name].clone();
        let families = metrics.flow.source(name, Some("order_type"));
        let fl = orderwatch::flow::flows_for(&flows, &source);
        let (tracker, persisted) =
            orderwatch::flow::Tracker::load(&store, &source, fl, families).unwrap();
        source.record_transitions(persisted);
        let rss = rss_kib();
        let t = Instant::now();
        let read = source.transitions().await.expect("first read");
        let first_ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut tracker = tracker;
        tracker.start_from(&source, read.current);
        figures.push((
            name.to_string(),
            Figures {
                first_ms,
                in_flight: read.in_flight,
                reader_bytes: read.approx_bytes,
                rss_delta_kib: rss_kib().saturating_sub(rss),
                ..Default::default()
            },
        ));
        trackers.push(tracker);
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    for i in 0..reads {
        let started = Instant::now();
        for (k, name) in ["big", "small"].iter().enumerate() {
            let ids: Vec<String> = (0..per_read)
                .map(|_| rng.random_range(1..=active).to_string())
                .collect::<std::collections::HashSet<_>>()
                .into_iter()
                .collect();
            let moved = advance(&c, &format!("orders_{name}"), &ids).await;
            let source = shared.sources[*name].clone();
            let t = Instant::now();
            let read = source.transitions().await.expect("read");
            let took = t.elapsed();
            let n = read.transitions.len() as u64;
            trackers[k].apply(&source, read.transitions);
            trackers[k].save(&store, &read.watermarks).unwrap();
            let rule = shared
                .rules
                .iter()
                .find(|r| r.source == *name)
                .unwrap()
                .clone();
            let t = Instant::now();
            rule.evaluate().await.expect("stuck rule");
            let stuck = t.elapsed();
            let f = &mut figures[k].1;
            f.steady.push(took);
            f.stuck.push(stuck);
            f.counted += n;
            f.moved += moved;
            println!(
                "read {i} {name}: moved {moved}, counted {n}, transition read {:.1} ms, stuck rule {:.1} ms",
                took.as_secs_f64() * 1000.0,
                stuck.as_secs_f64() * 1000.0
            );
        }
        if i + 1 < reads {
            tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
        }
    }

    // The steady read's plan, as the daemon binds it (cursors at the last read, the late
    // window 2 minutes before it) and runs it (JIT off, as every daemon transaction sets it).
    c.batch_execute("SET jit = off").await.unwrap();
    for (name, f) in figures.iter_mut() {
        let source = shared.sources[name.as_str()].clone();
        let sql = source.model_sql().await.unwrap();
        let read = &sql.transitions.as_ref().unwrap().read;
        let statuses: Vec<String> = STATUSES.iter().map(|s| s.to_string()).collect();
        let last = chrono::Utc::now() - chrono::Duration::seconds(30);
        let late = last - chrono::Duration::seconds(120);
        let cursors = vec![last; statuses.len()];
        let ids: Vec<Option<String>> = vec![None; statuses.len()];
        // 7 runs: the plan of the first, the median time of all.
        let mut plans: Vec<serde_json::Value> = Vec::new();
        for _ in 0..7 {
            let row = c
                .query_one(
                    &format!("EXPLAIN (ANALYZE, FORMAT JSON) {read}"),
                    &[
                        &statuses,
                        &cursors,
                        &ids,
                        &last,
                        &late,
                        &orderwatch::source::transitions::TABLE_READ_LIMIT,
                    ],
                )
                .await
                .unwrap();
            plans.push(row.get(0));
        }
        let plan = &plans[0];
        let mut ms: Vec<f64> = plans
            .iter()
            .map(|p| p[0]["Execution Time"].as_f64().unwrap_or(0.0))
            .collect();
        ms.sort_by(f64::total_cmp);
        f.plan_ms = ms[ms.len() / 2];
        // The first read's statement: the orders in flight, never the CLOSED ones.
        let current = &sql.transitions.as_ref().unwrap().current;
        let r = c
            .query_one(
                &format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {current}"),
                &[&vec!["CLOSED".to_string()]],
            )
            .await
            .unwrap();
        let p: serde_json::Value = r.get(0);
        f.current_ms = p[0]["Execution Time"].as_f64().unwrap_or(0.0);
        f.current_rows = p[0]["Plan"]["Actual Rows"].as_u64().unwrap_or(0);
        f.current_blocks = p[0]["Plan"]["Shared Hit Blocks"].as_u64().unwrap_or(0)
            + p[0]["Plan"]["Shared Read Blocks"].as_u64().unwrap_or(0);
        let text = plan.to_string();
        f.seq_scans = text.matches("\"Seq Scan\"").count();
        f.plan_rows = plan[0]["Plan"]["Actual Rows"].as_u64().unwrap_or(0);
    }

    let get = |n: &str| &figures.iter().find(|(k, _)| k == n).unwrap().1;
    let (big, small) = (get("big"), get("small"));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!();
    println!(
        "| figure | big ({orders} orders) | small ({} orders) | big / small |",
        orders / 10
    );
    println!("|---|---|---|---|");
    println!(
        "| transitions moved / counted ({reads} reads, {per_read} a read) | {} / {} | {} / {} | |",
        big.moved, big.counted, small.moved, small.counted
    );
    let (b, s) = (median(big.steady.clone()), median(small.steady.clone()));
    println!(
        "| transition read, median ms | {b:.1} | {s:.1} | {:.2} |",
        ratio(b, s)
    );
    println!(
        "| its statement alone (EXPLAIN ANALYZE, median of 7), ms; rows; seq scans | {:.1}; {}; {} | {:.1}; {}; {} | {:.2} |",
        big.plan_ms,
        big.plan_rows,
        big.seq_scans,
        small.plan_ms,
        small.plan_rows,
        small.seq_scans,
        ratio(big.plan_ms, small.plan_ms)
    );
    let (bs, ss) = (median(big.stuck.clone()), median(small.stuck.clone()));
    println!(
        "| stuck rule (SUBMITTED over 1 h), median ms | {bs:.1} | {ss:.1} | {:.2} |",
        ratio(bs, ss)
    );
    println!(
        "| transition read / stuck rule | {:.2} | {:.2} | |",
        ratio(b, bs),
        ratio(s, ss)
    );
    println!(
        "| first read (orders in flight), ms | {:.0} | {:.0} | {:.2} |",
        big.first_ms,
        small.first_ms,
        ratio(big.first_ms, small.first_ms)
    );
    println!(
        "| its statement alone (EXPLAIN ANALYZE): ms; rows; buffers | {:.0}; {}; {} | {:.0}; {}; {} | {:.2} |",
        big.current_ms,
        big.current_rows,
        big.current_blocks,
        small.current_ms,
        small.current_rows,
        small.current_blocks,
        ratio(big.current_ms, small.current_ms)
    );
    println!(
        "| orders in flight; reader's bytes an order (estimate) | {}; {:.0} | {}; {:.0} | |",
        big.in_flight,
        big.reader_bytes as f64 / big.in_flight.max(1) as f64,
        small.in_flight,
        small.reader_bytes as f64 / small.in_flight.max(1) as f64,
    );
    println!(
        "| RSS grown by the first read, bytes an order in flight | {:.0} | {:.0} | |",
        big.rss_delta_kib as f64 * 1024.0 / big.in_flight.max(1) as f64,
        small.rss_delta_kib as f64 * 1024.0 / small.in_flight.max(1) as f64,
    );
    for (k, t) in trackers.iter().enumerate() {
        let (n, bytes) = t.in_flight();
        println!(
            "| {}: orders with a flow started; bytes an order | {n}; {:.0} | | |",
            figures[k].0,
            bytes as f64 / n.max(1) as f64
        );
    }
    drop(c);
    drop(pg);
}
