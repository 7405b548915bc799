//! The order flow metrics against ground truth on real PostgreSQL: orders moved through
//! statuses with known times, in a table (current status only) and a status log, give exactly
//! the entries, the time-in-status and the flow histograms' counts and sums; a restart counts
//! what happened while the daemon was down, once, and nothing it had counted before.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

const SCHEMA: &str = "
CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL, entered_at timestamptz NOT NULL,
  order_type text, customer_email text);
CREATE INDEX ON orders (status, entered_at);
CREATE TABLE status_log (id bigserial PRIMARY KEY, order_id text NOT NULL, status text NOT NULL,
  changed_at timestamptz NOT NULL, order_type text);
CREATE INDEX ON status_log (order_id, changed_at);
";

fn config(url: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nstate_dir: state\ngauges_interval: 1s\n\
         flows:\n  price_calculation: [SUBMITTED, PRICE_CALCULATED]\n  lead_time: [SUBMITTED, SHIPPED]\n\
         sources:\n\
         \x20 shop:\n    url: \"{url}?sslmode=disable\"\n    terminal_statuses: [SHIPPED]\n\
         \x20   statuses: [SUBMITTED, PRICE_CALCULATED, SHIPPED]\n    flow_label: order_type\n\
         \x20   orders: {{ table: orders, id: id, status: status, entered_at: entered_at, labels: [order_type] }}\n\
         \x20 mes:\n    url: \"{url}?sslmode=disable\"\n    terminal_statuses: [SHIPPED]\n\
         \x20   orders: {{ history_table: status_log, id: order_id, status: status, entered_at: changed_at, tiebreak: id }}\n"
    )
}

/// What the test did, as the metrics should count it, per source.
#[derive(Default, Debug)]
struct Truth {
    /// status → entries.
    entries: HashMap<String, u64>,
    /// status left → seconds spent, one per observation.
    durations: HashMap<String, Vec<f64>>,
    /// flow → seconds.
    flows: HashMap<String, Vec<f64>>,
    /// order → (status, entered at, epoch seconds), as last moved.
    now: HashMap<String, (String, f64)>,
    /// order → when it first entered SUBMITTED while watched.
    submitted: HashMap<String, f64>,
}

impl Truth {
    /// `id` entered `status` at `at`; `known`: the daemon saw its previous status.
    fn moved(&mut self, id: &str, status: &str, at: f64, known: bool) {
        *self.entries.entry(status.into()).or_default() += 1;
        if let Some((prev, since)) = self.now.get(id)
            && known
        {
            self.durations
                .entry(prev.clone())
                .or_default()
                .push(at - since);
        }
        if status == "SUBMITTED" {
            self.submitted.entry(id.into()).or_insert(at);
        }
        let flow = match status {
            "PRICE_CALCULATED" => Some("price_calculation"),
            "SHIPPED" => Some("lead_time"),
            _ => None,
        };
        if let (Some(flow), Some(start)) = (flow, self.submitted.get(id)) {
            self.flows.entry(flow.into()).or_default().push(at - start);
        }
        self.now.insert(id.into(), (status.into(), at));
    }
}

/// Moves `ids` to `status` in both sources at the database's clock; returns the time.
async fn move_to(db: &tokio_postgres::Client, ids: &[String], status: &str) -> f64 {
    let row = db
        .query_one(
            "WITH t AS (SELECT now() AS at), \
             u AS (UPDATE orders SET status = $2, entered_at = (SELECT at FROM t) WHERE id = ANY($1)), \
             l AS (INSERT INTO status_log (order_id, status, changed_at, order_type) \
                   SELECT id, $2, (SELECT at FROM t), 'ring' FROM unnest($1::text[]) id) \
             SELECT EXTRACT(EPOCH FROM at)::float8 FROM t",
            &[&ids, &status],
        )
        .await
        .unwrap();
    row.get(0)
}

/// Inserts `ids` as new SUBMITTED orders in both sources now; returns the time.
async fn submit(db: &tokio_postgres::Client, ids: &[String]) -> f64 {
    let row = db
        .query_one(
            "WITH t AS (SELECT now() AS at), \
             u AS (INSERT INTO orders SELECT id, 'SUBMITTED', (SELECT at FROM t), 'ring', id || '@example.com' FROM unnest($1::text[]) id), \
             l AS (INSERT INTO status_log (order_id, status, changed_at, order_type) \
                   SELECT id, 'SUBMITTED', (SELECT at FROM t), 'ring' FROM unnest($1::text[]) id) \
             SELECT EXTRACT(EPOCH FROM at)::float8 FROM t",
            &[&ids],
        )
        .await
        .unwrap();
    row.get(0)
}

/// The value of the series `name` with every `labels` pair (and no other series matched).
fn value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let (set, v) = rest.rsplit_once("} ").unwrap();
        if labels
            .iter()
            .all(|(k, val)| set.split(',').any(|p| p == format!("{k}=\"{val}\"")))
        {
            assert!(found.is_none(), "two series of {name} match {labels:?}");
            found = Some(v.parse().unwrap());
        }
    }
    found
}

/// Waits until `source`'s entries of `status` reach `n` (and then one more read).
async fn wait_entries(d: &common::Running, source: &str, status: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = d.get("/metrics").await;
        let got = value(
            &m,
            "orderwatch_status_entries_total",
            &[("source", source), ("status", status)],
        )
        .unwrap_or(0.0);
        if got as u64 >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{source}: {status} entries {got}, waited for {n}:\n{}",
            flow_lines(&m)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn flow_lines(m: &str) -> String {
    m.lines()
        .filter(|l| {
            l.starts_with("orderwatch_status_") || l.starts_with("orderwatch_flow_duration")
        })
        .filter(|l| !l.contains("_bucket"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every counter and histogram of `source` equals `truth` exactly: counts, sums (to the
/// microsecond the times are read at) and each bucket.
fn check(m: &str, source: &str, truth: &Truth, label: Option<(&str, &str)>) {
    let with = |first: (&'static str, String)| -> Vec<(String, String)> {
        let mut v = vec![
            ("source".to_string(), source.to_string()),
            (first.0.to_string(), first.1),
        ];
        v.extend(label.map(|(k, val)| (k.to_string(), val.to_string())));
        v
    };
    let get = |name: &str, ls: &[(String, String)], extra: Option<(&str, &str)>| -> f64 {
        let mut refs: Vec<(&str, &str)> =
            ls.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        refs.extend(extra);
        value(m, name, &refs).unwrap_or(0.0)
    };
    for status in ["SUBMITTED", "PRICE_CALCULATED", "SHIPPED"] {
        let ls = with(("status", status.into()));
        let want = truth.entries.get(status).copied().unwrap_or(0) as f64;
        assert_eq!(
            get("orderwatch_status_entries_total", &ls, None),
            want,
            "{source} entries of {status}:\n{}",
            flow_lines(m)
        );
        let d = truth.durations.get(status).cloned().unwrap_or_default();
        histogram(m, "orderwatch_status_duration_seconds", &ls, &d, &get);
    }
    for flow in ["price_calculation", "lead_time"] {
        let ls = with(("flow", flow.into()));
        let d = truth.flows.get(flow).cloned().unwrap_or_default();
        histogram(m, "orderwatch_flow_duration_seconds", &ls, &d, &get);
    }
}

/// Reads one series: name, labels, one more label.
type Getter<'a> = dyn Fn(&str, &[(String, String)], Option<(&str, &str)>) -> f64 + 'a;

fn histogram(m: &str, name: &str, ls: &[(String, String)], want: &[f64], get: &Getter) {
    let count = get(&format!("{name}_count"), ls, None);
    assert_eq!(
        count,
        want.len() as f64,
        "{name} {ls:?} count:\n{}",
        flow_lines(m)
    );
    let sum = get(&format!("{name}_sum"), ls, None);
    let expect: f64 = want.iter().sum();
    assert!(
        (sum - expect).abs() < 1e-3,
        "{name} {ls:?}: sum {sum}, want {expect} ({want:?})"
    );
    for le in orderwatch::metrics::FLOW_BUCKETS {
        let n = want.iter().filter(|v| **v <= *le).count() as f64;
        let le_s = format!("{le}");
        assert_eq!(
            get(&format!("{name}_bucket"), ls, Some(("le", &le_s))),
            n,
            "{name} {ls:?} bucket le={le}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_give_exact_entries_durations_and_flows_and_a_restart_counts_each_once() {
    let url = common::pg().fresh_db();
    let db = common::connect(&url).await;
    db.batch_execute(SCHEMA).await.unwrap();
    // In flight before the daemon starts: SUBMITTED 13, 52, 117, … minutes ago (so their
    // times in SUBMITTED fall in different buckets). Neither source counts their entries; both
    // time their flows from then.
    let old: Vec<String> = (1..=10).map(|i| format!("A-{i}")).collect();
    let mut before: HashMap<String, f64> = HashMap::new();
    for (i, id) in old.iter().enumerate() {
        let at: f64 = db
            .query_one(
                "WITH t AS (SELECT now() - make_interval(mins => $2::int * 13 * $2::int) AS at), \
                 u AS (INSERT INTO orders SELECT $1, 'SUBMITTED', (SELECT at FROM t), 'ring', 'x@example.com'), \
                 l AS (INSERT INTO status_log (order_id, status, changed_at, order_type) SELECT $1, 'SUBMITTED', (SELECT at FROM t), 'ring') \
                 SELECT EXTRACT(EPOCH FROM at)::float8 FROM t",
                &[id, &(i as i32 + 1)],
            )
            .await
            .unwrap()
            .get(0);
        before.insert(id.clone(), at);
    }
    let dir = tempfile::tempdir().unwrap();
    common::write_config(dir.path(), &config(&url), "rules: []\n");
    let d = common::Running::start(dir.path()).await;
    d.wait_ready().await;
    // The first read sets where counting starts (gauges_interval: 1s).
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut truth = Truth::default();
    for (id, at) in &before {
        truth.now.insert(id.clone(), ("SUBMITTED".into(), *at));
        // In a flow's first status at the first read: timed from when they entered it.
        truth.submitted.insert(id.clone(), *at);
    }
    // The old orders get their price: the daemon saw them in SUBMITTED (a table's orders in
    // flight are read at start, a status log has their rows), so their time there counts.
    let at = move_to(&db, &old, "PRICE_CALCULATED").await;
    for id in &old {
        truth.moved(id, "PRICE_CALCULATED", at, true);
    }
    wait_entries(&d, "shop", "PRICE_CALCULATED", 10).await;
    wait_entries(&d, "mes", "PRICE_CALCULATED", 10).await;
    // New orders: submitted, priced, and half of them shipped, a read between each step.
    let new: Vec<String> = (1..=6).map(|i| format!("B-{i}")).collect();
    let at = submit(&db, &new).await;
    for id in &new {
        truth.moved(id, "SUBMITTED", at, false);
    }
    wait_entries(&d, "shop", "SUBMITTED", 6).await;
    wait_entries(&d, "mes", "SUBMITTED", 6).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at = move_to(&db, &new, "PRICE_CALCULATED").await;
    for id in &new {
        truth.moved(id, "PRICE_CALCULATED", at, true);
    }
    wait_entries(&d, "shop", "PRICE_CALCULATED", 16).await;
    wait_entries(&d, "mes", "PRICE_CALCULATED", 16).await;
    let shipped: Vec<String> = new[..3].iter().chain(old[..2].iter()).cloned().collect();
    let at = move_to(&db, &shipped, "SHIPPED").await;
    for id in &shipped {
        truth.moved(id, "SHIPPED", at, true);
    }
    wait_entries(&d, "shop", "SHIPPED", 5).await;
    wait_entries(&d, "mes", "SHIPPED", 5).await;
    // A few more reads: nothing is counted twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = d.get("/metrics").await;
    check(&m, "shop", &truth, Some(("order_type", "ring")));
    check(&m, "mes", &truth, None);
    // Personal data never becomes a label.
    assert!(!m.contains("example.com"));

    // Stop; while the daemon is down two orders ship. The restarted daemon counts those two,
    // once, and nothing it counted before.
    d.stop().await;
    let down: Vec<String> = new[3..5].to_vec();
    let at = move_to(&db, &down, "SHIPPED").await;
    let mut after = Truth::default();
    for id in &down {
        after.now.insert(id.clone(), truth.now[id].clone());
        after.submitted.insert(id.clone(), truth.submitted[id]);
    }
    let mut after_table = Truth {
        submitted: after.submitted.clone(),
        ..Default::default()
    };
    for id in &down {
        // A status log holds the whole story; a table only the new status: the time the
        // order spent priced happened out of sight, but its flow start was kept.
        after.moved(id, "SHIPPED", at, true);
        after_table.moved(id, "SHIPPED", at, false);
    }
    let d = common::Running::start(dir.path()).await;
    d.wait_ready().await;
    wait_entries(&d, "shop", "SHIPPED", 2).await;
    wait_entries(&d, "mes", "SHIPPED", 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = d.get("/metrics").await;
    check(&m, "shop", &after_table, Some(("order_type", "ring")));
    check(&m, "mes", &after, None);
    d.stop().await;
}

/// A bulk update stamping more orders with one time than a read takes is read on by the id
/// (all counted, once); a table with integer-coded statuses and epoch-second times reads the
/// same way, in its own types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_update_and_a_coded_epoch_table_are_counted_exactly() {
    let url = common::pg().fresh_db();
    let db = common::connect(&url).await;
    db.batch_execute(
        "CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL, entered_at timestamptz NOT NULL);
         CREATE INDEX ON orders (status, entered_at);
         INSERT INTO orders SELECT 'O-' || o, 'SUBMITTED', now() - interval '1 hour' FROM generate_series(1, 12000) o;
         CREATE TABLE coded (id bigint PRIMARY KEY, state smallint NOT NULL, changed bigint NOT NULL);
         CREATE INDEX ON coded (state, changed);
         INSERT INTO coded SELECT o, 1, extract(epoch FROM now())::bigint - 600 FROM generate_series(1, 5) o;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let main = format!(
        "listen: 127.0.0.1:0\nstate_dir: state\ngauges_interval: 1s\n\
         sources:\n\
         \x20 shop:\n    url: \"{url}?sslmode=disable\"\n    terminal_statuses: [CLOSED]\n\
         \x20   orders: {{ table: orders, id: id, status: status, entered_at: entered_at }}\n\
         \x20 mes:\n    url: \"{url}?sslmode=disable\"\n    terminal_statuses: [CLOSED]\n\
         \x20   statuses: {{1: SUBMITTED, 2: PRICE_CALCULATED, 9: CLOSED}}\n\
         \x20   orders: {{ table: coded, id: id, status: state, entered_at: changed, entered_at_unit: s }}\n"
    );
    common::write_config(dir.path(), &main, "rules: []\n");
    let d = common::Running::start(dir.path()).await;
    d.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // 12 000 orders closed by one statement: one time for all, more than a read takes.
    db.batch_execute("UPDATE orders SET status = 'CLOSED', entered_at = now()")
        .await
        .unwrap();
    wait_entries(&d, "shop", "CLOSED", 12_000).await;
    // One more, later: the reader went on past the bulk.
    db.batch_execute(
        "INSERT INTO orders VALUES ('late', 'SUBMITTED', now() - interval '1 hour');
         UPDATE orders SET status = 'CLOSED', entered_at = now() + interval '1 millisecond' WHERE id = 'late'",
    )
    .await
    .unwrap();
    wait_entries(&d, "shop", "CLOSED", 12_001).await;
    // Coded statuses in epoch seconds: three priced a second apart from now on; the time
    // each spent in SUBMITTED, from the table itself.
    let mut spent = 0i64;
    for id in 1..=3i64 {
        let row = db
            .query_one(
                "WITH old AS (SELECT changed FROM coded WHERE id = $1) \
                 UPDATE coded SET state = 2, changed = extract(epoch FROM now())::bigint \
                 WHERE id = $1 RETURNING changed - (SELECT changed FROM old)",
                &[&id],
            )
            .await
            .unwrap();
        spent += row.get::<_, i64>(0);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    wait_entries(&d, "mes", "PRICE_CALCULATED", 3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = d.get("/metrics").await;
    let get = |name: &str, ls: &[(&str, &str)]| value(&m, name, ls).unwrap_or(0.0);
    assert_eq!(
        get(
            "orderwatch_status_entries_total",
            &[("source", "shop"), ("status", "CLOSED")]
        ),
        12_001.0,
        "{}",
        flow_lines(&m)
    );
    assert_eq!(
        get(
            "orderwatch_status_entries_total",
            &[("source", "mes"), ("status", "PRICE_CALCULATED")]
        ),
        3.0,
        "{}",
        flow_lines(&m)
    );
    // The time in SUBMITTED of the coded orders: some 10 minutes each, in whole seconds.
    let count = get(
        "orderwatch_status_duration_seconds_count",
        &[("source", "mes"), ("status", "SUBMITTED")],
    );
    let sum = get(
        "orderwatch_status_duration_seconds_sum",
        &[("source", "mes"), ("status", "SUBMITTED")],
    );
    assert_eq!(count, 3.0, "{}", flow_lines(&m));
    assert_eq!(sum, spent as f64, "{}", flow_lines(&m));
    assert!(spent >= 1800, "{spent}");
    d.stop().await;
}
