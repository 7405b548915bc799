//! `kind: slow_queries` with real long-running queries, and `kind: sql` with a custom query.

mod common;

use std::path::Path;
use std::time::Duration;

use orderwatch::engine::evaluate_once;

fn config(dir: &Path, url: &str, rules: &str) -> orderwatch::config::Loaded {
    std::fs::write(
        dir.join("orderwatch.yaml"),
        format!(
            "state_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: \"{url}\"\n    statement_timeout: 20s\n    orders: {{ table: orders }}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    orderwatch::config::load(&dir.join("orderwatch.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// A connection with `application_name`, running `sql` in the background.
async fn run_as(url: &str, app: &str, sql: &'static str) -> tokio::task::JoinHandle<()> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let (c, conn) = tokio_postgres::connect(
        &format!("{url}{sep}application_name={app}"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    tokio::spawn(async move {
        let _ = c.simple_query(sql).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_queries_names_the_slow_one_without_its_literals_and_ignores_analytics() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute("CREATE TABLE orders (id text, status text, entered_at timestamptz)")
        .await
        .unwrap();
    let slow = run_as(
        &url,
        "shop-api",
        "SELECT pg_sleep(8), 'anna.ivanova@example.com' AS email, 4242 AS phone_tail",
    )
    .await;
    let analytic = run_as(&url, "metabase", "SELECT pg_sleep(8), 'report'").await;
    let quick = run_as(&url, "crm-api", "SELECT pg_sleep(1)").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &url,
        "rules:\n  - name: slow_db_queries\n    kind: slow_queries\n    source: shop\n    older_than: 5s\n    exclude_applications: [metabase, 'grafana.*']\n    severity: warning\n",
    );
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let o = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    let ours: Vec<_> = o
        .signals
        .iter()
        .filter(|s| s.labels["database"] == url.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(ours.len(), 1, "{:?}", o.signals);
    let s = ours[0];
    assert_eq!(s.labels["application_name"], "shop-api");
    assert!(
        s.value.unwrap() >= 5.0 && s.value.unwrap() < 9.0,
        "{:?}",
        s.value
    );
    assert_eq!(
        s.labels["query"],
        "SELECT pg_sleep(?), ? AS email, ? AS phone_tail"
    );
    let json = serde_json::to_string(&orderwatch::report::build(&results)).unwrap();
    assert!(
        !json.contains("anna") && !json.contains("4242") && !json.contains("metabase"),
        "{json}"
    );
    assert!(json.contains("\"signals\""));
    for h in [slow, analytic, quick] {
        h.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_rule_rows_are_findings_with_exact_count() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text, status text, entered_at timestamptz);
             CREATE TABLE payments (order_id text, amount numeric, method text, card_holder text, paid boolean);
             CREATE SEQUENCE payment_ids;
             GRANT USAGE, UPDATE ON SEQUENCE payment_ids TO orderwatch_reader;
             INSERT INTO payments SELECT 'JW-' || g, g * 10.5, 'card', 'Holder ' || g, g % 3 <> 0 FROM generate_series(1, 30) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &url,
        "rules:\n  - name: unpaid_orders\n    kind: sql\n    source: shop\n    query: \"SELECT order_id AS id, amount AS value, method FROM payments WHERE NOT paid ORDER BY order_id\"\n    max_findings: 4\n    max_alerts: 4\n",
    );
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let o = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.count, 10, "exact count beyond the cap");
    assert_eq!(o.signals.len(), 4);
    assert_eq!(o.signals[0].key, "JW-12");
    assert_eq!(o.signals[0].value, Some(126.0));
    assert_eq!(
        o.signals[0].labels.get("method").map(String::as_str),
        Some("card")
    );
    assert!(
        !serde_json::to_string(&orderwatch::report::build(&results))
            .unwrap()
            .contains("Holder")
    );
    // The role may draw from the sequence, but the transaction is read-only: a query that
    // writes fails, and is reported as a failure.
    let loaded = config(
        dir.path(),
        &url,
        "rules:\n  - name: sneaky\n    kind: sql\n    source: shop\n    query: \"SELECT nextval('payment_ids')::text AS id\"\n",
    );
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let err = results[0].1.as_ref().unwrap_err().to_string();
    assert!(err.contains("read-only"), "{err}");
}
