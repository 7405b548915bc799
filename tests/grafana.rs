//! The Grafana dashboards in `grafana/dashboards/`: provisionable as files (a `datasource`
//! variable, no `${DS_…}` inputs), every expression parses (real `promtool`), every metric
//! they query is one a live daemon exports and every family it exports is on a dashboard (a
//! real daemon on a real PostgreSQL with every kind of rule and a direct channel, so that every
//! metric family has samples), and the lost-order panels select exactly the `missing` rules.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Running;
use regex::Regex;
use serde_json::Value;

/// The dashboard files and their uids: links and bookmarks point at the uid, so it never
/// changes by accident.
const UIDS: [(&str, &str); 3] = [
    ("order-flow.json", "orderwatch-order-flow"),
    ("orderwatch-health.json", "orderwatch-health"),
    ("services.json", "orderwatch-services"),
];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every dashboard file with its JSON, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo("grafana/dashboards")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                !text.contains("${DS_") && !text.contains("__inputs"),
                "{name}: ${{DS_…}} import inputs break file provisioning; use ${{datasource}}"
            );
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
            out.push((name, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, UIDS.map(|(f, _)| f), "the dashboard files");
    out
}

/// Every panel, rows' nested (collapsed) panels included, at any depth.
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// (where, PromQL as written) of every panel target and every query variable.
fn expressions(d: &Value) -> Vec<(String, String)> {
    let title = d["title"].as_str().unwrap();
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| panic!("{title} / {}: target without expr: {t}", p["title"]));
            out.push((format!("{title} / {}", p["title"]), expr.to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            // label_values(METRIC, label): the metric must exist too.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(m, _)| m.to_string())
                .unwrap_or_else(|| panic!("{title}: variable query {q} names no metric"));
            out.push((format!("{title} / variable {}", v["name"]), inner));
        }
    }
    out
}

/// `expr` with Grafana's variables filled in as Grafana would: built-in intervals and ranges
/// as durations or numbers, a textbox/custom/constant variable with its current value (so a
/// default regex is checked too), any other variable with `.*` (all values; they are used in
/// `=~` matchers). A variable the dashboard does not define is an error: Grafana would leave
/// it in the query as it is.
fn substitute(d: &Value, place: &str, expr: &str) -> String {
    let mut values: BTreeMap<String, String> = [
        ("__rate_interval", "1m"),
        ("__interval", "1m"),
        ("__range", "6h"),
        ("__interval_ms", "60000"),
        ("__rate_interval_ms", "60000"),
        ("__range_s", "21600"),
        ("__range_ms", "21600000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for v in d["templating"]["list"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap().to_string();
        let current = match &v["current"]["value"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(a) => a.first().and_then(|s| s.as_str()).map(str::to_string),
            _ => None,
        };
        let value = match v["type"].as_str().unwrap() {
            "textbox" | "custom" | "constant" => current
                .or_else(|| v["query"].as_str().map(str::to_string))
                .unwrap_or_else(|| panic!("{place}: variable {name} has no value")),
            "interval" => "1m".to_string(),
            _ => ".*".to_string(),
        };
        values.insert(name, value);
    }
    // ${name}, ${name:format}, [[name]], $name; `$1` (a regex group) is not a variable.
    let vars =
        Regex::new(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$([A-Za-z_]\w*)").unwrap();
    vars.replace_all(expr, |c: &regex::Captures| {
        let name = c.get(1).or(c.get(2)).or(c.get(3)).unwrap().as_str();
        values
            .get(name)
            .unwrap_or_else(|| panic!("{place}: `${name}` is no variable of the dashboard: {expr}"))
            .clone()
    })
    .into_owned()
}

/// One PromQL token, as far as finding metric names needs.
#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Number,
    /// An operator run (`=~`, `!=`, `>=`, `+` …) or one bracket, comma or `@`.
    Punct(String),
}

fn lex(expr: &str) -> Vec<Tok> {
    let cs: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            while i < cs.len() && cs[i] != c {
                if cs[i] == '\\' && c != '`' && i + 1 < cs.len() {
                    i += 1;
                }
                s.push(cs[i]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c.is_ascii_digit()
            || (c == '.' && cs.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers, hex, exponents (1e-3) and durations (5m, 1h30m).
            let hex = c == '0' && cs.get(i + 1).is_some_and(|x| *x == 'x' || *x == 'X');
            i += 1;
            while i < cs.len() {
                let x = cs[i];
                let exp_sign = !hex
                    && (x == '+' || x == '-')
                    && matches!(cs[i - 1], 'e' | 'E')
                    && cs.get(i + 1).is_some_and(char::is_ascii_digit);
                if x.is_ascii_alphanumeric() || x == '_' || x == '.' || exp_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Tok::Number);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_' || cs[i] == ':') {
                i += 1;
            }
            out.push(Tok::Ident(cs[start..i].iter().collect()));
        } else if "=!~<>".contains(c) {
            let start = i;
            while i < cs.len() && "=!~<>".contains(cs[i]) {
                i += 1;
            }
            out.push(Tok::Punct(cs[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(c.to_string()));
            i += 1;
        }
    }
    out
}

/// The metric names a PromQL expression reads: identifiers that are not functions (followed
/// by `(`), aggregations, keywords, label names inside `{…}` or in `by (…)`/`on (…)` lists,
/// or durations inside `[…]`; plus `{__name__="…"}` selectors. Histogram series keep their
/// `_bucket`/`_sum`/`_count` suffix: those are the sample names the daemon exports.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const AGGREGATIONS: [&str; 14] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 8] = [
        "and", "or", "unless", "bool", "atan2", "offset", "inf", "nan",
    ];

    let toks = lex(expr);
    let punct = |i: usize, p: &str| matches!(toks.get(i), Some(Tok::Punct(x)) if x == p);
    // Index just past the bracket that closes the one at `i`.
    let skip_group = |mut i: usize, open: &str, close: &str| {
        let mut depth = 0;
        while i < toks.len() {
            if punct(i, open) {
                depth += 1;
            } else if punct(i, close) {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            i += 1;
        }
        i
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct(p) if p == "[" => i = skip_group(i, "[", "]"),
            Tok::Punct(p) if p == "{" => {
                // Label matchers: only `__name__="x"` names a metric.
                let end = skip_group(i, "{", "}");
                for w in toks[i..end].windows(3) {
                    if let [Tok::Ident(l), Tok::Punct(op), Tok::Str(v)] = w
                        && l == "__name__"
                        && op == "="
                    {
                        names.insert(v.clone());
                    }
                }
                i = end;
            }
            Tok::Ident(id) => {
                let lower = id.to_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    i += 1;
                    if punct(i, "(") {
                        i = skip_group(i, "(", ")");
                    }
                } else if lower == "offset" {
                    // `offset 5m` / `offset -5m`: the duration lexes as a number.
                    i += 1;
                } else if punct(i + 1, "(")
                    || AGGREGATIONS.contains(&lower.as_str())
                    || KEYWORDS.contains(&lower.as_str())
                {
                    i += 1;
                } else {
                    names.insert(id.clone());
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_promql() {
    let cases: [(&str, &[&str]); 6] = [
        (
            r#"histogram_quantile(0.95, sum by (le, rule) (rate(a_bucket{rule=~"$rule", x="b c}"}[1m]))) / on(i) group_left(v) b_total offset 5m > 0 and c or vector(0)"#,
            &["a_bucket", "b_total", "c"],
        ),
        (
            "sum(rate(x_total[5m:1m])) without (instance) / ignoring (a) group_right y",
            &["x_total", "y"],
        ),
        // Keywords and aggregations are case-insensitive; an exponent or hex is a number.
        (
            "SUM BY (a) (m1) * 1e-3 + 0x1f - Inf > bool NaN unless m2 @ start()",
            &["m1", "m2"],
        ),
        (
            "label_replace(up{job='a'}, \"dst\", \"$1\", `src`, \"(.*)\") # a comment naming z",
            &["up"],
        ),
        (
            r#"{__name__="via_name", job="j"} == on() group_left w"#,
            &["via_name", "w"],
        ),
        ("count(x) by (le) - time()", &["x"]),
    ];
    for (expr, want) in cases {
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(metric_names(expr), want, "{expr}");
    }
}

#[test]
fn grafana_variables_are_substituted() {
    let d = serde_json::json!({"templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus"},
        {"name": "rule", "type": "query", "current": {"value": ["$__all"]}},
        {"name": "lost", "type": "textbox", "query": "x_.*", "current": {"value": "y_.*"}},
    ]}});
    assert_eq!(
        substitute(
            &d,
            "t",
            r#"rate(m{rule=~"${rule:regex}",r=~"[[lost]]",s=~"$lost"}[$__rate_interval]) * $__range_s + "$1""#
        ),
        r#"rate(m{rule=~".*",r=~"y_.*",s=~"y_.*"}[1m]) * 21600 + "$1""#
    );
    let undefined = std::panic::catch_unwind(|| substitute(&d, "t", "m{a=~\"$nope\"}"));
    assert!(undefined.is_err(), "an undefined variable is an error");
}

#[test]
fn dashboards_are_file_provisionable() {
    let mut uids = BTreeSet::new();
    for (name, d) in dashboards() {
        let uid = d["uid"].as_str().unwrap_or_default();
        let want = UIDS.iter().find(|(f, _)| *f == name).unwrap().1;
        assert_eq!(uid, want, "{name}: the uid is what links and bookmarks use");
        assert!(
            uid.len() <= 40 && uids.insert(uid.to_string()),
            "{name}: uid {uid}"
        );
        assert!(d["id"].is_null(), "{name}: a file dashboard has no id");
        assert!(
            d["schemaVersion"]
                .as_u64()
                .is_some_and(|v| (36..=41).contains(&v)),
            "{name}: schemaVersion of Grafana 10/11"
        );
        assert!(
            d["tags"].as_array().unwrap().contains(&"orderwatch".into()),
            "{name}: tag orderwatch"
        );
        assert_eq!(d["refresh"], "30s", "{name}");
        assert_eq!(d["time"]["from"], "now-6h", "{name}");

        let vars = d["templating"]["list"].as_array().unwrap();
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{name}");
        assert_eq!(ds["query"], "prometheus", "{name}");
        let is_ours = |ds: &Value| ds["type"] == "prometheus" && ds["uid"] == "${datasource}";
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert!(is_ours(&v["datasource"]), "{name}: variable {}", v["name"]);
        }
        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let title = &p["title"];
            assert!(
                p["id"].as_u64().is_some_and(|id| ids.insert(id)),
                "{name}: panel {title}: ids are unique"
            );
            assert!(p["gridPos"]["w"].is_u64(), "{name}: panel {title}: gridPos");
            if p["type"] == "row" {
                continue;
            }
            assert!(is_ours(&p["datasource"]), "{name}: panel {title}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: panel {title} has no query");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(is_ours(&t["datasource"]), "{name}: panel {title}: {t}");
                assert!(
                    t["refId"].as_str().is_some_and(|r| refs.insert(r)),
                    "{name}: panel {title}: refIds are unique"
                );
            }
        }
    }

    // The provisioning files are what Grafana reads and point where the README says.
    let yaml = |rel: &str| -> Value {
        let text = std::fs::read_to_string(repo(rel)).unwrap();
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let ds = yaml("grafana/provisioning/datasources/orderwatch.yaml");
    assert_eq!(ds["apiVersion"], 1);
    assert_eq!(ds["datasources"][0]["type"], "prometheus");
    assert!(ds["datasources"][0]["url"].as_str().is_some());
    let dash = yaml("grafana/provisioning/dashboards/orderwatch.yaml");
    assert_eq!(dash["apiVersion"], 1);
    let provider = &dash["providers"][0];
    assert_eq!(provider["type"], "file");
    assert_eq!(provider["folder"], "orderwatch");
    let path = provider["options"]["path"].as_str().unwrap();
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    assert!(readme.contains(path), "README names {path}");
}

/// The lost-order panels filter `orderwatch_stuck_orders` by rule name (the metrics carry no
/// kind): the `lost_rules` default must pick every shipped `missing` rule and nothing else.
#[test]
fn lost_rules_default_selects_the_missing_rules() {
    let (_, d) = dashboards()
        .into_iter()
        .find(|(n, _)| n == "order-flow.json")
        .unwrap();
    let var = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "lost_rules")
        .expect("order-flow.json: lost_rules variable");
    let default = var["current"]["value"].as_str().unwrap();
    assert_eq!(
        var["query"], default,
        "the textbox's default and current value"
    );
    // Prometheus anchors regex matchers.
    let re = Regex::new(&format!("^(?:{default})$")).unwrap();
    let mut checked = 0;
    for e in std::fs::read_dir(repo("rules")).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_saphyr::from_str(&text).unwrap();
        for r in v["rules"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let missing = r["kind"] == "missing";
            assert_eq!(
                re.is_match(name),
                missing,
                "{}: rule {name} (kind {}): lost_rules `{default}` must match exactly the \
                 missing rules",
                path.display(),
                r["kind"]
            );
            checked += usize::from(missing);
        }
    }
    assert!(checked >= 3, "{checked} missing rules");
}

#[test]
fn every_expression_parses() {
    let Some(promtool) = common::require_bin("promtool", "prometheus") else {
        return;
    };
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    // Rule n (from 1) is places[n - 1]: promtool names the rule by its number.
    let mut places = Vec::new();
    for (_, d) in dashboards() {
        for (place, expr) in expressions(&d) {
            let e = substitute(&d, &place, &expr);
            places.push(format!("{place}: {e}"));
            rules.push_str(&format!(
                "      - record: dashboard:expr_{}\n        expr: {}\n",
                places.len(),
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
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let culprits: BTreeSet<&str> = Regex::new(r"rule (\d+)")
        .unwrap()
        .captures_iter(&report)
        .filter_map(|c| places.get(c[1].parse::<usize>().ok()? - 1))
        .map(String::as_str)
        .collect();
    assert!(
        out.status.success(),
        "promtool check rules failed on the dashboards' expressions:\n{report}\nthe \
         expressions (variables filled in):\n{}",
        culprits.into_iter().collect::<Vec<_>>().join("\n")
    );
    assert!(places.len() > 20, "{} expressions", places.len());
}

/// The sample names in a text exposition and the type of each family.
fn exposition(text: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut samples = BTreeSet::new();
    let mut types = BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            if let Some((family, kind)) = rest.split_once(' ') {
                types.insert(family.to_string(), kind.trim().to_string());
            }
        } else if !l.starts_with('#') && !l.is_empty() {
            samples.insert(l.split(['{', ' ']).next().unwrap().to_string());
        }
    }
    (samples, types)
}

/// The family a sample name belongs to: a histogram's or summary's `_bucket`, `_sum` and
/// `_count` series belong to the name without the suffix.
fn family_of(sample: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix)
            && types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
        {
            return base.to_string();
        }
    }
    sample.to_string()
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
-- A time in the future: no rule can judge it (orderwatch_orders_unjudgeable).
INSERT INTO production_orders VALUES ('JW-9', 'ring', 'PACKAGING', now() + interval '1 day');
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
    // A service for the http_errors rule, and a webhook receiver as a direct channel so that
    // the notification counters, queue length and latency get samples.
    let svc = common::TestService::start().await;
    let hook = common::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let model = "id: id, status: status, entered_at: status_changed_at, labels: [order_type]";
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\ngauges_interval: 1s\n\
             flows:\n  price_calculation: [SUBMITTED, PRICE_CALCULATED]\n\
             sources:\n\
             \x20 shop:\n    url: \"{shop}?sslmode=disable\"\n    terminal_statuses: [CLOSED]\n    flow_label: order_type\n\
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
    let shop_db = common::connect(&shop).await;

    // metric → the panels that read it.
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, dash) in dashboards() {
        for (place, expr) in expressions(&dash) {
            for m in metric_names(&substitute(&dash, &place, &expr)) {
                wanted.entry(m).or_default().insert(place.clone());
            }
        }
    }
    assert!(wanted.len() >= 15, "{wanted:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    let (missing, text) = loop {
        svc.add("shop-api", 200, 20);
        svc.add("shop-api", 500, 2);
        // Orders arrive and get their price a few reads later: the order flow families.
        n += 1;
        shop_db
            .execute(
                "INSERT INTO orders VALUES ('F-' || $1::int, NULL, 'ring', 'SUBMITTED', now())",
                &[&n],
            )
            .await
            .unwrap();
        shop_db
            .execute(
                "UPDATE orders SET status = 'PRICE_CALCULATED', status_changed_at = now() WHERE id = 'F-' || ($1::int - 4)",
                &[&n],
            )
            .await
            .unwrap();
        let text = d.get("/metrics").await;
        let (samples, types) = exposition(&text);
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(m, _)| !samples.contains(m.as_str()))
            .map(|(m, places)| {
                let hint = match types.get(m.as_str()).map(String::as_str) {
                    Some(t @ ("histogram" | "summary")) => {
                        format!(" [a {t}: query {m}_bucket, _sum or _count]")
                    }
                    _ => String::new(),
                };
                let places: Vec<&str> = places.iter().map(String::as_str).collect();
                format!("{m}{hint} (in {})", places.join("; "))
            })
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break (missing, text);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    d.stop().await;
    assert!(
        missing.is_empty(),
        "dashboards query metrics the daemon does not export:\n{}\n\nit exports:\n{}",
        missing.join("\n"),
        exposition(&text)
            .0
            .into_iter()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The other way round: every orderwatch family the daemon exports is on a dashboard.
    let (samples, types) = exposition(&text);
    let shown: BTreeSet<String> = wanted.keys().map(|m| family_of(m, &types)).collect();
    let unshown: BTreeSet<String> = samples
        .iter()
        .map(|s| family_of(s, &types))
        .filter(|f| f.starts_with("orderwatch_") && !shown.contains(f))
        .collect();
    assert!(
        unshown.is_empty(),
        "metric families on no dashboard (add a panel to grafana/dashboards/): {unshown:?}"
    );

    // Series only for configured sources: the http_errors rule's `scrape` is none.
    assert!(
        !text.contains("source=\"scrape\""),
        "a series for a source that does not exist:\n{text}"
    );

    // Lost orders are stuck_orders of the missing rule: JW-2 is approved and absent from MES.
    assert!(
        text.lines()
            .any(|l| l.starts_with("orderwatch_stuck_orders{")
                && l.contains("rule=\"approved_missing_in_mes\"")
                && l.ends_with(" 1")),
        "the lost-order panels' series: no stuck_orders of the missing rule in:\n{text}"
    );
}

/// Every panel of every dashboard shows data, and no NaN, against the demo: its databases,
/// its simulated services (5xx), the daemon pushing to a real Alertmanager, and a real
/// Prometheus scraping both as the shipped scrape config does (jobs `orderwatch` and
/// `services`) with the shipped alerting rules loaded, all of which evaluate without error.
/// A panel that depends on an optional part says so in its description ("Empty without …").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_has_data_against_the_demo() {
    let Some(am) = common::Alertmanager::start(None).await else {
        return;
    };
    let env = orderwatch::demo::start_env("127.0.0.1:0", 20_000, Some(&am.url()))
        .await
        .expect("demo environment");
    // The demo's simulator moves orders on, as `orderwatch demo` does: the order flow panels.
    let (sim_stop, sim_stopped) = tokio::sync::oneshot::channel::<()>();
    let sim = tokio::spawn(orderwatch::demo::simulator::run(
        common::connect(&env.shop_url).await,
        common::connect(&env.mes_url).await,
        orderwatch::demo::simulator::SimulatorConfig::default(),
        async move {
            let _ = sim_stopped.await;
        },
    ));
    let d = Running::start(env.dir.path()).await;
    let daemon = [d.url.trim_start_matches("http://").to_string()];
    let services: Vec<String> = env.services.iter().map(|s| s.addr.to_string()).collect();
    let rules = std::fs::read_to_string(repo("alerts/orderwatch.yml")).unwrap();
    let Some(prom) =
        common::Prometheus::start_jobs(&[("orderwatch", &daemon), ("services", &services)], &rules)
            .await
    else {
        return;
    };

    // (dashboard / panel, its expressions) of every panel with a query, and the variables'
    // `label_values(metric, label)` queries.
    let mut panels_q: Vec<(String, bool, Vec<String>)> = Vec::new();
    let mut variables: Vec<(String, String)> = Vec::new();
    let lv = Regex::new(r"^label_values\((\w+(?:\{[^}]*\})?),\s*(\w+)\)$").unwrap();
    for (_, dash) in dashboards() {
        let title = dash["title"].as_str().unwrap().to_string();
        for p in panels(&dash) {
            let exprs: Vec<String> = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let place = format!("{title} / {}", p["title"]);
                    substitute(&dash, &place, t["expr"].as_str().unwrap())
                })
                .collect();
            if exprs.is_empty() {
                continue;
            }
            let optional = p["description"]
                .as_str()
                .is_some_and(|d| d.contains("Empty without"));
            panels_q.push((format!("{title} / {}", p["title"]), optional, exprs));
        }
        for v in dash["templating"]["list"].as_array().unwrap() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["query"]["query"].as_str().unwrap();
            let c = lv
                .captures(q)
                .unwrap_or_else(|| panic!("{title}: variable query {q}"));
            let expr = substitute(&dash, &title, &format!("count by ({}) ({})", &c[2], &c[1]));
            variables.push((format!("{title} / ${}", v["name"].as_str().unwrap()), expr));
        }
    }
    assert!(panels_q.len() >= 25, "{}", panels_q.len());

    // No sample of any query is NaN or infinite; a panel needs one query with samples.
    let finite = |result: &Value| {
        result.as_array().is_some_and(|a| {
            a.iter().all(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            })
        })
    };
    let has_data =
        |result: &Value| finite(result) && result.as_array().is_some_and(|a| !a.is_empty());
    // Rates need a few scrapes, the 5xx ratio a few evaluations: wait until every panel has
    // data, or say which do not.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let empty = loop {
        let mut empty = Vec::new();
        for (place, optional, exprs) in &panels_q {
            // A panel of an optional part may be empty, never NaN.
            if *optional {
                for e in exprs {
                    let r = prom.query(e).await;
                    if !finite(&r) {
                        empty.push(format!("{place}: {e} → {r}"));
                    }
                }
                continue;
            }
            let (mut any, mut all_finite) = (false, true);
            let mut results = Vec::new();
            for e in exprs {
                let r = prom.query(e).await;
                any |= has_data(&r);
                all_finite &= finite(&r);
                results.push(format!("{e} → {r}"));
            }
            if !any || !all_finite {
                empty.push(format!("{place}:\n  {}", results.join("\n  ")));
            }
        }
        for (place, e) in &variables {
            let r = prom.query(e).await;
            if !has_data(&r) {
                empty.push(format!("{place}: {e} → {r}"));
            }
        }
        if empty.is_empty() || tokio::time::Instant::now() > deadline {
            break empty;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(
        empty.is_empty(),
        "panels empty or NaN against the demo:\n{}",
        empty.join("\n")
    );
    // The 5xx panels see both simulated services.
    let services = prom
        .query("count by (service) (orderwatch_http_5xx_ratio)")
        .await;
    assert_eq!(services.as_array().unwrap().len(), 2, "{services}");

    // The shipped alerting rules evaluate against the real metrics without an error.
    let body: Value = common::http_client()
        .get(format!("{}/api/v1/rules", prom.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rules: Vec<&Value> = body["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(rules.len(), 17, "{body}");
    for r in rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    d.stop().await;
    let _ = sim_stop.send(());
    sim.await.unwrap().unwrap();
}
