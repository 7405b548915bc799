//! `kind: missing` across two real databases: two databases of one cluster, and two clusters.
//! Lost and mismatched orders are planted among 100 000 candidates; the findings equal a plain
//! SQL ground truth computed on each side and joined here.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use orderwatch::engine::evaluate_once;

/// The source side: `n` orders in MANUFACTURING_APPROVED for 1–3 days, `id` of type `id_type`.
async fn fill_source(url: &str, n: i64, id_type: &str) {
    let id = if id_type == "text" {
        "'JW-' || lpad(g::text, 8, '0')"
    } else {
        "g"
    };
    common::connect(url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE orders (id {id_type} PRIMARY KEY, customer_email text, order_type text,
                                  status text NOT NULL, status_changed_at timestamptz NOT NULL);
             CREATE INDEX ON orders (status, status_changed_at);
             INSERT INTO orders
               SELECT {id}, 'c' || g || '@example.com', 'ring', 'MANUFACTURING_APPROVED',
                      now() - interval '1 day' - make_interval(secs => g)
               FROM generate_series(1, {n}) g;
             -- Not candidates: too young, or another status.
             INSERT INTO orders SELECT {id}, 'x@example.com', 'ring', 'MANUFACTURING_APPROVED', now() - interval '5 minutes'
               FROM generate_series({n} + 1, {n} + 50) g;
             INSERT INTO orders SELECT {id}, 'x@example.com', 'ring', 'CLOSED', now() - interval '30 days'
               FROM generate_series({n} + 51, {n} + 5000) g;
             ANALYZE orders;"
        ))
        .await
        .unwrap();
}

/// The other side: every candidate but every 731st (lost); every 997th in a disagreeing
/// status (mismatch).
async fn fill_other(url: &str, n: i64, id_type: &str) {
    let id = if id_type == "text" {
        "'JW-' || lpad(g::text, 8, '0')"
    } else {
        "g"
    };
    common::connect(url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE production_orders (order_id {id_type} PRIMARY KEY, status text NOT NULL,
                                             status_changed_at timestamptz NOT NULL);
             CREATE INDEX ON production_orders (status, status_changed_at);
             INSERT INTO production_orders
               SELECT {id}, CASE WHEN g % 997 = 0 THEN 'SUBMITTED' ELSE 'MANUFACTURING_APPROVED' END, now()
               FROM generate_series(1, {n} + 5000) g WHERE g % 731 <> 0;
             ANALYZE production_orders;"
        ))
        .await
        .unwrap();
}

fn write_config(dir: &Path, shop: &str, mes: &str, expect: bool) {
    let expect = if expect {
        "    expect_status: [MANUFACTURING_APPROVED, MANUFACTURING_STARTED]\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("orderwatch.yaml"),
        format!(
            "state_dir: state\nrule_files: [rules.yaml]\nsources:\n\
             \x20 shop:\n    url: \"{shop}\"\n    orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [order_type] }}\n\
             \x20 mes:\n    url: \"{mes}\"\n    orders: {{ table: production_orders, id: order_id, status: status, entered_at: status_changed_at }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules.yaml"),
        format!(
            "rules:\n  - name: approved_missing_in_mes\n    kind: missing\n    source: shop\n    status: MANUFACTURING_APPROVED\n    older_than: 15m\n    missing_in: mes\n{expect}"
        ),
    )
    .unwrap();
}

/// What plain SQL on each side, joined here, says is lost (and mismatched).
async fn ground_truth(shop: &str, mes: &str, expect: bool) -> (BTreeSet<String>, BTreeSet<String>) {
    let candidates: BTreeSet<String> = common::connect(shop)
        .await
        .query(
            "SELECT id::text FROM orders WHERE status = 'MANUFACTURING_APPROVED' AND status_changed_at < now() - interval '15 minutes'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let there: std::collections::HashMap<String, String> = common::connect(mes)
        .await
        .query("SELECT order_id::text, status FROM production_orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let lost = candidates
        .iter()
        .filter(|id| !there.contains_key(*id))
        .cloned()
        .collect();
    let mismatched = if expect {
        candidates
            .iter()
            .filter(|id| {
                there
                    .get(*id)
                    .is_some_and(|s| s != "MANUFACTURING_APPROVED" && s != "MANUFACTURING_STARTED")
            })
            .cloned()
            .collect()
    } else {
        BTreeSet::new()
    };
    (lost, mismatched)
}

async fn check(shop: &str, mes: &str, n: i64, id_type: &str, expect: bool, max_findings_all: bool) {
    fill_source(shop, n, id_type).await;
    fill_other(mes, n, id_type).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), shop, mes, expect);
    let rules = std::fs::read_to_string(dir.path().join("rules.yaml")).unwrap();
    let cap = if max_findings_all {
        "    max_findings: 100000\n"
    } else {
        "    max_findings: 10\n    max_alerts: 5\n"
    };
    std::fs::write(dir.path().join("rules.yaml"), format!("{rules}{cap}")).unwrap();
    let loaded = orderwatch::configure::load(&dir.path().join("orderwatch.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (lost, mismatched) = ground_truth(shop, mes, expect).await;
    assert!(!lost.is_empty());
    let started = Instant::now();
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let took = started.elapsed();
    let o = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "missing rule over {n} candidates ({id_type} ids): {} lost, {} mismatched, evaluated in {took:.2?}",
        lost.len(),
        mismatched.len()
    );
    assert_eq!(
        o.count as usize,
        lost.len() + mismatched.len(),
        "exact count"
    );
    let got_lost: BTreeSet<String> = o
        .findings
        .iter()
        .filter(|f| f.other_status.is_none())
        .map(|f| f.order_id.clone())
        .collect();
    let got_mismatch: BTreeSet<String> = o
        .findings
        .iter()
        .filter(|f| f.other_status.is_some())
        .map(|f| f.order_id.clone())
        .collect();
    if max_findings_all {
        assert_eq!(got_lost, lost);
        assert_eq!(got_mismatch, mismatched);
        assert!(
            o.findings
                .iter()
                .filter(|f| f.other_status.is_some())
                .all(|f| f.other_status.as_deref() == Some("SUBMITTED"))
        );
    } else {
        assert!(got_lost.is_subset(&lost) && got_mismatch.is_subset(&mismatched));
        assert_eq!(o.findings.len(), 10, "capped at max_findings");
        assert!(o.truncated());
    }
    // Oldest first, and no personal column read.
    assert!(
        o.findings
            .windows(2)
            .all(|w| w[0].entered_at <= w[1].entered_at)
    );
    let json = serde_json::to_string(&orderwatch::report::build(&results, false)).unwrap();
    assert!(!json.contains("@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_of_one_cluster_text_ids_100k_candidates() {
    let (shop, mes) = (common::pg().fresh_db(), common::pg().fresh_db());
    check(&shop, &mes, 100_000, "text", true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_bigint_ids_capped_findings_exact_count() {
    let (shop, mes) = (common::pg().fresh_db(), common::pg().fresh_db());
    check(&shop, &mes, 20_000, "bigint", false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters() {
    let shop = common::pg().fresh_db();
    let other = tokio::task::spawn_blocking(orderwatch::pg_sandbox::PgSandbox::start)
        .await
        .unwrap()
        .unwrap();
    other.create_database("mes").unwrap();
    common::add_reader(&other);
    check(
        &shop,
        &other.url_as(common::READER, "mes"),
        10_000,
        "text",
        true,
        true,
    )
    .await;
    drop(other);
}
