//! The status page at `/` of a real daemon on a real database: stuck orders grouped by rule
//! with age and links, silences marked, source health; self-contained, refreshing, phone-sized,
//! escaped.

mod common;

use std::time::Duration;

use common::Running;

const SCHEMA: &str = "
CREATE TABLE orders (id text PRIMARY KEY, customer_name text, customer_email text,
  order_type text, status text NOT NULL, status_changed_at timestamptz NOT NULL);
CREATE INDEX ON orders (status, status_changed_at);
INSERT INTO orders VALUES
  ('JW-1', 'Anna Ivanova', 'anna@example.com', 'ring', 'SUBMITTED', now() - interval '3 hours'),
  ('JW-<b>2', 'Boris Petrov', 'boris@example.com', '<script>alert(1)</script>', 'SUBMITTED', now() - interval '2 hours'),
  ('JW-3', 'Vera Sidorova', 'vera@example.com', 'ring', 'SUBMITTED', now() - interval '5 minutes');
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_names_stuck_orders_with_age_and_links() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dead = common::free_port();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\n\
             sources:\n  shop:\n    url: \"{url}?sslmode=disable\"\n\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [order_type] }}\n\
             \x20 mes:\n    url: \"postgres://watcher:Secr3tPw@127.0.0.1:{dead}/mes?sslmode=disable\"\n\
             \x20   connect_timeout: 1s\n    orders: {{ table: production_orders }}\n\
             links:\n  trace_url: \"http://jaeger:16686/search?service=shop-api&tags={{{{ {{'correlation_id': order_id}} | tojson | urlencode }}}}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    severity: critical\n    interval: 1s\n\
         \x20   annotations:\n      summary: \"Order {{ order_id }} ({{ labels.order_type }}) waits for {{ age }}\"\n\
         \x20     evil_url: \"javascript:alert('{{ order_id }}')\"\n",
    )
    .unwrap();
    let d = Running::start(dir.path()).await;
    d.wait_alerts(|a| a.iter().filter(|a| a["state"] == "firing").count() == 2)
        .await;
    // Let the dead source be tried once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Silence one order through the API: the page marks it, still lists it.
    let resp = common::http_client()
        .post(format!("{}/api/v1/silences", d.url))
        .json(&serde_json::json!({
            "matchers": ["order_id=\"JW-1\""], "duration": "1h",
            "comment": "calling the customer", "createdBy": "test"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    let resp = common::http_client()
        .get(format!("{}/", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let html = resp.text().await.unwrap();
    d.stop().await;

    // Phone-sized, self-refreshing, self-contained.
    assert!(
        html.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
    );
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
    for external in ["<link", "<script", "src=", "@import", "url("] {
        assert!(!html.contains(external), "{external} in:\n{html}");
    }
    // The stuck orders under their rule, oldest first, with age and the trace link.
    let section = html
        .split("<section id=\"rule-submitted_over_1h\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no section for the rule:\n{html}"));
    assert!(
        section.starts_with("<h2>submitted_over_1h <span class=\"badge critical\">critical</span>"),
        "rule heading:\n{section}"
    );
    let jw1 = section.find(">JW-1<").expect("JW-1 listed");
    assert!(
        section[jw1..].starts_with(">JW-1</a><span class=\"badge silenced\">silenced</span>"),
        "JW-1 marked silenced:\n{section}"
    );
    let jw2 = section
        .find(">JW-&lt;b&gt;2<")
        .expect("JW-<b>2 listed, escaped");
    assert!(jw1 < jw2, "oldest first");
    assert!(!section.contains(">JW-3<"), "JW-3 is not stuck yet");
    assert!(
        section.contains(">3h 0") && section.contains(">2h 0"),
        "ages:\n{section}"
    );
    assert!(
        section.contains(
            "<a href=\"http://jaeger:16686/search?service=shop-api&amp;tags=%7B%22correlation_id%22%3A%22JW-1%22%7D\" rel=\"noopener noreferrer\">trace</a>"
        ),
        "{section}"
    );
    // Database text is escaped; a javascript: link is not a link.
    assert!(section.contains("(&lt;script&gt;alert(1)&lt;/script&gt;)"));
    assert!(!html.contains("javascript:"));
    assert!(!html.contains(">evil<"));
    // Source health: the dead one is down, said above the alerts, with its error, and without
    // its password.
    let problems = html
        .find("<section class=\"problems\">")
        .unwrap_or_else(|| panic!("no problems box:\n{html}"));
    assert!(problems < html.find("<section id=\"rule-").unwrap());
    assert!(html[problems..].contains("source <b>mes</b> down"));
    assert!(
        html.contains("<span class=\"badge down\">down</span>"),
        "{html}"
    );
    assert!(html.contains("<span class=\"badge up\">up</span>"));
    for personal in ["Anna", "Ivanova", "Boris", "@example.com", "Secr3tPw"] {
        assert!(!html.contains(personal), "{personal} on the page");
    }
}
