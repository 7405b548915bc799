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
    assert!(text.contains("SUCCESS: 17 rules found"), "{text}");
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
        text.contains("SUCCESS") && text.contains("8 inhibit rules"),
        "{text}"
    );
}

/// The shipped scrape config (examples/prometheus/) is valid with the rules beside it, as the
/// .deb installs them, and scrapes orderwatch under the job name the rules expect.
#[test]
fn shipped_scrape_config_is_valid_and_names_the_job_the_rules_expect() {
    let Some(promtool) = common::require_bin("promtool", "prometheus") else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "examples/prometheus/prometheus.yml",
        "alerts/orderwatch.yml",
    ] {
        let p = repo.join(f);
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let config = dir.path().join("prometheus.yml");
    let text = run(&promtool, &["check", "config", config.to_str().unwrap()]);
    assert!(
        text.contains("1 rule files found") && text.contains("17 rules found"),
        "{text}"
    );
    let scrape = std::fs::read_to_string(&config).unwrap();
    let rules = std::fs::read_to_string(repo.join("alerts/orderwatch.yml")).unwrap();
    assert!(scrape.contains("job_name: orderwatch"), "{scrape}");
    assert!(rules.contains("up{job=\"orderwatch\"}"), "{rules}");
}

/// The `inhibit_rules` of alerts/alertmanager.yml in a real Alertmanager: a critical alert
/// without an order silences no unrelated warning; a critical order alert silences that
/// order's warnings only; orderwatch's own alert silences the Prometheus rule meaning the same
/// (one page per problem), and a source that is down silences what depends on it.
#[tokio::test]
async fn shipped_inhibit_rules_inhibit_only_what_they_mean() {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/alertmanager.yml"),
    )
    .unwrap();
    let start = shipped.find("inhibit_rules:").unwrap();
    let end = shipped[start..].find("\nreceivers:").unwrap() + start;
    let Some(am) = common::Alertmanager::start_with_config(&shipped[start..end]).await else {
        return;
    };
    let alert = |labels: serde_json::Value| serde_json::json!({ "labels": labels });
    let alerts = serde_json::json!([
        // orderwatch's path.
        alert(
            serde_json::json!({"alertname": "SourceDown", "path": "orderwatch", "rule": "source_down", "source": "shop", "severity": "critical"})
        ),
        alert(
            serde_json::json!({"alertname": "StuckOrder", "path": "orderwatch", "rule": "price_calculation_slow", "source": "mes", "status": "SUBMITTED", "order_id": "JW-1", "severity": "critical"})
        ),
        alert(
            serde_json::json!({"alertname": "StuckOrder", "path": "orderwatch", "rule": "submitted_over_1h", "source": "mes", "status": "SUBMITTED", "order_id": "JW-1", "severity": "warning"})
        ),
        alert(
            serde_json::json!({"alertname": "StuckOrder", "path": "orderwatch", "rule": "submitted_over_1h", "source": "mes", "status": "SUBMITTED", "order_id": "JW-2", "severity": "warning"})
        ),
        alert(
            serde_json::json!({"alertname": "StuckOrder", "path": "orderwatch", "rule": "paid_over_1h", "source": "shop", "status": "PAID", "order_id": "JW-3", "severity": "warning"})
        ),
        // Overflow alerts ("N more orders") of a critical and a warning rule: no order each.
        alert(
            serde_json::json!({"alertname": "StuckOrder", "path": "orderwatch", "rule": "price_calculation_slow", "source": "mes", "status": "SUBMITTED", "order_id": "_overflow", "severity": "critical"})
        ),
        alert(
            serde_json::json!({"alertname": "StuckOrder", "path": "orderwatch", "rule": "submitted_over_1h", "source": "mes", "status": "SUBMITTED", "order_id": "_overflow", "severity": "warning"})
        ),
        alert(
            serde_json::json!({"alertname": "Http5xxRatioHigh", "path": "orderwatch", "rule": "http_5xx_high", "source": "scrape", "service": "shop-api", "severity": "critical"})
        ),
        // A rule failing while its source answers.
        alert(
            serde_json::json!({"alertname": "RuleFailing", "path": "orderwatch", "rule": "lost_in_mes", "source": "mes", "severity": "critical"})
        ),
        // Prometheus' path.
        alert(
            serde_json::json!({"alertname": "SourceDown", "path": "prometheus", "instance": "ow:9187", "source": "shop", "severity": "critical"})
        ),
        alert(
            serde_json::json!({"alertname": "OrdersStuck", "path": "prometheus", "rule": "price_calculation_slow", "source": "mes", "status": "SUBMITTED", "severity": "critical"})
        ),
        alert(
            serde_json::json!({"alertname": "OrdersStuck", "path": "prometheus", "rule": "lost_in_mes", "source": "mes", "status": "SUBMITTED", "severity": "critical"})
        ),
        alert(
            serde_json::json!({"alertname": "Http5xxRatioHigh", "path": "prometheus", "service": "shop-api", "severity": "critical"})
        ),
        alert(
            serde_json::json!({"alertname": "Http5xxRatioRising", "path": "prometheus", "service": "mes-api", "severity": "warning"})
        ),
        alert(
            serde_json::json!({"alertname": "OrderwatchNotificationsFailing", "path": "prometheus", "instance": "ow:9187", "notifier": "mail", "severity": "warning"})
        ),
        alert(
            serde_json::json!({"alertname": "OrderwatchRuleFailing", "path": "prometheus", "instance": "ow:9187", "rule": "lost_in_mes", "severity": "warning"})
        ),
        alert(
            serde_json::json!({"alertname": "OrderwatchRuleFailing", "path": "prometheus", "instance": "ow:9187", "rule": "submitted_over_1h", "severity": "warning"})
        ),
    ]);
    let resp = common::http_client()
        .post(format!("{}/api/v2/alerts", am.url()))
        .json(&alerts)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let key = |a: &serde_json::Value| {
        let l = &a["labels"];
        format!(
            "{}/{}/{}",
            l["alertname"].as_str().unwrap(),
            l["path"].as_str().unwrap(),
            l["order_id"]
                .as_str()
                .or(l["rule"].as_str())
                .or(l["service"].as_str())
                .or(l["notifier"].as_str())
                .or(l["source"].as_str())
                .unwrap_or("")
        )
    };
    // Inhibition is marked as alerts pass the notification pipeline (after group_wait).
    let got = am
        .wait_for(
            |a| a.len() == 17 && a.iter().all(|a| a["status"]["state"] != "unprocessed"),
            std::time::Duration::from_secs(20),
        )
        .await;
    let mut inhibited: Vec<String> = got
        .iter()
        .filter(|a| a["status"]["state"] == "suppressed")
        .map(key)
        .collect();
    inhibited.sort();
    assert_eq!(
        inhibited,
        [
            "Http5xxRatioHigh/prometheus/shop-api",
            // Same order, lower severity.
            "OrdersStuck/prometheus/price_calculation_slow",
            // orderwatch's RuleFailing says it, with the error.
            "OrderwatchRuleFailing/prometheus/lost_in_mes",
            "SourceDown/prometheus/shop",
            "StuckOrder/orderwatch/JW-1",
            // Its source is down.
            "StuckOrder/orderwatch/JW-3",
        ],
        "{}",
        serde_json::to_string_pretty(&got).unwrap()
    );
}

/// Every `runbook_url` of the Prometheus rules, and every alert name orderwatch raises, leads to
/// a section of the runbooks page orderwatch serves.
#[test]
fn every_runbook_url_has_its_section() {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/orderwatch.yml"),
    )
    .unwrap();
    let page = orderwatch::http::runbooks::render(orderwatch::runbooks::RUNBOOKS_MD);
    let re = regex::Regex::new(r"runbooks#([a-z0-9]+)").unwrap();
    let anchors: Vec<String> = re.captures_iter(&rules).map(|c| c[1].to_string()).collect();
    assert!(anchors.len() >= 12, "{anchors:?}");
    for alert in [
        "StuckOrder",
        "LostOrder",
        "StatusMismatch",
        "SourceDown",
        "SourceStale",
        "RuleFailing",
        "Http5xxRatioHigh",
        "SlowDbQuery",
        "SqlCheck",
    ] {
        let a = alert.to_ascii_lowercase();
        assert!(
            page.contains(&format!("<h2 id=\"{a}\">")),
            "no runbook for {alert}"
        );
    }
    for a in anchors {
        assert!(
            page.contains(&format!("<h2 id=\"{a}\">")),
            "no runbook section #{a}"
        );
    }
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    for a in alerts {
        assert!(
            rules.contains(&format!("runbooks#{}\"", a.to_ascii_lowercase())),
            "{a}'s runbook_url names another section"
        );
    }
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
        m.rule_evaluation_failures.desc(),
        m.source_up.desc(),
        m.notifications.desc(),
        m.notification_queue_length.desc(),
        m.db_slowest_query_seconds.desc(),
        m.source_stale.desc(),
        m.orders_unjudgeable.desc(),
        m.source_replication_lag.desc(),
        m.lost_orders.desc(),
    ];
    // A histogram's series: its family's name with _bucket, _sum or _count.
    let family = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    collectors
        .iter()
        .flatten()
        .any(|d| d.fq_name == name || d.fq_name == family)
        || orderwatch::metrics::FLOW_FAMILIES.contains(&name)
        || orderwatch::metrics::FLOW_FAMILIES.contains(&family)
}
