//! Passwords never printed: not by a parse error on the line that holds one, not as a "host"
//! when a `${file:}` password holds URL characters, not in the Alertmanager client's log lines.

mod common;

use std::time::{Duration, Instant};

/// A password made of URL delimiters, and the pieces of it that would show if it were cut.
const PASSWORD: &str = "Pw1Zq@Xv9/Wk7#Yp5?Rt3:";
const PIECES: &[&str] = &["Pw1Zq", "Xv9", "Wk7", "Yp5", "Rt3"];

fn assert_clean(what: &str, text: &str) {
    for p in PIECES {
        assert!(
            !text.contains(p),
            "{what} shows {p:?} of the password:\n{text}"
        );
    }
}

#[test]
fn a_parse_error_on_a_url_line_does_not_echo_the_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        "sources:\n  shop:\n    urll: postgres://orderwatch:Pw1Zq@db.example/shop\n    orders: { table: orders }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderwatch"))
        .arg("-c")
        .arg(dir.path().join("orderwatch.yaml"))
        .args(["check", "--offline"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("orderwatch.yaml:3:5: unknown field `urll`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("urll: postgres://db.example/***"),
        "{stderr}"
    );
    assert_clean("check --offline", &stderr);
}

/// A `${file:}` password with `@`, `/`, `#`, `?` and `:` is percent-encoded into the URL: the
/// source connects to the right host, and nothing the daemon shows carries a piece of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_password_with_url_characters_stays_a_password() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL, status_changed_at timestamptz NOT NULL);
             INSERT INTO orders VALUES ('JW-1', 'SUBMITTED', now() - interval '3 hours');",
        )
        .await
        .unwrap();
    let parsed = reqwest::Url::parse(&url).unwrap();
    let (port, db) = (
        parsed.port().unwrap(),
        parsed.path().trim_start_matches('/').to_string(),
    );
    let dead = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n\
             \x20 shop:\n    url: \"postgres://{}:${{file:pw}}@127.0.0.1:{port}/{db}?sslmode=disable\"\n\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at }}\n\
             \x20 mes:\n    url: \"postgres://watcher:${{file:pw}}@127.0.0.1:{dead}/mes?sslmode=disable\"\n\
             \x20   connect_timeout: 1s\n    orders: {{ table: production_orders }}\n",
            common::READER
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n\
         \x20 - name: mes_submitted\n    source: mes\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n",
    )
    .unwrap();
    let loaded = orderwatch::configure::load(&dir.path().join("orderwatch.yaml")).unwrap();
    let results = orderwatch::engine::evaluate_once(&loaded, &[])
        .await
        .unwrap();
    let shop = results
        .iter()
        .find(|(r, _)| r.name == "submitted_over_1h")
        .unwrap();
    assert_eq!(
        shop.1.as_ref().unwrap().count,
        1,
        "connected to the right host"
    );
    let mes = results
        .iter()
        .find(|(r, _)| r.name == "mes_submitted")
        .unwrap();
    let err = mes.1.as_ref().unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{dead}/mes")), "{err}");
    assert_clean("the error", &err);

    let d = common::Running::start(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for path in [
        "/",
        "/readyz",
        "/api/v1/rules",
        "/api/v1/alerts",
        "/metrics",
    ] {
        assert_clean(path, &d.get(path).await);
    }
    d.stop().await;
}

/// Credentials in an Alertmanager URL never reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_url_credentials_stay_out_of_the_log() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL, status_changed_at timestamptz NOT NULL);
             INSERT INTO orders VALUES ('JW-1', 'SUBMITTED', now() - interval '3 hours');",
        )
        .await
        .unwrap();
    let dead = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n\
             \x20 shop:\n    url: \"{url}?sslmode=disable\"\n\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at }}\n\
             notifiers:\n  alertmanager:\n    urls: [\"http://am:Xv9secret@127.0.0.1:{dead}\"]\n    timeout: 1s\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n",
    )
    .unwrap();
    let log = dir.path().join("log.txt");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orderwatch"))
        .arg("-c")
        .arg(dir.path().join("orderwatch.yaml"))
        .args(["--log-format", "text", "run"])
        .env("ORDERWATCH_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("cannot deliver alerts") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery failure logged:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("http://am:***@127.0.0.1"), "{text}");
    assert_clean("the log", &text);
}
