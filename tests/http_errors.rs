//! `kind: http_errors` against a real Prometheus scraping a local service that serves request
//! counters, and in direct-scrape mode against the same service.

mod common;

use std::path::Path;
use std::time::Duration;

use orderwatch::engine::evaluate_once;

fn config(dir: &Path, rule: &str) -> orderwatch::config::Loaded {
    // A database source is configured (every config has one) but http_errors does not use it.
    common::write_config(
        dir,
        "state_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: \"postgres://nobody@127.0.0.1:9/none\"\n    orders: { table: orders }\n",
        &format!("rules:\n{rule}"),
    );
    common::load(dir)
}

/// Traffic for `secs` seconds: shop-api answers 20 % 5xx, crm-api 1 %, mes-api none.
async fn traffic(svc: &common::TestService, secs: u64) {
    for _ in 0..secs * 2 {
        svc.add("shop-api", 200, 40);
        svc.add("shop-api", 503, 10);
        svc.add("crm-api", 200, 99);
        svc.add("crm-api", 500, 1);
        svc.add("mes-api", 200, 30);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_query_mode_finds_the_erroring_service() {
    let svc = common::TestService::start().await;
    let Some(prom) = common::Prometheus::start(&[svc.target()]).await else {
        return;
    };
    traffic(&svc, 8).await;
    prom.wait_for(
        "sum by (service) (rate(http_requests_total[5s]))",
        |r| r.as_array().is_some_and(|a| a.len() == 3),
        Duration::from_secs(30),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &format!(
            "  - name: http_5xx_ratio_high\n    kind: http_errors\n    prometheus_url: \"{}\"\n    window: 5s\n    threshold: 0.05\n    severity: critical\n",
            prom.url()
        ),
    );
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    let o = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(results[0].0.source, "prometheus");
    assert_eq!(
        o.signals.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
        ["shop-api"],
        "{o:?}"
    );
    let r = o.signals[0].value.unwrap();
    assert!((r - 0.2).abs() < 0.03, "shop-api ratio {r}");
    assert!(
        (o.http_ratios["crm-api"] - 0.01).abs() < 0.005,
        "{:?}",
        o.http_ratios
    );
    assert_eq!(o.http_ratios["mes-api"], 0.0);

    // A broken query is an error, never "no errors".
    let loaded = config(
        dir.path(),
        &format!(
            "  - name: bad\n    kind: http_errors\n    prometheus_url: \"{}\"\n    query: \"sum by (service\"\n",
            prom.url()
        ),
    );
    let results = evaluate_once(&loaded, &[]).await.unwrap();
    assert!(
        results[0]
            .1
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("parse error")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_scrape_mode_computes_the_ratio_and_its_growth_over_a_sliding_window() {
    let svc = common::TestService::start().await;
    let dir = tempfile::tempdir().unwrap();
    let loaded = config(
        dir.path(),
        &format!(
            "  - name: http_5xx_rising\n    kind: http_errors\n    scrape:\n      - {{ service: api, url: \"{}\" }}\n    window: 2s\n    threshold: 0.5\n    growth: 3\n",
            svc.metrics_url()
        ),
    );
    let d = orderwatch::engine::Daemon::build(loaded).unwrap();
    let shared = d.shared();
    let rule = shared.rules[0].clone();
    // Window 1: 1 % errors. Window 2: 1 %. Window 3: 10 %: over 3× the window before, under
    // the 50 % threshold: a growth alert.
    for (ok, bad) in [(99, 1), (99, 1), (90, 10)] {
        for _ in 0..4 {
            svc.add("api", 200, ok / 4 + 1);
            svc.add("api", 500, (bad as f64 / 4.0).ceil() as u64);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        shared.evaluate(&rule).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let status = shared.rule_status.read().unwrap()["http_5xx_rising"].clone();
    assert_eq!(status.health, "ok", "{status:?}");
    assert_eq!(status.count, Some(1), "{status:?}");
    let m = shared.metrics.render();
    let line = m
        .lines()
        .find(|l| l.starts_with("orderwatch_http_5xx_ratio{service=\"api\"}"))
        .expect(&m);
    let ratio: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(ratio > 0.05 && ratio < 0.5, "{line}");
    let alerts: Vec<_> = shared.book.read().unwrap().all().cloned().collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(&alerts[0].labels["alertname"], "Http5xxRatioHigh");
    assert_eq!(&alerts[0].labels["service"], "api");
    let notes = alerts[0].annotations();
    assert!(notes["summary"].contains("the window before"), "{notes:?}");

    // The service goes away: an error, and the alert stays.
    drop(svc);
    shared.evaluate(&rule).await;
    let status = shared.rule_status.read().unwrap()["http_5xx_rising"].clone();
    assert_eq!(status.health, "err");
    assert_eq!(shared.book.read().unwrap().all().count(), 1);
}

/// The shipped `rules/http.yaml` on the reference burst (the demo's shop-api: 20 requests a
/// second, 5xx from 1 % to 20 %) fires within the seeds' 5 minutes of the rise, and not
/// before it; mes-api (0.5 %) never fires. Real HTTP scrapes of a service whose counters follow
/// a simulated clock, so 15 minutes replay in a moment; `for` and the alert states come from
/// the same alert book the daemon uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_http_rule_fires_within_five_minutes_of_the_reference_burst() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use orderwatch::alert::{AlertBook, AlertState, Coverage, Observation, RuleTiming};
    use orderwatch::demo::services::{demo_traffic, exposition};

    // Simulated seconds since the services started.
    let clock = Arc::new(AtomicU64::new(0));
    let [(_, shop), (_, mes)] = demo_traffic();
    let burst_at = shop.burst.unwrap().start.as_secs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = clock.clone();
    let app = axum::Router::new()
        .route(
            "/shop/metrics",
            axum::routing::get({
                let c = c.clone();
                move || async move { exposition(&shop, c.load(Ordering::SeqCst) as f64) }
            }),
        )
        .route(
            "/mes/metrics",
            axum::routing::get(
                move || async move { exposition(&mes, c.load(Ordering::SeqCst) as f64) },
            ),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/http.yaml"))
            .unwrap()
            .replace(
                "http://shop-api:8080/metrics",
                &format!("http://{addr}/shop/metrics"),
            )
            .replace(
                "http://mes-api:8080/metrics",
                &format!("http://{addr}/mes/metrics"),
            );
    let dir = tempfile::tempdir().unwrap();
    let body = shipped.split_once("rules:\n").unwrap().1;
    let loaded = config(dir.path(), body);
    let (_sources, rules) = orderwatch::engine::build_parts(&loaded, false).unwrap();
    let rule = rules
        .iter()
        .find(|r| r.name == "http_5xx_high")
        .expect("the shipped rule");
    let orderwatch::rule::Check::HttpErrors(check) = &rule.check else {
        panic!("not http_errors")
    };
    let interval = rule.schedule.typical_interval(chrono::Utc::now());
    let timing = RuleTiming {
        for_: rule.for_,
        keep_firing_for: rule.keep_firing_for,
        interval,
    };
    let t0 = chrono::Utc::now();
    let mut book = AlertBook::default();
    let mut fired = None;
    let mut t = 0;
    while t <= 15 * 60 {
        clock.store(t, Ordering::SeqCst);
        let now = t0 + chrono::Duration::seconds(t as i64);
        let o = check
            .evaluate_at(now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let obs = o
            .signals
            .iter()
            .map(|s| Observation {
                key: s.key.as_str().into(),
                labels: s.labels.clone().into(),
                notes: Default::default(),
                starts_at: now,
                entered_at: None,
                may_create: true,
            })
            .collect();
        book.apply(&rule.name, timing, now, obs, Coverage::All);
        for a in book.rule_alerts(&rule.name) {
            assert_eq!(&*a.key, "shop-api", "only shop-api bursts: {a:?}");
            if a.state == AlertState::Firing && fired.is_none() {
                fired = Some(t);
            }
        }
        t += interval.as_secs();
    }
    let fired = fired.expect("the burst fires the shipped rule");
    println!(
        "shipped http_5xx_high fired {} s after the rise",
        fired - burst_at
    );
    assert!(
        fired > burst_at && fired - burst_at <= 5 * 60,
        "fired {} s after the rise (burst at {burst_at} s)",
        fired as i64 - burst_at as i64
    );
}
