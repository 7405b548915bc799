//! Two simulated services for the demo, the Shop API and the MES API: each answers `/metrics`
//! with the standard `http_requests_total{code}` counter at a steady request rate, and the
//! Shop API has a planted burst of 5xx answers (1 % → 20 %), so the demo's `http_errors` rule,
//! the 5xx gauge and the services dashboard have something to show.
//!
//! No traffic is generated: the counters are the integral of the configured rates up to the
//! moment of the scrape, so two scrapes a window apart give exactly the planted share.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::routing::get;

/// When the planted burst happens: `start` after the service starts and then every `every`,
/// for `length` each time.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    /// From the start to the first burst.
    pub start: Duration,
    /// How long a burst lasts.
    pub length: Duration,
    /// A burst starts again this long after the previous one started.
    pub every: Duration,
    /// The 5xx share during a burst.
    pub share: f64,
}

/// One simulated service's traffic.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    /// Requests per second, steady.
    pub rate: f64,
    /// The 5xx share outside bursts.
    pub base_share: f64,
    /// The planted burst, if any.
    pub burst: Option<Burst>,
}

impl Traffic {
    /// Seconds of burst within the first `t` seconds.
    fn burst_seconds(&self, t: f64) -> f64 {
        let Some(b) = self.burst else { return 0.0 };
        let (start, length, every) = (
            b.start.as_secs_f64(),
            b.length.as_secs_f64(),
            b.every.as_secs_f64().max(b.length.as_secs_f64()),
        );
        if t <= start {
            return 0.0;
        }
        let since = t - start;
        let periods = (since / every).floor();
        periods * length + (since - periods * every).min(length)
    }

    /// (all requests, 5xx answers) answered within the first `t` seconds.
    pub fn totals(&self, t: f64) -> (u64, u64) {
        let burst = self.burst_seconds(t);
        let extra = self.burst.map_or(0.0, |b| b.share - self.base_share);
        let errors = self.rate * (self.base_share * t + extra * burst);
        ((self.rate * t).floor() as u64, errors.floor() as u64)
    }

    /// The 5xx share at `t` seconds.
    pub fn share_at(&self, t: f64) -> f64 {
        match self.burst {
            Some(b) if self.burst_seconds(t + 0.001) > self.burst_seconds(t) => b.share,
            _ => self.base_share,
        }
    }
}

/// The demo's two services: shop-api with a burst 3 minutes in, for 10 minutes, every hour;
/// mes-api steady at 0.5 %.
pub fn demo_traffic() -> [(&'static str, Traffic); 2] {
    [
        (
            "shop-api",
            Traffic {
                rate: 20.0,
                base_share: 0.01,
                burst: Some(Burst {
                    start: Duration::from_secs(3 * 60),
                    length: Duration::from_secs(10 * 60),
                    every: Duration::from_secs(60 * 60),
                    share: 0.20,
                }),
            },
        ),
        (
            "mes-api",
            Traffic {
                rate: 5.0,
                base_share: 0.005,
                burst: None,
            },
        ),
    ]
}

/// The `/metrics` text of `traffic` at `t` seconds.
pub fn exposition(traffic: &Traffic, t: f64) -> String {
    let (all, errors) = traffic.totals(t);
    format!(
        "# HELP http_requests_total Requests answered, by status code.\n\
         # TYPE http_requests_total counter\n\
         http_requests_total{{code=\"200\"}} {}\n\
         http_requests_total{{code=\"500\"}} {errors}\n",
        all - errors
    )
}

/// A running simulated service (stopped on drop).
pub struct SimulatedService {
    /// Its name (the `service` label).
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SimulatedService {
    /// Starts `traffic` on a free port of 127.0.0.1.
    pub async fn start(name: &'static str, traffic: Traffic) -> std::io::Result<SimulatedService> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let started = Instant::now();
        let app = Router::new().route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    exposition(&traffic, started.elapsed().as_secs_f64()),
                )
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SimulatedService { name, addr, task })
    }

    /// Its `/metrics` URL.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

impl Drop for SimulatedService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_integrate_the_planted_shares() {
        let [(_, shop), (_, mes)] = demo_traffic();
        // Before the burst: 1 %.
        assert_eq!(shop.totals(100.0), (2000, 20));
        assert_eq!(shop.share_at(100.0), 0.01);
        // Two minutes into the burst: 180 s at 1 %, 120 s at 20 %.
        assert_eq!(shop.totals(300.0), (6000, 36 + 480));
        assert_eq!(shop.share_at(300.0), 0.20);
        // After it, and in the next hour's burst.
        assert_eq!(shop.share_at(800.0), 0.01);
        assert_eq!(shop.share_at(3600.0 + 200.0), 0.20);
        let (all, err) = shop.totals(7200.0);
        assert_eq!(all, 144_000);
        assert_eq!(err, (20.0 * (0.01 * 7200.0 + 0.19 * 1200.0)) as u64);
        assert_eq!(mes.totals(1000.0), (5000, 25));
        assert!(exposition(&shop, 100.0).contains("http_requests_total{code=\"500\"} 20\n"));
    }
}
