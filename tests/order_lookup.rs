//! "Where is order X?" against real PostgreSQL: `/api/v1/orders/{id}`, the order page and
//! `orderwatch order` name the order's status, time in status and history in every source,
//! the rules it matches, the lost-message verdict and its alerts, with allow-listed columns
//! only; at most 4 lookups run at once and each holds at most one connection of a source.

mod common;

use std::time::Duration;

use serde_json::Value;

const SCHEMA: &str = "
CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL,
  status_changed_at timestamptz NOT NULL, order_type text, customer_email text);
CREATE INDEX ON orders (status, status_changed_at);
INSERT INTO orders VALUES
  ('JW-1', 'SUBMITTED', now() - interval '3 hours', 'ring', 'anna.ivanova@example.com'),
  ('JW-2', 'MANUFACTURING_STARTED', now() - interval '2 hours', 'pendant', 'boris@example.com');
CREATE TABLE status_log (id bigserial PRIMARY KEY, order_id text NOT NULL, status text NOT NULL,
  changed_at timestamptz NOT NULL);
CREATE INDEX ON status_log (order_id, changed_at);
CREATE INDEX ON status_log (status, changed_at);
INSERT INTO status_log (order_id, status, changed_at) VALUES
  ('JW-2', 'FILE_UPLOADED', now() - interval '5 hours'),
  ('JW-2', 'SUBMITTED', now() - interval '4 hours'),
  ('JW-2', 'SUBMITTED', now() - interval '210 minutes'),
  ('JW-2', 'MANUFACTURING_STARTED', now() - interval '2 hours'),
  ('JW-3', 'SUBMITTED', now() - interval '40 days');
";

fn config(url: &str) -> (String, String) {
    let main = format!(
        "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\n\
         links:\n  crm_url: 'https://crm.example/orders/{{{{ order_id }}}}'\n\
         sources:\n\
         \x20 shop:\n    url: \"{url}?sslmode=disable\"\n\
         \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [order_type] }}\n\
         \x20 mes:\n    url: \"{url}?sslmode=disable\"\n\
         \x20   orders: {{ history_table: status_log, id: order_id, status: status, entered_at: changed_at, tiebreak: id, history_lookback: 30d }}\n\
         \x20 slow:\n    url: \"{url}?sslmode=disable\"\n    gauges: false\n    flow: false\n    pool_size: 4\n\
         \x20   orders: {{ query: \"SELECT id, status, status_changed_at FROM orders WHERE pg_sleep(1) IS NOT NULL\", id: id, status: status, entered_at: status_changed_at }}\n"
    );
    let rules = "rules:\n\
        \x20 - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n\
        \x20 - name: submitted_missing_in_mes\n    kind: missing\n    source: shop\n    status: SUBMITTED\n    older_than: 30m\n    missing_in: mes\n    interval: 1s\n\
        \x20 - name: started_over_1d\n    source: mes\n    status: MANUFACTURING_STARTED\n    older_than: 1d\n    interval: 1s\n"
        .to_string();
    (main, rules)
}

async fn order(d: &common::Running, id: &str) -> (u16, Value) {
    let r = common::http_client()
        .get(format!("{}/api/v1/orders/{id}", d.url))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn source<'a>(data: &'a Value, name: &str) -> &'a Value {
    data["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == name)
        .unwrap_or_else(|| panic!("no source {name}: {data}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_found_in_every_source_with_its_rules_verdicts_and_alerts() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (main, rules) = config(&url);
    common::write_config(dir.path(), &main, &rules);
    let d = common::Running::start(dir.path()).await;
    d.wait_ready().await;
    // Wait for the first evaluation's alert about JW-1.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !d.alerts().await.iter().any(|a| a["key"] == "JW-1") {
        assert!(std::time::Instant::now() < deadline, "no alert about JW-1");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // JW-1 is the one order lost between shop and mes: counted once, however many
    // evaluations (every second) find it again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let metrics = d.get("/metrics").await;
    assert!(
        metrics.contains(
            "orderwatch_lost_orders_total{rule=\"submitted_missing_in_mes\",source=\"shop\"} 1\n"
        ),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("lost_orders"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let (code, v) = order(&d, "JW-1").await;
    assert_eq!(code, 200, "{v}");
    let data = &v["data"];
    let text = data.to_string();
    assert!(
        !text.contains("anna") && !text.contains("example.com\""),
        "{text}"
    );
    let shop = source(data, "shop");
    assert_eq!(shop["order"]["status"], "SUBMITTED", "{data}");
    assert_eq!(shop["order"]["labels"]["order_type"], "ring");
    let secs = shop["in_status_seconds"].as_f64().unwrap();
    assert!(
        (3.0 * 3600.0 - 60.0..3.0 * 3600.0 + 60.0).contains(&secs),
        "{secs}"
    );
    assert!(source(data, "mes")["order"].is_null(), "{data}");
    let rules = data["rules"].as_array().unwrap();
    let rule = |name: &str| {
        rules
            .iter()
            .find(|r| r["rule"] == name)
            .unwrap_or_else(|| panic!("{name} not judged: {data}"))
    };
    assert_eq!(rule("submitted_over_1h")["matches"], true);
    assert_eq!(rule("submitted_missing_in_mes")["matches"], true);
    assert_eq!(rule("submitted_missing_in_mes")["verdict"], "not in mes");
    assert!(
        !rules.iter().any(|r| r["rule"] == "started_over_1d"),
        "a rule on another status says nothing about it: {data}"
    );
    let alerts = data["alerts"].as_array().unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "submitted_over_1h" && a["silenced_by"] == serde_json::json!([])),
        "{data}"
    );
    assert_eq!(data["links"]["crm_url"], "https://crm.example/orders/JW-1");

    // A status log: the runs, a repeated status counted once, time in status from the run's
    // first row.
    let (_, v) = order(&d, "JW-2").await;
    let mes = source(&v["data"], "mes");
    let runs: Vec<&str> = mes["order"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(
        runs,
        ["FILE_UPLOADED", "SUBMITTED", "MANUFACTURING_STARTED"],
        "{mes}"
    );
    let secs = mes["in_status_seconds"].as_f64().unwrap();
    assert!((7140.0..7260.0).contains(&secs), "{secs}");
    let rule = &v["data"]["rules"][0];
    assert_eq!(rule["rule"], "started_over_1d");
    assert_eq!(rule["matches"], false, "{v}");

    // Beyond the status log's lookback (30 days): the order is there, since when unknown, as
    // the `missing` rules see it.
    let (_, v) = order(&d, "JW-3").await;
    let mes = source(&v["data"], "mes");
    assert_eq!(mes["order"]["status"], "SUBMITTED", "{mes}");
    assert!(
        mes["order"]["entered_at"].is_null() && mes["in_status_seconds"].is_null(),
        "{mes}"
    );

    // Nowhere: every source answers, none holds it.
    let (code, v) = order(&d, "JW-404").await;
    assert_eq!(code, 200);
    for s in v["data"]["sources"].as_array().unwrap() {
        assert!(s["order"].is_null() && s["error"].is_null(), "{s}");
    }
    let (code, _) = order(&d, &"x".repeat(300)).await;
    assert_eq!(code, 400);

    // The page: reached from the status page's search box (a GET form to `orders`).
    let home = d.get("/").await;
    assert!(
        home.contains("action=\"orders\"") && home.contains("name=\"id\""),
        "{home}"
    );
    let page = d.get("/orders?id=JW-2").await;
    for needle in [
        "MANUFACTURING_STARTED",
        "FILE_UPLOADED",
        "<svg",
        "started_over_1d",
        "pendant",
    ] {
        assert!(page.contains(needle), "order page lacks {needle}:\n{page}");
    }
    assert!(
        !page.contains("boris") && !page.contains("<script"),
        "{page}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_bounded_and_hold_one_connection_per_source() {
    let url = common::pg().fresh_db();
    let admin = common::connect(&url).await;
    admin.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (main, _) = config(&url);
    common::write_config(dir.path(), &main, "rules: []\n");
    let d = common::Running::start(dir.path()).await;
    d.wait_ready().await;
    // Each lookup of an order `slow` holds sleeps 1 s there (the id is pushed down, so only
    // its row sleeps): 8 at once, 4 run, one after the other in `slow`, and 4 get 429.
    let asks = (0..8).map(|i| {
        let url = format!("{}/api/v1/orders/JW-{}", d.url, 1 + i % 2);
        async move {
            let r = common::http_client().get(url).send().await.unwrap();
            r.status().as_u16()
        }
    });
    let watch = async {
        // While they run: how many of the pool's connections run the slow lookup at once.
        let mut most = 0;
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(1)%' \
                     AND state = 'active' AND pid <> pg_backend_pid() AND datname = current_database()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            most = most.max(n);
        }
        most
    };
    let (codes, most) = tokio::join!(futures_util::future::join_all(asks), watch);
    let ok = codes.iter().filter(|c| **c == 200).count();
    let busy = codes.iter().filter(|c| **c == 429).count();
    assert_eq!((ok, busy), (4, 4), "{codes:?}");
    assert_eq!(
        most, 1,
        "lookups held {most} connections of one source at once"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_asks_the_databases_when_the_daemon_is_down() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (main, rules) = config(&url);
    let path = common::write_config(dir.path(), &main, &rules);
    let run = |ids: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderwatch"))
            .args(["order", "--url", "http://127.0.0.1:1", "-c"])
            .arg(&path)
            .args(ids)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["JW-1", "JW-2"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("asking the databases directly"), "{err}");
    assert!(out.contains("shop       SUBMITTED for 3h"), "{out}");
    assert!(out.contains("submitted_missing_in_mes"), "{out}");
    assert!(
        out.contains("MATCHES") && out.contains("not in mes"),
        "{out}"
    );
    assert!(
        out.contains("history: FILE_UPLOADED 1h 00m → SUBMITTED 2h 00m → MANUFACTURING_STARTED"),
        "{out}"
    );
    assert!(out.contains("alerts: unknown"), "{out}");
    assert!(!out.contains("anna"), "{out}");
    let (code, out, _) = run(&["JW-404"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("shop       not here"), "{out}");
}
