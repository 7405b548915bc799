//! Traces: `orderwatch run` with `OTEL_EXPORTER_OTLP_ENDPOINT` sends its own spans
//! (`evaluate` → `query`, `notify`) as OTLP/HTTP JSON to a local collector standing in for
//! Jaeger; the payload has the shape the OTLP spec gives, and no personal data. Without the
//! variable nothing is sent.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

const SCHEMA: &str = "
CREATE TABLE orders (id text PRIMARY KEY, customer_name text, customer_email text,
  status text NOT NULL, status_changed_at timestamptz NOT NULL);
CREATE INDEX ON orders (status, status_changed_at);
INSERT INTO orders VALUES
  ('JW-1', 'Anna Ivanova', 'anna.ivanova@example.com', 'SUBMITTED', now() - interval '3 hours');
";

/// Runs the daemon with `env` until `done` holds for what the collector received (at most
/// 30 s), then stops it with SIGTERM.
async fn run_daemon(
    dir: &std::path::Path,
    env: &[(&str, String)],
    collector: &common::WebhookReceiver,
    done: impl Fn(&[common::Received]) -> bool,
) {
    let args = ["run", "-c"].map(std::ffi::OsStr::new);
    let config = dir.join("orderwatch.yaml");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut daemon = common::Process::start(&[&args[..], &[config.as_os_str()]].concat(), &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&collector.requests().await) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.signal("-TERM");
    daemon.wait_exit(Duration::from_secs(30)).await;
}

fn posted(reqs: &[common::Received], path: &str) -> bool {
    reqs.iter().any(|r| r.path == path)
}

/// Whether the traces received so far hold a span named `name`.
fn has_span(reqs: &[common::Received], name: &str) -> bool {
    reqs.iter()
        .filter(|r| r.path == "/v1/traces")
        .flat_map(|r| {
            r.body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .any(|s| s["name"] == name)
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn is_hex(v: &Value, len: usize) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let collector = common::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:{}\nstate_dir: state\nrule_files: [rules.yaml]\n\
             sources:\n  shop:\n    url: \"{url}?sslmode=disable\"\n\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at }}\n\
             receivers:\n  hook:\n    webhook: {{ url: \"{}/hook\" }}\n\
             route:\n  receiver: hook\n  group_wait: 1s\n",
            common::free_port(),
            collector.url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n",
    )
    .unwrap();

    // Without the variables: the message is delivered, no trace is sent.
    run_daemon(dir.path(), &[], &collector, |r| posted(r, "/hook")).await;
    let paths: Vec<String> = collector
        .requests()
        .await
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(paths.iter().any(|p| p == "/hook"), "{paths:?}");
    assert!(!paths.iter().any(|p| p == "/v1/traces"), "{paths:?}");

    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    run_daemon(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()),
            ("OTEL_SERVICE_NAME", "orderwatch-test".into()),
        ],
        &collector,
        |r| has_span(r, "evaluate") && has_span(r, "query") && has_span(r, "notify"),
    )
    .await;
    let bodies: Vec<Value> = collector
        .requests()
        .await
        .into_iter()
        .filter(|r| r.path == "/v1/traces")
        .map(|r| r.body)
        .collect();
    assert!(!bodies.is_empty(), "no POST /v1/traces");
    let text = serde_json::to_string(&bodies).unwrap();
    for personal in ["Anna", "Ivanova", "@example.com"] {
        assert!(!text.contains(personal), "{personal} in a trace");
    }
    let mut spans = Vec::new();
    for b in &bodies {
        let rs = &b["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "orderwatch-test"}})
        );
        assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "orderwatch");
        spans.extend(
            rs["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    for s in &spans {
        assert!(is_hex(&s["traceId"], 32) && is_hex(&s["spanId"], 16), "{s}");
        let start: u64 = s["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u64 = s["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(start <= end && start > 1_700_000_000_000_000_000, "{s}");
    }
    let eval = spans
        .iter()
        .find(|s| {
            s["name"] == "evaluate"
                && attr(s, "rule") == Some(&serde_json::json!({"stringValue": "submitted_over_1h"}))
                && attr(s, "count") == Some(&serde_json::json!({"intValue": "1"}))
        })
        .unwrap_or_else(|| panic!("no evaluate span with rule and count: {spans:#?}"));
    assert_eq!(eval["kind"], 1);
    assert!(eval.get("parentSpanId").is_none());
    let query = spans
        .iter()
        .find(|s| s["name"] == "query" && s["parentSpanId"] == eval["spanId"])
        .unwrap_or_else(|| panic!("no query span under {eval}"));
    assert_eq!(query["traceId"], eval["traceId"]);
    assert_eq!(query["kind"], 3);
    assert_eq!(
        attr(query, "db.system"),
        Some(&serde_json::json!({"stringValue": "postgresql"}))
    );
    assert!(
        attr(query, "db.statement").unwrap()["stringValue"]
            .as_str()
            .unwrap()
            .starts_with("SELECT"),
        "{query}"
    );
    let notify = spans
        .iter()
        .find(|s| s["name"] == "notify")
        .unwrap_or_else(|| panic!("no notify span: {spans:#?}"));
    assert_eq!(
        attr(notify, "receiver"),
        Some(&serde_json::json!({"stringValue": "hook"}))
    );
    assert_eq!(notify["status"]["code"], 0);
}
