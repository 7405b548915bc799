//! The mistakes a new user makes configuring a shop of their own, caught by `orderwatch check`
//! against real PostgreSQL before they cost a page: every wrong column at once, each at its
//! config location; a status no order holds, with the closest one that does; a rule that
//! would read the whole table, with the index to create.

mod common;

fn check(dir: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderwatch"))
        .args(["check", "-c"])
        .arg(dir.join("orderwatch.yaml"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn main_file(url: &str, orders: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\n\
         sources:\n  shop:\n    url: \"{url}?sslmode=disable\"\n    orders: {orders}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_every_wrong_column_and_every_status_no_order_holds() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL,
               status_changed_at timestamptz NOT NULL, channel text);
             CREATE INDEX ON orders (status, status_changed_at);
             INSERT INTO orders VALUES ('JW-1', 'awaiting_payment', now(), 'web'),
               ('JW-2', 'PAID', now(), 'app');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Two wrong columns: both named, each where it is written.
    common::write_config(
        dir.path(),
        &main_file(
            &url,
            "{ table: orders, id: id, status: status, entered_at: state_changed_at, labels: [chanel] }",
        ),
        "rules:\n  - name: unpaid\n    source: shop\n    status: awaiting_payment\n    older_than: 1h\n",
    );
    let (code, out) = check(dir.path());
    assert_eq!(code, 2, "{out}");
    let main = dir.path().join("orderwatch.yaml");
    for (col, what) in [
        (
            66,
            "entered_at: column \"state_changed_at\" is not in orders (did you mean status_changed_at?",
        ),
        (
            93,
            "labels: column \"chanel\" is not in orders (did you mean channel?",
        ),
    ] {
        assert!(
            out.contains(&format!(
                "FAIL {}:7:{col}: source shop: {what}",
                main.display()
            )),
            "{what}:\n{out}"
        );
    }

    // Columns right; statuses no order holds: a warning each, with the closest value.
    common::write_config(
        dir.path(),
        &main_file(
            &url,
            "{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [channel] }",
        ),
        "rules:\n  - name: unpaid\n    source: shop\n    status: [awaiting_paymnet, Paid]\n    older_than: 1h\n",
    );
    let (code, out) = check(dir.path());
    assert_eq!(code, 0, "a warning does not fail check:\n{out}");
    let rules = dir.path().join("rules.yaml");
    for (wanted, near) in [("awaiting_paymnet", "awaiting_payment"), ("Paid", "PAID")] {
        assert!(
            out.contains(&format!(
                "WARN {}:4:13: rule unpaid: status \"{wanted}\" occurs in no order of source shop: \
                 the rule cannot fire until one is in it (a typo?); the closest value it holds: {near}",
                rules.display()
            )),
            "{wanted}:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_rule_that_reads_the_whole_table_with_the_index_to_create() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL,
               status_changed_at timestamptz NOT NULL);
             INSERT INTO orders SELECT 'JW-' || i, 'SUBMITTED', now() FROM generate_series(1, 1000) i;
             ANALYZE orders;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    common::write_config(
        dir.path(),
        &main_file(
            &url,
            "{ table: orders, id: id, status: status, entered_at: status_changed_at }",
        ),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n",
    );
    let (_, out) = check(dir.path());
    assert!(
        out.lines().any(|l| l.starts_with(
            "WARN rule submitted_over_1h (shop), stuck orders: scans the whole table orders"
        ) && l.contains("CREATE INDEX CONCURRENTLY IF NOT EXISTS")
            && l.contains("(\"status\", \"status_changed_at\")")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_previews_the_rendered_annotations() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL,
               status_changed_at timestamptz NOT NULL, channel text);
             CREATE INDEX ON orders (status, status_changed_at);
             INSERT INTO orders VALUES ('JW-1', 'SUBMITTED', now() - interval '3 hours', 'web');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    common::write_config(
        dir.path(),
        &format!(
            "{}links:\n  crm_url: 'https://crm.example/orders/{{{{ order_id }}}}'\n",
            main_file(
                &url,
                "{ table: orders, id: id, status: status, entered_at: status_changed_at, labels: [channel] }",
            )
        ),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    annotations:\n      summary: 'Order {{ order_id }} via {{ labels.channel }} waits {{ age }}'\n",
    );
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderwatch"))
            .args(["once", "--annotations", "--format", format, "-c"])
            .arg(dir.path().join("orderwatch.yaml"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = run("table");
    assert!(
        table.contains("        summary: Order JW-1 via web waits 3h 00m"),
        "{table}"
    );
    assert!(
        table.contains("        crm_url: https://crm.example/orders/JW-1"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    let notes = &json["rules"][0]["annotations"][0];
    assert_eq!(
        notes["crm_url"], "https://crm.example/orders/JW-1",
        "{json}"
    );
    assert!(
        notes["summary"]
            .as_str()
            .unwrap()
            .starts_with("Order JW-1 via web waits 3h")
    );
}
