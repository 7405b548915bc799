//! Status and time columns of the types real schemas use, against a real PostgreSQL: an enum
//! and integer codes for the status; `timestamp without time zone` in a named zone, epoch
//! seconds and milliseconds for the time; and the rows no rule can judge (NULL or future
//! time, a tie), counted on /metrics and named by `check`.

mod common;

use std::path::Path;

use orderwatch::config::Loaded;
use orderwatch::engine::{Verdict, check_online, evaluate_once};

/// Writes a main file with one source `db` (`source_extra` under it, order model `orders`)
/// and `rules`.
fn write(dir: &Path, url: &str, source_extra: &str, orders: &str, rules: &str) {
    common::write_config(
        dir,
        &format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\ngauges_interval: 1s\nsources:\n  db:\n    url: \"{url}?sslmode=disable\"\n{source_extra}    orders: {orders}\n"
        ),
        rules,
    );
}

const SUBMITTED_1H: &str = "rules:\n  - name: submitted_over_1h\n    source: db\n    status: SUBMITTED\n    older_than: 1h\n";

/// The ids and ages (hours, rounded) `once` finds for the one rule.
async fn once(loaded: &Loaded) -> Vec<(String, String, i64)> {
    let results = evaluate_once(loaded, &[]).await.unwrap();
    let o = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    o.findings
        .iter()
        .map(|f| {
            (
                f.order_id.clone(),
                f.status.to_string(),
                (f.age_seconds / 3600.0).round() as i64,
            )
        })
        .collect()
}

/// The plan of the rule's statement, with sequential scans discouraged.
async fn plan(loaded: &Loaded) -> String {
    let v = orderwatch::explain::explain(loaded, &["submitted_over_1h".to_string()])
        .await
        .unwrap();
    format!("{v:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enum_status_is_compared_in_its_own_type_and_uses_the_index() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TYPE order_state AS ENUM ('INITIATED', 'SUBMITTED', 'PACKAGING', 'CLOSED');
             CREATE TABLE orders (id bigint PRIMARY KEY, state order_state NOT NULL, since timestamptz);
             CREATE INDEX ON orders (state, since);
             INSERT INTO orders VALUES (1, 'SUBMITTED', now() - interval '3 hours'),
               (2, 'SUBMITTED', now() - interval '10 minutes'), (3, 'PACKAGING', now() - interval '5 hours'),
               (4, 'CLOSED', now() - interval '9 days');
             INSERT INTO orders SELECT g, 'CLOSED', now() - interval '30 days' FROM generate_series(10, 5000) g;
             ANALYZE orders;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &url,
        "",
        "{ table: orders, id: id, status: state, entered_at: since }",
        SUBMITTED_1H,
    );
    let loaded = common::load(dir.path());
    assert_eq!(once(&loaded).await, [("1".into(), "SUBMITTED".into(), 3)]);
    let p = plan(&loaded).await;
    assert!(
        p.contains("ok: true") && p.contains("orders_state_since_idx"),
        "{p}"
    );
    // The daemon's per-status gauges read the enum too.
    let running = common::Running::start(dir.path()).await;
    running
        .wait_metric("orderwatch_orders{source=\"db\",status=\"SUBMITTED\"}", "2")
        .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_coded_statuses_speak_the_names_of_the_statuses_map() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, status smallint NOT NULL, changed timestamptz);
             CREATE INDEX ON orders (status, changed);
             INSERT INTO orders VALUES ('A', 3, now() - interval '2 hours'), ('B', 3, now() - interval '5 minutes'),
               ('C', 8, now() - interval '4 hours'), ('D', 10, now() - interval '3 days'), ('E', 42, now());",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &url,
        "    statuses: {1: INITIATED, 2: FILE_UPLOADED, 3: SUBMITTED, 4: PRICE_CALCULATED, 5: MANUFACTURING_APPROVED, 6: MANUFACTURING_STARTED, 7: MANUFACTURING_COMPLETED, 8: PACKAGING, 9: SHIPPED, 10: CLOSED}\n",
        "{ table: orders, id: id, status: status, entered_at: changed }",
        "rules:\n  - name: submitted_over_1h\n    source: db\n    status: SUBMITTED\n    older_than: 1h\n  - name: packaging_over_1h\n    source: db\n    status: PACKAGING\n    older_than: 1h\n",
    );
    let loaded = common::load(dir.path());
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let found: Vec<(String, String)> = results
        .iter()
        .flat_map(|(_, o)| o.as_ref().unwrap().findings.clone())
        .map(|f| (f.order_id, f.status.to_string()))
        .collect();
    assert_eq!(
        found,
        [
            ("A".into(), "SUBMITTED".into()),
            ("C".into(), "PACKAGING".into())
        ]
    );
    let running = common::Running::start(dir.path()).await;
    let m = running
        .wait_metric("orderwatch_orders{source=\"db\",status=\"SUBMITTED\"}", "2")
        .await;
    // CLOSED (10) is terminal and not counted; 42 has no name: `other`, never a label of its own.
    assert!(
        m.contains("orderwatch_orders{source=\"db\",status=\"other\"} 1"),
        "{m}"
    );
    assert!(
        !m.contains("status=\"42\"") && !m.contains("status=\"3\""),
        "{m}"
    );
    // Terminal: never in the gauges (entries into it are counted by the order flow).
    assert!(
        !m.contains("orderwatch_orders{source=\"db\",status=\"CLOSED\"}"),
        "{m}"
    );
    running.stop().await;
    // A rule naming a status without a code is refused where it is written.
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: r\n    source: db\n    status: SUBMITED\n    older_than: 1h\n",
    )
    .unwrap();
    let Err(err) = orderwatch::configure::load(&dir.path().join("orderwatch.yaml")) else {
        panic!("an unknown status name is an error");
    };
    let err = err.to_string();
    assert!(
        err.contains("rules.yaml:4") && err.contains("SUBMITED has no code"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_timestamp_is_read_in_the_named_zone_and_check_spots_one_without() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            // Moscow wall-clock times (UTC+3, no DST) in a server whose TimeZone is UTC.
            "SET TimeZone = 'UTC';
             CREATE TABLE orders (id text PRIMARY KEY, status text, changed timestamp without time zone);
             CREATE INDEX ON orders (status, changed);
             INSERT INTO orders VALUES
               ('M2', 'SUBMITTED', (now() AT TIME ZONE 'Europe/Moscow') - interval '2 hours'),
               ('M0', 'SUBMITTED', (now() AT TIME ZONE 'Europe/Moscow') - interval '30 minutes');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let orders = "{ table: orders, id: id, status: status, entered_at: changed }";
    write(
        dir.path(),
        &url,
        "    time_zone: Europe/Moscow\n",
        orders,
        SUBMITTED_1H,
    );
    let loaded = common::load(dir.path());
    assert_eq!(once(&loaded).await, [("M2".into(), "SUBMITTED".into(), 2)]);
    let p = plan(&loaded).await;
    assert!(p.contains("ok: true"), "{p}");
    // Without time_zone the same rows read as UTC: ahead of now, so nothing is stuck — and
    // `check` says why, naming the offset.
    write(dir.path(), &url, "", orders, SUBMITTED_1H);
    let loaded = common::load(dir.path());
    assert!(once(&loaded).await.is_empty());
    let lines = check_online(&loaded).await.unwrap();
    let warn = lines
        .iter()
        .find(|(v, l)| *v == Verdict::Warn && l.contains("time_zone"))
        .unwrap_or_else(|| panic!("no time_zone warning in {lines:?}"));
    assert!(warn.1.contains("UTC+03:00"), "{}", warn.1);
    assert!(
        lines
            .iter()
            .any(|(v, l)| *v == Verdict::Warn && l.contains("in the future")),
        "the future rows are named: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_seconds_and_milliseconds_are_read_with_entered_at_unit() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, status text, at_s bigint, at_ms bigint);
             CREATE INDEX ON orders (status, at_s);
             CREATE INDEX ON orders (status, at_ms);
             INSERT INTO orders VALUES
               ('E3', 'SUBMITTED', extract(epoch FROM now() - interval '3 hours')::bigint,
                                   (extract(epoch FROM now() - interval '3 hours') * 1000)::bigint),
               ('E0', 'SUBMITTED', extract(epoch FROM now() - interval '20 minutes')::bigint,
                                   (extract(epoch FROM now() - interval '20 minutes') * 1000)::bigint);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (col, unit) in [("at_s", "s"), ("at_ms", "ms")] {
        let orders = format!(
            "{{ table: orders, id: id, status: status, entered_at: {col}, entered_at_unit: {unit} }}"
        );
        write(dir.path(), &url, "", &orders, SUBMITTED_1H);
        let loaded = common::load(dir.path());
        assert_eq!(
            once(&loaded).await,
            [("E3".into(), "SUBMITTED".into(), 3)],
            "{unit}"
        );
        let p = plan(&loaded).await;
        assert!(p.contains("ok: true"), "{unit}: {p}");
    }
    // Without the unit, an integer column is a loud error, not a silent nothing.
    write(
        dir.path(),
        &url,
        "",
        "{ table: orders, id: id, status: status, entered_at: at_s }",
        SUBMITTED_1H,
    );
    let results = evaluate_once(&common::load(dir.path()), &[]).await.unwrap();
    let err = results[0].1.as_ref().unwrap_err().to_string();
    assert!(err.contains("set entered_at_unit"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_cannot_be_judged_are_counted_not_hidden() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, status text, changed timestamptz);
             CREATE INDEX ON orders (status, changed);
             INSERT INTO orders VALUES ('N1', 'SUBMITTED', NULL), ('N2', 'SUBMITTED', NULL),
               ('F1', 'PACKAGING', now() + interval '1 day'), ('OK', 'SUBMITTED', now() - interval '2 hours');
             CREATE TABLE order_log (order_id text, status text, changed timestamptz);
             CREATE INDEX ON order_log (status, changed);
             CREATE INDEX ON order_log (order_id, changed);
             INSERT INTO order_log VALUES
               ('T1', 'SUBMITTED', now() - interval '3 hours'),
               ('T1', 'PACKAGING', now() - interval '2 hours'), ('T1', 'SHIPPED', now() - interval '2 hours'),
               ('L1', 'SUBMITTED', NULL),
               ('L2', 'SUBMITTED', now() + interval '3 hours');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\ngauges_interval: 1s\nsources:\n  db:\n    url: \"{url}?sslmode=disable\"\n    orders: {{ table: orders, id: id, status: status, entered_at: changed }}\n  log:\n    url: \"{url}?sslmode=disable\"\n    orders: {{ history_table: order_log, id: order_id, status: status, entered_at: changed }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: db\n    status: SUBMITTED\n    older_than: 1h\n  - name: shipped_over_1h\n    source: log\n    status: [SHIPPED, PACKAGING]\n    older_than: 1h\n",
    )
    .unwrap();
    let running = common::Running::start(dir.path()).await;
    let m = running
        .wait_metric(
            "orderwatch_orders_unjudgeable{reason=\"tie\",source=\"log\",status=\"SHIPPED\"}",
            "1",
        )
        .await;
    for line in [
        "orderwatch_orders_unjudgeable{reason=\"null_time\",source=\"db\",status=\"SUBMITTED\"} 2",
        "orderwatch_orders_unjudgeable{reason=\"future_time\",source=\"db\",status=\"PACKAGING\"} 1",
        "orderwatch_orders_unjudgeable{reason=\"null_time\",source=\"log\",status=\"SUBMITTED\"} 1",
        "orderwatch_orders_unjudgeable{reason=\"future_time\",source=\"log\",status=\"SUBMITTED\"} 1",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
    // The tied order is not reported stuck in either status; the judgeable one is.
    let alerts = running.alerts().await;
    let ids: Vec<&str> = alerts
        .iter()
        .filter_map(|a| a["labels"]["order_id"].as_str())
        .collect();
    assert_eq!(ids, ["OK"], "{alerts:?}");
    running.stop().await;
    let lines = check_online(&common::load(dir.path())).await.unwrap();
    for want in [
        "2 orders in \"SUBMITTED\" have no changed",
        "1 orders in \"SHIPPED\" have latest rows at the same time",
    ] {
        assert!(
            lines
                .iter()
                .any(|(v, l)| *v == Verdict::Warn && l.contains(want)),
            "{want:?} not in {lines:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn char_statuses_and_uuid_ids_are_compared_in_their_own_types() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id uuid PRIMARY KEY, status char(24) NOT NULL, since timestamptz);
             CREATE INDEX ON orders (status, since);
             INSERT INTO orders VALUES
               ('11111111-1111-1111-1111-111111111111', 'MANUFACTURING_APPROVED', now() - interval '2 hours'),
               ('22222222-2222-2222-2222-222222222222', 'MANUFACTURING_APPROVED', now() - interval '2 hours');
             CREATE TABLE mes (order_id uuid PRIMARY KEY, status text, since timestamptz);
             CREATE INDEX ON mes (status, since);
             INSERT INTO mes VALUES ('11111111-1111-1111-1111-111111111111', 'MANUFACTURING_STARTED', now());",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: \"{url}?sslmode=disable\"\n    orders: {{ table: orders, id: id, status: status, entered_at: since }}\n  mes:\n    url: \"{url}?sslmode=disable\"\n    orders: {{ table: mes, id: order_id, status: status, entered_at: since }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: approved_over_1h\n    source: shop\n    status: MANUFACTURING_APPROVED\n    older_than: 1h\n  - name: approved_missing_in_mes\n    kind: missing\n    source: shop\n    missing_in: mes\n    status: MANUFACTURING_APPROVED\n    older_than: 1h\n",
    )
    .unwrap();
    let results = evaluate_once(&common::load(dir.path()), &[]).await.unwrap();
    let found: Vec<Vec<(String, String)>> = results
        .iter()
        .map(|(_, o)| {
            o.as_ref()
                .unwrap_or_else(|e| panic!("{e}"))
                .findings
                .iter()
                .map(|f| (f.order_id.clone(), f.status.to_string()))
                .collect()
        })
        .collect();
    assert_eq!(
        found,
        [
            vec![
                (
                    "11111111-1111-1111-1111-111111111111".into(),
                    "MANUFACTURING_APPROVED".into()
                ),
                (
                    "22222222-2222-2222-2222-222222222222".into(),
                    "MANUFACTURING_APPROVED".into()
                ),
            ],
            vec![(
                "22222222-2222-2222-2222-222222222222".into(),
                "MANUFACTURING_APPROVED".into()
            )],
        ]
    );
}
