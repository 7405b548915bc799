//! A source that is a hot standby (what a careful DBA asks monitoring to read): with a real
//! primary and a real standby (`pg_basebackup -R`), the lag is exported, a standby whose
//! replay is paused while the primary fixes the orders becomes stale — its alerts neither
//! fire nor resolve on stale data and `SourceStale` names the lag — and everything resolves
//! once it catches up.

mod common;

use std::time::Duration;

use orderwatch::pg_sandbox::PgSandbox;
use serde_json::Value;

fn firing_orders(alerts: &[Value]) -> usize {
    alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == "StuckOrder" && a["state"] == "firing")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_standby_is_stale_and_freezes_its_alerts_until_it_catches_up() {
    let (primary, standby) = tokio::task::spawn_blocking(|| {
        let primary = PgSandbox::start().expect("primary");
        common::add_reader(&primary);
        primary.create_database("shop").unwrap();
        primary
            .execute(
                "shop",
                "CREATE TABLE orders (id text PRIMARY KEY, status text, changed timestamptz);
                 CREATE INDEX ON orders (status, changed);
                 INSERT INTO orders SELECT 'JW-' || g, 'SUBMITTED', now() - interval '2 hours'
                 FROM generate_series(1, 50) g;",
            )
            .unwrap();
        let standby = PgSandbox::start_standby(&primary).expect("standby");
        (primary, standby)
    })
    .await
    .unwrap();
    let on_primary = common::connect(&primary.url("shop")).await;
    let on_standby = common::connect(&standby.url("shop")).await;
    let in_recovery: bool = on_standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "the standby is a standby");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\ngauges_interval: 1s\nsources:\n  shop:\n    url: \"{}?sslmode=disable\"\n    max_replication_lag: 3s\n    orders: {{ table: orders, id: id, status: status, entered_at: changed }}\n",
            standby.url_as(common::READER, "shop")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n",
    )
    .unwrap();
    let running = common::Running::start(dir.path()).await;
    running
        .wait_metric(
            "orderwatch_source_replication_lag_seconds{source=\"shop\"}",
            "0",
        )
        .await;
    running
        .wait_metric("orderwatch_source_stale{source=\"shop\"}", "0")
        .await;
    running.wait_alerts(|a| firing_orders(a) == 50).await;

    // Replay paused; the primary fixes every order. The standby still shows them stuck.
    on_standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    on_primary
        .batch_execute("UPDATE orders SET status = 'PRICE_CALCULATED', changed = now()")
        .await
        .unwrap();
    let m = running
        .wait_metric("orderwatch_source_stale{source=\"shop\"}", "1")
        .await;
    let lag: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("orderwatch_source_replication_lag_seconds{source=\"shop\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no lag in\n{m}"));
    assert!(lag > 3.0, "lag {lag}");
    assert!(
        m.contains("orderwatch_source_up{source=\"shop\"} 1"),
        "up keeps its meaning:\n{m}"
    );
    let alerts = running
        .wait_alerts(|a| {
            a.iter()
                .any(|x| x["labels"]["alertname"] == "SourceStale" && x["state"] == "firing")
        })
        .await;
    let stale = alerts
        .iter()
        .find(|x| x["labels"]["alertname"] == "SourceStale")
        .unwrap();
    assert_eq!(stale["labels"]["source"], "shop");
    assert!(
        stale["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("behind its primary"),
        "{stale}"
    );
    // Stale data neither fires nor resolves: the 50 alerts stay as they were.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(firing_orders(&running.alerts().await), 50);
    let rules = running.get("/api/v1/rules").await;
    assert!(rules.contains("is a standby"), "{rules}");

    // Caught up: the orders the primary fixed resolve, and so does SourceStale.
    on_standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    running
        .wait_metric("orderwatch_source_stale{source=\"shop\"}", "0")
        .await;
    running
        .wait_alerts(|a| {
            firing_orders(a) == 0
                && a.iter()
                    .all(|x| x["labels"]["alertname"] != "SourceStale" || x["state"] != "firing")
        })
        .await;
    running.stop().await;
    drop(standby);
    drop(primary);
}
