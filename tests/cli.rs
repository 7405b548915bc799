//! The `orderwatch` binary on the demo's databases (reference schema, 100 000 orders with
//! customer names, emails and phones): `once` equals a plain SQL ground truth for every
//! shipped rule, `check` reaches the sources, and `run` logs alerts without personal data.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orderwatch::demo::{DemoEnv, start_env};

const BIN: &str = env!("CARGO_BIN_EXE_orderwatch");

/// A daemon child process that is killed if the test panics before stopping it.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn env() -> DemoEnv {
    start_env("127.0.0.1:0", 100_000, None)
        .await
        .expect("demo environment")
}

/// What a plain SQL query over the same tables calls stuck for every shipped rule, by rule.
async fn ground_truth(env: &DemoEnv) -> Vec<(String, BTreeSet<String>)> {
    let shop = common::connect(&env.shop_url).await;
    let mes = common::connect(&env.mes_url).await;
    let loaded = orderwatch::configure::load(&env.config_path).unwrap();
    let mut out = Vec::new();
    for (_, r) in &loaded.rules {
        if matches!(
            r.kind,
            orderwatch::config::RuleKind::SlowQueries | orderwatch::config::RuleKind::HttpErrors
        ) {
            continue; // no orders: tests/slow_and_sql.rs, tests/http_errors.rs
        }
        let (client, sql) = match r.source.value.as_str() {
            "shop" => (
                &shop,
                "SELECT id FROM orders WHERE status = ANY($1) AND status_changed_at < now() - make_interval(secs => $2)",
            ),
            _ => (
                &mes,
                "SELECT order_id FROM production_orders WHERE status = ANY($1) AND status_changed_at < now() - make_interval(secs => $2)",
            ),
        };
        let rows = client
            .query(sql, &[&r.statuses(), &r.older_than().as_secs_f64()])
            .await
            .unwrap();
        let mut ids: BTreeSet<String> = rows.iter().map(|row| row.get::<_, String>(0)).collect();
        if let Some(other) = &r.missing_in {
            // Lost: absent from the other database; mismatched: there in a status outside
            // expect_status. Plain SQL on each side, joined here.
            let (client, sql) = match other.value.as_str() {
                "shop" => (&shop, "SELECT id, status FROM orders"),
                _ => (&mes, "SELECT order_id, status FROM production_orders"),
            };
            let there: std::collections::HashMap<String, String> = client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let expect = r.expect_status.as_ref().map(|e| e.value.to_vec());
            ids.retain(|id| match (there.get(id), &expect) {
                (None, _) => true,
                (Some(s), Some(e)) => !e.contains(s),
                (Some(_), None) => false,
            });
        }
        out.push((r.name.value.clone(), ids));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_json_lists_exactly_what_plain_sql_calls_stuck() {
    let env = env().await;
    let before = ground_truth(&env).await;
    let out = Command::new(BIN)
        .args(["once", "--format", "json", "-c"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    let after = ground_truth(&env).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "stuck orders found → exit 1; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules = json["rules"].as_array().unwrap();
    let order_rules: Vec<&serde_json::Value> = rules
        .iter()
        .filter(|r| r["kind"] != "slow_queries" && r["kind"] != "http_errors")
        .collect();
    assert_eq!(order_rules.len(), before.len());
    for r in rules
        .iter()
        .filter(|r| r["kind"] == "slow_queries" || r["kind"] == "http_errors")
    {
        assert_eq!(r["ok"], true, "{r}");
    }
    // The planted lost calculation requests, exactly (SUBMITTED in the shop, not in MES).
    let lost = rules
        .iter()
        .find(|r| r["name"] == "submitted_missing_in_mes")
        .expect("the shipped rule");
    assert!(env.summary.lost_submitted > 0);
    assert_eq!(
        lost["count"].as_u64(),
        Some(env.summary.lost_submitted),
        "{lost}"
    );
    for ((name, lo), (_, hi)) in before.iter().zip(&after) {
        let r = rules
            .iter()
            .find(|r| r["name"] == name.as_str())
            .unwrap_or_else(|| panic!("rule {name} missing"));
        assert_eq!(r["ok"], true);
        let kind = if name.contains("_in_") {
            "missing"
        } else {
            "stuck"
        };
        assert_eq!(r["kind"], kind, "rule {name}");
        let got: BTreeSet<String> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["order_id"].as_str().unwrap().to_string())
            .collect();
        // Orders may cross a threshold while we look: the answer lies between the two truths.
        assert!(
            lo.is_subset(&got) && got.is_subset(hi),
            "rule {name}: got {got:?}, SQL says {lo:?}..{hi:?}"
        );
        assert!(
            !got.is_empty(),
            "rule {name}: the demo plants stuck orders for every shipped rule"
        );
        assert_eq!(
            r["count"].as_u64().unwrap(),
            got.len() as u64,
            "rule {name}"
        );
        // Oldest first.
        let ages: Vec<f64> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["age_seconds"].as_f64().unwrap())
            .collect();
        assert!(
            ages.windows(2).all(|w| w[0] >= w[1]),
            "rule {name} not oldest first: {ages:?}"
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("@example.com") && !text.contains("customer"),
        "personal data in the output"
    );

    // --rule selects; table format; an unknown rule is an error (exit 2).
    let out = Command::new(BIN)
        .args(["once", "--rule", "packaging_over_1d", "-c"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("packaging_over_1d"), "{table}");
    assert_eq!(
        table.lines().filter(|l| !l.starts_with(' ')).count(),
        1,
        "{table}"
    );
    let out = Command::new(BIN)
        .args(["once", "--rule", "nope", "-c"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reaches_sources_and_names_a_bad_column() {
    let env = env().await;
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ok   rule submitted_over_1h: SQL prepared on shop"),
        "{text}"
    );

    // A label column that does not exist (the shop's flow_label goes with it).
    let cfg = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replacen("labels: [order_type]", "labels: [order_kind]", 1)
        .replacen("flow_label: order_type", "flow_label: order_kind", 1);
    std::fs::write(&env.config_path, cfg).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("FAIL rule submitted_over_1h") && text.contains("order_kind"),
        "{text}"
    );

    let out = Command::new(BIN)
        .args(["once", "--format", "json", "-c"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a failing rule makes `once` exit 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_alerts_without_personal_data_and_stops_on_sigterm() {
    let env = env().await;
    let mut child = Daemon(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&env.config_path)
            .env("ORDERWATCH_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    // Every shipped rule fires on the demo data within its first evaluation.
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.0.wait().unwrap();
    let log = reader.join().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM → clean exit 0; log:\n{log}"
    );
    assert!(log.contains("FIRING: Order"), "{log}");
    assert!(log.contains("stopped"), "{log}");

    // The personal columns hold values like these; none may reach the log.
    let shop = common::connect(&env.shop_url).await;
    let rows = shop.query("SELECT customer_name, customer_email, customer_phone FROM orders WHERE status <> 'CLOSED' LIMIT 500", &[]).await.unwrap();
    for row in rows {
        for i in 0..3 {
            let v: String = row.get(i);
            assert!(!log.contains(&v), "personal value {v:?} in the log");
        }
    }
    assert!(!log.contains("@example.com"));
}

/// An unreachable database with a password in its URL: reported and retried, `/readyz` says
/// not ready, `once` exits 2, and the password appears nowhere, even in trace logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_source_is_reported_and_retried_without_leaking_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(dir.path().join("pw"), "S3cretPass\n").unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: \"{http}\"\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: \"postgres://orderwatch:${{file:pw}}@127.0.0.1:{port}/shop?sslmode=disable\"\n    connect_timeout: 1s\n    orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at }}\nnotifiers:\n  log: {{}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n",
    )
    .unwrap();
    let cfg = dir.path().join("orderwatch.yaml");
    let out = Command::new(BIN)
        .args(["once", "--format", "json", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"ok\": false") && text.contains("cannot connect"),
        "{text}"
    );

    let mut child = Daemon(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&cfg)
            .env("ORDERWATCH_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    tokio::time::sleep(Duration::from_secs(4)).await;
    orderwatch::tls::ensure_crypto_provider();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let ready = client
        .get(format!("http://{http}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let metrics = client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("orderwatch_source_up{source=\"shop\"} 0"),
        "{metrics}"
    );
    let failures = metrics
        .lines()
        .find(|l| {
            l.starts_with("orderwatch_rule_evaluation_failures_total{rule=\"submitted_over_1h\"}")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failures >= 2, "retried every interval: {failures} failures");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    let log = reader.join().unwrap();
    assert!(
        log.contains("rule evaluation failed") && log.contains("cannot connect"),
        "{log}"
    );
    assert!(
        !log.contains("S3cretPass")
            && !text.contains("S3cretPass")
            && !metrics.contains("S3cretPass"),
        "password leaked"
    );
    // Logged once when it starts failing, not at every retry.
    assert_eq!(log.matches("rule evaluation failed").count(), 1, "{log}");
}
