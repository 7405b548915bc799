//! `alerts/`: the Prometheus alerting rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), and the example Alertmanager configuration passes
//! `amtool check-config`. Real tools; in CI a missing one fails with its install hint.

mod common;

use std::path::Path;
use std::process::Command;

fn run(bin: &Path, args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{text}",
        bin.display()
    );
    text
}

#[test]
fn prometheus_rules_are_valid_and_their_unit_tests_pass() {
    let Some(promtool) = common::require_bin("promtool", "prometheus") else {
        return;
    };
    let text = run(&promtool, &["check", "rules", "alerts/orderwatch.yml"]);
    assert!(text.contains("SUCCESS: 11 rules found"), "{text}");
    let text = run(
        &promtool,
        &["test", "rules", "alerts/tests/orderwatch_test.yml"],
    );
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn example_alertmanager_config_is_valid() {
    let Some(amtool) = common::require_bin("amtool", "prometheus-alertmanager") else {
        return;
    };
    let text = run(&amtool, &["check-config", "alerts/alertmanager.yml"]);
    assert!(
        text.contains("SUCCESS") && text.contains("2 inhibit rules"),
        "{text}"
    );
}

#[test]
fn every_orderwatch_metric_the_rules_use_is_exported() {
    // The rules must not query a metric the daemon does not have (a typo would never fire).
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/orderwatch.yml"),
    )
    .unwrap();
    let exported = orderwatch::metrics::Metrics::new();
    let names: Vec<String> = exported
        .registry
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("orderwatch_"))
        .collect();
    assert!(!used.is_empty());
    for m in used {
        // Vec metrics appear in gather() only once they have a series; for those, check the
        // descriptors of the metrics the rules use.
        let known = names.iter().any(|n| n == m) || metric_declared(&exported, m);
        assert!(
            known,
            "alerts/orderwatch.yml uses {m}, which orderwatch does not export"
        );
    }
}

fn metric_declared(m: &orderwatch::metrics::Metrics, name: &str) -> bool {
    use prometheus::core::Collector;
    let collectors: Vec<Vec<&prometheus::core::Desc>> = vec![
        m.stuck_orders.desc(),
        m.rule_last_evaluation.desc(),
        m.source_up.desc(),
        m.notifications.desc(),
        m.notification_queue_length.desc(),
        m.db_slowest_query_seconds.desc(),
        m.source_stale.desc(),
        m.orders_unjudgeable.desc(),
        m.source_replication_lag.desc(),
    ];
    collectors.iter().flatten().any(|d| d.fq_name == name)
}
