//! Benchmark (not a test): orderwatch during an incident.
//!
//! MES is down and orders pile up: a 2 000 000-order shop table of which 100 000 SUBMITTED
//! orders are stuck, watched by the release daemon (`orderwatch run`, its own process) that
//! pushes to a real Alertmanager. Printed, in one run:
//!
//! - **incident** (`max_findings`/`max_alerts` 1 000 000, interval 10 s): the daemon's steady
//!   evaluation against the same SQL alone (a plain connection, JIT off) in a quiet minute
//!   (scraped every 15 s, as Prometheus would; the daemon's CPU time in it), then a minute in
//!   which one client polls `/metrics` and `/healthz` without pause: their p99, the
//!   evaluations in it, the bytes the daemon wrote to disk; peak RSS of the daemon process,
//!   the cost of a count-only query (what sql_exporter runs), and a restart: time to
//!   `/readyz` 200 with every alert restored;
//! - **default caps** (1 000 / 200): the same figures;
//! - **wide** (`max_findings` 100 000, `max_alerts` 200): many rows fetched, few alerts built;
//! - **60 rules** (6 statuses × 10 thresholds, 10 to 100 minutes) against one rule per status at
//!   the lowest threshold (the scan the ten share), by `once`;
//! - **19 000 stuck in 5 000 000** (`BIG=1`, off by default: the load takes a few minutes).
//!
//! Run: `cargo bench --bench incident` (env `ORDERS`, `STUCK`, `SCENARIOS=incident,caps,wide,rules`,
//! `BIG=1`, `DAEMON_WRAP` to run the daemon under a profiler, e.g.
//! `DAEMON_WRAP="heaptrack -o /tmp/ht-%n" cargo bench --bench incident`). Needs PostgreSQL's server binaries and `prometheus-alertmanager`
//! (`scripts/ensure-deps`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orderwatch::pg_sandbox::PgSandbox;
use tokio_postgres::NoTls;

const BIN: &str = env!("CARGO_BIN_EXE_orderwatch");

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `/proc/PID/…` field in kB (status) or bytes (io).
fn proc_field(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time the process `pid` has used (user + system), from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A real Alertmanager on a free port that accepts everything and notifies no one.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start() -> Alertmanager {
        let bin = [
            "/usr/bin/prometheus-alertmanager",
            "/usr/local/bin/alertmanager",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("prometheus-alertmanager (scripts/ensure-deps installs it)");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("am.yml"),
            "route:\n  receiver: none\n  group_by: [rule]\nreceivers:\n  - name: none\n",
        )
        .unwrap();
        let port = free_port();
        let mut child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("am.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("alertmanager");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if reqwest::get(format!("{url}/-/ready"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Alertmanager {
                    child,
                    url,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("Alertmanager did not start");
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release daemon in its own process.
struct Daemon {
    child: Child,
    url: String,
}

impl Daemon {
    fn start(config: &Path, port: u16) -> Daemon {
        // `DAEMON_WRAP="heaptrack -o /tmp/ht-%n"`: the daemon under a profiler (the figures
        // are then the profiler's process, not the daemon's; `%n` counts the starts).
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wrap = std::env::var("DAEMON_WRAP")
            .unwrap_or_default()
            .replace("%n", &n.to_string());
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("orderwatch run");
        Daemon {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        // Under a profiler, the daemon is its child.
        let _ = Command::new("pkill")
            .args(["-TERM", "-P", &self.child.id().to_string()])
            .status();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A metric's value (the first series whose line starts with `prefix`).
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

struct Figures {
    /// Median of a quiet steady minute's evaluations (each read from `/api/v1/rules`), the
    /// daemon scraped every 15 s as Prometheus would.
    evaluation: Duration,
    /// Their mean (`orderwatch_rule_evaluation_duration_seconds`).
    evaluation_mean: Duration,
    /// Each of them, in order.
    evaluations: Vec<Duration>,
    /// Median of the evaluations while one client polls `/metrics` and `/healthz` without
    /// pause (the minute the HTTP figures come from).
    evaluation_polled: Duration,
    /// The daemon's CPU time in the quiet minute (evaluations, Alertmanager pushes, scrapes).
    cpu_quiet: Duration,
    sql_alone: Duration,
    count_only: Duration,
    peak_rss_mib: f64,
    /// VmRSS at the end of the steady minute.
    steady_rss_mib: f64,
    written_mb: f64,
    p99_metrics: Duration,
    p99_healthz: Duration,
    alerts: u64,
}

/// Runs the daemon on `rules` until it is steady (every alert pushed), then measures one
/// steady minute.
async fn steady_minute(
    dir: &Path,
    shop: &str,
    am: &Alertmanager,
    rules: &str,
    table: &str,
) -> (Figures, Daemon, PathBuf) {
    let port = free_port();
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let config = dir.join("orderwatch.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: {}\nrule_files: [rules.yaml]\n\
             notifiers:\n  alertmanager:\n    urls: ['{}']\n\
             sources:\n  shop:\n    url: {shop}\n    gauges: false\n    allow_superuser: true\n    orders: {{table: {table}, id: id, status: status, entered_at: status_changed_at, labels: [order_type]}}\n",
            state.display(),
            am.url
        ),
    )
    .unwrap();
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    let mut d = Daemon::start(&config, port);
    let client = reqwest::Client::new();
    let base = d.url.clone();
    let get = |path: &str| {
        let req = client.get(format!("{base}{path}"));
        async move {
            match req.send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        }
    };
    // Steady: every rule evaluated twice since the alerts stopped changing and nothing is
    // queued for Alertmanager.
    let started = Instant::now();
    let mut last = (f64::NAN, 0.0);
    let mut stable = 0;
    loop {
        // Longer than the rules' interval (10 s): every poll sees a new evaluation.
        tokio::time::sleep(Duration::from_secs(11)).await;
        let m = get("/metrics").await;
        let firing: f64 = m
            .lines()
            .filter(|l| l.starts_with("orderwatch_alerts{") && l.contains("state=\"firing\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let queued = metric(
            &m,
            "orderwatch_notification_queue_length{notifier=\"alertmanager\"}",
        )
        .unwrap_or(1.0);
        let evals: f64 = m
            .lines()
            .filter(|l| l.starts_with("orderwatch_rule_evaluations_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if firing > 0.0 && firing == last.0 && queued == 0.0 && evals > last.1 {
            stable += 1;
        } else {
            stable = 0;
        }
        last = (firing, evals);
        if stable >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the daemon did not settle"
        );
        assert!(
            d.child.try_wait().ok().flatten().is_none(),
            "the daemon exited"
        );
    }
    let alerts = last.0 as u64;
    let sum_count = |m: &str| {
        (
            metric(m, "orderwatch_rule_evaluation_duration_seconds_sum").unwrap_or(0.0),
            metric(m, "orderwatch_rule_evaluation_duration_seconds_count").unwrap_or(0.0),
        )
    };
    // Each evaluation seen in `/api/v1/rules`, by rule and start: its duration.
    type Seen = std::collections::BTreeMap<String, f64>;
    let seen = |text: String, evaluations: &mut Seen| {
        let rules: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        for r in rules["data"]["rules"].as_array().into_iter().flatten() {
            if let (Some(at), Some(took)) =
                (r["lastEvaluation"].as_str(), r["evaluationTime"].as_f64())
            {
                evaluations.insert(format!("{}/{at}", r["name"]), took);
            }
        }
    };
    let durations = |evaluations: &Seen| -> Vec<Duration> {
        (evaluations.values())
            .map(|s| Duration::from_secs_f64(*s))
            .collect()
    };
    // A quiet steady minute: scraped every 15 s, the rules' status read every 3 s.
    let before = sum_count(&get("/metrics").await);
    let cpu_before = cpu_time(d.pid());
    let mut quiet = Seen::new();
    let minute = Instant::now();
    let mut scraped = Instant::now();
    while minute.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        seen(get("/api/v1/rules").await, &mut quiet);
        if scraped.elapsed() >= Duration::from_secs(15) {
            get("/metrics").await;
            scraped = Instant::now();
        }
    }
    let cpu_quiet = cpu_time(d.pid()) - cpu_before;
    let after = sum_count(&get("/metrics").await);
    let evaluation_mean =
        Duration::from_secs_f64((after.0 - before.0) / (after.1 - before.1).max(1.0));
    let evaluations = durations(&quiet);
    let evaluation = if evaluations.is_empty() {
        evaluation_mean
    } else {
        median(evaluations.clone())
    };

    let written_before = proc_field(d.pid(), "io", "write_bytes:");
    // One client, one steady minute: /metrics and /healthz in turn.
    let (mut m_times, mut h_times) = (Vec::new(), Vec::new());
    let mut polled = Seen::new();
    let minute = Instant::now();
    while minute.elapsed() < Duration::from_secs(60) {
        seen(get("/api/v1/rules").await, &mut polled);
        for (path, times) in [("/metrics", &mut m_times), ("/healthz", &mut h_times)] {
            let t = Instant::now();
            let r = client.get(format!("{}{path}", d.url)).send().await;
            if let Ok(r) = r {
                let _ = r.bytes().await;
            }
            times.push(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written = proc_field(d.pid(), "io", "write_bytes:") - written_before;
    let polled = durations(&polled);
    let evaluation_polled = if polled.is_empty() {
        Duration::ZERO
    } else {
        median(polled)
    };
    let peak = proc_field(d.pid(), "status", "VmHWM:") as f64 / 1024.0;
    (
        Figures {
            evaluation,
            evaluation_mean,
            evaluations,
            evaluation_polled,
            cpu_quiet,
            sql_alone: Duration::ZERO,
            count_only: Duration::ZERO,
            peak_rss_mib: peak,
            steady_rss_mib: proc_field(d.pid(), "status", "VmRSS:") as f64 / 1024.0,
            written_mb: written as f64 / 1e6,
            p99_metrics: quantile(&mut m_times, 0.99),
            p99_healthz: quantile(&mut h_times, 0.99),
            alerts,
        },
        d,
        config,
    )
}

/// The daemon's own statements for the rule, alone on a plain connection (JIT off, as the
/// daemon runs them): the rows (one past the cap) and, when capped, the exact totals; median
/// of 6. And the count-only query sql_exporter would run.
async fn sql_alone(config: &Path, shop: &str, table: &str, cap: i64) -> (Duration, Duration) {
    let loaded = orderwatch::configure::load(config).expect("config");
    let (sources, _) = orderwatch::engine::build_parts(&loaded, false).expect("parts");
    let m = sources["shop"].model_sql().await.expect("statements");
    let (c, conn) = tokio_postgres::connect(shop, NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute("SET jit = off").await.unwrap();
    let count_only = format!(
        "SELECT count(*) FROM {table} WHERE status = 'SUBMITTED' \
         AND status_changed_at < now() - interval '1 hour'"
    );
    let statuses = vec!["SUBMITTED".to_string()];
    let secs = 3600.0f64;
    let (mut alone, mut count) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        let t = Instant::now();
        let r = c
            .query(m.stuck_for(1), &[&statuses, &secs, &(cap + 1)])
            .await
            .unwrap();
        if r.len() as i64 > cap {
            c.query(&m.stuck_stats, &[&statuses, &secs, &vec![secs]])
                .await
                .unwrap();
        }
        alone.push(t.elapsed());
        let t = Instant::now();
        c.query(&count_only, &[]).await.unwrap();
        count.push(t.elapsed());
    }
    (median(alone), median(count))
}

/// `/readyz` 200 after a restart, and how many alerts came back.
async fn restart(config: &Path, expect: u64) -> (Duration, u64) {
    let port: u16 = std::fs::read_to_string(config)
        .unwrap()
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next()?.trim().parse().ok())
        .unwrap();
    let t = Instant::now();
    let d = Daemon::start(config, port);
    let client = reqwest::Client::new();
    let ready = loop {
        if let Ok(r) = client.get(format!("{}/readyz", d.url)).send().await
            && r.status().is_success()
        {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(120), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let m = client
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let restored: f64 = m
        .lines()
        .filter(|l| l.starts_with("orderwatch_alerts{") && l.contains("state=\"firing\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    d.stop();
    let _ = expect;
    (ready, restored as u64)
}

/// Loads `n` orders into `table`: the first `stuck` SUBMITTED for over an hour; of the rest,
/// one in ten in one of five active statuses (0–2 hours in it), the others SHIPPED.
fn load(pg: &PgSandbox, table: &str, n: u64, stuck: u64) {
    let t = Instant::now();
    pg.execute(
        "shop",
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, status text NOT NULL, \
               status_changed_at timestamptz NOT NULL, order_type text, customer_email text);
             INSERT INTO {table} SELECT g,
               CASE WHEN g <= {stuck} THEN 'SUBMITTED'
                    WHEN g % 10 = 0 THEN (ARRAY['NEW','APPROVED','PRICE_CALCULATED','MANUFACTURING','PACKAGING'])[1 + (g / 10) % 5]
                    ELSE 'SHIPPED' END,
               CASE WHEN g <= {stuck} THEN now() - interval '2 hours' - make_interval(secs => g)
                    ELSE now() - make_interval(secs => (g::int8 * 7919) % 7200) END,
               (ARRAY['ring','earrings','pendant'])[1 + g % 3],
               'customer' || g || '@example.com'
             FROM generate_series(1, {n}) g;
             CREATE INDEX ON {table} (status, status_changed_at);"
        ),
    )
    .expect("load");
    pg.execute("shop", &format!("VACUUM ANALYZE {table}"))
        .expect("vacuum");
    println!(
        "loaded {table}: {n} orders, {stuck} stuck in SUBMITTED, in {:.1?}",
        t.elapsed()
    );
}

fn stuck_rule(name: &str, status: &str, older: &str, caps: Option<u64>) -> String {
    let caps = caps
        .map(|c| format!("    max_findings: {c}\n    max_alerts: {c}\n"))
        .unwrap_or_default();
    format!(
        "  - name: {name}\n    source: shop\n    status: {status}\n    older_than: {older}\n    interval: 10s\n{caps}"
    )
}

fn print_figures(name: &str, f: &Figures) {
    println!("\n{name}: {} alerts firing", f.alerts);
    println!(
        "  steady evaluation (daemon, median; mean)         {:>9.1} ms; {:.1} ms (each: {})",
        ms(f.evaluation),
        ms(f.evaluation_mean),
        f.evaluations
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  daemon CPU in that minute                         {:>9.2} s",
        f.cpu_quiet.as_secs_f64()
    );
    println!(
        "  evaluation while polled without pause (median)   {:>9.1} ms",
        ms(f.evaluation_polled)
    );
    println!(
        "  same SQL alone (psql-like, JIT off, median)      {:>9.1} ms   ratio {:.2}",
        ms(f.sql_alone),
        f.evaluation.as_secs_f64() / f.sql_alone.as_secs_f64()
    );
    println!(
        "  count-only query (what sql_exporter runs)        {:>9.1} ms",
        ms(f.count_only)
    );
    println!(
        "  daemon peak RSS, RSS after the steady minute     {:>9.1} MiB, {:.1} MiB",
        f.peak_rss_mib, f.steady_rss_mib
    );
    println!(
        "  bytes written to disk in the polled minute       {:>9.3} MB",
        f.written_mb
    );
    println!(
        "  /metrics p99, /healthz p99 (one client, no pause){:>9.2} ms, {:.2} ms",
        ms(f.p99_metrics),
        ms(f.p99_healthz)
    );
}

/// `once` on `rules`, median of 3 runs.
fn once(dir: &Path, shop: &str, rules: &str) -> Duration {
    let config = dir.join("once.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nstate_dir: {}\nrule_files: [once-rules.yaml]\n\
             sources:\n  shop:\n    url: {shop}\n    gauges: false\n    allow_superuser: true\n    orders: {{table: orders, id: id, status: status, entered_at: status_changed_at, labels: [order_type]}}\n",
            dir.join("once-state").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("once-rules.yaml"), rules).unwrap();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new(BIN)
            .args(["once", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .output()
            .expect("once");
        times.push(t.elapsed());
        assert!(
            out.status.success() || out.status.code() == Some(1),
            "once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    median(times)
}

#[tokio::main]
async fn main() {
    orderwatch::tls::ensure_crypto_provider();
    let orders = env_num("ORDERS", 2_000_000);
    let stuck = env_num("STUCK", 100_000);
    let scenarios =
        std::env::var("SCENARIOS").unwrap_or_else(|_| "incident,caps,wide,rules".into());
    let pg = tokio::task::spawn_blocking(PgSandbox::start)
        .await
        .unwrap()
        .expect("PostgreSQL sandbox (scripts/ensure-deps)");
    pg.create_database("shop").unwrap();
    let shop = pg.url("shop");
    load(&pg, "orders", orders, stuck);
    let am = Alertmanager::start().await;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut table = Vec::new();

    for (scenario, caps, tbl) in [
        ("incident", Some(1_000_000), "orders"),
        ("caps", None, "orders"),
        ("wide", Some(100_000), "orders"),
        ("big", Some(1_000_000), "orders_big"),
    ] {
        if !(scenarios.split(',').any(|s| s == scenario)
            || (scenario == "big" && env_num("BIG", 0) == 1))
        {
            continue;
        }
        if scenario == "big" {
            load(&pg, "orders_big", 5_000_000, 19_000);
        }
        let mut rules = format!(
            "rules:\n{}",
            stuck_rule("submitted_over_1h", "SUBMITTED", "1h", caps)
        );
        if scenario == "wide" {
            // Many rows fetched, few alerts: `max_findings` 100 000, `max_alerts` 200.
            rules = rules.replace("max_alerts: 100000", "max_alerts: 200");
        }
        let (mut f, d, config) = steady_minute(dir.path(), &shop, &am, &rules, tbl).await;
        d.stop();
        let cap = caps.unwrap_or(1000) as i64;
        (f.sql_alone, f.count_only) = sql_alone(&config, &shop, tbl, cap).await;
        let title = match scenario {
            "incident" => format!("incident ({stuck} stuck of {orders}, caps 1 000 000)"),
            "caps" => format!(
                "default caps ({stuck} stuck of {orders}, max_findings 1 000, max_alerts 200)"
            ),
            "wide" => format!("max_findings 100 000, max_alerts 200 ({stuck} stuck of {orders})"),
            _ => "19 000 stuck of 5 000 000 (caps 1 000 000)".to_string(),
        };
        print_figures(&title, &f);
        if scenario == "incident" {
            let (ready, restored) = restart(&config, f.alerts).await;
            println!(
                "  restart: /readyz 200 after {:.2} s, {restored} of {} firing alerts restored",
                ready.as_secs_f64(),
                f.alerts
            );
            table.push((title.clone(), f, Some((ready, restored))));
        } else {
            table.push((title.clone(), f, None));
        }
    }

    if scenarios.split(',').any(|s| s == "rules") {
        let statuses = [
            "SUBMITTED",
            "APPROVED",
            "PRICE_CALCULATED",
            "MANUFACTURING",
            "PACKAGING",
            "NEW",
        ];
        let mut six = String::from("rules:\n");
        let mut sixty = String::from("rules:\n");
        for s in statuses {
            // One rule per status at the lowest of the ten thresholds: the scan the ten share.
            six.push_str(&stuck_rule(
                &format!("{}_10m", s.to_lowercase()),
                s,
                "10m",
                None,
            ));
            for m in 1..=10 {
                sixty.push_str(&stuck_rule(
                    &format!("{}_{}m", s.to_lowercase(), m * 10),
                    s,
                    &format!("{}m", m * 10),
                    None,
                ));
            }
        }
        let t6 = once(dir.path(), &shop, &six);
        let t60 = once(dir.path(), &shop, &sixty);
        println!(
            "\n60 rules (6 statuses x 10 thresholds, default caps), once: {:.2} s; one rule per status at the lowest threshold: {:.2} s; ratio {:.2}",
            t60.as_secs_f64(),
            t6.as_secs_f64(),
            t60.as_secs_f64() / t6.as_secs_f64()
        );
    }

    println!(
        "\n| scenario | evaluation vs SQL alone | polled | daemon CPU/min | count-only | peak RSS | written/steady min | /metrics p99 | /healthz p99 | restart |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (title, f, r) in &table {
        println!(
            "| {title} | {:.1} ms vs {:.1} ms ({:.2}×) | {:.1} ms ({:.2}×) | {:.2} s | {:.1} ms | {:.1} MiB | {:.3} MB | {:.2} ms | {:.2} ms | {} |",
            ms(f.evaluation),
            ms(f.sql_alone),
            f.evaluation.as_secs_f64() / f.sql_alone.as_secs_f64(),
            ms(f.evaluation_polled),
            f.evaluation_polled.as_secs_f64() / f.sql_alone.as_secs_f64(),
            f.cpu_quiet.as_secs_f64(),
            ms(f.count_only),
            f.peak_rss_mib,
            f.written_mb,
            ms(f.p99_metrics),
            ms(f.p99_healthz),
            r.map(|(d, n)| format!("{:.2} s, {n} restored", d.as_secs_f64()))
                .unwrap_or_else(|| "–".into()),
        );
    }
}
