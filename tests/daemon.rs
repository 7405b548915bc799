//! The daemon end to end: real PostgreSQL, real Alertmanager, a recording receiver standing in
//! for a second Alertmanager; alerts fire, are re-sent, resolve, survive a restart; a failed
//! source freezes its alerts and raises SourceDown; no personal data anywhere.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Running;
use serde_json::Value;

const SCHEMA: &str = "
CREATE TABLE orders (
  id text PRIMARY KEY, customer_name text, customer_email text, customer_phone text,
  order_type text, status text NOT NULL, status_changed_at timestamptz NOT NULL);
CREATE INDEX ON orders (status, status_changed_at);
INSERT INTO orders VALUES
  ('JW-1', 'Anna Ivanova', 'anna.ivanova@example.com', '+7 912 000-00-01', 'ring',    'SUBMITTED', now() - interval '3 hours'),
  ('JW-2', 'Boris Petrov', 'boris.petrov@example.com', '+7 912 000-00-02', 'pendant', 'SUBMITTED', now() - interval '2 hours'),
  ('JW-3', 'Vera Sidorova','vera.sidorova@example.com','+7 912 000-00-03', 'ring',    'SUBMITTED', now() - interval '5 minutes'),
  ('JW-9', 'Old Customer', 'old@example.com',          '+7 912 000-00-09', 'ring',    'CLOSED',    now() - interval '90 days');
";
const PERSONAL: &[&str] = &[
    "Anna",
    "Ivanova",
    "Boris",
    "Petrov",
    "@example.com",
    "+7 912",
];

fn write_config(dir: &Path, url: &str, am_urls: &[String], extra: &str) {
    let urls: Vec<String> = am_urls.iter().map(|u| format!("\"{u}\"")).collect();
    common::write_config(
        dir,
        &format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\ngauges_interval: 1s\n{extra}\
             sources:\n  shop:\n    url: \"{url}?sslmode=disable&connect_timeout=2\"\n    connect_timeout: 2s\n\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [order_type] }}\n\
             notifiers:\n  log: {{}}\n  alertmanager:\n    urls: [{}]\n    resend_delay: 2s\n    timeout: 2s\n",
            urls.join(", ")
        ),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    severity: critical\n    interval: 1s\n    labels: { team: sales }\n    annotations:\n      summary: \"Order {{ order_id }} ({{ labels.order_type }}) waits for its price for {{ age }}\"\n",
    );
}

fn am_alert<'a>(alerts: &'a [Value], order: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["labels"]["order_id"] == order)
}

/// Whether a recorded `POST /api/v2/alerts` body sent `order` as resolved (`endsAt` passed).
fn resolved_in(bodies: &[Value], order: &str) -> bool {
    bodies
        .iter()
        .flat_map(|p| p.as_array().cloned().unwrap_or_default())
        .any(|a| {
            a["labels"]["order_id"] == order
                && a["endsAt"]
                    .as_str()
                    .and_then(|e| e.parse::<chrono::DateTime<chrono::Utc>>().ok())
                    .is_some_and(|e| e <= chrono::Utc::now())
        })
}

fn state_of(alerts: &[Value], key: &str) -> Option<String> {
    alerts
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| a["state"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_receives_resends_and_resolves() {
    let hook = common::WebhookReceiver::start().await;
    let Some(am) = common::Alertmanager::start(Some(&format!("{}/am-webhook", hook.url()))).await
    else {
        return;
    };
    let recorder = common::WebhookReceiver::start().await;
    let url = common::pg().fresh_db();
    let db = common::connect(&url).await;
    db.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &url, &[am.url(), recorder.url()], "");
    let d = Running::start(dir.path()).await;

    // Alertmanager's own API shows one alert per stuck order, with the contract labels.
    let alerts = am
        .wait_for(
            |a| am_alert(a, "JW-1").is_some() && am_alert(a, "JW-2").is_some(),
            Duration::from_secs(30),
        )
        .await;
    assert!(am_alert(&alerts, "JW-3").is_none(), "JW-3 is not stuck yet");
    let a = am_alert(&alerts, "JW-1").unwrap();
    for (k, v) in [
        ("alertname", "StuckOrder"),
        ("rule", "submitted_over_1h"),
        ("source", "shop"),
        ("status", "SUBMITTED"),
        ("severity", "critical"),
        ("order_id", "JW-1"),
        ("team", "sales"),
        ("order_type", "ring"),
        ("path", "orderwatch"),
    ] {
        assert_eq!(a["labels"][k], v, "label {k}: {a:#}");
    }
    // Its runbook: this daemon's /runbooks page, at the alert name's section (which exists).
    let runbook = a["annotations"]["runbook_url"].as_str().unwrap();
    assert!(runbook.ends_with("/runbooks#stuckorder"), "{a:#}");
    let page = d.get("/runbooks").await;
    assert!(
        page.contains("<h2 id=\"stuckorder\">StuckOrder</h2>"),
        "{page}"
    );
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("Order JW-1 (ring) waits for its price for 3h"),
        "{a:#}"
    );
    assert!(a["annotations"]["age"].as_str().unwrap().starts_with("3h"));
    // startsAt is when the order crossed its threshold: entered 3 h ago + 1 h = 2 h ago.
    let starts: chrono::DateTime<chrono::Utc> = a["startsAt"].as_str().unwrap().parse().unwrap();
    let ago = chrono::Utc::now() - starts;
    assert!(
        (ago.num_seconds() - 7200).abs() < 120,
        "startsAt {starts} is {ago} ago"
    );

    // The second "Alertmanager" gets the same alerts, re-sent every resend_delay (2 s) with
    // endsAt = now + 4 × max(interval 1 s, resend 2 s) = now + 8 s, in batches.
    let bodies = recorder
        .wait_for(
            |b| b.iter().filter(|b| b.to_string().contains("JW-1")).count() >= 3,
            Duration::from_secs(30),
        )
        .await;
    let post = bodies
        .iter()
        .rev()
        .find(|b| b.to_string().contains("JW-1"))
        .unwrap();
    let sent = post
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["order_id"] == "JW-1")
        .unwrap();
    let ends: chrono::DateTime<chrono::Utc> = sent["endsAt"].as_str().unwrap().parse().unwrap();
    let ahead = (ends - chrono::Utc::now()).num_milliseconds();
    // endsAt = send time + 8 s; the post read is at most a resend (2 s) old, plus scheduling slack.
    assert!((1000..=8500).contains(&ahead), "endsAt is {ahead} ms ahead");
    assert!(
        recorder
            .requests()
            .await
            .iter()
            .all(|r| r.path == "/api/v2/alerts")
    );

    // Metrics: exact counts, no personal data, no order id as a label.
    let m = d.wait_metric("orderwatch_stuck_orders{rule=\"submitted_over_1h\",severity=\"critical\",source=\"shop\",status=\"SUBMITTED\"}", "2").await;
    assert!(m.contains("orderwatch_source_up{source=\"shop\"} 1"));
    assert!(
        m.contains("orderwatch_alerts{rule=\"submitted_over_1h\",state=\"firing\"} 2"),
        "{m}"
    );
    let m = d
        .wait_metric(
            "orderwatch_orders{source=\"shop\",status=\"SUBMITTED\"}",
            "3",
        )
        .await;
    assert!(
        !m.contains("status=\"CLOSED\""),
        "terminal statuses are never counted"
    );
    assert!(!m.contains("JW-"), "order ids must not be metric labels");
    // As Prometheus users expect: the process_* metrics, when the config last loaded, every
    // counter of a notifier there at 0 before its first event, and promtool finds no fault.
    for family in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_start_time_seconds ",
        "orderwatch_config_last_reload_success_timestamp_seconds ",
        "orderwatch_notifications_total{notifier=\"alertmanager\",outcome=\"failed\"} 0",
    ] {
        assert!(m.contains(family), "{family} missing:\n{m}");
    }
    if let Some(promtool) = common::require_bin("promtool", "prometheus") {
        use std::io::Write;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // JW-1 moves on: Alertmanager is told it resolved (its webhook says so), JW-2 stays.
    db.execute("UPDATE orders SET status = 'PRICE_CALCULATED', status_changed_at = now() WHERE id = 'JW-1'", &[]).await.unwrap();
    d.wait_alerts(|a| state_of(a, "JW-1").as_deref() == Some("resolved"))
        .await;
    hook.wait_for(
        |b| {
            b.iter().any(|n| {
                n["status"] == "resolved" && n["alerts"][0]["labels"]["order_id"] == "JW-1"
            })
        },
        Duration::from_secs(30),
    )
    .await;
    let active = am
        .wait_for(|a| am_alert(a, "JW-1").is_none(), Duration::from_secs(30))
        .await;
    assert!(am_alert(&active, "JW-2").is_some());
    let resolved_post = recorder
        .wait_for(|b| resolved_in(b, "JW-1"), Duration::from_secs(30))
        .await;
    assert!(!resolved_post.is_empty());

    // Nothing personal reached Alertmanager, the receivers, the metrics or the API.
    let everything = format!(
        "{}{}{}{}{}",
        serde_json::to_string(&am.alerts().await).unwrap(),
        serde_json::to_string(&hook.bodies().await).unwrap(),
        serde_json::to_string(&recorder.bodies().await).unwrap(),
        d.get("/metrics").await,
        d.get("/api/v1/alerts").await
    );
    for p in PERSONAL {
        assert!(!everything.contains(p), "{p} leaked");
    }
    let rules: Value = serde_json::from_str(&d.get("/api/v1/rules").await).unwrap();
    assert_eq!(rules["data"]["rules"][0]["health"], "ok");
    assert_eq!(rules["data"]["rules"][0]["count"], 1);
    assert_eq!(d.get("/healthz").await, "ok\n");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_neither_reannounces_nor_forgets() {
    let recorder = common::WebhookReceiver::start().await;
    let url = common::pg().fresh_db();
    let db = common::connect(&url).await;
    db.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &url, &[recorder.url()], "");

    let d = Running::start(dir.path()).await;
    let before = d
        .wait_alerts(|a| {
            state_of(a, "JW-1").as_deref() == Some("firing")
                && state_of(a, "JW-2").as_deref() == Some("firing")
        })
        .await;
    d.stop().await;

    // While the daemon is down, JW-2 moves on.
    db.execute("UPDATE orders SET status = 'PRICE_CALCULATED', status_changed_at = now() WHERE id = 'JW-2'", &[]).await.unwrap();
    let d = Running::start(dir.path()).await;
    let after = d
        .wait_alerts(|a| state_of(a, "JW-2").as_deref() == Some("resolved"))
        .await;
    // JW-1 is the same episode: same activeAt and firedAt, so it was not announced again.
    let pick = |v: &[Value], k: &str| v.iter().find(|a| a["key"] == k).cloned().unwrap();
    assert_eq!(
        pick(&before, "JW-1")["firedAt"],
        pick(&after, "JW-1")["firedAt"]
    );
    assert_eq!(
        pick(&before, "JW-1")["activeAt"],
        pick(&after, "JW-1")["activeAt"]
    );
    assert_eq!(pick(&after, "JW-1")["state"], "firing");
    // And the resolution reached the receiver.
    recorder
        .wait_for(|b| resolved_in(b, "JW-2"), Duration::from_secs(30))
        .await;
    d.stop().await;
}

/// A source going down freezes its alerts (no resolve), sets `orderwatch_source_up 0`, and
/// after `source_down_after` raises SourceDown; coming back resolves SourceDown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_down_freezes_alerts_and_raises_source_down() {
    let Some(am) = common::Alertmanager::start(None).await else {
        return;
    };
    // Our own cluster: stopping the shared one would break the other tests.
    let mut pg = tokio::task::spawn_blocking(orderwatch::pg_sandbox::PgSandbox::start)
        .await
        .unwrap()
        .unwrap();
    pg.create_database("shop").unwrap();
    common::add_reader(&pg);
    let url = pg.url_as(common::READER, "shop");
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &url, &[am.url()], "source_down_after: 3s\n");
    let d = Running::start(dir.path()).await;
    d.wait_alerts(|a| state_of(a, "JW-1").as_deref() == Some("firing"))
        .await;
    let readyz = common::http_client()
        .get(format!("{}/readyz", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);

    let pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    d.wait_metric("orderwatch_source_up{source=\"shop\"}", "0")
        .await;
    let am_alerts = am
        .wait_for(
            |a| {
                a.iter().any(|x| {
                    x["labels"]["alertname"] == "SourceDown" && x["labels"]["source"] == "shop"
                })
            },
            Duration::from_secs(30),
        )
        .await;
    assert!(
        am_alert(&am_alerts, "JW-1").is_some(),
        "stuck alerts stay active in Alertmanager while the source is down"
    );
    let ours = d.alerts().await;
    assert_eq!(
        state_of(&ours, "JW-1").as_deref(),
        Some("firing"),
        "no data is not good news"
    );
    assert_eq!(state_of(&ours, "JW-2").as_deref(), Some("firing"));
    let rules: Value = serde_json::from_str(&d.get("/api/v1/rules").await).unwrap();
    assert_eq!(rules["data"]["rules"][0]["health"], "err");
    let m = d.get("/metrics").await;
    assert!(
        m.lines().any(|l| l
            .starts_with("orderwatch_rule_evaluation_failures_total{rule=\"submitted_over_1h\"}")),
        "{m}"
    );

    let mut pg = pg;
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();
    d.wait_metric("orderwatch_source_up{source=\"shop\"}", "1")
        .await;
    d.wait_alerts(|a| state_of(a, "shop").as_deref() == Some("resolved"))
        .await;
    am.wait_for(
        |a| !a.iter().any(|x| x["labels"]["alertname"] == "SourceDown"),
        Duration::from_secs(30),
    )
    .await;
    d.stop().await;
    drop(pg);
}

/// 600 stuck orders, `max_alerts: 300`: 300 alerts and one overflow alert carrying the rest,
/// delivered in POSTs of at most 256 alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_stuck_orders_are_batched_and_capped_with_an_overflow_alert() {
    let recorder = common::WebhookReceiver::start().await;
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, order_type text, status text, status_changed_at timestamptz);
             CREATE INDEX ON orders (status, status_changed_at);
             INSERT INTO orders SELECT 'JW-' || g, 'ring', 'SUBMITTED', now() - interval '2 hours' - make_interval(secs => g)
               FROM generate_series(1, 600) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &url, &[recorder.url()], "");
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n    max_alerts: 300\n",
    )
    .unwrap();
    let d = Running::start(dir.path()).await;
    let alerts_of = |bodies: &[Value]| -> std::collections::BTreeMap<String, Value> {
        bodies
            .iter()
            .flat_map(|b| b.as_array().cloned().unwrap_or_default())
            .map(|a| (a["labels"]["order_id"].as_str().unwrap().to_string(), a))
            .collect()
    };
    let bodies = recorder
        .wait_for(|b| alerts_of(b).len() == 301, Duration::from_secs(30))
        .await;
    assert!(
        bodies.iter().all(|b| b.as_array().unwrap().len() <= 256),
        "a POST held more than 256 alerts"
    );
    assert!(
        bodies.iter().any(|b| b.as_array().unwrap().len() == 256),
        "301 alerts need a full batch"
    );
    let all = alerts_of(&bodies);
    // The oldest 300 orders (JW-600 … JW-301) get their own alert.
    assert!(
        all.contains_key("JW-600") && all.contains_key("JW-301") && !all.contains_key("JW-300")
    );
    let overflow = &all["_overflow"];
    assert_eq!(overflow["annotations"]["count"], "600");
    assert_eq!(overflow["annotations"]["more"], "300");
    assert_eq!(overflow["labels"]["rule"], "submitted_over_1h");
    let m = d
        .wait_metric("orderwatch_stuck_orders{rule=\"submitted_over_1h\"", "600")
        .await;
    assert!(
        m.contains("orderwatch_alerts{rule=\"submitted_over_1h\",state=\"firing\"} 301"),
        "{m}"
    );
    // The API pages through the same alerts with `limit` and `after` (the fingerprint).
    let whole: Value = serde_json::from_str(&d.get("/api/v1/alerts").await).unwrap();
    let whole: Vec<Value> = whole["data"]["alerts"].as_array().unwrap().clone();
    assert_eq!(whole.len(), 301);
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let page: Value = serde_json::from_str(
            &d.get(&format!("/api/v1/alerts?limit=120&after={after}"))
                .await,
        )
        .unwrap();
        let alerts = page["data"]["alerts"].as_array().unwrap();
        assert!(alerts.len() <= 120);
        paged.extend(alerts.iter().map(|a| a["fingerprint"].clone()));
        match page["data"]["nextAfter"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    let fingerprints: Vec<Value> = whole.iter().map(|a| a["fingerprint"].clone()).collect();
    assert_eq!(
        paged, fingerprints,
        "three pages, in order, nothing twice or missed"
    );
    d.stop().await;
}

/// `for` holds a new alert pending (Alertmanager hears nothing), then it fires;
/// `keep_firing_for` keeps it firing after the order moved on, then it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_and_keep_firing_for_end_to_end() {
    let recorder = common::WebhookReceiver::start().await;
    let url = common::pg().fresh_db();
    let db = common::connect(&url).await;
    db.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &url, &[recorder.url()], "");
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n    for: 4s\n    keep_firing_for: 4s\n",
    )
    .unwrap();
    let started = tokio::time::Instant::now();
    let d = Running::start(dir.path()).await;
    d.wait_alerts(|a| state_of(a, "JW-1").as_deref() == Some("pending"))
        .await;
    assert!(
        recorder.bodies().await.is_empty(),
        "pending alerts are not sent"
    );
    d.wait_alerts(|a| state_of(a, "JW-1").as_deref() == Some("firing"))
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "fired before `for` passed"
    );
    recorder
        .wait_for(
            |b| b.iter().any(|p| p.to_string().contains("JW-1")),
            Duration::from_secs(10),
        )
        .await;

    db.execute(
        "UPDATE orders SET status = 'PRICE_CALCULATED' WHERE id = 'JW-1'",
        &[],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        state_of(&d.alerts().await, "JW-1").as_deref(),
        Some("firing"),
        "keep_firing_for"
    );
    let alerts = d
        .wait_alerts(|a| state_of(a, "JW-1").as_deref() == Some("resolved"))
        .await;
    // Exactly the semantics: resolved no sooner than keep_firing_for after the last
    // evaluation that still found the order (timing-independent, unlike a wall-clock bound).
    let a = alerts.iter().find(|a| a["key"] == "JW-1").unwrap();
    let ts = |k: &str| {
        a[k].as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let kept = ts("resolvedAt") - ts("lastSeen");
    assert!(
        kept >= chrono::Duration::seconds(4),
        "resolved {kept} after last seen"
    );
    d.stop().await;
}
