//! No input panics the daemon: whatever goes into a config value, a rule, a duration or a
//! silence, loading answers with errors (file:line:col) and a configuration that loads also
//! builds. Random inputs from proptest; `scripts/fuzz` runs the same entry points longer.

use std::path::Path;

use proptest::prelude::*;

/// Values that once broke something, and random ones of each shape.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("18446744073709551615".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("300000y".to_string()),
        Just("500000000y".to_string()),
        Just("1ns".to_string()),
        Just("500us".to_string()),
        Just("99999999999999999999999h".to_string()),
        Just("~".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("\"${file:/nonexistent}\"".to_string()),
        "[0-9]{1,25}(ns|us|ms|s|m|h|d|w|y|M)?",
        "[0-9]{1,20}",
        "\"[ -~]{0,40}\"",
        "'[\\PC]{0,20}'",
    ]
}

const KEYS_SOURCE: &[&str] = &[
    "statement_timeout",
    "connect_timeout",
    "pool_size",
    "terminal_statuses",
    "statuses",
    "gauges",
    "allow_superuser",
];
const KEYS_RULE: &[&str] = &[
    "older_than",
    "interval",
    "schedule",
    "timezone",
    "for",
    "keep_firing_for",
    "max_findings",
    "max_alerts",
    "batch_size",
    "status",
    "severity",
    "query",
    "threshold",
    "window",
    "kind",
];
const KEYS_TOP: &[&str] = &[
    "gauges_interval",
    "source_down_after",
    "listen",
    "trusted_proxies",
    "user_header",
];

fn config(source_kv: &str, top_kv: &str, route_kv: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\n{top_kv}\
         sources:\n  shop:\n    url: postgres://u@127.0.0.1:9/shop\n    {source_kv}\n    orders: {{ table: orders }}\n\
         receivers:\n  r:\n    webhook: {{ url: \"http://127.0.0.1:9/x\" }}\n\
         route:\n  receiver: r\n  {route_kv}\n\
         notifiers:\n  alertmanager:\n    urls: [\"http://127.0.0.1:9\"]\n"
    )
}

fn try_everything(dir: &Path, main: &str, rules: &str) {
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    let path = dir.join("orderwatch.yaml");
    if let Ok(loaded) = orderwatch::configure::load_str(&path, main) {
        // What loads must build: a config `check --offline` accepts never fails `run`.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if let Err(e) = orderwatch::engine::Daemon::build(loaded) {
                panic!("loaded but did not build: {e}\n{main}\n{rules}");
            }
        });
    }
}

proptest! {
    // 192 cases in the test suite; `scripts/fuzz` sets PROPTEST_CASES for long runs.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(192),
        .. ProptestConfig::default()
    })]

    #[test]
    fn config_values_never_panic(
        sk in prop::sample::select(KEYS_SOURCE), sv in value(),
        rk in prop::sample::select(KEYS_RULE), rv in value(),
        tk in prop::sample::select(KEYS_TOP), tv in value(),
        gk in prop::sample::select(&["group_wait", "group_interval", "repeat_interval"][..]), gv in value(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let main = config(&format!("{sk}: {sv}"), &format!("{tk}: {tv}\n"), &format!("{gk}: {gv}"));
        let rules = format!(
            "rules:\n  - name: r1\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    {rk}: {rv}\n"
        );
        try_everything(dir.path(), &main, &rules);
    }

    #[test]
    fn arbitrary_yaml_never_panics(main in "[ -~\\n]{0,200}", rules in "[ -~\\n]{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        try_everything(dir.path(), &main, &rules);
    }

    #[test]
    fn silences_never_panic(
        matchers in prop::collection::vec("[ -~]{0,60}", 0..5),
        duration in value(),
        ends in "[0-9]{4,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
        use_ends in any::<bool>(),
    ) {
        let now = chrono::Utc::now();
        let req = orderwatch::notify::mute::silence::SilenceRequest {
            matchers,
            starts_at: None,
            ends_at: if use_ends { ends.parse().ok() } else { None },
            duration: if use_ends { None } else { Some(duration.trim_matches('"').to_string()) },
            comment: String::new(),
            created_by: String::new(),
        };
        if let Ok(s) = req.build(now) {
            prop_assert!(s.ends_at > s.starts_at);
            prop_assert!(s.ends_at - s.starts_at <= orderwatch::notify::mute::silence::MAX_DURATION);
        }
    }

    #[test]
    fn matchers_never_panic(m in "[ -~]{0,80}") {
        let _ = m.parse::<orderwatch::notify::routing::route::Matcher>();
    }
}

/// The property above means something only if the base config loads and builds.
#[test]
fn the_base_config_loads_and_builds() {
    let dir = tempfile::tempdir().unwrap();
    let main = config("pool_size: 4", "gauges_interval: 30s\n", "group_wait: 30s");
    let rules = "rules:\n  - name: r1\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 30s\n";
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    orderwatch::configure::load_str(&dir.path().join("orderwatch.yaml"), &main)
        .unwrap_or_else(|e| panic!("{e}"));
    try_everything(dir.path(), &main, rules);
}
