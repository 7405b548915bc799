//! The status page, its order search and the order page in a real headless Chromium, on a
//! daemon over real PostgreSQL: no console errors, searching an id reaches its page, and at
//! 375 px and 1280 px no horizontal overflow and no text under 14 px (screenshots kept in
//! `target/tmp/pages/`).

mod common;

use std::time::Duration;

use common::browser::{Browser, OVERFLOW, SMALL_TEXT, artifacts};

const SCHEMA: &str = "
CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL,
  status_changed_at timestamptz NOT NULL, order_type text);
CREATE INDEX ON orders (status, status_changed_at);
INSERT INTO orders VALUES
  ('JW-000000000000000000000000000000000000000000000001', 'SUBMITTED', now() - interval '3 hours', 'pendant-with-a-very-long-type-name-that-does-not-wrap'),
  ('JW-2', 'MANUFACTURING_STARTED', now() - interval '2 hours', 'ring');
INSERT INTO orders SELECT 'JW-S' || i, 'SUBMITTED', now() - make_interval(mins => 90 + i), 'ring'
  FROM generate_series(1, 60) i;
CREATE TABLE status_log (id bigserial PRIMARY KEY, order_id text NOT NULL, status text NOT NULL,
  changed_at timestamptz NOT NULL);
CREATE INDEX ON status_log (order_id, changed_at);
CREATE INDEX ON status_log (status, changed_at);
INSERT INTO status_log (order_id, status, changed_at) VALUES
  ('JW-2', 'FILE_UPLOADED', now() - interval '5 hours'),
  ('JW-2', 'SUBMITTED', now() - interval '4 hours'),
  ('JW-2', 'MANUFACTURING_STARTED', now() - interval '2 hours');
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_read_on_a_phone_and_a_desktop_and_the_search_reaches_an_order() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let main = format!(
        "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\n\
         links:\n  crm_url: 'https://crm.example/orders/{{{{ order_id }}}}'\n\
         sources:\n\
         \x20 shop:\n    url: \"{url}?sslmode=disable\"\n\
         \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [order_type] }}\n\
         \x20 mes:\n    url: \"{url}?sslmode=disable\"\n\
         \x20   orders: {{ history_table: status_log, id: order_id, status: status, entered_at: changed_at, tiebreak: id, history_lookback: 30d }}\n"
    );
    let rules = "rules:\n\
        \x20 - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n\
        \x20 - name: submitted_missing_in_mes\n    kind: missing\n    source: shop\n    status: SUBMITTED\n    older_than: 30m\n    missing_in: mes\n    interval: 1s\n\
        \x20 - name: started_over_1h\n    source: mes\n    status: MANUFACTURING_STARTED\n    older_than: 1h\n    interval: 1s\n";
    common::write_config(dir.path(), &main, rules);
    let d = common::Running::start(dir.path()).await;
    d.wait_ready().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while d.alerts().await.len() < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rules did not fire"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pages = [
        ("status", "/".to_string()),
        ("order-history", "/orders?id=JW-2".to_string()),
        (
            "order-long-id",
            "/orders?id=JW-000000000000000000000000000000000000000000000001".to_string(),
        ),
        ("order-nowhere", "/orders?id=JW-404".to_string()),
    ];
    for width in [375, 1280] {
        let page = browser.page(width, 900).await;
        for (name, path) in &pages {
            page.open(&format!("{}{path}", d.url)).await;
            page.screenshot(&artifacts().join(format!("{name}-{width}.png")))
                .await;
            let overflow = page.eval(OVERFLOW).await.as_f64().unwrap();
            assert!(
                overflow <= 0.0,
                "{path} at {width} px overflows by {overflow} px"
            );
            let small = page.eval(SMALL_TEXT).await;
            assert_eq!(
                small,
                serde_json::json!([]),
                "{path} at {width} px: text under 14 px"
            );
        }
        // The search box on the status page leads to the order's page, and so does each
        // order's id.
        page.open(&format!("{}/", d.url)).await;
        let link = page
            .eval("document.querySelector('ul.orders a.id').getAttribute('href')")
            .await;
        assert!(
            link.as_str()
                .is_some_and(|l| l.starts_with("orders?id=JW-")),
            "{link}"
        );
        page.navigate_by(
            "document.querySelector('form.search input[name=id]').value = 'JW-2'; \
             document.querySelector('form.search').requestSubmit(); true",
        )
        .await;
        let href = page.eval("location.href").await;
        assert_eq!(href, format!("{}/orders?id=JW-2", d.url), "{href}");
        let text = page.eval("document.body.innerText").await;
        let text = text.as_str().unwrap();
        for needle in [
            "MANUFACTURING_STARTED",
            "FILE_UPLOADED",
            "started_over_1h",
            "matches",
        ] {
            assert!(
                text.contains(needle),
                "the order page lacks {needle}:\n{text}"
            );
        }
        let bars = page
            .eval("document.querySelectorAll('.timeline svg rect').length")
            .await;
        assert_eq!(
            bars, 4,
            "one bar in the shop, one per status of the history in mes"
        );
        let errors = page.errors();
        assert!(
            errors.is_empty(),
            "console errors at {width} px: {errors:?}"
        );
    }
    d.stop().await;
}
