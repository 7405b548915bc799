//! `orderwatch explain` on a real PostgreSQL: a table without the (status, entered_at) index and
//! a lookup table without a key are reported as whole-table scans with the CREATE INDEX that
//! fixes them; running exactly the printed statements makes every query an index scan.

mod common;

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_orderwatch");

fn explain(config: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("explain")
        .args(extra)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_table_scans_are_named_and_the_printed_fix_works() {
    let shop = common::pg().fresh_db();
    let mes = common::pg().fresh_db();
    let shop_db = common::connect(&shop).await;
    let mes_db = common::connect(&mes).await;
    // No index on (status, status_changed_at) in the shop; no key at all in MES.
    shop_db
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, customer_email text, status text NOT NULL,
               status_changed_at timestamptz NOT NULL);
             INSERT INTO orders SELECT 'JW-' || i, 'c' || i || '@example.com', 'CLOSED', now()
               FROM generate_series(1, 2000) i;
             ANALYZE orders;",
        )
        .await
        .unwrap();
    mes_db
        .batch_execute(
            "CREATE TABLE production_orders (order_id text NOT NULL, status text NOT NULL,
               status_changed_at timestamptz NOT NULL);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = "status: status, entered_at: status_changed_at";
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "state_dir: state\nrule_files: [rules.yaml]\nsources:\n\
             \x20 shop:\n    url: \"{shop}?sslmode=disable\"\n    orders: {{ table: orders, id: id, {model} }}\n\
             \x20 mes:\n    url: \"{mes}?sslmode=disable\"\n    gauges: false\n\
             \x20   orders: {{ table: production_orders, id: order_id, {model} }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n\
         \x20 - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n\
         \x20 - name: approved_missing_in_mes\n    kind: missing\n    source: shop\n    missing_in: mes\n\
         \x20   status: MANUFACTURING_APPROVED\n    older_than: 15m\n\
         \x20 - name: shop_db_slow_queries\n    kind: slow_queries\n    source: shop\n",
    )
    .unwrap();
    let config = dir.path().join("orderwatch.yaml");

    let (code, text) = explain(&config, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "SCAN  rule submitted_over_1h (shop), stuck orders: scans the whole table orders"
        ),
        "{text}"
    );
    assert!(
        text.contains("SCAN  rule approved_missing_in_mes (mes), lookup in the other database: scans the whole table production_orders"),
        "{text}"
    );
    assert!(
        text.contains("ok    rule shop_db_slow_queries (shop), pg_stat_activity: no table query")
    );
    assert!(!text.contains("@example.com"), "no data in the output");
    let fixes: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  CREATE INDEX"))
        .map(str::trim)
        .collect();
    assert_eq!(
        fixes,
        vec![
            r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "orders_status_status_changed_at_idx" ON "orders" ("status", "status_changed_at");"#,
            r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "production_orders_order_id_idx" ON "production_orders" ("order_id");"#,
        ],
        "{text}"
    );

    // JSON, one rule.
    let (code, json) = explain(
        &config,
        &["--format", "json", "--rule", "submitted_over_1h"],
    );
    assert_eq!(code, 1, "{json}");
    let v: Value = serde_json::from_str(&json).unwrap();
    let st = v["statements"].as_array().unwrap();
    assert_eq!(st.len(), 2, "rows and totals: {json}");
    assert_eq!(st[0]["ok"], false);
    assert_eq!(st[0]["seq_scans"][0]["relation"], "orders");
    // Beside the verdict, the plan as the daemon runs it (its settings, scans allowed).
    let runs = st[0]["runs"].as_str().unwrap_or_default();
    assert!(
        runs.starts_with("Limit") && runs.contains("on orders"),
        "{json}"
    );
    assert!(
        st[1]["purpose"]
            .as_str()
            .unwrap()
            .contains("only when the rows were capped"),
        "{json}"
    );

    // The printed statements, run as printed, fix everything.
    shop_db.batch_execute(fixes[0]).await.unwrap();
    mes_db.batch_execute(fixes[1]).await.unwrap();
    let (code, text) = explain(&config, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("index scan on orders_status_status_changed_at_idx"),
        "{text}"
    );
    assert!(
        text.contains("index scan on production_orders_order_id_idx"),
        "{text}"
    );
    assert!(text.contains("        runs: Limit"), "{text}");
    assert!(
        text.ends_with("Every query is served by an index.\n"),
        "{text}"
    );

    // An unknown rule and an unreachable database are errors (exit 2), never "all fine".
    assert_eq!(explain(&config, &["--rule", "nope"]).0, 2);
    let dead = common::free_port();
    let broken = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&shop, &format!("postgres://nobody@127.0.0.1:{dead}/shop"));
    std::fs::write(&config, broken).unwrap();
    let (code, text) = explain(&config, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("ERROR rule submitted_over_1h (shop)"),
        "{text}"
    );
}
