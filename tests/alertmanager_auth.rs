//! The Alertmanager client takes what Prometheus' `alertmanager_config` takes: `basic_auth`
//! (password inline or in a file), `authorization` (bearer) and `tls_config` (a private CA,
//! a client certificate, `server_name`), so an Alertmanager behind auth and TLS is reachable.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

const SCHEMA: &str = "
CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL, status_changed_at timestamptz NOT NULL);
INSERT INTO orders VALUES ('JW-1', 'SUBMITTED', now() - interval '3 hours');
";

async fn daemon(dir: &std::path::Path, url: &str, alertmanager: &str) -> common::Running {
    std::fs::write(
        dir.join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: \"{url}?sslmode=disable\"\n\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at }}\n\
             notifiers:\n  alertmanager:\n{alertmanager}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n",
    )
    .unwrap();
    common::Running::start(dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_an_alertmanager_behind_tls_and_basic_auth() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The certificate names `alertmanager.internal`, not 127.0.0.1: server_name says so.
    let pki = common::Pki::for_names(dir.path(), &["alertmanager.internal"], "orderwatch");
    let hash = bcrypt::hash("am-s3cret", 4).unwrap();
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let Some(am) = common::Alertmanager::start_secured(
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\nbasic_auth_users:\n  orderwatch: {hash}\n"
        ),
        &[
            ("server.pem", read(&pki.cert)),
            ("server-key.pem", read(&pki.key)),
            ("ca.pem", read(&pki.ca)),
        ],
    )
    .await
    else {
        return;
    };
    std::fs::write(dir.path().join("am-password"), "am-s3cret\n").unwrap();
    let d = daemon(
        dir.path(),
        &url,
        &format!(
            "    urls: [\"{}\"]\n    resend_delay: 2s\n    basic_auth:\n      username: orderwatch\n      password_file: am-password\n\
             \x20   tls_config:\n      ca_file: ca.pem\n      cert_file: client.pem\n      key_file: client-key.pem\n      server_name: alertmanager.internal\n",
            am.url()
        ),
    )
    .await;
    // Read back from Alertmanager's API, as an operator would (same TLS and credentials).
    let mut pem = read(&pki.client_cert);
    pem.extend(read(&pki.client_key));
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&read(&pki.ca)).unwrap())
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .resolve(
            "alertmanager.internal",
            am.url().trim_start_matches("https://").parse().unwrap(),
        )
        .build()
        .unwrap();
    let port = am.url().rsplit(':').next().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alerts: Vec<Value> = client
            .get(format!(
                "https://alertmanager.internal:{port}/api/v2/alerts"
            ))
            .basic_auth("orderwatch", Some("am-s3cret"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if alerts.iter().any(|a| a["labels"]["order_id"] == "JW-1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alert in Alertmanager: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_is_sent_as_prometheus_sends_it() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let recorder = common::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: read by this test's daemon only, set before it starts.
    unsafe { std::env::set_var("OW_TEST_AM_TOKEN", "t0ken-xyz") };
    let d = daemon(
        dir.path(),
        &url,
        &format!(
            "    urls: [\"{}\"]\n    resend_delay: 2s\n    authorization:\n      credentials: ${{OW_TEST_AM_TOKEN}}\n",
            recorder.url()
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = recorder.requests().await;
        if let Some(first) = r.iter().find(|r| r.path == "/api/v2/alerts") {
            assert_eq!(first.authorization.as_deref(), Some("Bearer t0ken-xyz"));
            break;
        }
        assert!(Instant::now() < deadline, "nothing pushed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.stop().await;
}

#[test]
fn credentials_and_tls_settings_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for (am, says) in [
        (
            "    basic_auth: { username: u, password: a, password_file: pw }\n",
            "give exactly one of password and password_file",
        ),
        (
            "    basic_auth: { username: u, password_file: missing-pw }\n",
            "missing-pw",
        ),
        (
            "    basic_auth: { username: u, password: a }\n    authorization: { credentials: b }\n",
            "basic_auth or authorization, not both",
        ),
        ("    tls_config: { ca_file: missing.pem }\n", "missing.pem"),
        (
            "    tls_config: { cert_file: c.pem }\n",
            "cert_file and key_file go together",
        ),
        (
            "    basic_auth: { username: u, passwort: a }\n",
            "unknown field `passwort`",
        ),
    ] {
        std::fs::write(
            dir.path().join("orderwatch.yaml"),
            format!(
                "sources:\n  shop:\n    url: postgres://u@db/shop\n    orders: {{ table: orders }}\nnotifiers:\n  alertmanager:\n    urls: [\"https://am:9093\"]\n{am}"
            ),
        )
        .unwrap();
        let err = orderwatch::configure::load(&dir.path().join("orderwatch.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{am}: {err}");
        assert!(err.contains("orderwatch.yaml:"), "{err}");
    }
}
