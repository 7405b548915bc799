//! Status logs as real shops keep them, against a real PostgreSQL: comments repeating the
//! current status, events stored twice at the same time, returns to an earlier status, rows
//! committed late below the watermark, NULL and future times, and a restart in between.
//! `once` (one statement) and the daemon (kept state read incrementally) must both give
//! exactly what a SQL ground truth gives: the same orders, entered at the same time.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use orderwatch::config::Loaded;
use orderwatch::engine::{Daemon, evaluate_once};
use orderwatch::rule::Outcome;

const LOG: &str = "
CREATE TABLE order_log (
  id bigserial PRIMARY KEY, order_id text NOT NULL, status text NOT NULL,
  changed_at timestamptz, customer_email text, note text);
CREATE INDEX ON order_log (status, changed_at);
CREATE INDEX ON order_log (order_id, changed_at);
CREATE INDEX ON order_log (changed_at);
SELECT setseed(0.42);
-- 3 000 orders, 1 to 7 events each, at 10-minute steps (so events of one order collide), in
-- random insertion order (so the serial id does not follow the time).
INSERT INTO order_log (order_id, status, changed_at, customer_email, note)
SELECT 'O-' || o,
       (ARRAY['SUBMITTED','SUBMITTED','SUBMITTED','PRICE_CALCULATED','PACKAGING','CLOSED'])[1 + floor(random() * 6)::int],
       now() - make_interval(mins => 5 + 10 * floor(random() * 24)::int),
       'client' || o || '@example.com', 'event'
FROM generate_series(1, 3000) o CROSS JOIN LATERAL generate_series(1, 1 + o % 7) e
ORDER BY random();
-- Every tenth event stored twice, same time, same status.
INSERT INTO order_log (order_id, status, changed_at, customer_email, note)
SELECT order_id, status, changed_at, customer_email, 'resent' FROM order_log WHERE id % 10 = 0;
-- Finished orders' history (never kept by the daemon).
INSERT INTO order_log (order_id, status, changed_at, note)
SELECT 'F-' || o, s, now() - make_interval(days => 2, mins => (o % 50 + 10 - i)::int), 'done'
FROM generate_series(1, 2000) o,
     unnest(ARRAY['SUBMITTED','PRICE_CALCULATED','PACKAGING','CLOSED']) WITH ORDINALITY AS x(s, i);
-- Rows no rule can judge: no time, a time in the future.
INSERT INTO order_log (order_id, status, changed_at) VALUES
  ('N-1', 'SUBMITTED', NULL), ('U-1', 'SUBMITTED', now() + interval '2 hours');
";

/// Current status and run start of every order, as the issue defines them, in plain SQL.
/// Without a tiebreak: the latest time; two statuses there are a tie (NULL start); the start
/// is the first row after the last row of another status.
const TRUTH_BY_TIME: &str = "
WITH latest AS (SELECT order_id, max(changed_at) AS at FROM order_log GROUP BY order_id),
cur AS (SELECT l.order_id, count(DISTINCT r.status) AS n, max(r.status) AS status
        FROM latest l JOIN order_log r ON r.order_id = l.order_id AND r.changed_at = l.at
        GROUP BY l.order_id)
SELECT c.order_id, c.status,
  CASE WHEN c.n = 1 THEN (SELECT min(r.changed_at) FROM order_log r WHERE r.order_id = c.order_id
    AND r.changed_at > COALESCE((SELECT max(p.changed_at) FROM order_log p
        WHERE p.order_id = c.order_id AND p.status <> c.status), '-infinity')) END
FROM cur c";

/// With the serial id as tiebreak: runs found by `lag` over (time, id).
const TRUTH_BY_SERIAL: &str = "
WITH r AS (SELECT *, lag(status) OVER (PARTITION BY order_id ORDER BY changed_at, id) AS prev,
             row_number() OVER (PARTITION BY order_id ORDER BY changed_at DESC, id DESC) AS rn
           FROM order_log WHERE changed_at IS NOT NULL),
s AS (SELECT *, max(CASE WHEN prev IS DISTINCT FROM status THEN changed_at END)
                  OVER (PARTITION BY order_id ORDER BY changed_at, id) AS start FROM r)
SELECT order_id, status, start FROM s WHERE rn = 1";

const RULES: &str = "rules:
  - name: submitted_over_1h
    source: log
    status: SUBMITTED
    older_than: 1h
    max_findings: 100000
  - name: waiting_over_30m
    source: log
    status: [PRICE_CALCULATED, PACKAGING]
    older_than: 30m
    max_findings: 100000
";

fn config(dir: &Path, url: &str, tiebreak: bool) -> Loaded {
    let tb = if tiebreak { ", tiebreak: id" } else { "" };
    common::write_config(
        dir,
        &format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  log:\n    url: \"{url}?sslmode=disable\"\n    orders: {{ history_table: order_log, id: order_id, status: status, entered_at: changed_at{tb} }}\n"
        ),
        RULES,
    );
    common::load(dir)
}

/// rule → order id → entered_at, from the ground truth at the database's `now()`.
async fn truth(
    c: &tokio_postgres::Client,
    tiebreak: bool,
) -> BTreeMap<String, BTreeMap<String, DateTime<Utc>>> {
    let sql = if tiebreak {
        TRUTH_BY_SERIAL
    } else {
        TRUTH_BY_TIME
    };
    let now: DateTime<Utc> = c.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let rows = c.query(sql, &[]).await.unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, DateTime<Utc>>> = BTreeMap::new();
    for (rule, statuses, secs) in [
        ("submitted_over_1h", &["SUBMITTED"][..], 3600),
        (
            "waiting_over_30m",
            &["PRICE_CALCULATED", "PACKAGING"][..],
            1800,
        ),
    ] {
        let m = out.entry(rule.to_string()).or_default();
        for r in &rows {
            let status: String = r.get(1);
            let start: Option<DateTime<Utc>> = r.get(2);
            if let Some(start) = start
                && statuses.contains(&status.as_str())
                && start < now - chrono::Duration::seconds(secs)
            {
                m.insert(r.get(0), start);
            }
        }
    }
    out
}

fn findings(o: &Outcome) -> BTreeMap<String, DateTime<Utc>> {
    let mut m = BTreeMap::new();
    for f in &o.findings {
        assert!(
            m.insert(f.order_id.clone(), f.entered_at).is_none(),
            "order {} reported twice",
            f.order_id
        );
    }
    m
}

/// Every rule of `results` against the truth: the same orders at the same times, exact
/// counts, ages from entered_at.
fn same(
    what: &str,
    results: &[(String, Outcome)],
    truth: &BTreeMap<String, BTreeMap<String, DateTime<Utc>>>,
) {
    for (rule, o) in results {
        let want = &truth[rule];
        let got = findings(o);
        let missing: Vec<_> = want
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(5)
            .collect();
        let wrong: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .take(5)
            .map(|(k, v)| (k, v, got[k]))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty() && wrong.is_empty(),
            "{what} {rule}: {} expected, {} found; missed {missing:?}, extra {extra:?}, wrong time (order, truth, found) {wrong:?}",
            want.len(),
            got.len()
        );
        assert_eq!(o.count as usize, want.len(), "{what} {rule}: count");
        let per: u64 = o.per_status.values().map(|s| s.count).sum();
        assert_eq!(per as usize, want.len(), "{what} {rule}: per-status counts");
        for f in &o.findings {
            let age = (Utc::now() - f.entered_at).num_milliseconds() as f64 / 1000.0;
            assert!(
                (age - f.age_seconds).abs() < 30.0,
                "{what} {rule}: age {} vs {age}",
                f.age_seconds
            );
        }
    }
}

async fn once(loaded: &Loaded) -> Vec<(String, Outcome)> {
    evaluate_once(loaded, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|(r, o)| {
            (
                r.name.clone(),
                o.unwrap_or_else(|e| panic!("{}: {e}", r.name)),
            )
        })
        .collect()
}

/// Every rule through the statements alone, no kept state (what `explain` plans).
async fn statements(loaded: &Loaded) -> Vec<(String, Outcome)> {
    let mut sources = std::collections::BTreeMap::new();
    for (name, cfg) in &loaded.config.sources {
        sources.insert(
            name.clone(),
            std::sync::Arc::new(
                orderwatch::source::Source::build(name, &cfg.value, false).unwrap(),
            ),
        );
    }
    let mut out = Vec::new();
    for (_, rc) in &loaded.rules {
        let rule = orderwatch::rule::Rule::build(rc, &sources).unwrap();
        out.push((
            rule.name.clone(),
            rule.evaluate()
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", rule.name)),
        ));
    }
    out
}

async fn daemon(d: &Daemon) -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    for r in &d.shared().rules {
        out.push((
            r.name.clone(),
            r.evaluate()
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", r.name)),
        ));
    }
    out
}

async fn log_matches_the_ground_truth(tiebreak: bool) {
    let url = common::pg().fresh_db();
    let c = common::connect(&url).await;
    c.batch_execute(LOG).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(dir.path(), &url, tiebreak);
    let t = truth(&c, tiebreak).await;
    assert!(
        t["submitted_over_1h"].len() > 300 && t["waiting_over_30m"].len() > 100,
        "the data set exercises the rules: {} / {}",
        t["submitted_over_1h"].len(),
        t["waiting_over_30m"].len()
    );
    same("once", &once(&loaded).await, &t);
    same("statements", &statements(&loaded).await, &t);
    let d = Daemon::build(config(dir.path(), &url, tiebreak)).unwrap();
    same("daemon start", &daemon(&d).await, &t);

    // New events: comments on stuck orders (age kept), moves on (no longer stuck), returns to
    // SUBMITTED (age of the return), duplicates of the new rows.
    // By time, a row is read when committed within history_overlap (5m) of its time; by a
    // serial, whatever its time.
    let backdated = if tiebreak { "75 minutes" } else { "3 minutes" };
    c.batch_execute(&format!(
        "INSERT INTO order_log (order_id, status, changed_at, note)
         SELECT order_id, status, now(), 'comment' FROM (
           SELECT DISTINCT ON (order_id) order_id, status FROM order_log
           WHERE order_id LIKE 'O-%' AND changed_at IS NOT NULL
           ORDER BY order_id, changed_at DESC, id DESC) x WHERE order_id::text ~ '[05]$';
         INSERT INTO order_log (order_id, status, changed_at, note)
         SELECT 'O-' || o, 'PACKAGING', now(), 'moved' FROM generate_series(2, 3000, 10) o;
         INSERT INTO order_log (order_id, status, changed_at, note)
         SELECT 'O-' || o, 'SUBMITTED', now() - interval '{backdated}', 'backdated return'
         FROM generate_series(3, 3000, 50) o;
         INSERT INTO order_log (order_id, status, changed_at, note)
         SELECT order_id, status, changed_at, 'resent' FROM order_log WHERE note = 'moved' AND order_id LIKE '%2';"
    ))
    .await
    .unwrap();
    let t = truth(&c, tiebreak).await;
    same("once after new rows", &once(&loaded).await, &t);
    same("statements after new rows", &statements(&loaded).await, &t);
    same("daemon after new rows", &daemon(&d).await, &t);

    // A row committed late: its serial (and time) lie below what the daemon has read.
    let mut late = common::connect(&url).await;
    let tx = late.transaction().await.unwrap();
    tx.batch_execute(
        "INSERT INTO order_log (order_id, status, changed_at, note)
         SELECT 'O-' || o, 'CLOSED', now(), 'late' FROM generate_series(1, 3000, 7) o",
    )
    .await
    .unwrap();
    c.batch_execute(
        "INSERT INTO order_log (order_id, status, changed_at, note)
         SELECT 'O-' || o, 'PRICE_CALCULATED', now(), 'meanwhile' FROM generate_series(4, 3000, 9) o",
    )
    .await
    .unwrap();
    daemon(&d).await;
    tx.commit().await.unwrap();
    let t = truth(&c, tiebreak).await;
    same("daemon after a late commit", &daemon(&d).await, &t);
    same("once after a late commit", &once(&loaded).await, &t);

    // A restart reads the log again and agrees; then goes on from there.
    drop(d);
    let d = Daemon::build(config(dir.path(), &url, tiebreak)).unwrap();
    same("daemon after a restart", &daemon(&d).await, &t);
    c.batch_execute(
        "INSERT INTO order_log (order_id, status, changed_at, note)
         SELECT 'O-' || o, 'SUBMITTED', now() - interval '2 hours', 'reopened' FROM generate_series(1, 3000, 7) o",
    )
    .await
    .unwrap();
    let t = truth(&c, tiebreak).await;
    same("daemon after reopened orders", &daemon(&d).await, &t);
    same("once after reopened orders", &once(&loaded).await, &t);
    same(
        "statements after reopened orders",
        &statements(&loaded).await,
        &t,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_log_without_tiebreak_matches_the_ground_truth() {
    log_matches_the_ground_truth(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_log_with_serial_tiebreak_matches_the_ground_truth() {
    log_matches_the_ground_truth(true).await;
}

/// `missing` rules read a status log by the same semantics on either side: as the source (kept
/// state in the daemon, one statement in `once`) and as the database looked up (its latest row
/// per id, by index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_rules_read_a_status_log_on_either_side() {
    let url = common::pg().fresh_db();
    let c = common::connect(&url).await;
    c.batch_execute(
        "CREATE TABLE order_log (id bigserial PRIMARY KEY, order_id text, status text, changed_at timestamptz);
         CREATE INDEX ON order_log (status, changed_at);
         CREATE INDEX ON order_log (order_id, changed_at);
         -- A: approved 2 h ago, a comment since: approved for 2 h, absent from MES -> lost.
         -- B: approved 2 h ago, in MES -> fine. C: approved, then moved on -> not a candidate.
         -- D: approved only 5 min ago (it went back) -> too young.
         INSERT INTO order_log (order_id, status, changed_at) VALUES
           ('A', 'MANUFACTURING_APPROVED', now() - interval '2 hours'),
           ('A', 'MANUFACTURING_APPROVED', now() - interval '10 minutes'),
           ('B', 'MANUFACTURING_APPROVED', now() - interval '2 hours'),
           ('C', 'MANUFACTURING_APPROVED', now() - interval '2 hours'),
           ('C', 'MANUFACTURING_STARTED', now() - interval '1 hour'),
           ('D', 'MANUFACTURING_APPROVED', now() - interval '3 hours'),
           ('D', 'PRICE_CALCULATED', now() - interval '2 hours'),
           ('D', 'MANUFACTURING_APPROVED', now() - interval '5 minutes');
         CREATE TABLE mes_orders (order_id text PRIMARY KEY, status text, changed_at timestamptz);
         CREATE INDEX ON mes_orders (status, changed_at);
         INSERT INTO mes_orders VALUES ('B', 'MANUFACTURING_STARTED', now() - interval '1 hour'),
           ('X', 'PACKAGING', now() - interval '2 hours'), ('Y', 'PACKAGING', now() - interval '2 hours');
         -- The shop's log knows X as shipped back then, but its latest row says PACKAGING again:
         -- X agrees with MES; Y's latest shop row is CLOSED: a status mismatch.
         INSERT INTO order_log (order_id, status, changed_at) VALUES
           ('X', 'SHIPPED', now() - interval '5 hours'), ('X', 'PACKAGING', now() - interval '4 hours'),
           ('Y', 'PACKAGING', now() - interval '5 hours'), ('Y', 'CLOSED', now() - interval '4 hours'),
           ('Y', 'CLOSED', now() - interval '4 hours');",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: \"{url}?sslmode=disable\"\n    orders: {{ history_table: order_log, id: order_id, status: status, entered_at: changed_at, tiebreak: id }}\n  mes:\n    url: \"{url}?sslmode=disable\"\n    orders: {{ table: mes_orders, id: order_id, status: status, entered_at: changed_at }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: approved_missing_in_mes\n    kind: missing\n    source: shop\n    missing_in: mes\n    status: MANUFACTURING_APPROVED\n    older_than: 15m\n  - name: packaging_disagrees\n    kind: missing\n    source: mes\n    missing_in: shop\n    status: PACKAGING\n    older_than: 1h\n    expect_status: [PACKAGING, SHIPPED]\n",
    )
    .unwrap();
    let loaded = orderwatch::configure::load(&dir.path().join("orderwatch.yaml")).unwrap();
    type Found = Vec<(String, Option<String>)>;
    let summary = |results: &[(String, Outcome)]| -> Vec<(String, Found)> {
        results
            .iter()
            .map(|(r, o)| {
                (
                    r.clone(),
                    o.findings
                        .iter()
                        .map(|f| (f.order_id.clone(), f.other_status.clone()))
                        .collect(),
                )
            })
            .collect()
    };
    let want = vec![
        (
            "approved_missing_in_mes".to_string(),
            vec![("A".to_string(), None)],
        ),
        (
            "packaging_disagrees".to_string(),
            vec![("Y".to_string(), Some("CLOSED".to_string()))],
        ),
    ];
    assert_eq!(summary(&once(&loaded).await), want, "once");
    assert_eq!(summary(&statements(&loaded).await), want, "statements");
    let d =
        Daemon::build(orderwatch::configure::load(&dir.path().join("orderwatch.yaml")).unwrap())
            .unwrap();
    assert_eq!(summary(&daemon(&d).await), want, "daemon");
}

/// A nullable tiebreak: a NULL orders before any value, the same in the statements and in the
/// kept state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_tiebreak_orders_first_everywhere() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE order_log (seq int, order_id text, status text, changed_at timestamptz);
             CREATE INDEX ON order_log (status, changed_at);
             CREATE INDEX ON order_log (order_id, changed_at);
             CREATE INDEX ON order_log (changed_at);
             INSERT INTO order_log VALUES
               (NULL, 'A', 'SUBMITTED', now() - interval '2 hours'), (1, 'A', 'PACKAGING', now() - interval '2 hours'),
               (NULL, 'B', 'PACKAGING', now() - interval '2 hours'), (2, 'B', 'SUBMITTED', now() - interval '2 hours'),
               (3, 'C', 'PACKAGING', now() - interval '3 hours'), (NULL, 'C', 'SUBMITTED', now() - interval '2 hours');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  log:\n    url: \"{url}?sslmode=disable\"\n    orders: {{ history_table: order_log, id: order_id, status: status, entered_at: changed_at, tiebreak: seq }}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let loaded = orderwatch::configure::load(&dir.path().join("orderwatch.yaml")).unwrap();
    let ids = |r: &[(String, Outcome)]| -> Vec<String> {
        r[0].1.findings.iter().map(|f| f.order_id.clone()).collect()
    };
    assert_eq!(ids(&once(&loaded).await), ["B", "C"], "once");
    assert_eq!(ids(&statements(&loaded).await), ["B", "C"], "statements");
    let d =
        Daemon::build(orderwatch::configure::load(&dir.path().join("orderwatch.yaml")).unwrap())
            .unwrap();
    assert_eq!(ids(&daemon(&d).await), ["B", "C"], "daemon");
}

/// `/readyz` says not ready until the daemon has read the status log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_status_log_is_read() {
    let url = common::pg().fresh_db();
    let c = common::connect(&url).await;
    c.batch_execute(LOG).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &url, true);
    // The log is locked: the start-up read waits.
    let mut locker = common::connect(&url).await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE order_log IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let running = common::Running::start(dir.path()).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let body = running.get("/readyz").await;
    assert!(body.contains("\"ready\":false"), "{body}");
    tx.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let body = running.get("/readyz").await;
        if body.contains("\"ready\":true") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    running.stop().await;
}

/// A reload keeps an unchanged status-log source and its kept state: the log is not read
/// again (here it could not be: it is locked), and the daemon stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_status_log_state() {
    let url = common::pg().fresh_db();
    let c = common::connect(&url).await;
    c.batch_execute(LOG).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  log:\n    url: \"{url}?sslmode=disable\"\n    statement_timeout: 1s\n    orders: {{ history_table: order_log, id: order_id, status: status, entered_at: changed_at, tiebreak: id }}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let loaded = orderwatch::configure::load(&dir.path().join("orderwatch.yaml")).unwrap();
    let daemon = Daemon::build(loaded).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (hup, hups) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(async move {
        orderwatch::serve::serve(
            daemon,
            listener,
            async move {
                let _ = stop_rx.await;
            },
            Some(hups),
        )
        .await
        .unwrap();
    });
    let readyz = || async {
        common::http_client()
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let wait = |want: &'static str| {
        let readyz = &readyz;
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let body = readyz().await;
                if body.contains(want) {
                    return body;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no {want} in {body}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    wait("\"ready\":true").await;
    let mut locker = common::connect(&url).await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE order_log IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // A rule file edit: the source is unchanged.
    std::fs::write(
        dir.path().join("rules.yaml"),
        RULES.replace("older_than: 30m", "older_than: 40m"),
    )
    .unwrap();
    hup.send(()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let body = wait("\"ready\":").await;
    assert!(
        body.contains("\"ready\":true"),
        "the reload read the log again: {body}"
    );
    tx.commit().await.unwrap();
    let _ = stop_tx.send(());
    tokio::time::timeout(std::time::Duration::from_secs(30), task)
        .await
        .expect("stops")
        .unwrap();
}
