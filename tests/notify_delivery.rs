//! Delivery that loses nothing: the daemon, a real PostgreSQL, and a receiver we can kill.
//! The receiver is down for `ORDERWATCH_TEST_OUTAGE_SECS` (default 300: five minutes), the
//! daemon is restarted in the middle of the outage with the message still in its outbox, and
//! the receiver comes back answering 500, 500, then 429 with `Retry-After` before it accepts:
//! every message arrives exactly once.

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::Running;
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
enum Answer {
    BadRequest,
    ServerError,
    TooMany(u64),
}

#[derive(Default)]
struct Log {
    script: VecDeque<Answer>,
    accepted: Vec<(Instant, String, Value)>,
    attempts: Vec<(Instant, u16)>,
}

/// A receiver on a fixed port that can be killed and brought back. Every answer closes the
/// connection, so no kept-alive connection outlives a kill.
struct Flaky {
    port: u16,
    log: Arc<Mutex<Log>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Flaky {
    fn new() -> Flaky {
        Flaky {
            port: common::free_port(),
            log: Arc::default(),
            server: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn up(&mut self, script: &[Answer]) {
        self.log.lock().unwrap().script = script.iter().copied().collect();
        let log = self.log.clone();
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
                let log = log.clone();
                async move {
                    let mut l = log.lock().unwrap();
                    let answer = l.script.pop_front();
                    let mut resp: Response = match answer {
                        Some(Answer::BadRequest) => {
                            (StatusCode::BAD_REQUEST, "invalid payload: no such channel")
                                .into_response()
                        }
                        Some(Answer::ServerError) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
                        }
                        Some(Answer::TooMany(s)) => {
                            let mut r =
                                (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
                            r.headers_mut()
                                .insert(header::RETRY_AFTER, HeaderValue::from(s));
                            r
                        }
                        None => {
                            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            l.accepted
                                .push((Instant::now(), uri.path().to_string(), body));
                            (StatusCode::OK, "{\"ok\":true,\"result\":{}}").into_response()
                        }
                    };
                    l.attempts.push((Instant::now(), resp.status().as_u16()));
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    resp
                }
            });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        }));
    }

    fn down(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    fn accepted(&self) -> Vec<(Instant, String, Value)> {
        self.log.lock().unwrap().accepted.clone()
    }

    async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<(Instant, String, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self.accepted();
            if a.len() >= n {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages arrived",
                a.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE orders (id text PRIMARY KEY, order_type text, status text NOT NULL, status_changed_at timestamptz NOT NULL);
CREATE INDEX ON orders (status, status_changed_at);
INSERT INTO orders VALUES
  ('JW-1', 'ring',    'SUBMITTED', now() - interval '3 hours'),
  ('JW-2', 'pendant', 'SUBMITTED', now() - interval '2 hours'),
  ('JW-3', 'ring',    'PACKAGING', now() - interval '3 days');
";

fn write_config(dir: &Path, db_url: &str, receivers: &str, route: &str) {
    common::write_config(
        dir,
        &format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\n\
             sources:\n  shop:\n    url: \"{db_url}?sslmode=disable\"\n\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [order_type] }}\n\
             receivers:\n{receivers}\nroute:\n{route}\n\
             delivery: {{ initial_backoff: 1s, max_backoff: 20s, max_age: 1h }}\n"
        ),
        "rules:\n\
         \x20 - { name: submitted_over_1h, source: shop, status: SUBMITTED, older_than: 1h, interval: 1s, severity: critical }\n\
         \x20 - { name: packaging_over_1d, source: shop, status: PACKAGING, older_than: 1d, interval: 1s }\n",
    );
}

fn orders(body: &Value, status: &str) -> Vec<String> {
    let mut v: Vec<String> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == status)
        .map(|a| a["labels"]["order_id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_restart_and_errors_lose_nothing_and_duplicate_nothing() {
    let outage = Duration::from_secs(
        std::env::var("ORDERWATCH_TEST_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    let url = common::pg().fresh_db();
    let db = common::connect(&url).await;
    db.batch_execute(SCHEMA).await.unwrap();
    let mut hook = Flaky::new();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &url,
        &format!("  hook:\n    webhook: {{ url: \"{}\" }}", hook.url("/hook")),
        "  receiver: hook\n  matchers: []\n  group_by: [rule]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\n  routes:\n    - matchers: ['rule=\"submitted_over_1h\"']\n      receiver: hook",
    );

    // The receiver is down from the start: the message waits in the outbox.
    let started = Instant::now();
    let d = Running::start(dir.path()).await;
    d.wait_metric(
        "orderwatch_notification_queue_length{notifier=\"hook\"}",
        "2",
    )
    .await;
    let m = d.get("/metrics").await;
    assert!(
        m.contains("orderwatch_notifications_total{notifier=\"hook\",outcome=\"retry\"}"),
        "{m}"
    );
    tokio::time::sleep(outage / 2).await;
    d.stop().await;

    // Restarted in the middle of the outage.
    let d = Running::start(dir.path()).await;
    tokio::time::sleep(outage.saturating_sub(started.elapsed())).await;
    // Back, but failing twice with 500, then asking for 2 s of patience.
    hook.up(&[Answer::ServerError, Answer::ServerError, Answer::TooMany(2)])
        .await;
    let got = hook.wait_accepted(2, Duration::from_secs(120)).await;
    let attempts = hook.log.lock().unwrap().attempts.clone();
    let after_429 = attempts
        .iter()
        .position(|(_, s)| *s == 429)
        .expect("a 429 was answered");
    let waited = attempts[after_429 + 1].0 - attempts[after_429].0;
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 honoured, waited {waited:?}"
    );

    // One message per rule (group), each once.
    let mut by_rule: Vec<(String, Vec<String>)> = got
        .iter()
        .map(|(_, _, b)| {
            (
                b["groupLabels"]["rule"].as_str().unwrap().to_string(),
                orders(b, "firing"),
            )
        })
        .collect();
    by_rule.sort();
    assert_eq!(
        by_rule,
        vec![
            ("packaging_over_1d".to_string(), vec!["JW-3".to_string()]),
            (
                "submitted_over_1h".to_string(),
                vec!["JW-1".to_string(), "JW-2".to_string()]
            ),
        ]
    );
    assert!(
        got.iter()
            .all(|(_, p, b)| p == "/hook" && b["version"] == "4")
    );

    // JW-1 moves on: exactly one resolved notice naming it.
    db.execute("UPDATE orders SET status = 'PRICE_CALCULATED', status_changed_at = now() WHERE id = 'JW-1'", &[])
        .await
        .unwrap();
    let got = hook.wait_accepted(3, Duration::from_secs(60)).await;
    let last = &got[2].2;
    assert_eq!(orders(last, "resolved"), vec!["JW-1".to_string()]);
    assert_eq!(orders(last, "firing"), vec!["JW-2".to_string()]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(hook.accepted().len(), 3, "nothing delivered twice");
    d.wait_metric(
        "orderwatch_notification_queue_length{notifier=\"hook\"}",
        "0",
    )
    .await;
    let m = d.get("/metrics").await;
    assert!(
        // This (restarted) daemon delivered all three: two firing, one resolved.
        m.contains("orderwatch_notifications_total{notifier=\"hook\",outcome=\"sent\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("orderwatch_notifications_total{notifier=\"hook\",outcome=\"rate_limited\"} 1"),
        "{m}"
    );
    d.stop().await;

    // And a restart after everything was delivered sends nothing again.
    let d = Running::start(dir.path()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(hook.accepted().len(), 3, "a restart repeats nothing");
    d.stop().await;
    hook.down();
}

/// Telegram allows about one message a second per chat: two groups for one chat are spaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_messages_keep_the_rate_limit() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let mut tg = Flaky::new();
    tg.up(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &url,
        &format!(
            "  ops:\n    telegram: {{ bot_token: \"123:ABC\", chat_id: -100200300, api_url: \"{}\" }}",
            tg.url("")
        ),
        "  receiver: ops\n  group_wait: 0s\n  group_interval: 1s",
    );
    let d = Running::start(dir.path()).await;
    let got = tg.wait_accepted(2, Duration::from_secs(30)).await;
    assert!(
        got.iter().all(|(_, p, _)| p == "/bot123:ABC/sendMessage"),
        "{:?}",
        got.iter().map(|g| &g.1).collect::<Vec<_>>()
    );
    let gap = got[1].0 - got[0].0;
    assert!(gap >= Duration::from_millis(950), "messages {gap:?} apart");
    d.stop().await;
    tg.down();
}

/// Silences through the CLI and the API: a silenced order is left out of messages, the
/// silence survives a restart, and once it is expired the order is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_hold_back_matching_orders_until_expired() {
    const BIN: &str = env!("CARGO_BIN_EXE_orderwatch");
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let hook = common::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &url,
        &format!("  hook:\n    webhook: {{ url: \"{}/hook\" }}", hook.url()),
        "  receiver: hook\n  group_wait: 3s\n  group_interval: 1s",
    );
    let d = Running::start(dir.path()).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .args(["--url", &d.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let id = cli(&[
        "silence",
        "add",
        "order_id=\"JW-1\"",
        "-d",
        "1h",
        "-m",
        "customer asked to wait",
        "--author",
        "anna",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 16, "{id}");
    let bodies = hook
        .wait_for(
            |b| {
                b.iter()
                    .any(|m| m["groupLabels"]["rule"] == "submitted_over_1h")
            },
            Duration::from_secs(30),
        )
        .await;
    let first = bodies
        .iter()
        .find(|m| m["groupLabels"]["rule"] == "submitted_over_1h")
        .unwrap();
    assert_eq!(
        orders(first, "firing"),
        vec!["JW-2".to_string()],
        "JW-1 is silenced"
    );
    let list = cli(&["silence", "list"]);
    assert!(
        list.contains(&id)
            && list.contains("active")
            && list.contains("order_id=\"JW-1\"")
            && list.contains("anna"),
        "{list}"
    );

    // Bad input is refused with a reason.
    let bad = common::http_client()
        .post(format!("{}/api/v1/silences", d.url))
        .json(&serde_json::json!({"matchers": ["order_id=~\"(\""], "duration": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("bad regex"));

    // The silence survives a restart.
    d.stop().await;
    let d = Running::start(dir.path()).await;
    let out = std::process::Command::new(BIN)
        .args(["silence", "list", "--url", &d.url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n_before = hook.bodies().await.len();

    let out = std::process::Command::new(BIN)
        .args(["silence", "expire", &id, "--url", &d.url])
        .output()
        .unwrap();
    assert!(out.status.success());
    let bodies = hook
        .wait_for(
            |b| {
                b.len() > n_before
                    && b.iter()
                        .any(|m| orders(m, "firing").contains(&"JW-1".to_string()))
            },
            Duration::from_secs(30),
        )
        .await;
    let last = bodies
        .iter()
        .rev()
        .find(|m| m["groupLabels"]["rule"] == "submitted_over_1h")
        .unwrap();
    assert_eq!(
        orders(last, "firing"),
        vec!["JW-1".to_string(), "JW-2".to_string()]
    );
    d.stop().await;
}

/// `inhibit_rules` for the direct channels: a critical alert about an order keeps the same
/// order's warning out of every message (Alertmanager's format; `equal` labels present on
/// both sides), another order's warning still goes out, and the status page says which alert
/// is inhibited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inhibit_rules_keep_a_critical_orders_warning_out_of_the_channels() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let hook = common::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &url,
        &format!("  hook:\n    webhook: {{ url: \"{}/hook\" }}", hook.url()),
        "  receiver: hook\n  group_wait: 2s\n  group_interval: 1s",
    );
    let main = dir.path().join("orderwatch.yaml");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        format!(
            "{text}inhibit_rules:\n  - source_matchers: ['severity=\"critical\"']\n    target_matchers: ['severity=\"warning\"']\n    equal: [order_id]\n"
        ),
    )
    .unwrap();
    // JW-1 (3 h) is in both; JW-2 (2 h) only in the warning.
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n\
         \x20 - { name: price_calculation_slow, source: shop, status: SUBMITTED, older_than: 150m, interval: 1s, severity: critical }\n\
         \x20 - { name: submitted_over_1h, source: shop, status: SUBMITTED, older_than: 1h, interval: 1s, severity: warning }\n",
    )
    .unwrap();
    let d = Running::start(dir.path()).await;
    let bodies = hook
        .wait_for(
            |b| {
                ["price_calculation_slow", "submitted_over_1h"]
                    .iter()
                    .all(|r| b.iter().any(|m| m["groupLabels"]["rule"] == *r))
            },
            Duration::from_secs(30),
        )
        .await;
    // A moment more: nothing about JW-1's warning comes later either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bodies = [bodies, hook.bodies().await].concat();
    for m in &bodies {
        match m["groupLabels"]["rule"].as_str().unwrap() {
            "price_calculation_slow" => assert_eq!(orders(m, "firing"), ["JW-1"], "{m}"),
            "submitted_over_1h" => assert_eq!(orders(m, "firing"), ["JW-2"], "{m}"),
            other => panic!("unexpected group {other}: {m}"),
        }
    }
    // Both alerts exist (and Alertmanager would get both); only the channels are spared.
    let alerts = d.alerts().await;
    assert!(
        alerts
            .iter()
            .any(|a| a["labels"]["rule"] == "submitted_over_1h"
                && a["labels"]["order_id"] == "JW-1"
                && a["state"] == "firing"),
        "{alerts:?}"
    );
    let page = d.get("/").await;
    let critical = page.find("id=\"rule-price_calculation_slow\"").unwrap();
    let warning = page.find("id=\"rule-submitted_over_1h\"").unwrap();
    assert!(critical < warning, "most severe rule first");
    assert!(
        page[warning..].contains(">JW-1</a><span class=\"badge silenced\">inhibited</span>"),
        "{page}"
    );
    d.stop().await;
}

/// `orderwatch notify-test NAME` sends one sample straight to the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_sends_one_sample_message() {
    const BIN: &str = env!("CARGO_BIN_EXE_orderwatch");
    let hook = common::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "postgres://nobody@127.0.0.1:9/none",
        &format!("  hook:\n    webhook: {{ url: \"{}/test\" }}", hook.url()),
        "  receiver: hook",
    );
    let cfg = dir.path().join("orderwatch.yaml");
    let out = tokio::process::Command::new(BIN)
        .args(["notify-test", "hook", "-c"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("sent a sample webhook message to receiver hook")
    );
    let bodies = hook
        .wait_for(|b| !b.is_empty(), Duration::from_secs(10))
        .await;
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["receiver"], "hook");
    assert_eq!(bodies[0]["version"], "4");
    let out = tokio::process::Command::new(BIN)
        .args(["notify-test", "nope", "-c"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no receiver \"nope\"; configured receivers: hook")
    );
}

/// A 4xx other than 429 is logged with the service's answer and not retried; the next message
/// goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_is_dropped_and_the_queue_moves_on() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let mut hook = Flaky::new();
    hook.up(&[Answer::BadRequest]).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &url,
        &format!("  hook:\n    webhook: {{ url: \"{}\" }}", hook.url("/hook")),
        "  receiver: hook\n  group_wait: 0s\n  group_interval: 1h",
    );
    let d = Running::start(dir.path()).await;
    hook.wait_accepted(1, Duration::from_secs(30)).await;
    let m = d
        .wait_metric(
            "orderwatch_notifications_total{notifier=\"hook\",outcome=\"rejected\"}",
            "1",
        )
        .await;
    assert!(
        m.contains("orderwatch_notifications_total{notifier=\"hook\",outcome=\"sent\"} 1"),
        "{m}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts = hook.log.lock().unwrap().attempts.clone();
    assert_eq!(
        attempts.iter().map(|a| a.1).collect::<Vec<_>>(),
        vec![400, 200],
        "not retried"
    );
    d.stop().await;
    hook.down();
}
