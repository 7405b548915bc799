//! The Grafana dashboards in `grafana/dashboards/`: provisionable as files (a `datasource`
//! variable, no `${DS_…}` inputs), every expression parses (real `promtool`), and every metric
//! they query is one a live daemon exports (a real daemon on a real PostgreSQL with every kind
//! of rule and a direct channel, so that every metric family has samples).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Running;
use regex::Regex;
use serde_json::Value;

/// Every dashboard file.
fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains("${DS_") && !text.contains("__inputs"),
                "{}: ${{DS_…}} inputs break file provisioning",
                path.display()
            );
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            out.push((path, v));
        }
    }
    assert_eq!(out.len(), 3, "order flow, services, health");
    out
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// (where, PromQL) of every panel target and every query variable.
fn expressions(d: &Value) -> Vec<(String, String)> {
    let title = d["title"].as_str().unwrap();
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: {t}"));
            out.push((format!("{title} / {}", p["title"]), expr.to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().unwrap();
            // label_values(METRIC, label) → the metric must exist too.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(m, _)| m.to_string())
                .unwrap_or_else(|| panic!("{title}: variable query {q}"));
            out.push((format!("{title} / variable {}", v["name"]), inner));
        }
    }
    out
}

/// The metric names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let strip = |re: &str, s: &str| Regex::new(re).unwrap().replace_all(s, " ").into_owned();
    let mut s = strip(r#""(?:[^"\\]|\\.)*""#, expr);
    s = strip(r"\{[^}]*\}", &s);
    s = strip(r"\[[^\]]*\]", &s);
    s = strip(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
        &s,
    );
    s = strip(r"\boffset\s+\S+", &s);
    let keywords = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
    Regex::new(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
        .unwrap()
        .captures_iter(&s)
        .filter(|c| c.get(2).is_none())
        .map(|c| c[1].to_string())
        .filter(|n| !keywords.contains(&n.to_lowercase().as_str()))
        .collect()
}

#[test]
fn metric_names_are_found_in_promql() {
    let got = metric_names(
        r#"histogram_quantile(0.95, sum by (le, rule) (rate(a_bucket{rule=~"$rule", x="b c"}[$__rate_interval]))) / on(i) group_left(v) b_total offset 5m > 0 and c or vector(0)"#,
    );
    assert_eq!(
        got,
        BTreeSet::from(["a_bucket".into(), "b_total".into(), "c".into()])
    );
}

#[test]
fn dashboards_are_file_provisionable() {
    for (path, d) in dashboards() {
        let name = path.display();
        assert!(
            d["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: uid"
        );
        let vars = d["templating"]["list"].as_array().unwrap();
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{name}");
        assert_eq!(ds["query"], "prometheus", "{name}");
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}: {v}");
        }
        for p in panels(&d) {
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: panel {}",
                p["title"]
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(
                !targets.is_empty(),
                "{name}: panel {} has no query",
                p["title"]
            );
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {t}");
            }
        }
    }
    // The provisioning files exist and point where the README says.
    let prov = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/provisioning");
    let ds = std::fs::read_to_string(prov.join("datasources/orderwatch.yaml")).unwrap();
    assert!(ds.contains("type: prometheus"));
    let dash = std::fs::read_to_string(prov.join("dashboards/orderwatch.yaml")).unwrap();
    assert!(dash.contains("type: file") && dash.contains("path: "));
}

#[test]
fn every_expression_parses() {
    let Some(promtool) = common::require_bin("promtool", "prometheus") else {
        return;
    };
    // Grafana's variables as Grafana would fill them in.
    let durations = Regex::new(r"\$__(?:rate_interval|interval|range)").unwrap();
    let vars = Regex::new(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?").unwrap();
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut n = 0;
    for (_, d) in dashboards() {
        for (_, expr) in expressions(&d) {
            let e = durations.replace_all(&expr, "1m");
            let e = vars.replace_all(&e, ".*");
            n += 1;
            rules.push_str(&format!(
                "      - record: dashboard:expr_{n}\n        expr: {}\n",
                serde_json::to_string(&e).unwrap()
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboards.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(n > 20, "{n} expressions");
}

const SHOP: &str = "
CREATE TABLE orders (id text PRIMARY KEY, customer_email text, order_type text,
  status text NOT NULL, status_changed_at timestamptz NOT NULL);
CREATE INDEX ON orders (status, status_changed_at);
INSERT INTO orders VALUES
  ('JW-1', 'anna@example.com', 'ring', 'SUBMITTED', now() - interval '3 hours'),
  ('JW-2', 'boris@example.com', 'ring', 'MANUFACTURING_APPROVED', now() - interval '2 hours'),
  ('JW-3', 'vera@example.com', 'ring', 'CLOSED', now() - interval '9 days');
";
const MES: &str = "
CREATE TABLE production_orders (order_id text PRIMARY KEY, order_type text,
  status text NOT NULL, status_changed_at timestamptz NOT NULL);
CREATE INDEX ON production_orders (status, status_changed_at);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_exported_by_a_live_daemon() {
    let shop = common::pg().fresh_db();
    let mes = common::pg().fresh_db();
    common::connect(&shop)
        .await
        .batch_execute(SHOP)
        .await
        .unwrap();
    common::connect(&mes)
        .await
        .batch_execute(MES)
        .await
        .unwrap();
    let svc = common::TestService::start().await;
    let hook = common::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let model = "id: id, status: status, entered_at: status_changed_at, labels: [order_type]";
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\ngauges_interval: 1s\n\
             sources:\n\
             \x20 shop:\n    url: \"{shop}?sslmode=disable\"\n    terminal_statuses: [CLOSED]\n\
             \x20   orders: {{ table: orders, {model} }}\n\
             \x20 mes:\n    url: \"{mes}?sslmode=disable\"\n\
             \x20   orders: {{ table: production_orders, {} }}\n\
             receivers:\n  hook:\n    webhook: {{ url: \"{}/hook\" }}\n\
             route:\n  receiver: hook\n  group_wait: 1s\n  group_interval: 1s\n",
            model.replace("id: id", "id: order_id"),
            hook.url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        format!(
            "rules:\n\
             \x20 - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n\
             \x20 - name: approved_missing_in_mes\n    kind: missing\n    source: shop\n    missing_in: mes\n\
             \x20   status: MANUFACTURING_APPROVED\n    older_than: 15m\n    interval: 1s\n\
             \x20 - name: shop_db_slow_queries\n    kind: slow_queries\n    source: shop\n    older_than: 5s\n    interval: 1s\n\
             \x20 - name: http_5xx\n    kind: http_errors\n    scrape:\n      - {{ service: shop-api, url: \"{}\" }}\n\
             \x20   window: 2s\n    threshold: 0.05\n    interval: 1s\n",
            svc.metrics_url()
        ),
    )
    .unwrap();
    let d = Running::start(dir.path()).await;

    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    for (_, dash) in dashboards() {
        for (place, expr) in expressions(&dash) {
            for m in metric_names(&expr) {
                wanted.insert((m, place.clone()));
            }
        }
    }
    assert!(wanted.len() > 20);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let missing = loop {
        svc.add("shop-api", 200, 20);
        svc.add("shop-api", 500, 2);
        let text = d.get("/metrics").await;
        let exported: BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(m, _)| !exported.contains(m.as_str()))
            .map(|(m, place)| format!("{m} (in {place})"))
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    d.stop().await;
    assert!(
        missing.is_empty(),
        "dashboards query metrics the daemon does not export:\n{}",
        missing.join("\n")
    );
}
