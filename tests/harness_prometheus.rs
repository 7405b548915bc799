//! Tests of the Prometheus helpers in `tests/common`: a real Prometheus scraping a
//! [`TestService`] must see the error ratio the test produced, or every test built on them is
//! suspect.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Prometheus, TestService};
use serde_json::Value;

const ERROR_RATIO: &str = r#"sum by (service)(rate(http_requests_total{code=~"5.."}[10s])) / sum by (service)(rate(http_requests_total[10s]))"#;

/// The sample value of the series of `service` in an instant-vector result, if any.
fn value_for(result: &Value, service: &str) -> Option<f64> {
    result
        .as_array()?
        .iter()
        .find(|s| s["metric"]["service"] == service)?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[tokio::test]
async fn prometheus_scrapes_test_service_and_computes_error_ratio() {
    let service = Arc::new(TestService::start().await);
    // Both series exist from the first scrape on, so neither rate starts late.
    service.add("shop-api", 200, 0);
    service.add("shop-api", 500, 0);
    service.add("cart", 200, 0);

    let exposition = common::http_client()
        .get(service.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        exposition.contains("# TYPE http_requests_total counter\n")
            && exposition.contains("http_requests_total{service=\"shop-api\",code=\"500\"} 0\n"),
        "unexpected exposition:\n{exposition}"
    );

    let Some(prom) = Prometheus::start(&[service.target()]).await else {
        return;
    };

    // Every 500 ms: shop-api answers 100 requests with 200 and 20 with 500 (1/6 errors);
    // cart answers only 200s, so it has no 5xx series and no ratio.
    let feeder = {
        let service = service.clone();
        tokio::spawn(async move {
            loop {
                service.add("shop-api", 200, 100);
                service.add("shop-api", 500, 20);
                service.add("cart", 200, 50);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let expected = 20.0 / 120.0;
    let result = prom
        .wait_for(
            ERROR_RATIO,
            |r| value_for(r, "shop-api").is_some_and(|v| (v - expected).abs() < 0.02),
            Duration::from_secs(30),
        )
        .await;
    feeder.abort();

    assert_eq!(
        value_for(&result, "cart"),
        None,
        "cart has no 5xx series, so no ratio: {result}"
    );
    let up = prom.query("up{job=\"services\"}").await;
    assert_eq!(
        up[0]["value"][1], "1",
        "the test service is scraped as job `services`: {up}"
    );
}
