//! A rule whose query fails while its source answers (a wrong column) is the rule's fault, not
//! the source's: the source stays up, no SourceDown, and after `rule_failing_after` a
//! `RuleFailing` alert (labels rule and source, the error in the annotations) reaches a real
//! Alertmanager; it resolves at the rule's next success.

mod common;

use std::time::Duration;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_failing_on_a_reachable_source_raises_rule_failing_not_source_down() {
    let Some(am) = common::Alertmanager::start(None).await else {
        return;
    };
    let url = common::pg().fresh_db();
    let db = common::connect(&url).await;
    db.batch_execute(
        "CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL, status_changed_at timestamptz NOT NULL);
         CREATE INDEX ON orders (status, status_changed_at);
         INSERT INTO orders VALUES ('JW-1', 'SUBMITTED', now() - interval '3 hours');",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // `state_changed_at`: the column is `status_changed_at`.
    let main = format!(
        "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\n\
         source_down_after: 1s\nrule_failing_after: 2s\ngauges_interval: 1s\n\
         notifiers:\n  alertmanager:\n    urls: [{}]\n    resend_delay: 2s\n\
         sources:\n  shop:\n    url: \"{url}?sslmode=disable\"\n\
         \x20   orders: {{ table: orders, id: id, status: status, entered_at: state_changed_at }}\n",
        am.url()
    );
    let rules = "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n";
    common::write_config(dir.path(), &main, rules);
    let d = common::Running::start(dir.path()).await;

    let is_rule_failing = |a: &Value| a["labels"]["alertname"] == "RuleFailing";
    let got = am
        .wait_for(|a| a.iter().any(is_rule_failing), Duration::from_secs(60))
        .await;
    let alert = got.iter().find(|a| is_rule_failing(a)).unwrap();
    assert_eq!(alert["labels"]["rule"], "submitted_over_1h", "{alert}");
    assert_eq!(alert["labels"]["source"], "shop", "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    let error = alert["annotations"]["error"].as_str().unwrap();
    assert!(error.contains("state_changed_at"), "{error}");
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("/runbooks#rulefailing"),
        "{alert}"
    );
    // The source answers: it is up, and SourceDown never fired.
    let metrics = d.get("/metrics").await;
    assert!(
        metrics.contains("orderwatch_source_up{source=\"shop\"} 1"),
        "{metrics}"
    );
    assert!(
        !got.iter().any(|a| a["labels"]["alertname"] == "SourceDown"),
        "{got:?}"
    );
    assert!(
        !d.alerts()
            .await
            .iter()
            .any(|a| a["labels"]["alertname"] == "SourceDown"),
        "SourceDown raised for a source that answers"
    );

    // The schema now matches the config: the rule runs again and RuleFailing resolves.
    db.batch_execute("ALTER TABLE orders RENAME COLUMN status_changed_at TO state_changed_at")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let alerts = d.alerts().await;
        let failing = alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == "RuleFailing")
            .map(|a| a["state"].clone());
        let stuck = alerts.iter().any(|a| a["key"] == "JW-1");
        if failing == Some(Value::from("resolved")) && stuck {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "RuleFailing did not resolve: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.stop().await;
}
