//! Benchmark (not a test): evaluation cycles of the shipped rules over 1 000 000 orders.
//!
//! Loads the reference schema into a throwaway PostgreSQL, fills it with `ORDERS` orders
//! (default 1 000 000) through the demo's generator, then measures
//! - a full evaluation cycle of every shipped rule through the daemon (query, alert state
//!   machine, templates, SQLite persistence, metrics), and
//! - the same SQL run alone through a plain connection,
//!
//! and prints both, their ratio, the stuck orders found, and the process's peak memory.
//! Run: `cargo bench --bench cycle` (env `ORDERS`, `CYCLES` to change the sizes).

use std::time::{Duration, Instant};

use orderwatch::demo::{DemoEnv, start_env};
use tokio_postgres::NoTls;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The parent loads the data and runs the measurement in a child process of this same binary,
/// so the peak memory printed is the daemon's, not the data generator's.
const CHILD_ENV: &str = "ORDERWATCH_BENCH_CONFIG";

#[tokio::main]
async fn main() {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        let shop = std::env::var("ORDERWATCH_BENCH_SHOP").expect("shop url");
        let mes = std::env::var("ORDERWATCH_BENCH_MES").expect("mes url");
        measure(&config, &shop, &mes).await;
        return;
    }
    let orders = env_num("ORDERS", 1_000_000);
    let t = Instant::now();
    let env: DemoEnv = start_env("127.0.0.1:0", orders, None)
        .await
        .expect("demo environment");
    println!(
        "loaded {} orders ({} active) in {:.1?}",
        env.summary.orders,
        env.summary.active,
        t.elapsed()
    );
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, &env.config_path)
        .env("ORDERWATCH_BENCH_SHOP", &env.shop_url)
        .env("ORDERWATCH_BENCH_MES", &env.mes_url)
        .env("ORDERS", orders.to_string())
        .status()
        .expect("measurement process");
    drop(env);
    assert!(status.success(), "measurement failed");
}

async fn measure(config: &str, shop_url: &str, mes_url: &str) {
    let orders = env_num("ORDERS", 1_000_000);
    let cycles = env_num("CYCLES", 10) as usize;
    let loaded = orderwatch::configure::load(std::path::Path::new(config)).expect("config");
    let daemon = orderwatch::engine::Daemon::build(loaded).expect("daemon");
    let shared = daemon.shared();
    let rules = shared.rules.clone();

    // Warm-up: plans cached, pages in shared buffers, pools connected.
    for r in &rules {
        shared.evaluate(r).await;
    }

    // Stuck rules are compared with their SQL alone; `missing` rules (two databases, joined
    // in the daemon) are timed on their own.
    let stuck: Vec<_> = rules
        .iter()
        .filter(|r| r.other_source().is_none())
        .cloned()
        .collect();
    let missing: Vec<_> = rules
        .iter()
        .filter(|r| r.other_source().is_some())
        .cloned()
        .collect();
    let cycle_of = |set: Vec<std::sync::Arc<orderwatch::rule::Rule>>| {
        let shared = shared.clone();
        async move {
            let t = Instant::now();
            // Concurrently, as the daemon's rule tasks run.
            let mut tasks = tokio::task::JoinSet::new();
            for r in set {
                let shared = shared.clone();
                tasks.spawn(async move { shared.evaluate(&r).await });
            }
            tasks.join_all().await;
            t.elapsed()
        }
    };
    let mut cycle_times = Vec::new();
    let mut full_cycle_times = Vec::new();
    let mut missing_times: Vec<Vec<Duration>> = vec![Vec::new(); missing.len()];
    for _ in 0..cycles {
        cycle_times.push(cycle_of(stuck.clone()).await);
        full_cycle_times.push(cycle_of(rules.clone()).await);
        for (i, r) in missing.iter().enumerate() {
            let t = Instant::now();
            shared.evaluate(r).await;
            missing_times[i].push(t.elapsed());
        }
    }

    // The same SQL alone, sequentially per rule over one plain connection, summed.
    let mut alone_times = Vec::new();
    let mut clients = std::collections::BTreeMap::new();
    for (name, url) in [("shop", shop_url), ("mes", mes_url)] {
        let (c, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        clients.insert(name, c);
    }
    let mut found = Vec::new();
    for i in 0..cycles {
        let mut total = Duration::ZERO;
        for r in &stuck {
            let c = &clients[r.source.as_str()];
            let sql = r.sql().await.expect("sql");
            let stmt = c.prepare(&sql).await.expect("prepare");
            let secs = r.older_than().as_secs_f64();
            let t = Instant::now();
            let rows = c
                .query(&stmt, &[&r.statuses().to_vec(), &secs, &1001i64])
                .await
                .expect("query");
            total += t.elapsed();
            if i == 0 {
                // The rows statement carries no count: the daemon's own, as it last saw it.
                let _ = rows;
                let count = shared
                    .rule_status
                    .read()
                    .expect("status")
                    .get(&r.name)
                    .and_then(|s| s.count)
                    .unwrap_or(0) as i64;
                found.push((r.name.clone(), count));
            }
        }
        alone_times.push(total);
    }

    let (cycle, alone) = (median(cycle_times), median(alone_times));
    println!(
        "\norders: {orders}, rules: {} ({} stuck, {} missing), cycles: {cycles}",
        rules.len(),
        stuck.len(),
        missing.len()
    );
    for (name, n) in &found {
        println!("  {name:<34} {n:>6} stuck");
    }
    let status = shared.rule_status.read().expect("status").clone();
    for (r, times) in missing.iter().zip(missing_times) {
        let n = status.get(&r.name).and_then(|s| s.count).unwrap_or(0);
        let ms = median(times).as_secs_f64() * 1e3;
        println!(
            "  {:<34} {n:>6} lost   {ms:>7.2} ms (median; candidates read from one database, looked up in the other)",
            r.name
        );
    }
    println!(
        "full cycle, every rule (median):        {:>9.2} ms",
        median(full_cycle_times).as_secs_f64() * 1e3
    );
    println!(
        "stuck rules' cycle (daemon, median):    {:>9.2} ms",
        cycle.as_secs_f64() * 1e3
    );
    println!(
        "same SQL alone (sum per cycle, median): {:>9.2} ms",
        alone.as_secs_f64() * 1e3
    );
    println!(
        "ratio cycle / SQL alone:                {:>9.2}",
        cycle.as_secs_f64() / alone.as_secs_f64()
    );
    println!("daemon peak RSS: {:.1} MiB", peak_rss_kib() as f64 / 1024.0);
}
