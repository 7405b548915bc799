//! Data can neither forge a log line nor drive a terminal: control characters from order ids
//! and silence authors are shown escaped in `once`'s table and in text logs.

mod common;

use std::time::{Duration, Instant};

const SCHEMA: &str = "
CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL, status_changed_at timestamptz NOT NULL);
INSERT INTO orders VALUES
  (E'JW-1\\n2026-11-25T00:00:00Z ERROR forged line', 'SUBMITTED', now() - interval '3 hours'),
  (E'JW-2\\x1b]0;pwned\\x07\\x1b[2J', 'SUBMITTED', now() - interval '2 hours');
";

fn config(dir: &std::path::Path, url: &str, listen: &str) {
    std::fs::write(
        dir.join("orderwatch.yaml"),
        format!(
            "listen: {listen}\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: \"{url}?sslmode=disable\"\n\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at }}\n\
             notifiers:\n  log: {{}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_table_and_text_logs_escape_control_characters() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    config(dir.path(), &url, &format!("127.0.0.1:{port}"));
    let bin = env!("CARGO_BIN_EXE_orderwatch");

    let out = std::process::Command::new(bin)
        .arg("-c")
        .arg(dir.path().join("orderwatch.yaml"))
        .arg("once")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        !table.contains('\x1b') && !table.contains('\x07'),
        "{table:?}"
    );
    assert!(
        !table
            .lines()
            .any(|l| l.starts_with("2026-11-25T00:00:00Z ERROR")),
        "{table}"
    );
    assert!(
        table.contains("JW-1\\n2026-11-25T00:00:00Z ERROR forged line"),
        "{table}"
    );
    assert!(table.contains("JW-2\\u{1b}]0;pwned\\u{7}"), "{table}");

    let log = dir.path().join("log.txt");
    let mut child = std::process::Command::new(bin)
        .arg("-c")
        .arg(dir.path().join("orderwatch.yaml"))
        .args(["--log-format", "text", "run"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = common::http_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .post(format!("http://127.0.0.1:{port}/api/v1/silences"))
            .json(
                &serde_json::json!({"matchers": ["rule=\"none\""], "duration": "1h",
                "createdBy": "anna\n2026-11-25T00:00:00Z ERROR silences wiped by admin"}),
            )
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "daemon not up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The log notifier names the stuck orders.
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("JW-2") && text.contains("silence created") {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    for l in text.lines() {
        assert!(
            !l.starts_with("2026-11-25T00:00:00Z ERROR"),
            "a forged line: {l}\n{text}"
        );
    }
    assert!(
        text.contains("anna\\n2026-11-25T00:00:00Z ERROR silences wiped"),
        "{text}"
    );
}
