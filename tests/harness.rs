//! Tests of the test harness itself (`tests/common`): if these fail, every black-box test
//! built on them is suspect, so they check each helper against the real thing.

mod common;

use std::time::Duration;

use common::{Alertmanager, WebhookReceiver};
use serde_json::{Value, json};

fn has_alert(alerts: &[Value], order_id: &str) -> bool {
    alerts.iter().any(|a| a["labels"]["order_id"] == order_id)
}

#[tokio::test]
async fn alertmanager_keeps_posted_alert_and_forwards_it_to_the_webhook() {
    let webhook = WebhookReceiver::start().await;
    let Some(am) = Alertmanager::start(Some(&webhook.url())).await else {
        return;
    };
    assert!(
        am.alerts().await.is_empty(),
        "a fresh Alertmanager holds no alerts"
    );

    let now = chrono::Utc::now();
    let alert = json!([{
        "labels": {"alertname": "HarnessTest", "order_id": "JW-00000001", "severity": "warning"},
        "annotations": {"summary": "harness self-test"},
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + chrono::Duration::minutes(5)).to_rfc3339(),
    }]);
    let resp = common::http_client()
        .post(format!("{}/api/v2/alerts", am.url()))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "POST alerts: {}", resp.status());

    let alerts = am
        .wait_for(|a| has_alert(a, "JW-00000001"), Duration::from_secs(10))
        .await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["labels"]["alertname"], "HarnessTest");
    assert_eq!(alerts[0]["status"]["state"], "active");

    // Alertmanager's webhook payload: version 4, one group, our alert firing in it.
    let carries_ours = |body: &Value| {
        body["alerts"]
            .as_array()
            .is_some_and(|a| has_alert(a, "JW-00000001"))
    };
    let bodies = webhook
        .wait_for(|b| b.iter().any(carries_ours), Duration::from_secs(15))
        .await;
    let body = bodies.iter().find(|b| carries_ours(b)).unwrap();
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(
        body["alerts"][0]["annotations"]["summary"],
        "harness self-test"
    );
    assert_eq!(webhook.requests().await[0].path, "/");
}

#[tokio::test]
async fn alertmanager_without_receiver_still_keeps_alerts() {
    let Some(am) = Alertmanager::start(None).await else {
        return;
    };
    let resp = common::http_client()
        .post(format!("{}/api/v2/alerts", am.url()))
        .json(&json!([{"labels": {"alertname": "HarnessTest", "order_id": "JW-2"}}]))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    am.wait_for(|a| has_alert(a, "JW-2"), Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn webhook_receiver_records_json_and_paths() {
    let webhook = WebhookReceiver::start().await;
    let client = common::http_client();
    let resp = client
        .post(format!("{}/hooks/abc", webhook.url()))
        .json(&json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let bodies = webhook
        .wait_for(|b| !b.is_empty(), Duration::from_secs(5))
        .await;
    assert_eq!(bodies, vec![json!({"text": "hello"})]);
    assert_eq!(webhook.requests().await[0].path, "/hooks/abc");
}

#[tokio::test]
async fn fresh_db_gives_distinct_connectable_databases() {
    let (a, b) = (common::pg().fresh_db(), common::pg().fresh_db());
    assert_ne!(a, b);

    let mut names = Vec::new();
    for (url, create) in [(&a, true), (&b, false)] {
        let (client, conn) = tokio_postgres::connect(&common::admin(url), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        tokio::spawn(conn);
        let name: String = client
            .query_one("SELECT current_database()", &[])
            .await
            .unwrap()
            .get(0);
        let path = reqwest::Url::parse(url).unwrap().path().to_string();
        assert_eq!(path, format!("/{name}"), "{url} connected to {name}");
        if create {
            client
                .batch_execute("CREATE TABLE orders (id text)")
                .await
                .unwrap();
        }
        let tables: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'orders'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            tables,
            i64::from(create),
            "a table made in one database shows in another"
        );
        names.push(name);
    }
    assert_ne!(names[0], names[1]);
    assert_eq!(common::pg().url_for(&names[0]), a);
}

#[test]
fn require_bin_finds_what_exists() {
    assert!(common::require_bin("sh", "dash").is_some());
}

#[test]
fn require_bin_fails_in_ci_and_skips_elsewhere() {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let found = std::panic::catch_unwind(|| {
        common::require_bin("orderwatch-no-such-program", "no-such-package")
    });
    match found {
        Err(_) => assert!(in_ci, "panicked outside CI"),
        Ok(found) => assert!(!in_ci && found.is_none(), "CI={in_ci}, found {found:?}"),
    }
}
