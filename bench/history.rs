//! Benchmark (not a test): a status log with the same stuck orders and 1× then 10× the finished
//! orders' history (issue 11). Prints, side by side, the daemon's start-up read, its steady
//! evaluation (rows arriving between evaluations), `once`, and memory.
//!
//! Data: `ORDERS` orders (default 100 000), a fifth of them SUBMITTED for over an hour with a
//! comment repeating the status after they entered it (and some events stored twice), the rest
//! finished (4 rows each). Then `(FACTOR - 1) × ORDERS` more finished orders are added (default
//! FACTOR 10: 900 000 orders, 3.6 M rows) and everything is measured again.
//! Run: `cargo bench --bench history` (env `ORDERS`, `FACTOR`, `STEADY`).

use std::time::{Duration, Instant};

use orderwatch::pg_sandbox::PgSandbox;
use tokio_postgres::NoTls;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

const CHILD_ENV: &str = "ORDERWATCH_BENCH_HISTORY_URL";

/// One measurement, as the child prints it.
#[derive(Debug, Default, Clone)]
struct Figures {
    rows: u64,
    startup: f64,
    steady_ms: f64,
    once: f64,
    kept: u64,
    bytes_per_order: f64,
    rss_mib: f64,
    found: u64,
}

#[tokio::main]
async fn main() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        measure(&url).await;
        return;
    }
    let orders = env_num("ORDERS", 100_000) as i64;
    let factor = env_num("FACTOR", 10) as i64;
    let pg = tokio::task::spawn_blocking(|| PgSandbox::start().expect("PostgreSQL"))
        .await
        .unwrap();
    pg.create_database("shop").unwrap();
    let url = pg.url("shop");
    let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let t = Instant::now();
    c.batch_execute(&format!(
        "CREATE TABLE order_log (id bigserial PRIMARY KEY, order_id text NOT NULL, status text NOT NULL,
           changed_at timestamptz NOT NULL, customer_email text, note text);
         -- Stuck: SUBMITTED 2–3 h ago, a comment repeating it 30 min ago, every tenth event twice.
         INSERT INTO order_log (order_id, status, changed_at, customer_email, note)
         SELECT 'S-' || o, 'SUBMITTED', now() - make_interval(mins => 120 + (o % 60)::int), 'c' || o || '@example.com', 'submitted'
         FROM generate_series(1, {stuck}) o;
         INSERT INTO order_log (order_id, status, changed_at, note)
         SELECT 'S-' || o, 'SUBMITTED', now() - interval '30 minutes', 'comment' FROM generate_series(1, {stuck}) o;
         INSERT INTO order_log (order_id, status, changed_at, note)
         SELECT 'S-' || o, 'SUBMITTED', now() - interval '30 minutes', 'resent' FROM generate_series(1, {stuck}, 10) o;",
        stuck = orders / 5
    ))
    .await
    .unwrap();
    finished(&c, 1, orders - orders / 5).await;
    c.batch_execute(
        "CREATE INDEX ON order_log (status, changed_at);
         CREATE INDEX ON order_log (order_id, changed_at);
         CREATE INDEX ON order_log (changed_at);",
    )
    .await
    .unwrap();
    c.batch_execute("VACUUM ANALYZE order_log").await.unwrap();
    println!("1×: loaded in {:.1?}", t.elapsed());
    let one = child(&url);
    let t = Instant::now();
    finished(&c, orders, orders * (factor - 1)).await;
    c.batch_execute("VACUUM ANALYZE order_log").await.unwrap();
    println!("{factor}×: loaded in {:.1?}", t.elapsed());
    let ten = child(&url);
    let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { 0.0 };
    println!();
    println!("| figure | 1× | {factor}× | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| log rows | {} | {} | {:.2} |",
        one.rows,
        ten.rows,
        ratio(one.rows as f64, ten.rows as f64)
    );
    println!(
        "| stuck orders found (daemon = once = truth) | {} | {} | |",
        one.found, ten.found
    );
    println!(
        "| daemon steady evaluation, median ms | {:.1} | {:.1} | {:.2} |",
        one.steady_ms,
        ten.steady_ms,
        ratio(one.steady_ms, ten.steady_ms)
    );
    println!(
        "| daemon start-up read, s | {:.2} | {:.2} | {:.2} |",
        one.startup,
        ten.startup,
        ratio(one.startup, ten.startup)
    );
    println!(
        "| `once`, s | {:.2} | {:.2} | {:.2} |",
        one.once,
        ten.once,
        ratio(one.once, ten.once)
    );
    println!("| orders kept | {} | {} | |", one.kept, ten.kept);
    println!(
        "| kept state, bytes per order (estimate) | {:.0} | {:.0} | |",
        one.bytes_per_order, ten.bytes_per_order
    );
    println!(
        "| process peak RSS, MiB | {:.1} | {:.1} | {:.2} |",
        one.rss_mib,
        ten.rss_mib,
        ratio(one.rss_mib, ten.rss_mib)
    );
    drop(c);
    drop(pg);
}

/// `n` finished orders with ids from `first`: SUBMITTED, PRICE_CALCULATED, PACKAGING, CLOSED,
/// two to five days ago.
async fn finished(c: &tokio_postgres::Client, first: i64, n: i64) {
    let step = 200_000;
    let mut from = first;
    while from < first + n {
        let to = (from + step - 1).min(first + n - 1);
        c.batch_execute(&format!(
            "INSERT INTO order_log (order_id, status, changed_at, customer_email, note)
             SELECT 'F-' || o, s, now() - make_interval(days => 2 + (o % 3)::int, mins => (10 - i)::int * 30),
                    'c' || o || '@example.com', 'done'
             FROM generate_series({from}, {to}) o,
                  unnest(ARRAY['SUBMITTED','PRICE_CALCULATED','PACKAGING','CLOSED']) WITH ORDINALITY AS x(s, i)"
        ))
        .await
        .unwrap();
        from = to + 1;
    }
}

/// Runs the measurement in a child process of this binary (so the peak memory is the
/// daemon's alone) and reads back its figures.
fn child(url: &str) -> Figures {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, url)
        .output()
        .expect("measurement process");
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |k: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Figures {
        rows: get("rows") as u64,
        startup: get("startup"),
        steady_ms: get("steady_ms"),
        once: get("once"),
        kept: get("kept") as u64,
        bytes_per_order: get("bytes_per_order"),
        rss_mib: get("rss_mib"),
        found: get("found") as u64,
    }
}

async fn measure(url: &str) {
    let steady = env_num("STEADY", 20) as usize;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  log:\n    url: \"{url}?sslmode=disable\"\n    allow_superuser: true\n    statement_timeout: 120s\n    orders: {{ history_table: order_log, id: order_id, status: status, entered_at: changed_at, tiebreak: id }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: log\n    status: SUBMITTED\n    older_than: 1h\n    max_findings: 1000\n",
    )
    .unwrap();
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let rows: i64 = c
        .query_one("SELECT count(*) FROM order_log", &[])
        .await
        .unwrap()
        .get(0);
    println!("rows={rows}");

    // `once`: one statement, no state.
    let loaded = orderwatch::configure::load(&dir.path().join("orderwatch.yaml")).unwrap();
    let t = Instant::now();
    let results = orderwatch::engine::evaluate_once(&loaded, &[])
        .await
        .unwrap();
    let once = t.elapsed();
    let once_found = results[0].1.as_ref().expect("once").count;
    println!("once={:.3}", once.as_secs_f64());

    // The daemon: the start-up read, then steady evaluations with rows arriving in between.
    let rss_before = status_kib("VmRSS:");
    let daemon = orderwatch::engine::Daemon::build(loaded).unwrap();
    let shared = daemon.shared();
    let rule = shared.rules[0].clone();
    let source = shared.sources["log"].clone();
    let t = Instant::now();
    let first = rule.evaluate().await.expect("start-up");
    println!("startup={:.3}", t.elapsed().as_secs_f64());
    assert_eq!(first.count, once_found, "daemon and once agree");
    let mut times = Vec::new();
    for i in 0..steady {
        // A hundred new events: comments on stuck orders and orders moving on and back.
        c.batch_execute(&format!(
            "INSERT INTO order_log (order_id, status, changed_at, note)
             SELECT 'S-' || (o * 97 % {n} + 1), CASE WHEN o % 2 = 0 THEN 'SUBMITTED' ELSE 'PRICE_CALCULATED' END, now(), 'tick {i}'
             FROM generate_series(1, 100) o",
            n = (once_found.max(1))
        ))
        .await
        .unwrap();
        let t = Instant::now();
        let o = rule.evaluate().await.expect("steady");
        times.push(t.elapsed());
        assert!(o.count > 0);
    }
    let steady_ms = median(times).as_secs_f64() * 1000.0;
    println!("steady_ms={steady_ms:.2}");
    let h = source.history().await.unwrap().expect("kept state");
    println!("kept={}", h.len());
    println!(
        "bytes_per_order={:.0}",
        h.approx_bytes() as f64 / h.len().max(1) as f64
    );
    drop(h);
    println!("found={once_found}");
    println!("rss_mib={:.1}", status_kib("VmHWM:") as f64 / 1024.0);
    println!(
        "rss_growth_mib={:.1}",
        (status_kib("VmRSS:") as f64 - rss_before as f64) / 1024.0
    );
}
