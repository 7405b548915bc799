//! `kind: slow_queries` with real long-running queries, and `kind: sql` with a custom query.

mod common;

use std::path::Path;
use std::time::Duration;

use orderwatch::engine::evaluate_once;

fn config(dir: &Path, url: &str, rules: &str) -> orderwatch::config::Loaded {
    config_with(dir, url, "", rules)
}

/// [`config`] with more keys for the source (`source_keys`: indented lines).
fn config_with(
    dir: &Path,
    url: &str,
    source_keys: &str,
    rules: &str,
) -> orderwatch::config::Loaded {
    common::write_config(
        dir,
        &format!(
            "state_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: \"{url}\"\n    statement_timeout: 20s\n{source_keys}    orders: {{ table: orders }}\n"
        ),
        rules,
    );
    common::load(dir)
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
    // Only this database's queries (datname), even though the cluster is shared.
    assert_eq!(o.signals.len(), 1, "{:?}", o.signals);
    let s = &o.signals[0];
    assert!(
        s.value.unwrap() >= 5.0 && s.value.unwrap() < 9.0,
        "{:?}",
        s.value
    );
    // Labels identify (query id and role), annotations describe (pid, application, text).
    assert_eq!(
        s.labels.keys().collect::<Vec<_>>(),
        ["queryid", "user"],
        "{s:?}"
    );
    assert!(!s.labels["queryid"].is_empty());
    assert_eq!(s.details["application_name"], "shop-api");
    assert_eq!(s.details["seen_by"], "pg_stat_activity");
    assert!(s.details["pid"].parse::<u32>().is_ok(), "{s:?}");
    assert_eq!(
        s.details["query"],
        "SELECT pg_sleep(?), ? AS email, ? AS phone_tail"
    );
    let json = serde_json::to_string(&orderwatch::report::build(&results, false)).unwrap();
    assert!(
        !json.contains("anna") && !json.contains("4242") && !json.contains("metabase"),
        "{json}"
    );
    assert!(json.contains("\"signals\""));
    for h in [slow, analytic, quick] {
        h.await.unwrap();
    }
}

/// pg_stat_statements: a query that starts and finishes between two evaluations is seen by its
/// mean time over the interval, identified by query id and role; it resolves when an
/// interval's mean is below the threshold; analytic roles are left out; another database's
/// slow query on the same cluster is not this source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_queries_between_samples_are_seen_through_pg_stat_statements() {
    let url = common::pg().fresh_db();
    let admin = common::connect(&url).await;
    admin
        .batch_execute(
            "CREATE EXTENSION pg_stat_statements;
             CREATE TABLE orders (id text, status text, entered_at timestamptz);
             DO $$ BEGIN CREATE ROLE analytics LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
        )
        .await
        .unwrap();
    let other = common::pg().fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &url,
        "rules:\n  - name: slow_db_queries\n    kind: slow_queries\n    source: shop\n    older_than: 1s\n    exclude_users: [analytics]\n    exclude_applications: [metabase]\n    severity: warning\n",
    );
    let (_sources, rules) = orderwatch::engine::build_parts(&loaded, false).unwrap();
    let rule = &rules[0];
    let orderwatch::rule::Check::SlowQueries(check) = &rule.check else {
        panic!("not a slow_queries rule")
    };
    let eval = || async { rule.evaluate().await.unwrap_or_else(|e| panic!("{e}")) };
    // The first sample is the baseline: it judges nothing, and resolves nothing either.
    let first = eval().await;
    assert!(first.signals.is_empty() && first.partial, "{first:?}");
    assert_eq!(
        *check.used.lock().unwrap(),
        orderwatch::rule::slow_queries::WITH_STATEMENTS
    );

    // Between two samples: a 1.5 s query run twice (mean 1.5 s), a fast one many times, the
    // analytic role's slow one, and a slow one in another database of the cluster.
    let c = common::connect(&url).await;
    for _ in 0..2 {
        c.simple_query("SELECT pg_sleep(1.5), 'anna@example.com' AS email")
            .await
            .unwrap();
    }
    for _ in 0..20 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    let analytic = run_as(
        &url.replace("orderwatch_reader", "analytics"),
        "metabase",
        "SELECT pg_sleep(1.2)",
    )
    .await;
    common::connect(&other)
        .await
        .simple_query("SELECT pg_sleep(1.2)")
        .await
        .unwrap();
    analytic.await.unwrap();
    let o = eval().await;
    assert_eq!(o.count, 1, "{:?}", o.signals);
    let s = &o.signals[0];
    assert_eq!(s.details["seen_by"], "pg_stat_statements", "{s:?}");
    assert!(
        (1.4..2.5).contains(&s.value.unwrap()),
        "mean of the interval: {s:?}"
    );
    assert_eq!(s.details["calls"], "2");
    assert_eq!(s.details["query"], "SELECT pg_sleep(?), ? AS email");
    let queryid = s.labels["queryid"].clone();
    assert!(
        queryid.parse::<i64>().is_ok(),
        "pg_stat_statements' queryid: {s:?}"
    );
    assert_eq!(s.key, format!("{queryid}/{}", s.labels["user"]));

    // An interval without a call has no mean: the verdict stands.
    let o = eval().await;
    assert!(!o.partial);
    assert_eq!(o.signals.len(), 1, "{:?}", o.signals);
    assert_eq!(o.signals[0].labels["queryid"], queryid);

    // The next interval: the same query, fast this time (mean 0.1 s): resolved.
    c.simple_query("SELECT pg_sleep(0.1), 'x' AS email")
        .await
        .unwrap();
    let o = eval().await;
    assert!(o.signals.is_empty(), "{:?}", o.signals);

    // An excluded application's query (a report), seen running, is left out of the means
    // too: pg_stat_statements does not know the application.
    let report = run_as(&url, "metabase", "SELECT pg_sleep(2.5), 'r' AS report").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let o = eval().await;
    assert!(o.signals.is_empty(), "{:?}", o.signals);
    report.await.unwrap();
    let o = eval().await;
    assert!(o.signals.is_empty(), "the report's mean: {:?}", o.signals);

    // Running now and slow before: one signal, seen by both.
    for _ in 0..2 {
        c.simple_query("SELECT pg_sleep(1.5), 'b' AS email")
            .await
            .unwrap();
    }
    // The same constants' types (numeric), so the same query id.
    let c2 = common::connect(&url).await;
    let running = tokio::spawn(async move {
        c2.simple_query("SELECT pg_sleep(3.0), 'c' AS email")
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let o = eval().await;
    running.await.unwrap();
    assert_eq!(o.signals.len(), 1, "{:?}", o.signals);
    assert_eq!(o.signals[0].labels["queryid"], queryid);
    assert_eq!(
        o.signals[0].details["seen_by"],
        "pg_stat_activity, pg_stat_statements"
    );
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
        !serde_json::to_string(&orderwatch::report::build(&results, false))
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

/// Every transaction runs with JIT off unless the source says `jit: true`: a rule's short
/// index range scan never pays back JIT's compile time, which the planner's estimates on big
/// tables would otherwise turn on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jit_is_off_unless_the_source_allows_it() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute("CREATE TABLE orders (id text, status text, entered_at timestamptz)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rule = "rules:\n  - name: jit_setting\n    kind: sql\n    source: shop\n    query: \"SELECT current_setting('jit') AS id\"\n";
    for (jit, expected) in [("", "off"), ("    jit: true\n", "on")] {
        let loaded = config_with(dir.path(), &url, jit, rule);
        let results = evaluate_once(&loaded, &[]).await.unwrap();
        let o = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.signals[0].key, expected, "jit line {jit:?}");
    }
}
