//! Database sessions a rule cannot turn against the database: every statement runs in its own
//! read-only transaction that is rolled back, a superuser is refused, `kind: sql` statements
//! are checked before they run, and all of it holds behind PgBouncer in transaction mode.

mod common;

use std::path::Path;
use std::time::Duration;

use orderwatch::config::Loaded;
use orderwatch::engine::{Verdict, check_online, evaluate_once};
use orderwatch::source::Source;

const SHOP: &str = "
CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL,
  status_changed_at timestamptz NOT NULL, order_type text);
CREATE INDEX ON orders (status, status_changed_at);
CREATE SEQUENCE order_numbers;
INSERT INTO orders SELECT 'JW-' || g, 'SUBMITTED', now() - interval '3 hours', 'ring'
  FROM generate_series(1, 5) g;
INSERT INTO orders SELECT 'JW-' || g, 'MANUFACTURING_APPROVED', now() - interval '2 hours', 'ring'
  FROM generate_series(6, 8) g;
";

const MES: &str = "
CREATE TABLE production_orders (order_id text PRIMARY KEY, status text NOT NULL,
  status_changed_at timestamptz NOT NULL);
INSERT INTO production_orders VALUES ('JW-6', 'MANUFACTURING_APPROVED', now());
";

const RULES: &str = "rules:
  - name: submitted_over_1h
    source: shop
    status: SUBMITTED
    older_than: 1h
  - name: approved_missing_in_mes
    kind: missing
    source: shop
    status: MANUFACTURING_APPROVED
    older_than: 15m
    missing_in: mes
  - name: submitted_by_sql
    kind: sql
    source: shop
    query: \"SELECT id, 1 AS value FROM orders WHERE status = 'SUBMITTED'\"
  - name: slow_shop_queries
    kind: slow_queries
    source: shop
";

/// A role that may insert into `orders` and draw from its sequence: what a careless grant
/// gives, and what the read-only transactions must stop anyway.
fn writer_grants() -> String {
    let w = common::WRITER;
    format!(
        "DO $$ BEGIN CREATE ROLE {w} LOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO {w};
         GRANT USAGE, SELECT, UPDATE ON SEQUENCE order_numbers TO {w};"
    )
}

fn as_user(url: &str, user: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    u.set_username(user).unwrap();
    u.set_password(None).unwrap();
    u.to_string()
}

fn write_config(dir: &Path, shop: &str, mes: &str, extra_source: &str) -> Loaded {
    common::write_config(
        dir,
        &format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n\
             \x20 shop:\n    url: \"{shop}\"\n    statement_timeout: 500ms\n{extra_source}\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [order_type] }}\n\
             \x20 mes:\n    url: \"{mes}\"\n    pool_size: 4\n\
             \x20   orders: {{ table: production_orders, id: order_id, status: status, entered_at: status_changed_at }}\n"
        ),
        RULES,
    );
    common::load(dir)
}

async fn setup() -> (String, String) {
    let (shop, mes) = (common::pg().fresh_db(), common::pg().fresh_db());
    let admin = common::connect(&shop).await;
    admin.batch_execute(SHOP).await.unwrap();
    admin.batch_execute(&writer_grants()).await.unwrap();
    common::connect(&mes)
        .await
        .batch_execute(MES)
        .await
        .unwrap();
    (shop, mes)
}

async fn sequence_state(url: &str) -> (i64, bool) {
    let r = common::connect(url)
        .await
        .query_one("SELECT last_value, is_called FROM order_numbers", &[])
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// What the statements a rule may run can do to the next one, on one pooled connection.
async fn undo_attempts(source: &Source) {
    for sql in [
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT set_config('statement_timeout', '0', false)",
        "SELECT set_config('transaction_read_only', 'off', false)",
    ] {
        // Whether the server lets the call itself through or not, it must not outlive it.
        let _ = source.query(sql, &[]).await;
    }
    let err = source
        .query("SELECT nextval('order_numbers')", &[])
        .await
        .expect_err("nextval ran: the session became writable")
        .to_string();
    assert!(
        err.contains("read-only transaction") && err.contains("25006"),
        "{err}"
    );
    let err = source
        .query(
            "INSERT INTO orders VALUES ('JW-X', 'INITIATED', now(), 'ring')",
            &[],
        )
        .await
        .expect_err("an insert ran")
        .to_string();
    assert!(err.contains("25006"), "{err}");
    let err = source
        .query("SELECT pg_sleep(3)", &[])
        .await
        .expect_err("the statement timeout was switched off")
        .to_string();
    assert!(
        err.contains("statement timeout") && err.contains("57014"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cannot_make_the_next_one_writable_or_unbounded() {
    let (shop, mes) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let loaded = write_config(
        dir.path(),
        &as_user(&shop, common::WRITER),
        &mes,
        "    pool_size: 1\n",
    );
    let before = sequence_state(&shop).await;
    // One connection, so every statement reuses the session the previous one touched.
    let source = Source::build("shop", &loaded.config.sources["shop"].value, false).unwrap();
    undo_attempts(&source).await;
    assert_eq!(sequence_state(&shop).await, before, "the sequence moved");
    // A session-level advisory lock survives a ROLLBACK: it is let go all the same.
    source
        .query("SELECT pg_advisory_lock(7)::text", &[])
        .await
        .unwrap();
    let locks: i64 = common::connect(&shop)
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0, "an advisory lock outlived its transaction");
    let n: i64 = common::connect(&shop)
        .await
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 8, "a row was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superuser_is_refused_unless_the_source_allows_it() {
    let (shop, mes) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let superuser = common::pg().admin_url_for(
        reqwest::Url::parse(&shop)
            .unwrap()
            .path()
            .trim_start_matches('/'),
    );
    let loaded = write_config(dir.path(), &superuser, &mes, "");
    let results = evaluate_once(&loaded, &["submitted_over_1h".into()])
        .await
        .unwrap();
    let err = results[0].1.as_ref().unwrap_err().to_string();
    assert!(
        err.contains("superuser") && err.contains("allow_superuser"),
        "{err}"
    );
    let lines = check_online(&loaded).await.unwrap();
    assert!(
        lines
            .iter()
            .any(|(v, l)| *v == Verdict::Fail && l.contains("superuser")),
        "{lines:?}"
    );

    let loaded = write_config(dir.path(), &superuser, &mes, "    allow_superuser: true\n");
    let results = evaluate_once(&loaded, &["submitted_over_1h".into()])
        .await
        .unwrap();
    assert_eq!(results[0].1.as_ref().unwrap().count, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_when_the_role_may_write_what_it_reads() {
    let (shop, mes) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let loaded = write_config(dir.path(), &as_user(&shop, common::WRITER), &mes, "");
    let lines = check_online(&loaded).await.unwrap();
    let warn: Vec<_> = lines.iter().filter(|(v, _)| *v == Verdict::Warn).collect();
    assert_eq!(warn.len(), 1, "{lines:?}");
    assert!(warn[0].1.contains("may write orders"), "{warn:?}");
    assert!(lines.iter().all(|(v, _)| *v != Verdict::Fail), "{lines:?}");

    let loaded = write_config(dir.path(), &shop, &mes, "");
    let lines = check_online(&loaded).await.unwrap();
    assert!(lines.iter().all(|(v, _)| *v == Verdict::Ok), "{lines:?}");
}

#[test]
fn sql_statements_that_write_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (query, says) in [
        ("SELECT 1 AS id; DELETE FROM orders", "one statement"),
        (
            "WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d",
            "DELETE",
        ),
        ("UPDATE orders SET status = 'CLOSED' RETURNING id", "SELECT"),
        ("SELECT id INTO TEMP t FROM orders", "INTO"),
    ] {
        std::fs::write(
            dir.path().join("orderwatch.yaml"),
            "rule_files: [rules.yaml]\nsources:\n  shop:\n    url: postgres://u@127.0.0.1/shop\n    orders: { table: orders }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("rules.yaml"),
            format!("rules:\n  - name: sneaky\n    kind: sql\n    source: shop\n    query: \"{query}\"\n"),
        )
        .unwrap();
        let err = orderwatch::configure::load(&dir.path().join("orderwatch.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rules.yaml:5:12: query"), "{query}: {err}");
        assert!(err.contains(says), "{query}: {err}");
    }
}

/// Every rule kind through a real PgBouncer in transaction mode with fewer server connections
/// than clients, from this process and from two `orderwatch once` processes at once: exact
/// answers every time (no statement name is shared across transactions), and a write is
/// stopped on whatever server connection a transaction lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_kind_works_behind_pgbouncer_in_transaction_mode() {
    behind_pgbouncer("transaction", 2).await;
}

/// Session mode gives each client its own server connection for as long as it stays
/// connected, so the pooler needs as many as the pools may open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_kind_works_behind_pgbouncer_in_session_mode() {
    behind_pgbouncer("session", 40).await;
}

async fn behind_pgbouncer(mode: &str, server_conns: u32) {
    let (shop, mes) = setup().await;
    let Some(bouncer) = common::PgBouncer::start(&shop, mode, server_conns).await else {
        return;
    };
    let name = |u: &str| {
        reqwest::Url::parse(u)
            .unwrap()
            .path()
            .trim_start_matches('/')
            .to_string()
    };
    let (shop_b, mes_b) = (bouncer.url(&name(&shop)), bouncer.url(&name(&mes)));
    let dir = tempfile::tempdir().unwrap();
    let loaded = write_config(dir.path(), &shop_b, &mes_b, "");
    let check = |results: &[(
        std::sync::Arc<orderwatch::rule::Rule>,
        Result<orderwatch::rule::Outcome, orderwatch::source::SourceError>,
    )]| {
        for (rule, r) in results {
            let o = r
                .as_ref()
                .unwrap_or_else(|e| panic!("rule {}: {e}", rule.name));
            let want = match rule.name.as_str() {
                "submitted_over_1h" | "submitted_by_sql" => 5,
                "approved_missing_in_mes" => 2,
                _ => o.count,
            };
            assert_eq!(o.count, want, "rule {}", rule.name);
        }
    };
    let cli = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_orderwatch"))
            .args(["once", "--format", "json", "-c"])
            .arg(dir.path().join("orderwatch.yaml"))
            .output()
    };
    for _round in 0..3 {
        let (a, b, c, d) = tokio::join!(
            evaluate_once(&loaded, &[]),
            evaluate_once(&loaded, &[]),
            cli(),
            cli()
        );
        check(&a.unwrap());
        check(&b.unwrap());
        for out in [c.unwrap(), d.unwrap()] {
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            for r in json["rules"].as_array().unwrap() {
                assert_eq!(r["ok"], true, "{r}");
            }
        }
    }
    // Writes stay impossible on every server connection the pooler hands out.
    let before = sequence_state(&shop).await;
    let writer = write_config(dir.path(), &as_user(&shop_b, common::WRITER), &mes_b, "");
    let source = Source::build("shop", &writer.config.sources["shop"].value, false).unwrap();
    for _ in 0..3 {
        undo_attempts(&source).await;
    }
    assert_eq!(sequence_state(&shop).await, before, "the sequence moved");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
