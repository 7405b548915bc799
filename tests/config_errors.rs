//! Every config error names file, line and column and says what was expected.

use std::path::{Path, PathBuf};

use orderwatch::config::ConfigError;
use orderwatch::configure::load;

const MAIN: &str = r#"listen: 127.0.0.1:0
state_dir: state
rule_files: [rules/*.yaml]
sources:
  shop:
    url: postgres://orderwatch@127.0.0.1:5432/shop
    orders:
      table: orders
      id: id
      status: status
      entered_at: status_changed_at
      labels: [order_type]
"#;

const RULE: &str = r#"rules:
  - name: submitted_over_1h
    source: shop
    status: SUBMITTED
    older_than: 1h
"#;

/// Writes the main file and one rule file into a fresh directory and loads them.
fn try_load(
    main: &str,
    rules: &str,
) -> (
    tempfile::TempDir,
    Result<orderwatch::config::Loaded, ConfigError>,
) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("orderwatch.yaml"), main).unwrap();
    std::fs::write(dir.path().join("rules/a.yaml"), rules).unwrap();
    let r = load(&dir.path().join("orderwatch.yaml"));
    (dir, r)
}

/// Asserts exactly one problem, in `file` (relative name), at line:col, mentioning `needle`.
fn expect_error(main: &str, rules: &str, file: &str, line: u64, column: u64, needle: &str) {
    let (dir, r) = try_load(main, rules);
    let err = match r {
        Ok(_) => panic!("expected an error mentioning {needle:?}"),
        Err(e) => e,
    };
    let text = err.to_string();
    let p = err
        .problems
        .iter()
        .find(|p| p.message.contains(needle))
        .unwrap_or_else(|| panic!("no problem mentions {needle:?}: {text}"));
    let want: PathBuf = dir.path().join(file);
    assert_eq!(p.file, want, "{text}");
    assert_eq!((p.line, p.column), (line, column), "{text}");
    assert!(
        text.contains(&format!("{}:{line}:{column}: ", want.display())),
        "display must lead with file:line:col: {text}"
    );
}

#[test]
fn valid_config_loads_with_defaults() {
    let (dir, r) = try_load(MAIN, RULE);
    let l = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.rules.len(), 1);
    assert_eq!(
        l.config.state_dir,
        dir.path().join("state"),
        "relative to the config file"
    );
    let src = &l.config.sources["shop"].value;
    assert_eq!(src.statement_timeout.0, std::time::Duration::from_secs(10));
    assert_eq!(src.terminal_statuses, vec!["CLOSED".to_string()]);
    let rule = &l.rules[0].1;
    assert_eq!(rule.max_findings, 1000);
    assert_eq!(rule.max_alerts, 200);
}

#[test]
fn unknown_key_in_main_file() {
    let main = MAIN.replace("state_dir: state", "state_dir: state\nlisten_addr: x");
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        3,
        1,
        "unknown field `listen_addr`",
    );
}

#[test]
fn unknown_key_in_rule() {
    let rules = format!("{RULE}    olderthan: 2h\n");
    expect_error(
        MAIN,
        &rules,
        "rules/a.yaml",
        6,
        5,
        "unknown field `olderthan`",
    );
}

#[test]
fn malformed_yaml() {
    expect_error(
        MAIN,
        "rules:\n  - name: [x\n",
        "rules/a.yaml",
        2,
        11,
        "expected",
    );
}

#[test]
fn unknown_source() {
    expect_error(
        MAIN,
        &RULE.replace("source: shop", "source: crm"),
        "rules/a.yaml",
        3,
        13,
        "unknown source \"crm\"",
    );
}

#[test]
fn duplicate_rule_names() {
    let rules = format!("{RULE}{}", RULE.trim_start_matches("rules:\n"));
    expect_error(
        MAIN,
        &rules,
        "rules/a.yaml",
        6,
        11,
        "duplicate rule name \"submitted_over_1h\"",
    );
}

#[test]
fn bad_rule_name() {
    expect_error(
        MAIN,
        &RULE.replace("submitted_over_1h", "Submitted-1h"),
        "rules/a.yaml",
        2,
        11,
        "must match [a-z0-9_]+",
    );
}

#[test]
fn reserved_rule_name() {
    expect_error(
        MAIN,
        &RULE.replace("submitted_over_1h", "source_down"),
        "rules/a.yaml",
        2,
        11,
        "rule name \"source_down\" is reserved for orderwatch's own alerts",
    );
}

#[test]
fn bad_inhibit_matcher() {
    expect_error(
        &format!(
            "{MAIN}inhibit_rules:\n  - source_matchers: ['severity=\"critical\"']\n    target_matchers: ['severity=~\"(\"']\n    equal: [order_id]\n"
        ),
        RULE,
        "orderwatch.yaml",
        15,
        23,
        "inhibit_rules: matcher \"severity=~\\\"(\\\"\": bad regex",
    );
}

#[test]
fn identifier_that_is_not_plain_sql() {
    let main = MAIN.replace(
        "entered_at: status_changed_at",
        "entered_at: \"status_changed_at; DROP TABLE orders\"",
    );
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        11,
        19,
        "not a plain SQL identifier",
    );
    let main = MAIN.replace(
        "labels: [order_type]",
        "labels: [order_type, \"customer email\"]",
    );
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        12,
        28,
        "not a plain SQL identifier",
    );
}

#[test]
fn empty_status_list() {
    expect_error(
        MAIN,
        &RULE.replace("status: SUBMITTED", "status: []"),
        "rules/a.yaml",
        4,
        13,
        "at least one non-empty status",
    );
}

#[test]
fn zero_and_negative_durations() {
    expect_error(
        MAIN,
        &RULE.replace("older_than: 1h", "older_than: 0s"),
        "rules/a.yaml",
        5,
        17,
        "older_than must be greater than 0",
    );
    expect_error(
        MAIN,
        &RULE.replace("older_than: 1h", "older_than: -1h"),
        "rules/a.yaml",
        5,
        17,
        "invalid duration \"-1h\"",
    );
    expect_error(
        MAIN,
        &format!("{RULE}    interval: 0s\n"),
        "rules/a.yaml",
        6,
        15,
        "interval must be between 1s and 1day (is 0s)",
    );
}

/// Values that once panicked the daemon or silently disabled a rule are errors with their
/// place, in `check --offline` as in `run`.
#[test]
fn absurd_values_are_bounded() {
    let source = |extra: &str| MAIN.replace("    orders:\n", &format!("{extra}    orders:\n"));
    expect_error(
        &source("    pool_size: 18446744073709551615\n"),
        RULE,
        "orderwatch.yaml",
        6,
        5,
        "pool_size must be between 1 and 100",
    );
    expect_error(
        &source("    statement_timeout: 500us\n"),
        RULE,
        "orderwatch.yaml",
        6,
        5,
        "statement_timeout must be between 1ms and 1h (is 500us)",
    );
    // Counts point at the rule, durations at their own line.
    for (line, needle, at) in [
        (
            "    interval: 300000y\n",
            "too long: at most 10 years",
            "rules/a.yaml:6:",
        ),
        (
            "    interval: 1ns\n",
            "interval must be between 1s and 1day (is 1ns)",
            "rules/a.yaml:6:",
        ),
        (
            "    keep_firing_for: 500000000y\n",
            "too long: at most 10 years",
            "rules/a.yaml:6:",
        ),
        (
            "    max_findings: 18446744073709551615\n",
            "max_findings must be between 1 and 10000000",
            "rules/a.yaml:2:",
        ),
    ] {
        let (_dir, r) = try_load(MAIN, &format!("{RULE}{line}"));
        let text = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains(needle), "{line:?}: {text:?}");
        assert!(text.contains(at), "{line:?}: {text}");
    }
    let (_dir, r) = try_load(
        &MAIN.replace(
            "state_dir: state\n",
            "state_dir: state\nreceivers:\n  r:\n    webhook: { url: \"http://127.0.0.1:9/x\" }\nroute:\n  receiver: r\n  group_wait: 500000000y\n",
        ),
        RULE,
    );
    let text = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("too long: at most 10 years"), "{text}");
    assert!(text.contains("orderwatch.yaml:8:"), "{text}");
    let (_dir, r) = try_load(
        &MAIN.replace(
            "state_dir: state\n",
            "state_dir: state\nreceivers:\n  r:\n    webhook: { url: \"http://127.0.0.1:9/x\" }\nroute:\n  receiver: r\n  group_wait: 2d\n",
        ),
        RULE,
    );
    let text = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("group_wait must be 1day at most"), "{text}");
}

#[test]
fn bad_schedule_and_timezone() {
    expect_error(
        MAIN,
        &format!("{RULE}    schedule: \"61 * * * *\"\n"),
        "rules/a.yaml",
        6,
        15,
        "invalid cron schedule",
    );
    expect_error(
        MAIN,
        &format!("{RULE}    schedule: \"0 9 * * 1\"\n    timezone: Mars/Olympus\n"),
        "rules/a.yaml",
        7,
        15,
        "unknown time zone",
    );
    expect_error(
        MAIN,
        &format!("{RULE}    schedule: \"0 0 9 * * 1\"\n"),
        "rules/a.yaml",
        6,
        15,
        "must have 5 fields",
    );
}

#[test]
fn bad_template() {
    expect_error(
        MAIN,
        &format!("{RULE}    annotations:\n      summary: \"{{{{ order_id \"\n"),
        "rules/a.yaml",
        7,
        16,
        "annotation summary: template error",
    );
}

#[test]
fn missing_env_variable_in_url_is_named_without_leaking() {
    let main = MAIN.replace(
        "postgres://orderwatch@127.0.0.1:5432/shop",
        "postgres://orderwatch:${OW_TEST_UNSET_PASSWORD}@127.0.0.1:5432/shop",
    );
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        6,
        10,
        "OW_TEST_UNSET_PASSWORD is not set",
    );
}

#[test]
fn secret_from_file_is_expanded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "p@ss\n").unwrap();
    let main = MAIN.replace("orderwatch@127", "orderwatch:${file:pw}@127");
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/a.yaml"), RULE).unwrap();
    std::fs::write(dir.path().join("orderwatch.yaml"), main).unwrap();
    let l = load(&dir.path().join("orderwatch.yaml")).unwrap();
    assert!(
        l.config.sources["shop"]
            .value
            .url
            .value
            .contains(":p%40ss@127"),
        "the password is percent-encoded into the URL"
    );
}

#[test]
fn wrong_order_model() {
    let main = MAIN.replace("      table: orders\n", "");
    let (_d, r) = try_load(&main, RULE);
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("exactly one of `table`, `history_table` or `query`")
    );
}

#[test]
fn a_status_outside_the_sources_list_is_an_error_with_a_suggestion() {
    let main = MAIN.replace(
        "      labels: [order_type]\n",
        "      labels: [order_type]\n    statuses: [INITIATED, SUBMITTED, PRICE_CALCULATED, CLOSED]\n",
    );
    let rules = RULE.replace(
        "status: SUBMITTED",
        "status: [SUBMITED, PRICE_CALCULATED, Paid]",
    );
    expect_error(
        &main,
        &rules,
        "rules/a.yaml",
        4,
        13,
        "status SUBMITED is not in source shop's statuses \
         (INITIATED, SUBMITTED, PRICE_CALCULATED, CLOSED); did you mean SUBMITTED?",
    );
    expect_error(
        &main,
        &rules,
        "rules/a.yaml",
        4,
        13,
        "status Paid is not in",
    );
    // Without a list nothing is checked (the table may hold anything).
    let (_d, r) = try_load(MAIN, &RULE.replace("status: SUBMITTED", "status: SUBMITED"));
    r.unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_misspelt_key_is_reported_at_once_and_the_checks_still_run() {
    let main = MAIN
        .replace("state_dir: state\n", "state_dir: state\nlisten_addr: x\n")
        .replace(
            "      status: status\n",
            "      status: status\n      entered: x\n",
        );
    let rules = RULE.replace("source: shop", "source: crm").replace(
        "    older_than: 1h\n",
        "    older_than: 1h\n    severty: critical\n",
    );
    let (dir, r) = try_load(&main, &rules);
    let e = r.unwrap_err();
    let text = e.to_string();
    let main_file = dir.path().join("orderwatch.yaml");
    let rule_file = dir.path().join("rules/a.yaml");
    for (file, line, col, needle) in [
        (&main_file, 3, 1, "unknown field `listen_addr`"),
        (&main_file, 12, 7, "unknown field `entered`"),
        (&rule_file, 6, 5, "unknown field `severty`"),
        (&rule_file, 3, 13, "unknown source"),
    ] {
        assert!(
            text.contains(&format!("{}:{line}:{col}: {needle}", file.display())),
            "{needle} at {line}:{col}: {text}"
        );
    }
    assert_eq!(e.problems.len(), 4, "{text}");
}

#[test]
fn an_unknown_key_with_a_list_below_it_is_skipped_whole() {
    // The list sits at the key's own indent: it goes with the key, and the parse reads on to
    // the next mistake instead of tripping over the list's items.
    let main = MAIN.replace(
        "state_dir: state\n",
        "state_dir: state\nbogus:\n- a\n- b\nlisten_adress: x\n",
    );
    let (_dir, r) = try_load(&main, RULE);
    let e = r.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("unknown field `bogus`"), "{text}");
    assert!(text.contains("unknown field `listen_adress`"), "{text}");
    assert_eq!(e.problems.len(), 2, "{text}");
}

#[test]
fn a_refused_value_is_reported_without_its_consequences() {
    // The bad duration is blanked out to read on; the rule then lacks `older_than` and names
    // an unknown source, but only what the file says wrong is reported.
    let rules = RULE
        .replace("source: shop", "source: crm")
        .replace("older_than: 1h", "older_than: 1x")
        .replace(
            "    status: SUBMITTED\n",
            "    status: SUBMITTED\n    sevrity: critical\n",
        );
    let (_dir, r) = try_load(MAIN, &rules);
    let e = r.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("unknown field `sevrity`"), "{text}");
    assert!(text.contains("invalid duration \"1x\""), "{text}");
    assert_eq!(e.problems.len(), 2, "{text}");
}

#[test]
fn several_problems_are_all_reported() {
    let rules = RULE
        .replace("source: shop", "source: crm")
        .replace("older_than: 1h", "older_than: 0s");
    let (_d, r) = try_load(MAIN, &rules);
    assert_eq!(r.unwrap_err().problems.len(), 2);
}

#[test]
fn missing_file_is_reported() {
    let e = load(Path::new("/nonexistent/orderwatch.yaml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/orderwatch.yaml: cannot read"),
        "{e}"
    );
}

const RECEIVERS: &str = r#"receivers:
  hook:
    webhook: { url: "http://127.0.0.1:9/hook" }
route:
  receiver: hook
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      mute_time_intervals: [night]
    - matchers: ['team=~"(sales"']
      receiver: hook
"#;

#[test]
fn route_names_unknown_receivers_intervals_and_bad_matchers() {
    let main = format!("{MAIN}{RECEIVERS}");
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        20,
        17,
        "unknown receiver \"pager\"",
    );
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        21,
        29,
        "unknown time interval \"night\"",
    );
    expect_error(&main, RULE, "orderwatch.yaml", 22, 18, "bad regex");
}

#[test]
fn receivers_need_a_route_and_one_channel_each() {
    let main =
        format!("{MAIN}receivers:\n  hook:\n    webhook: {{ url: \"http://127.0.0.1:9/hook\" }}\n");
    let (_d, r) = try_load(&main, RULE);
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("`receivers` needs a `route`")
    );
    let main = format!(
        "{MAIN}receivers:\n  both:\n    webhook: {{ url: \"http://x/\" }}\n    slack: {{ webhook_url: \"https://hooks.slack.com/services/T/B/X\" }}\nroute: {{ receiver: both }}\n"
    );
    let (_d, r) = try_load(&main, RULE);
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("exactly one of email, slack")
    );
    let main = format!(
        "{MAIN}receivers:\n  hook:\n    webhook: {{ url: \"http://x/\", bogus: 1 }}\nroute: {{ receiver: hook }}\n"
    );
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        15,
        34,
        "unknown field `bogus`",
    );
}

#[test]
fn a_valid_route_loads() {
    let main = format!(
        "{MAIN}{}time_intervals:\n  night:\n    - {{ weekdays: ['monday:friday'], times: [{{ start_time: '22:00', end_time: '24:00' }}], location: Europe/Moscow }}\n",
        RECEIVERS
            .replace("receiver: pager", "receiver: hook")
            .replace("(sales", "sales")
    );
    let (_d, r) = try_load(&main, RULE);
    let l = r.unwrap_or_else(|e| panic!("{e}"));
    assert!(l.config.route.is_some());
    assert_eq!(l.config.receivers.len(), 1);
}

#[test]
fn rule_labels_cannot_override_the_daemons_own() {
    for reserved in ["order_id", "other_status", "severity"] {
        let rules = format!("{RULE}    labels: {{ {reserved}: x }}\n");
        let (_d, r) = try_load(MAIN, &rules);
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains(&format!("label \"{reserved}\" is reserved")),
            "{e}"
        );
    }
}

#[test]
fn kind_specific_keys_are_checked() {
    let (_d, r) = try_load(
        MAIN,
        "rules:\n  - name: x\n    kind: missing\n    source: shop\n    status: A\n    older_than: 1h\n",
    );
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("kind: missing needs `missing_in`")
    );
    let (_d, r) = try_load(
        MAIN,
        "rules:\n  - name: x\n    kind: sql\n    source: shop\n",
    );
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("kind: sql needs `query`")
    );
    let (_d, r) = try_load(
        MAIN,
        "rules:\n  - name: x\n    kind: slow_queries\n    source: shop\n    status: A\n",
    );
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("status does not apply to kind: slow_queries")
    );
    let (_d, r) = try_load(
        MAIN,
        "rules:\n  - name: x\n    source: shop\n    older_than: 1h\n",
    );
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("kind: stuck needs `status`")
    );
    expect_error(
        MAIN,
        "rules:\n  - name: x\n    kind: slow_queries\n    source: shop\n    exclude_applications: ['(']\n",
        "rules/a.yaml",
        5,
        28,
        "bad regex",
    );
}

#[test]
fn link_keys_must_end_in_url_and_templates_must_parse() {
    let main = format!("{MAIN}links:\n  trace: \"http://jaeger/{{{{ order_id }}}}\"\n");
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        14,
        10,
        "must be a label name ending in _url",
    );
    let main = format!("{MAIN}links:\n  trace_url: \"http://jaeger/{{{{ order_id \"\n");
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        14,
        14,
        "links: trace_url: template error",
    );
}

#[test]
fn links_reach_order_rules_unless_they_set_the_key() {
    let main = format!(
        "{MAIN}links:\n  trace_url: \"http://jaeger:16686/search?service=shop-api&tags={{{{ {{'correlation_id': order_id}} | tojson | urlencode }}}}\"\n  crm_url: \"https://crm/orders/{{{{ order_id | urlencode }}}}\"\n"
    );
    let rules = format!(
        "{RULE}  - name: paid_over_1h\n    source: shop\n    status: PAID\n    older_than: 1h\n    annotations:\n      crm_url: \"https://crm/paid/{{{{ order_id }}}}\"\n  - name: custom\n    kind: sql\n    source: shop\n    query: SELECT 1 AS value\n"
    );
    let (_dir, r) = try_load(&main, &rules);
    let loaded = r.unwrap_or_else(|e| panic!("{e}"));
    let rule = |n: &str| {
        &loaded
            .rules
            .iter()
            .find(|(_, r)| r.name.value == n)
            .unwrap()
            .1
    };
    let a = &rule("submitted_over_1h").annotations;
    assert!(a["trace_url"].value.contains("tojson | urlencode"));
    assert_eq!(
        a["crm_url"].value,
        "https://crm/orders/{{ order_id | urlencode }}"
    );
    let b = &rule("paid_over_1h").annotations;
    assert_eq!(
        b["crm_url"].value, "https://crm/paid/{{ order_id }}",
        "the rule's own wins"
    );
    assert!(b.contains_key("trace_url"));
    assert!(
        rule("custom").annotations.is_empty(),
        "sql rules have no order id: no links"
    );

    // Rendered over a finding: the Jaeger tag search is URL-encoded JSON.
    let ann = orderwatch::rule::template::Annotations::compile("r", a).unwrap();
    let out = ann.render(&minijinja::context! { order_id => "JW-1 /x" });
    assert_eq!(
        out["trace_url"],
        "http://jaeger:16686/search?service=shop-api&tags=%7B%22correlation_id%22%3A%22JW-1%20/x%22%7D"
    );
    assert_eq!(out["crm_url"], "https://crm/orders/JW-1%20/x");
}

/// The order flow's keys: a flow needs two statuses a source knows; `flow_label` must be an
/// allow-listed column.
#[test]
fn order_flow_keys_are_checked_where_they_are_written() {
    let listed = MAIN.replace(
        "    orders:\n",
        "    statuses: [SUBMITTED, PRICE_CALCULATED, SHIPPED, CLOSED]\n    orders:\n",
    );
    // A misspelt milestone: named with the closest listed status.
    let main = format!("{listed}flows:\n  lead_time: [SUBMITTED, SHIPED]\n");
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        15,
        14,
        "flows.lead_time: no source lists SHIPED (did you mean SHIPPED?)",
    );
    // One status is no flow.
    let main = format!("{listed}flows:\n  price_calculation: [SUBMITTED]\n");
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        15,
        22,
        "flows.price_calculation: give two different statuses",
    );
    // flow_label outside orders.labels: a personal column would become a label.
    let main = MAIN.replace(
        "    orders:\n",
        "    flow_label: customer_email\n    orders:\n",
    );
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        7,
        17,
        "flow_label \"customer_email\" is not one of orders.labels",
    );
    // A column named like a label of the metrics themselves.
    let main = MAIN
        .replace("labels: [order_type]", "labels: [order_type, flow]")
        .replace("    orders:\n", "    flow_label: flow\n    orders:\n");
    expect_error(
        &main,
        RULE,
        "orderwatch.yaml",
        7,
        17,
        "clashes with a label of the order flow metrics",
    );
    // Valid: both load.
    let main = format!(
        "{}flows:\n  price_calculation: [SUBMITTED, PRICE_CALCULATED]\n",
        listed.replace("    orders:\n", "    flow_label: order_type\n    orders:\n")
    );
    let (_dir, r) = try_load(&main, RULE);
    let loaded = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.config.flows["price_calculation"].value,
        ["SUBMITTED", "PRICE_CALCULATED"]
    );
}
