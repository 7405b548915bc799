//! Each order model against a real PostgreSQL: the right orders, oldest first, exact counts
//! beyond the row cap, read-only sessions, index range scans, and no personal column read.

mod common;

use std::path::Path;

use orderwatch::config::Loaded;
use orderwatch::engine::evaluate_once;

/// Writes a main file with one source `db` (order model `orders_yaml`) and `rules_yaml`.
fn config(dir: &Path, url: &str, orders_yaml: &str, rules_yaml: &str) -> Loaded {
    common::write_config(
        dir,
        &format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  db:\n    url: \"{url}?sslmode=disable\"\n    orders: {orders_yaml}\n"
        ),
        rules_yaml,
    );
    common::load(dir)
}

/// A shop-like table holding personal data next to what orderwatch may read.
const PERSONAL_TABLE: &str = "
CREATE TABLE orders (
  id text PRIMARY KEY, customer_name text, customer_email text, customer_phone text,
  order_type text, status text NOT NULL, status_changed_at timestamptz NOT NULL);
CREATE INDEX ON orders (status, status_changed_at);
INSERT INTO orders VALUES
  ('JW-1', 'Anna Ivanova',  'anna.ivanova@example.com',  '+7 912 000-00-01', 'ring',     'SUBMITTED', now() - interval '3 hours'),
  ('JW-2', 'Boris Petrov',  'boris.petrov@example.com',  '+7 912 000-00-02', 'pendant',  'SUBMITTED', now() - interval '2 hours'),
  ('JW-3', 'Vera Sidorova', 'vera.sidorova@example.com', '+7 912 000-00-03', 'ring',     'SUBMITTED', now() - interval '10 minutes'),
  ('JW-4', 'Gleb Orlov',    'gleb.orlov@example.com',    '+7 912 000-00-04', 'bracelet', 'PRICE_CALCULATED', now() - interval '5 hours'),
  ('JW-5', 'Dina Lebedeva', 'dina.lebedeva@example.com', '+7 912 000-00-05', 'earrings', 'CLOSED',    now() - interval '30 days');
";

const SUBMITTED_1H: &str = "rules:\n  - name: submitted_over_1h\n    source: db\n    status: SUBMITTED\n    older_than: 1h\n";

#[tokio::test]
async fn table_model_finds_exactly_the_stuck_orders_oldest_first_without_personal_data() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(PERSONAL_TABLE)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &url,
        "{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [order_type] }",
        SUBMITTED_1H,
    );
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let o = results[0].1.as_ref().unwrap();
    assert_eq!(o.count, 2);
    let ids: Vec<&str> = o.findings.iter().map(|f| f.order_id.as_str()).collect();
    assert_eq!(ids, ["JW-1", "JW-2"]);
    assert!((o.findings[0].age_seconds - 3.0 * 3600.0).abs() < 60.0);
    assert_eq!(o.findings[0].labels.get("order_type"), Some("ring"));
    assert_eq!(o.per_status["SUBMITTED"].count, 2);

    let json = serde_json::to_string(&orderwatch::report::build(&results, false)).unwrap();
    let table = orderwatch::report::table(&results, false);
    for personal in [
        "Anna",
        "Ivanova",
        "anna.ivanova@example.com",
        "+7 912",
        "Boris",
        "@example.com",
    ] {
        assert!(
            !json.contains(personal),
            "{personal} leaked into JSON: {json}"
        );
        assert!(
            !table.contains(personal),
            "{personal} leaked into the table: {table}"
        );
    }
    // The SQL itself never names a personal column.
    let sql = results[0].0.sql().await.unwrap();
    for col in ["customer_name", "customer_email", "customer_phone", "*"] {
        assert!(
            !sql.contains(&format!("t.{col}")) && !sql.contains(&format!("t.\"{col}\"")),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn several_statuses_and_a_row_cap_keep_counts_exact() {
    let url = common::pg().fresh_db();
    let c = common::connect(&url).await;
    c.batch_execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, status text, entered_at timestamptz);
         CREATE INDEX ON orders (status, entered_at);
         INSERT INTO orders SELECT g, CASE WHEN g % 2 = 0 THEN 'PACKAGING' ELSE 'MANUFACTURING_COMPLETED' END,
                now() - make_interval(hours => 25 + g) FROM generate_series(1, 9) g;
         INSERT INTO orders VALUES (100, 'PACKAGING', now() - interval '1 hour');
         -- Over the threshold but younger than every fetched row: only the stats query sees them.
         INSERT INTO orders VALUES (200, 'SHIPPED', now() - interval '24 hours 30 minutes'),
                                   (201, 'SHIPPED', now() - interval '24 hours 20 minutes');",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &url,
        "{ table: orders }",
        "rules:\n  - name: r\n    source: db\n    status: [PACKAGING, MANUFACTURING_COMPLETED, SHIPPED]\n    older_than: 1d\n    max_findings: 3\n    max_alerts: 2\n",
    );
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let o = results[0].1.as_ref().unwrap();
    assert_eq!(o.count, 11, "count is exact beyond the cap");
    assert!(o.truncated());
    // Oldest first: ids 9, 8, 7 (integer ids come back as text).
    let ids: Vec<&str> = o.findings.iter().map(|f| f.order_id.as_str()).collect();
    assert_eq!(ids, ["9", "8", "7"]);
    assert_eq!(o.per_status["MANUFACTURING_COMPLETED"].count, 5);
    assert_eq!(o.per_status["PACKAGING"].count, 4);
    // No SHIPPED row was fetched, yet its count and oldest age are exact.
    assert_eq!(o.per_status["SHIPPED"].count, 2);
    let shipped_age = o.per_status["SHIPPED"].oldest_age_seconds;
    assert!((shipped_age - 24.5 * 3600.0).abs() < 60.0, "{shipped_age}");
    let json = serde_json::to_value(orderwatch::report::build(&results, false)).unwrap();
    assert_eq!(json["rules"][0]["capped"], true);
    assert_eq!(json["rules"][0]["count"], 11);
}

#[tokio::test]
async fn history_model_uses_the_latest_row_per_order() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE order_status_history (id bigserial PRIMARY KEY, order_id text, status text,
                 changed_at timestamptz, note_with_customer_phone text);
             CREATE INDEX ON order_status_history (status, changed_at);
             CREATE INDEX ON order_status_history (order_id, changed_at);
             INSERT INTO order_status_history (order_id, status, changed_at, note_with_customer_phone) VALUES
               ('A', 'SUBMITTED',        now() - interval '5 hours', '+7 900 111-11-11'),
               ('A', 'PRICE_CALCULATED', now() - interval '4 hours', '+7 900 111-11-11'),
               ('B', 'SUBMITTED',        now() - interval '3 hours', '+7 900 222-22-22'),
               ('C', 'SUBMITTED',        now() - interval '20 minutes', NULL),
               ('D', 'SUBMITTED',        now() - interval '40 days', NULL);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &url,
        "{ history_table: order_status_history, id: order_id, status: status, entered_at: changed_at, history_lookback: 30d }",
        SUBMITTED_1H,
    );
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let o = results[0].1.as_ref().unwrap();
    // A moved on, C is too young, D is beyond the lookback.
    let ids: Vec<&str> = o.findings.iter().map(|f| f.order_id.as_str()).collect();
    assert_eq!(ids, ["B"]);
    assert_eq!(o.count, 1);
    assert!(
        !serde_json::to_string(&orderwatch::report::build(&results, false))
            .unwrap()
            .contains("+7 900")
    );
}

#[tokio::test]
async fn query_model_wraps_a_custom_query() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE production_orders (order_id integer PRIMARY KEY, state text, updated timestamp, kind text);
             INSERT INTO production_orders VALUES (1, 'PACKAGING', now() - interval '2 days', 'ring'),
                                                  (2, 'PACKAGING', now() - interval '1 hour', 'ring');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &url,
        "{ query: \"SELECT order_id AS id, state AS status, updated AS entered_at, kind FROM production_orders\", labels: [kind] }",
        "rules:\n  - name: packaging_over_1d\n    source: db\n    status: PACKAGING\n    older_than: 1d\n",
    );
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let o = results[0].1.as_ref().unwrap();
    assert_eq!(o.count, 1);
    assert_eq!(o.findings[0].order_id, "1");
    assert_eq!(&o.findings[0].labels["kind"], "ring");
}

#[tokio::test]
async fn sessions_are_read_only_with_a_statement_timeout() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(PERSONAL_TABLE)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &url,
        "{ table: orders, id: id, status: status, entered_at: status_changed_at }",
        SUBMITTED_1H,
    );
    let mut cfg = loaded.config.sources["db"].value.clone();
    cfg.statement_timeout = orderwatch::config::Dur(std::time::Duration::from_millis(300));
    let source = orderwatch::source::Source::build("db", &cfg, false).unwrap();
    let err = source
        .query("DELETE FROM orders", &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("read-only transaction") && err.contains("25006"),
        "{err}"
    );
    let err = source
        .query("SELECT pg_sleep(5)", &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("statement timeout") && err.contains("57014"),
        "{err}"
    );
    let rows = source
        .query("SELECT current_setting('application_name')", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "orderwatch");
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_never_zero_findings() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let loaded = config(
        dir.path(),
        &format!("postgres://orderwatch:hunter2@127.0.0.1:{port}/shop"),
        "{ table: orders, id: id, status: status, entered_at: status_changed_at }",
        SUBMITTED_1H,
    );
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let err = results[0].1.as_ref().unwrap_err().to_string();
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
    assert_eq!(orderwatch::report::exit_code(&results), 2);
    let json = serde_json::to_value(orderwatch::report::build(&results, false)).unwrap();
    assert_eq!(json["rules"][0]["ok"], false);
    assert!(json["rules"][0].get("count").is_none());
}

/// The shipped rules on the reference schema with 100 000 orders: every query is an index
/// scan, never a sequential scan of the orders table.
#[tokio::test]
async fn shipped_rules_plan_index_range_scans_on_the_reference_schema() {
    let (shop_url, mes_url) = (common::pg().fresh_db(), common::pg().fresh_db());
    let (shop, mes) = (
        common::connect(&shop_url).await,
        common::connect(&mes_url).await,
    );
    orderwatch::demo::seed::create_schema(&shop, &mes)
        .await
        .unwrap();
    orderwatch::demo::seed::seed(&shop, &mes, 100_000)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    for name in ["shop.yaml", "mes.yaml", "lost.yaml"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("rules")
                .join(name),
            dir.path().join("rules").join(name),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "state_dir: state\nrule_files: [rules/*.yaml]\nsources:\n  shop:\n    url: \"{shop_url}\"\n    orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [order_type] }}\n  mes:\n    url: \"{mes_url}\"\n    orders: {{ table: production_orders, id: order_id, status: status, entered_at: status_changed_at, labels: [order_type] }}\n"
        ),
    )
    .unwrap();
    let loaded = orderwatch::configure::load(&dir.path().join("orderwatch.yaml")).unwrap();
    assert!(loaded.rules.len() >= 11, "the shipped rules are loaded");
    for (_, rc) in &loaded.rules {
        let src = &loaded.config.sources[&rc.source.value].value;
        let model = orderwatch::source::Source::build(&rc.source.value, src, false)
            .unwrap()
            .model_sql()
            .await
            .unwrap();
        let client = if rc.source.value == "shop" {
            &shop
        } else {
            &mes
        };
        let statuses = rc.statuses();
        let secs = rc.older_than().as_secs_f64();
        let rows = client
            .query(
                &format!("EXPLAIN (FORMAT TEXT) {}", model.stuck),
                &[&statuses, &secs, &1000i64],
            )
            .await
            .unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan"),
            "rule {} scans the table:\n{plan}",
            rc.name.value
        );
        assert!(
            plan.contains("Index"),
            "rule {} uses no index:\n{plan}",
            rc.name.value
        );
        // `missing` rules: each candidate page is a range scan, each lookup a primary-key scan.
        if let Some(other) = &rc.missing_in {
            let after = chrono::Utc::now() - chrono::Duration::days(3);
            let rows = client
                .query(
                    &format!("EXPLAIN {}", model.candidates),
                    &[&statuses[0], &secs, &after, &"JW-00000001", &true, &500i64],
                )
                .await
                .unwrap();
            let plan = rows
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                !plan.contains("Seq Scan") && plan.contains("Index"),
                "rule {} candidates:\n{plan}",
                rc.name.value
            );
            let osrc = &loaded.config.sources[&other.value].value;
            let omodel = orderwatch::source::Source::build(&other.value, osrc, false)
                .unwrap()
                .model_sql()
                .await
                .unwrap();
            let oclient = if other.value == "shop" { &shop } else { &mes };
            let ids: Vec<String> = (1..=500).map(|i| format!("JW-{i:08}")).collect();
            let rows = oclient
                .query(&format!("EXPLAIN {}", omodel.lookup), &[&ids])
                .await
                .unwrap();
            let plan = rows
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                !plan.contains("Seq Scan") && plan.contains("Index"),
                "rule {} lookup:\n{plan}",
                rc.name.value
            );
        }
        // Per-status gauges: a loose index scan, never touching CLOSED rows one by one.
        let terminal = vec!["CLOSED".to_string()];
        let rows = client
            .query(
                &format!("EXPLAIN {}", model.gauges.clone().unwrap()),
                &[&terminal],
            )
            .await
            .unwrap();
        let plan = rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!plan.contains("Seq Scan"), "gauges scan the table:\n{plan}");
    }
}

/// Status values outside `statuses` become `status="other"` on /metrics, and `check` names
/// them: no data value becomes a label of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_outside_the_list_are_exported_as_other() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL, status_changed_at timestamptz NOT NULL);
             CREATE INDEX ON orders (status, status_changed_at);
             INSERT INTO orders VALUES
               ('JW-1', 'SUBMITTED', now() - interval '3 hours'),
               ('JW-2', 'anna.ivanova@example.com', now() - interval '2 hours'),
               ('JW-3', 'x\"} 1\norderwatch_fake 1', now() - interval '1 hours'),
               ('JW-4', 'CLOSED', now() - interval '9 days');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\ngauges_interval: 1s\nsources:\n  db:\n    url: \"{url}?sslmode=disable\"\n\
             \x20   statuses: [SUBMITTED, PRICE_CALCULATED, CLOSED]\n\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at }}\n"
        ),
    )
    .unwrap();
    let loaded = orderwatch::configure::load(&dir.path().join("orderwatch.yaml")).unwrap();
    let lines = orderwatch::engine::check_online(&loaded).await.unwrap();
    let warn = lines
        .iter()
        .find(|(v, l)| *v == orderwatch::engine::Verdict::Warn && l.contains("not in `statuses`"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(warn.1.contains("\"anna.ivanova@example.com\""), "{warn:?}");
    assert!(!warn.1.contains('\n'), "{warn:?}");

    let d = common::Running::start(dir.path()).await;
    let m = d
        .wait_metric("orderwatch_orders{source=\"db\",status=\"other\"}", "2")
        .await;
    assert!(
        m.contains("orderwatch_orders{source=\"db\",status=\"SUBMITTED\"} 1"),
        "{m}"
    );
    assert!(!m.contains("anna") && !m.contains("orderwatch_fake"), "{m}");
    d.stop().await;
}

/// Rules on the same source, statuses and schedule share their statements: one rows statement
/// at the lowest threshold and, when one of them is capped, one aggregate for every
/// threshold. Each rule still gets exactly its own answer: the same as evaluated alone, and
/// what plain SQL says (its count per status, its oldest orders up to its own cap).
#[tokio::test]
async fn rules_on_the_same_statuses_share_one_scan_and_each_gets_its_own_exact_answer() {
    let url = common::pg().fresh_db();
    let admin = common::connect(&url).await;
    admin
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
             CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL,
               status_changed_at timestamptz NOT NULL);
             CREATE INDEX ON orders (status, status_changed_at);
             INSERT INTO orders
               SELECT 'S-' || i, 'SUBMITTED', now() - make_interval(mins => i * 10 + 5)
               FROM generate_series(1, 40) i;
             INSERT INTO orders
               SELECT 'P-' || i, 'PRICE_CALCULATED', now() - make_interval(mins => i * 70)
               FROM generate_series(1, 6) i;",
        )
        .await
        .unwrap();
    let rule = |name: &str, status: &str, older: &str, extra: &str| {
        format!(
            "  - name: {name}\n    source: db\n    status: {status}\n    older_than: {older}\n    interval: 30s\n{extra}"
        )
    };
    let rules = [
        rule(
            "a_1h",
            "SUBMITTED",
            "1h",
            "    max_findings: 5\n    max_alerts: 5\n",
        ),
        rule("b_2h", "SUBMITTED", "2h", ""),
        rule(
            "c_3h",
            "SUBMITTED",
            "3h",
            "    max_findings: 2\n    max_alerts: 2\n    severity: critical\n",
        ),
        // Another schedule: runs on its own.
        rule("d_30m", "SUBMITTED", "30m", "    interval: 7s\n").replace(
            "    interval: 30s\n    interval: 7s\n",
            "    interval: 7s\n",
        ),
        rule(
            "e_1h",
            "[SUBMITTED, PRICE_CALCULATED]",
            "1h",
            "    max_findings: 3\n    max_alerts: 3\n",
        ),
        rule("f_4h", "[PRICE_CALCULATED, SUBMITTED]", "4h", ""),
    ];
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &url,
        "{ table: orders, id: id, status: status, entered_at: status_changed_at }",
        &format!("rules:\n{}", rules.concat()),
    );
    let stats = |like: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements \
                     WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                     AND query LIKE $1",
                    &[&like],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    // Warm the model's discovery, then count what one evaluation of every rule runs.
    evaluate_once(&loaded, &[]).await.unwrap();
    admin
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
    let together = evaluate_once(&loaded, &[]).await.unwrap();
    let rows_statements = stats("%LIMIT $3::int8%").await;
    let totals_statements = stats("%width_bucket%").await;
    // {a, b, c}, {d}, {e, f}: three rows statements; totals for the two groups that capped.
    assert_eq!(rows_statements, 3, "rows statements run");
    assert_eq!(totals_statements, 2, "totals statements run");

    for (rule, shared) in &together {
        let shared = shared.as_ref().unwrap();
        let alone = evaluate_once(&loaded, std::slice::from_ref(&rule.name))
            .await
            .unwrap();
        let alone = alone[0].1.as_ref().unwrap();
        let ids = |o: &orderwatch::rule::Outcome| -> Vec<String> {
            o.findings.iter().map(|f| f.order_id.clone()).collect()
        };
        let counts = |o: &orderwatch::rule::Outcome| -> Vec<(String, u64)> {
            o.per_status
                .iter()
                .map(|(s, st)| (s.clone(), st.count))
                .collect()
        };
        assert_eq!(shared.count, alone.count, "{}", rule.name);
        assert_eq!(ids(shared), ids(alone), "{}", rule.name);
        assert_eq!(counts(shared), counts(alone), "{}", rule.name);
        // Plain SQL.
        let orderwatch::rule::Check::Stuck(c) = &rule.check else {
            unreachable!()
        };
        let truth = admin
            .query(
                "SELECT id, status FROM orders WHERE status = ANY($1) \
                 AND status_changed_at < now() - make_interval(secs => $2) \
                 ORDER BY status_changed_at, id",
                &[&c.statuses, &c.older_than.as_secs_f64()],
            )
            .await
            .unwrap();
        assert_eq!(shared.count, truth.len() as u64, "{}", rule.name);
        let oldest: Vec<String> = truth
            .iter()
            .take(c.max_findings)
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids(shared), oldest, "{}", rule.name);
        for (status, st) in &shared.per_status {
            let n = truth
                .iter()
                .filter(|r| r.get::<_, &str>(1) == status)
                .count();
            assert_eq!(st.count, n as u64, "{} {status}", rule.name);
            // The oldest of the status, as the database counts it.
            let first = truth
                .iter()
                .position(|r| r.get::<_, &str>(1) == status)
                .unwrap();
            let want = shared
                .findings
                .iter()
                .find(|f| *f.status == **status)
                .map(|f| f.age_seconds);
            if first < c.max_findings {
                assert!(
                    (st.oldest_age_seconds - want.unwrap()).abs() < 1.0,
                    "{}",
                    rule.name
                );
            }
        }
        assert_eq!(
            shared.truncated(),
            truth.len() > c.max_findings,
            "{}",
            rule.name
        );
    }

    // `explain` says which rules share.
    let verdicts = orderwatch::explain::explain(&loaded, &[]).await.unwrap();
    let text = orderwatch::explain::table(&verdicts);
    assert!(
        text.contains("shared with rules b_2h, c_3h") && text.contains("shared with rules f_4h"),
        "{text}"
    );
    assert!(!text.contains("rule b_2h (db)"), "{text}");
}
