//! Export of the daemon's own spans (`evaluate`, `query`, `notify`) to an OpenTelemetry
//! collector or Jaeger over OTLP/HTTP with the JSON encoding, so a slow evaluation can be taken
//! apart next to the services' traces. Off unless `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard variables; `OTEL_SERVICE_NAME` and
//! `OTEL_EXPORTER_OTLP_HEADERS` are honoured too).
//!
//! Written here rather than taken from the OpenTelemetry SDK (`tracing-opentelemetry` and
//! `opentelemetry-otlp`; ARCHITECTURE.md, "Traces", has the comparison): it is a tracing layer,
//! a bounded queue and one HTTP POST every two seconds. Only spans of orderwatch's own code are recorded
//! (never the HTTP client's, so the exporter does not trace itself), with the fields those spans
//! carry: rule and source names, counts, outcomes, the first characters of the SQL text (never
//! its parameters). A full queue drops spans; an unreachable collector never slows the daemon.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, field::Field, field::Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Spans kept waiting for export at most; more are dropped (and counted in the log).
const QUEUE: usize = 4096;
/// Spans per request at most.
const BATCH: usize = 512;
/// How often the queue is sent.
const EVERY: Duration = Duration::from_secs(2);

/// A finished span.
#[derive(Debug, Clone)]
struct SpanRecord {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &'static str,
    start: u64,
    end: u64,
    attributes: Vec<(String, Value)>,
    error: Option<String>,
    kind: u8,
}

/// The queue between the layer and the sender.
#[derive(Default)]
struct Queue {
    spans: Vec<SpanRecord>,
    dropped: u64,
}

/// The layer: records orderwatch's spans into the queue.
pub struct OtlpLayer {
    queue: Arc<Mutex<Queue>>,
}

/// Sends the queue; [`Exporter::shutdown`] sends what is left.
pub struct Exporter {
    queue: Arc<Mutex<Queue>>,
    url: String,
    headers: Vec<(String, String)>,
    resource: Value,
    client: reqwest::Client,
}

/// The layer and its exporter, when the environment asks for export.
pub fn from_env() -> Option<(OtlpLayer, Exporter)> {
    let url = match std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            let base = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
            if base.is_empty() {
                return None;
            }
            format!("{}/v1/traces", base.trim_end_matches('/'))
        }
    };
    let headers = std::env::var("OTEL_EXPORTER_OTLP_HEADERS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "orderwatch".to_string());
    let resource = json!({ "attributes": [
        kv("service.name", Value::String(service)),
        kv("service.version", Value::String(env!("CARGO_PKG_VERSION").into())),
    ]});
    let client = crate::outbound::http_client(Duration::from_secs(5));
    let queue = Arc::new(Mutex::new(Queue::default()));
    Some((
        OtlpLayer {
            queue: queue.clone(),
        },
        Exporter {
            queue,
            url,
            headers,
            resource,
            client,
        },
    ))
}

impl Exporter {
    /// The endpoint spans go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the queue every two seconds, for ever (spawn it).
    pub async fn run(self: Arc<Self>) {
        let mut last_error: Option<std::time::Instant> = None;
        loop {
            tokio::time::sleep(EVERY).await;
            if let Err(e) = self.send_all().await {
                // At most once a minute: a missing collector is not the daemon's problem.
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(target: "orderwatch_otlp", endpoint = %self.url, error = %e, "cannot export traces");
                    last_error = Some(std::time::Instant::now());
                }
            }
        }
    }

    /// Sends what is queued, within `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.send_all()).await;
    }

    async fn send_all(&self) -> Result<(), String> {
        loop {
            let (batch, dropped) = {
                let mut q = self.queue.lock().expect("span queue");
                let n = q.spans.len().min(BATCH);
                (
                    q.spans.drain(..n).collect::<Vec<_>>(),
                    std::mem::take(&mut q.dropped),
                )
            };
            if dropped > 0 {
                tracing::warn!(target: "orderwatch_otlp", dropped, "trace queue full; spans dropped");
            }
            if batch.is_empty() {
                return Ok(());
            }
            let body = encode(&self.resource, &batch);
            let mut req = self.client.post(&self.url).json(&body);
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
        }
    }
}

fn kv(key: &str, value: Value) -> Value {
    let v = match value {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n.as_f64() }),
        Value::String(s) => json!({ "stringValue": s }),
        other => json!({ "stringValue": other.to_string() }),
    };
    json!({ "key": key, "value": v })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The OTLP/HTTP JSON body (`ExportTraceServiceRequest`) of `spans`.
fn encode(resource: &Value, spans: &[SpanRecord]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": hex(&s.trace_id),
                "spanId": hex(&s.span_id),
                "name": s.name,
                "kind": s.kind,
                "startTimeUnixNano": s.start.to_string(),
                "endTimeUnixNano": s.end.to_string(),
                "attributes": s.attributes.iter().map(|(k, v)| kv(k, v.clone())).collect::<Vec<_>>(),
                "status": match &s.error {
                    Some(m) => json!({ "code": 2, "message": m }),
                    None => json!({ "code": 0 }),
                },
            });
            if let Some(p) = s.parent {
                span["parentSpanId"] = Value::String(hex(&p));
            }
            span
        })
        .collect();
    json!({ "resourceSpans": [{
        "resource": resource,
        "scopeSpans": [{ "scope": { "name": "orderwatch", "version": env!("CARGO_PKG_VERSION") }, "spans": spans }],
    }]})
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// Fields of a span as OTLP attributes; `error` sets the status, `otel.kind` the span kind.
struct Fields<'a>(&'a mut SpanRecord);

impl Fields<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        match field.name() {
            "error" => self.0.error = Some(v.as_str().map_or(v.to_string(), str::to_string)),
            "otel.kind" => {
                self.0.kind = match v.as_str() {
                    Some("client") => 3,
                    Some("server") => 2,
                    _ => 1,
                }
            }
            name => {
                self.0.attributes.retain(|(k, _)| k != name);
                self.0.attributes.push((name.to_string(), v));
            }
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, json!(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, json!(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // Our own spans only: never the HTTP client's (the exporter would trace itself).
        if !attrs.metadata().target().starts_with("orderwatch") {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let parent = span.scope().skip(1).find_map(|p| {
            p.extensions()
                .get::<SpanRecord>()
                .map(|r| (r.trace_id, r.span_id))
        });
        let mut rec = SpanRecord {
            trace_id: parent.map_or_else(rand::random, |p| p.0),
            span_id: rand::random(),
            parent: parent.map(|p| p.1),
            name: attrs.metadata().name(),
            start: now_nanos(),
            end: 0,
            attributes: Vec::new(),
            error: None,
            kind: 1,
        };
        attrs.record(&mut Fields(&mut rec));
        span.extensions_mut().insert(rec);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(rec) = span.extensions_mut().get_mut::<SpanRecord>()
        {
            values.record(&mut Fields(rec));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut rec) = span.extensions_mut().remove::<SpanRecord>() else {
            return;
        };
        rec.end = now_nanos();
        let mut q = self.queue.lock().expect("span queue");
        if q.spans.len() < QUEUE {
            q.spans.push(rec);
        } else {
            q.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_otlp_json() {
        let s = SpanRecord {
            trace_id: [0xab; 16],
            span_id: [1; 8],
            parent: Some([2; 8]),
            name: "query",
            start: 1_700_000_000_000_000_000,
            end: 1_700_000_000_500_000_000,
            attributes: vec![
                ("source".into(), json!("shop")),
                ("count".into(), json!(3)),
                ("ok".into(), json!(true)),
                ("ratio".into(), json!(0.5)),
            ],
            error: Some("timeout".into()),
            kind: 3,
        };
        let body = encode(&json!({"attributes": []}), &[s]);
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "ab".repeat(16));
        assert_eq!(span["spanId"], "0101010101010101");
        assert_eq!(span["parentSpanId"], "0202020202020202");
        assert_eq!(span["kind"], 3);
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(span["endTimeUnixNano"], "1700000000500000000");
        assert_eq!(
            span["attributes"],
            json!([
                {"key": "source", "value": {"stringValue": "shop"}},
                {"key": "count", "value": {"intValue": "3"}},
                {"key": "ok", "value": {"boolValue": true}},
                {"key": "ratio", "value": {"doubleValue": 0.5}},
            ])
        );
        assert_eq!(span["status"], json!({"code": 2, "message": "timeout"}));
    }
}
