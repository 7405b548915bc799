//! The chat and webhook channels against local receivers that check what each service
//! documents: field names and types, escaping, length limits, the request path and content
//! type. A receiver rejects a malformed payload with 400 and the reason, as the service would,
//! so a format mistake fails the delivery. Then the faults: 500, 429 with `Retry-After` (and
//! Telegram's JSON `retry_after`), 400, connection refused, and that no error ever shows the
//! secret URL or token.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use orderwatch::config::{MattermostConfig, SlackConfig, TelegramConfig, WebhookConfig};
use orderwatch::notify::channels::mattermost::{self, Mattermost};
use orderwatch::notify::channels::slack::{self, Slack};
use orderwatch::notify::channels::telegram::{self, Telegram};
use orderwatch::notify::channels::webhook::{self, Webhook};
use orderwatch::notify::{Deliver, DeliveryError, Notification, NotifyStatus};
use serde::Deserialize;
use serde_json::{Value, json};

const TOKEN: &str = "123456789:AAHsEcReT-tOkEn_for_tests";
const SLACK_SECRET: &str = "T0000/B0000/XXXXsecretXXXX";
const MM_SECRET: &str = "mmsecrethookid0123456789";
const HOOK_SECRET: &str = "hook-s3cret";
const EXTERNAL_URL: &str = "http://orderwatch.example:9187";

// ---------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// An answer: status, extra headers, content type and body.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            content_type: "application/json",
            ..Reply::text(status, &body.to_string())
        }
    }
    fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }
    fn into_response(self) -> Response {
        let mut r = (
            StatusCode::from_u16(self.status).unwrap(),
            [("content-type", self.content_type)],
            self.body,
        )
            .into_response();
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        r
    }
}

type Check = fn(&Request) -> Result<(), String>;

struct State {
    check: Check,
    /// What a valid request is answered with.
    ok: Reply,
    /// When set, every request is answered with this instead (a fault).
    fault: Option<Reply>,
    requests: Vec<Request>,
    rejections: Vec<String>,
}

/// A local stand-in for a service: records each request, checks it, answers like the service.
struct Service {
    url: String,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start(check: Check, ok: Reply, bad_request: fn(&str) -> Reply) -> Service {
        let state = Arc::new(Mutex::new(State {
            check,
            ok,
            fault: None,
            requests: Vec::new(),
            rejections: Vec::new(),
        }));
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let state = shared.clone();
                async move {
                    let request = Request {
                        path: uri.path().to_string(),
                        query: uri.query().unwrap_or_default().to_string(),
                        headers,
                        body: body.to_vec(),
                    };
                    let mut s = state.lock().unwrap();
                    s.requests.push(request.clone());
                    if let Some(fault) = &s.fault {
                        return fault.clone().into_response();
                    }
                    let verdict = if method == Method::POST {
                        (s.check)(&request)
                    } else {
                        Err(format!("method {method} instead of POST"))
                    };
                    match verdict {
                        Ok(()) => s.ok.clone().into_response(),
                        Err(why) => {
                            s.rejections.push(why.clone());
                            bad_request(&why).into_response()
                        }
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Service { url, state, server }
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    fn last(&self) -> Request {
        self.requests().pop().expect("a request arrived")
    }

    fn fault(&self, reply: Option<Reply>) {
        self.state.lock().unwrap().fault = reply;
    }

    /// Delivers and insists that the service accepted the payload.
    async fn deliver_ok(&self, channel: &impl Deliver, n: &Notification) -> Request {
        let result = channel.deliver(n).await;
        let rejections = self.state.lock().unwrap().rejections.clone();
        assert!(
            rejections.is_empty(),
            "{} rejected the payload: {rejections:#?}",
            channel.kind()
        );
        result.unwrap_or_else(|e| panic!("{}: {e}", channel.kind()));
        self.last()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn require_json(r: &Request) -> Result<Value, String> {
    let ct = r.header("content-type");
    if !ct.starts_with("application/json") {
        return Err(format!("content-type {ct:?}, expected application/json"));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("body is not JSON: {e}"))
}

fn only_keys(v: &Value, allowed: &[&str], what: &str) -> Result<(), String> {
    let obj = v.as_object().ok_or(format!("{what} is not an object"))?;
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{what}: unknown field {k:?}")),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Notifications and configs
// ---------------------------------------------------------------------------------------

fn sample() -> Notification {
    Notification::sample("chat", EXTERNAL_URL)
}

/// `count` firing orders (oldest first), each with labels that need escaping (`&`, `<`, `|`,
/// `*`) and a trace link whose URL carries `&`.
fn large(count: usize) -> Notification {
    let mut n = sample();
    let template = n.alerts[1].clone();
    let now = chrono::Utc::now();
    n.alerts = (0..count)
        .map(|i| {
            let mut a = template.clone();
            let id = format!("JW-{:08}", 100_000 + i);
            let entered = now - chrono::Duration::minutes(90 + (count - i) as i64);
            a.labels.insert("order_id".into(), id.clone());
            a.labels
                .insert("workshop".into(), "line 2 | bench *7*".into());
            a.annotations.insert(
                "summary".into(),
                format!("Order {id} SUBMITTED for over an hour"),
            );
            a.annotations
                .insert("entered_at".into(), entered.to_rfc3339());
            a.annotations.insert(
                "trace_url".into(),
                format!("http://jaeger.example/search?service=crm&tags=order_id%3D{id}"),
            );
            a.fingerprint = format!("submitted_over_1h/{id}");
            a
        })
        .collect();
    let (labels, annotations) = Notification::common(&n.alerts);
    n.common_labels = labels;
    n.common_annotations = annotations;
    n.status = NotifyStatus::Firing;
    n
}

/// Everything recovered.
fn resolved() -> Notification {
    let mut n = sample();
    for a in &mut n.alerts {
        a.status = NotifyStatus::Resolved;
        a.ends_at = chrono::Utc::now();
    }
    n.status = NotifyStatus::Resolved;
    n
}

/// A config parsed from YAML, with `secret` written to the file `secret` next to it so that
/// `${file:secret}` is expanded by `validate`.
struct Yaml {
    dir: tempfile::TempDir,
}

impl Yaml {
    fn with_secret(secret: &str) -> Yaml {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), format!("{secret}\n")).unwrap();
        Yaml { dir }
    }
    fn parse<C: for<'de> Deserialize<'de>>(&self, yaml: &str) -> C {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }
}

fn slack(base: &str, extra: &str) -> Slack {
    let y = Yaml::with_secret(&format!("{base}/services/{SLACK_SECRET}"));
    let mut cfg: SlackConfig = y.parse(&format!(
        "webhook_url: ${{file:secret}}\nchannel: '#ops'\nusername: orderwatch\nicon_emoji: ':rotating_light:'\n{extra}"
    ));
    let problems = slack::validate(&mut cfg, y.dir.path());
    assert!(problems.is_empty(), "{problems:?}");
    Slack::new("slack-ops", &cfg).unwrap()
}

fn mattermost(base: &str, extra: &str) -> Mattermost {
    let y = Yaml::with_secret(&format!("{base}/hooks/{MM_SECRET}"));
    let mut cfg: MattermostConfig = y.parse(&format!(
        "webhook_url: ${{file:secret}}\nchannel: town-square\nusername: orderwatch\nicon_url: https://orderwatch.example/icon.png\n{extra}"
    ));
    let problems = mattermost::validate(&mut cfg, y.dir.path());
    assert!(problems.is_empty(), "{problems:?}");
    Mattermost::new("mm-ops", &cfg).unwrap()
}

fn telegram(base: &str, extra: &str) -> Telegram {
    let y = Yaml::with_secret(TOKEN);
    let mut cfg: TelegramConfig = y.parse(&format!(
        "bot_token: ${{file:secret}}\napi_url: {base}\n{extra}"
    ));
    let problems = telegram::validate(&mut cfg, y.dir.path());
    assert!(problems.is_empty(), "{problems:?}");
    Telegram::new("tg-ops", &cfg).unwrap()
}

fn webhook(base: &str, extra: &str) -> Webhook {
    let y = Yaml::with_secret(HOOK_SECRET);
    let mut cfg: WebhookConfig = y.parse(&format!(
        "url: {base}/alerts?token=${{file:secret}}\nheaders:\n  Authorization: Bearer ${{file:secret}}\n  X-Team: ops\n{extra}"
    ));
    let problems = webhook::validate(&mut cfg, y.dir.path());
    assert!(problems.is_empty(), "{problems:?}");
    Webhook::new("hook", &cfg).unwrap()
}

// ---------------------------------------------------------------------------------------
// Slack: incoming webhooks and Block Kit
// ---------------------------------------------------------------------------------------

const SLACK_FIELDS: &[&str] = &[
    "text",
    "blocks",
    "attachments",
    "channel",
    "username",
    "icon_emoji",
    "icon_url",
    "mrkdwn",
    "unfurl_links",
    "unfurl_media",
    "thread_ts",
];

/// Slack mrkdwn: `&`, `<`, `>` only as `&amp;` `&lt;` `&gt;`, in `<url|label>` links, or `>`
/// starting a quote line.
fn check_mrkdwn(s: &str) -> Result<(), String> {
    let mut rest = s;
    let mut at_line_start = true;
    while let Some(c) = rest.chars().next() {
        let len = match c {
            '&' => ["&amp;", "&lt;", "&gt;"]
                .iter()
                .find(|e| rest.starts_with(*e))
                .map(|e| e.len())
                .ok_or_else(|| format!("unescaped & at {:?}", head(rest)))?,
            '<' => {
                let end = rest
                    .find('>')
                    .ok_or_else(|| format!("unclosed < at {:?}", head(rest)))?;
                let inner = &rest[1..end];
                let target = inner.split('|').next().unwrap_or_default();
                if !(target.starts_with("http://") || target.starts_with("https://"))
                    || inner.contains('<')
                    || inner.matches('|').count() > 1
                {
                    return Err(format!("not a link: <{inner}>"));
                }
                end + 1
            }
            '>' if at_line_start => 1,
            '>' => return Err(format!("unescaped > at {:?}", head(rest))),
            c => c.len_utf8(),
        };
        at_line_start = c == '\n';
        rest = &rest[len..];
    }
    Ok(())
}

fn head(s: &str) -> String {
    s.chars().take(30).collect()
}

fn text_object(v: &Value, max: usize, what: &str) -> Result<String, String> {
    let kind = v["type"].as_str().unwrap_or_default();
    let text = v["text"]
        .as_str()
        .ok_or(format!("{what}: text is not a string"))?;
    let n = text.chars().count();
    if n == 0 || n > max {
        return Err(format!("{what}: {n} characters (1..={max} allowed)"));
    }
    match kind {
        "mrkdwn" => check_mrkdwn(text).map_err(|e| format!("{what}: {e}"))?,
        "plain_text" => {}
        _ => return Err(format!("{what}: text type {kind:?}")),
    }
    Ok(text.to_string())
}

fn check_slack(r: &Request) -> Result<(), String> {
    let v = require_json(r)?;
    only_keys(&v, SLACK_FIELDS, "payload")?;
    let text = v["text"].as_str().ok_or("text is missing")?;
    if text.is_empty() || text.chars().count() > 40_000 {
        return Err("text must be 1..=40000 characters".into());
    }
    check_mrkdwn(text).map_err(|e| format!("text: {e}"))?;
    let Some(blocks) = v.get("blocks") else {
        return Ok(());
    };
    let blocks = blocks.as_array().ok_or("blocks is not an array")?;
    if blocks.is_empty() || blocks.len() > 50 {
        return Err(format!("{} blocks (1..=50 allowed)", blocks.len()));
    }
    for (i, b) in blocks.iter().enumerate() {
        let what = format!("block {i}");
        match b["type"].as_str() {
            Some("header") => {
                only_keys(b, &["type", "text", "block_id"], &what)?;
                if b["text"]["type"] != "plain_text" {
                    return Err(format!("{what}: a header's text must be plain_text"));
                }
                text_object(&b["text"], 150, &what)?;
            }
            Some("section") => {
                only_keys(
                    b,
                    &["type", "text", "fields", "block_id", "accessory"],
                    &what,
                )?;
                if b.get("text").is_none() && b.get("fields").is_none() {
                    return Err(format!("{what}: a section needs text or fields"));
                }
                if let Some(t) = b.get("text") {
                    text_object(t, 3000, &what)?;
                }
                if let Some(fields) = b.get("fields") {
                    let fields = fields.as_array().ok_or(format!("{what}: fields"))?;
                    if fields.is_empty() || fields.len() > 10 {
                        return Err(format!("{what}: {} fields (1..=10)", fields.len()));
                    }
                    for f in fields {
                        text_object(f, 2000, &what)?;
                    }
                }
            }
            Some("context") => {
                only_keys(b, &["type", "elements", "block_id"], &what)?;
                let elements = b["elements"]
                    .as_array()
                    .ok_or(format!("{what}: elements"))?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err(format!("{what}: {} elements (1..=10)", elements.len()));
                }
                for e in elements {
                    text_object(e, 3000, &what)?;
                }
            }
            Some("divider") => {}
            other => return Err(format!("{what}: unexpected block type {other:?}")),
        }
    }
    Ok(())
}

async fn slack_service() -> Service {
    // Slack answers `ok` as text, and errors as a 4xx with a short code.
    Service::start(check_slack, Reply::text(200, "ok"), |why| {
        Reply::text(400, &format!("invalid_blocks: {why}"))
    })
    .await
}

/// Every section/context text of the blocks.
fn block_texts(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for b in body["blocks"].as_array().unwrap() {
        if let Some(t) = b["text"]["text"].as_str() {
            out.push(t.to_string());
        }
        for f in b["fields"].as_array().into_iter().flatten() {
            out.push(f["text"].as_str().unwrap().to_string());
        }
        for e in b["elements"].as_array().into_iter().flatten() {
            out.push(e["text"].as_str().unwrap().to_string());
        }
    }
    out
}

/// The bullet lines and the "and K more" counts of a text.
fn listed_and_more(text: &str) -> (usize, u64) {
    let listed = text.lines().filter(|l| l.starts_with("• ")).count();
    let more = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(['…', ' ']);
            l.strip_prefix("and ")?
                .strip_suffix(" more")?
                .parse::<u64>()
                .ok()
        })
        .sum();
    (listed, more)
}

#[tokio::test]
async fn slack_sample_is_an_escaped_block_kit_message() {
    let service = slack_service().await;
    let channel = slack(&service.url, "");
    assert_eq!(channel.kind(), "slack");
    assert_eq!(channel.min_interval(), Duration::from_secs(1));
    let r = service.deliver_ok(&channel, &sample()).await;
    assert_eq!(r.path, format!("/services/{SLACK_SECRET}"));
    let body = r.json();
    assert_eq!(body["channel"], "#ops");
    assert_eq!(body["username"], "orderwatch");
    assert_eq!(body["icon_emoji"], ":rotating_light:");

    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with(":red_circle: *[FIRING:2] submitted_over_1h (shop, critical)*"),
        "{text}"
    );
    assert!(
        text.contains("order_type: pendant &amp; chain &lt;test&gt;"),
        "{text}"
    );
    assert!(!text.contains("<test>"), "{text}");
    assert!(text.contains("• `JW-00000042` SUBMITTED for 3h"), "{text}");
    assert!(text.contains("*Recovered:* 1\n• `JW-00000017`"), "{text}");
    assert!(text.contains("nothing is wrong"), "{text}");
    assert!(
        text.ends_with(&format!("<{EXTERNAL_URL}|Open orderwatch>")),
        "{text}"
    );

    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(
        blocks[0]["text"]["text"],
        ":red_circle: [FIRING:2] submitted_over_1h (shop, critical)"
    );
    let texts = block_texts(&body).join("\n");
    for needle in [
        "*Rule*\n`submitted_over_1h`",
        "*Severity*\ncritical",
        "*Stuck orders*\n2",
        "*Oldest*\n3h",
        "pendant &amp; chain &lt;test&gt;",
        "*Recovered*\n• `JW-00000017` was SUBMITTED",
        "> orderwatch notify-test",
        &format!("<{EXTERNAL_URL}|Open orderwatch>"),
    ] {
        assert!(texts.contains(needle), "{needle:?} not in\n{texts}");
    }

    let r = service.deliver_ok(&channel, &resolved()).await;
    let text = r.json()["text"].as_str().unwrap().to_string();
    assert!(
        text.starts_with(":white_check_mark: *[RESOLVED] submitted_over_1h (shop): 3 recovered*"),
        "{text}"
    );
    assert!(!text.contains("Stuck orders"), "{text}");
}

#[tokio::test]
async fn slack_large_notifications_keep_within_limits_and_count_the_rest() {
    let service = slack_service().await;
    let n = large(300);

    // Default: ten orders, the other 290 counted, in blocks and in the fallback text.
    let body = service
        .deliver_ok(&slack(&service.url, ""), &n)
        .await
        .json();
    let (listed, more) = listed_and_more(&block_texts(&body).join("\n"));
    assert_eq!((listed, more), (10, 290));
    assert_eq!(listed_and_more(body["text"].as_str().unwrap()), (10, 290));

    // Asking for all 300: the receiver checked every Block Kit limit; what is not listed is
    // counted, in the blocks and in the (shorter) fallback text alike.
    let body = service
        .deliver_ok(&slack(&service.url, "max_orders: 300"), &n)
        .await
        .json();
    let (listed, more) = listed_and_more(&block_texts(&body).join("\n"));
    assert_eq!(listed as u64 + more, 300);
    assert!(listed > 10, "{listed}");
    let text = body["text"].as_str().unwrap();
    assert!(text.chars().count() <= 4000);
    let (listed, more) = listed_and_more(text);
    assert!(listed > 0 && more > 0, "{text}");
    assert_eq!(listed as u64 + more, 300, "{text}");
}

#[tokio::test]
async fn slack_custom_text_is_sent_alone() {
    let service = slack_service().await;
    let channel = slack(
        &service.url,
        "text: '{{ title }}: {% for o in orders %}{{ o.order_id }} ({{ o.labels.order_type }}) {% endfor %}'",
    );
    let body = service.deliver_ok(&channel, &sample()).await.json();
    assert_eq!(
        body["text"],
        "[FIRING:2] submitted_over_1h (shop, critical): JW-00000042 (ring) JW-00000043 (pendant &amp; chain &lt;test&gt;) "
    );
    assert!(body.get("blocks").is_none());
}

// ---------------------------------------------------------------------------------------
// Mattermost: incoming webhooks, Markdown
// ---------------------------------------------------------------------------------------

const MATTERMOST_FIELDS: &[&str] = &[
    "text",
    "channel",
    "username",
    "icon_url",
    "icon_emoji",
    "attachments",
    "type",
    "props",
    "priority",
];

/// Unescaped `|` in a Markdown table row.
fn cells(row: &str) -> usize {
    row.replace("\\\\", "")
        .replace("\\|", "")
        .matches('|')
        .count()
}

fn check_mattermost(r: &Request) -> Result<(), String> {
    let v = require_json(r)?;
    only_keys(&v, MATTERMOST_FIELDS, "payload")?;
    for key in ["channel", "username", "icon_url"] {
        if v.get(key).is_some_and(|x| !x.is_string()) {
            return Err(format!("{key} is not a string"));
        }
    }
    let text = v["text"].as_str().ok_or("text is missing")?;
    let n = text.chars().count();
    if n == 0 || n > 16383 {
        return Err(format!("message is {n} characters (1..=16383 allowed)"));
    }
    // A table's rows have as many cells as its header: a `|` in a value must be escaped.
    let mut columns = None;
    for line in text.lines() {
        if line.starts_with('|') {
            let c = cells(line);
            if *columns.get_or_insert(c) != c {
                return Err(format!(
                    "table row with {c} cells, header has {columns:?}: {line}"
                ));
            }
        } else {
            columns = None;
        }
    }
    Ok(())
}

async fn mattermost_service() -> Service {
    Service::start(check_mattermost, Reply::text(200, "ok"), |why| {
        Reply::json(
            400,
            json!({"id": "web.incoming_webhook.parse.app_error", "message": why, "status_code": 400}),
        )
    })
    .await
}

#[tokio::test]
async fn mattermost_sample_is_escaped_markdown_with_a_table() {
    let service = mattermost_service().await;
    let channel = mattermost(&service.url, "");
    assert_eq!(channel.kind(), "mattermost");
    assert_eq!(channel.min_interval(), Duration::from_secs(1));
    let r = service.deliver_ok(&channel, &sample()).await;
    assert_eq!(r.path, format!("/hooks/{MM_SECRET}"));
    let body = r.json();
    assert_eq!(body["channel"], "town-square");
    assert_eq!(body["username"], "orderwatch");
    assert_eq!(body["icon_url"], "https://orderwatch.example/icon.png");
    let text = body["text"].as_str().unwrap();
    for needle in [
        r":red_circle: **\[FIRING:2\] submitted\_over\_1h (shop, critical)**",
        "**Rule** `submitted_over_1h`",
        "**Stuck orders** 2",
        "| Order | Status | Age | Labels | Links |",
        "| `JW-00000042` | SUBMITTED | 3h",
        r"order\_type: pendant & chain \<test\>, team: sales",
        "**Recovered (1):** `JW-00000017`",
        "> orderwatch notify-test",
        &format!("[Open orderwatch]({EXTERNAL_URL})"),
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert!(!text.contains(" <test>"), "{text}");
}

#[tokio::test]
async fn mattermost_large_notifications_stay_under_the_post_limit() {
    let service = mattermost_service().await;
    let n = large(300);
    let rows = |text: &str| text.lines().filter(|l| l.starts_with("| `JW-")).count();
    let more = |text: &str| listed_and_more(text).1;

    let body = service
        .deliver_ok(&mattermost(&service.url, ""), &n)
        .await
        .json();
    let text = body["text"].as_str().unwrap();
    assert_eq!((rows(text), more(text)), (10, 290), "{text}");
    assert!(text.contains("[trace](http://jaeger.example/search?service=crm&tags=order"));

    let body = service
        .deliver_ok(&mattermost(&service.url, "max_orders: 300"), &n)
        .await
        .json();
    let text = body["text"].as_str().unwrap();
    assert!(text.chars().count() <= 16383);
    assert!(rows(text) > 10 && more(text) > 0, "{text}");
    assert_eq!(rows(text) as u64 + more(text), 300);
}

// ---------------------------------------------------------------------------------------
// Telegram: Bot API sendMessage, HTML parse mode
// ---------------------------------------------------------------------------------------

const SEND_MESSAGE_FIELDS: &[&str] = &[
    "business_connection_id",
    "chat_id",
    "message_thread_id",
    "direct_messages_topic_id",
    "text",
    "parse_mode",
    "entities",
    "link_preview_options",
    "disable_notification",
    "protect_content",
    "allow_paid_broadcast",
    "message_effect_id",
    "suggested_post_parameters",
    "reply_parameters",
    "reply_markup",
];

/// Parses Telegram's HTML as its docs describe: only supported tags, nested properly, every
/// `<`, `>`, `&` outside a tag written as an entity (named: lt, gt, amp, quot; or numeric).
/// Returns the visible text.
fn telegram_visible_text(s: &str) -> Result<String, String> {
    const TAGS: &[&str] = &[
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-spoiler",
        "span",
        "tg-emoji",
    ];
    let mut visible = String::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        match c {
            '<' => {
                let end = rest.find('>').ok_or("unclosed <")?;
                let inner = &rest[1..end];
                if let Some(name) = inner.strip_prefix('/') {
                    if open.pop().as_deref() != Some(name.trim()) {
                        return Err(format!("</{name}> closes nothing open"));
                    }
                } else {
                    let name = inner.split_whitespace().next().unwrap_or_default();
                    if !TAGS.contains(&name) {
                        return Err(format!("unsupported tag <{inner}>"));
                    }
                    if name == "a" {
                        let href = inner
                            .strip_prefix("a href=\"")
                            .and_then(|h| h.strip_suffix('"'))
                            .ok_or(format!("bad link tag <{inner}>"))?;
                        if href.contains(['"', '<', '>']) {
                            return Err(format!("unescaped quote or bracket in href: {href}"));
                        }
                    }
                    open.push(name.to_string());
                }
                rest = &rest[end + 1..];
            }
            '&' => {
                let end = rest.find(';').ok_or("bare &")?;
                let entity = &rest[1..end];
                let ch = match entity {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    e if e.starts_with('#') => e[1..]
                        .parse::<u32>()
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or(format!("bad entity &{e};"))?,
                    e => return Err(format!("unsupported entity &{e};")),
                };
                visible.push(ch);
                rest = &rest[end + 1..];
            }
            '>' => return Err("bare >".into()),
            c => {
                visible.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    match open.pop() {
        Some(name) => Err(format!("<{name}> is never closed")),
        None => Ok(visible),
    }
}

fn check_telegram(r: &Request) -> Result<(), String> {
    let token = r
        .path
        .strip_prefix("/bot")
        .and_then(|p| p.strip_suffix("/sendMessage"))
        .ok_or(format!("Not Found: path {}", r.path))?;
    let (id, secret) = token.split_once(':').ok_or("Unauthorized")?;
    if id.parse::<u64>().is_err() || secret.is_empty() {
        return Err("Unauthorized".into());
    }
    let v = require_json(r)?;
    only_keys(&v, SEND_MESSAGE_FIELDS, "sendMessage")?;
    match &v["chat_id"] {
        Value::Number(n) if n.is_i64() => {}
        Value::String(s) if s.starts_with('@') => {}
        other => return Err(format!("chat_id {other}: integer or @channelusername")),
    }
    if v.get("message_thread_id").is_some_and(|t| !t.is_i64()) {
        return Err("message_thread_id is not an integer".into());
    }
    if !v["disable_notification"].is_boolean() {
        return Err("disable_notification is not a boolean".into());
    }
    if !v["link_preview_options"]["is_disabled"].is_boolean() {
        return Err("link_preview_options.is_disabled is not a boolean".into());
    }
    if v["parse_mode"] != "HTML" {
        return Err(format!("parse_mode {}", v["parse_mode"]));
    }
    let text = v["text"].as_str().ok_or("text is missing")?;
    let visible = telegram_visible_text(text).map_err(|e| format!("can't parse entities: {e}"))?;
    let n = visible.encode_utf16().count();
    if visible.trim().is_empty() || n > 4096 {
        return Err(format!("message text is {n} characters (1..=4096 allowed)"));
    }
    Ok(())
}

async fn telegram_service() -> Service {
    let ok = json!({"ok": true, "result": {
        "message_id": 4242, "date": 1_780_000_000,
        "chat": {"id": -1001234567890_i64, "title": "ops", "type": "supergroup"},
        "text": "…"}});
    Service::start(check_telegram, Reply::json(200, ok), |why| {
        Reply::json(
            400,
            json!({"ok": false, "error_code": 400, "description": format!("Bad Request: {why}")}),
        )
    })
    .await
}

#[tokio::test]
async fn telegram_sample_is_escaped_html_in_send_message() {
    let service = telegram_service().await;
    let channel = telegram(
        &service.url,
        "chat_id: -1001234567890\nmessage_thread_id: 7\ndisable_notification: true",
    );
    assert_eq!(channel.kind(), "telegram");
    assert_eq!(channel.min_interval(), Duration::from_secs(1));
    let r = service.deliver_ok(&channel, &sample()).await;
    assert_eq!(r.path, format!("/bot{TOKEN}/sendMessage"));
    let body = r.json();
    assert_eq!(body["chat_id"], json!(-1001234567890_i64));
    assert_eq!(body["message_thread_id"], 7);
    assert_eq!(body["disable_notification"], true);
    assert_eq!(body["parse_mode"], "HTML");
    assert_eq!(body["link_preview_options"], json!({"is_disabled": true}));
    let text = body["text"].as_str().unwrap();
    for needle in [
        "🔴 <b>[FIRING:2] submitted_over_1h (shop, critical)</b>",
        "Rule: <code>submitted_over_1h</code>",
        "Stuck orders: <b>2</b>",
        "• <code>JW-00000042</code> SUBMITTED for 3h",
        "order_type: pendant &amp; chain &lt;test&gt;",
        "Recovered: <b>1</b>\n• <code>JW-00000017</code>",
        "<i>orderwatch notify-test: a sample alert, nothing is wrong.</i>",
        &format!("<a href=\"{EXTERNAL_URL}\">Open orderwatch</a>"),
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    let visible = telegram_visible_text(text).unwrap();
    assert!(visible.contains("pendant & chain <test>"), "{visible}");

    // A public channel by username, sound on, no topic.
    let channel = telegram(&service.url, "chat_id: '@orderwatch_ops'");
    let body = service.deliver_ok(&channel, &resolved()).await.json();
    assert_eq!(body["chat_id"], "@orderwatch_ops");
    assert_eq!(body["disable_notification"], false);
    assert!(body.get("message_thread_id").is_none());
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("✅ <b>[RESOLVED] submitted_over_1h (shop): 3 recovered</b>"),
        "{text}"
    );
}

#[tokio::test]
async fn telegram_large_notifications_fit_4096_characters_and_count_the_rest() {
    let service = telegram_service().await;
    let n = large(300);

    let body = service
        .deliver_ok(&telegram(&service.url, "chat_id: 42"), &n)
        .await
        .json();
    let text = body["text"].as_str().unwrap();
    assert_eq!(listed_and_more(text), (10, 290), "{text}");
    assert!(
        text.contains("<a href=\"http://jaeger.example/search?service=crm&amp;tags=order_id%3DJW-00100000\">trace</a>"),
        "{text}"
    );

    let body = service
        .deliver_ok(&telegram(&service.url, "chat_id: 42\nmax_orders: 300"), &n)
        .await
        .json();
    let text = body["text"].as_str().unwrap();
    let visible = telegram_visible_text(text).unwrap();
    assert!(visible.encode_utf16().count() <= 4096);
    let (listed, more) = listed_and_more(text);
    assert!(listed > 10 && more > 0, "{listed} listed, {more} more");
    assert_eq!(listed as u64 + more, 300);
    assert!(
        text.ends_with("Open orderwatch</a>"),
        "the footer survives: {text}"
    );

    // A description too long for any message: cut, never inside a tag or an entity.
    let mut n = sample();
    n.common_annotations
        .insert("description".into(), "a < b & c > d ".repeat(600));
    let body = service
        .deliver_ok(&telegram(&service.url, "chat_id: 42"), &n)
        .await
        .json();
    let text = body["text"].as_str().unwrap();
    let visible = telegram_visible_text(text).unwrap();
    assert!(visible.encode_utf16().count() <= 4096);
    assert!(text.ends_with("…</i>"), "{}", &text[text.len() - 40..]);
}

// ---------------------------------------------------------------------------------------
// Webhook: Alertmanager's webhook format
// ---------------------------------------------------------------------------------------

/// Alertmanager's webhook message (`notify/webhook.Message`: `template.Data` plus version,
/// groupKey, truncatedAlerts), field for field: every field required, nothing else allowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AmMessage {
    version: String,
    #[serde(rename = "groupKey")]
    group_key: String,
    #[serde(rename = "truncatedAlerts")]
    truncated_alerts: u64,
    status: String,
    receiver: String,
    #[serde(rename = "groupLabels")]
    group_labels: BTreeMap<String, String>,
    #[serde(rename = "commonLabels")]
    common_labels: BTreeMap<String, String>,
    #[serde(rename = "commonAnnotations")]
    common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: String,
    alerts: Vec<AmAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AmAlert {
    status: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: chrono::DateTime<chrono::Utc>,
    #[serde(rename = "endsAt")]
    ends_at: chrono::DateTime<chrono::Utc>,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

fn check_webhook(r: &Request) -> Result<(), String> {
    let v = require_json(r)?;
    let m: AmMessage =
        serde_json::from_value(v).map_err(|e| format!("not a webhook message: {e}"))?;
    if m.version != "4" {
        return Err(format!("version {:?}", m.version));
    }
    for a in &m.alerts {
        if !["firing", "resolved"].contains(&a.status.as_str()) {
            return Err(format!("alert status {:?}", a.status));
        }
    }
    Ok(())
}

async fn webhook_service() -> Service {
    Service::start(check_webhook, Reply::text(200, ""), |why| {
        Reply::text(400, why)
    })
    .await
}

#[tokio::test]
async fn webhook_posts_the_alertmanager_body_with_its_headers() {
    let service = webhook_service().await;
    let channel = webhook(&service.url, "");
    assert_eq!(channel.kind(), "webhook");
    assert_eq!(channel.min_interval(), Duration::ZERO);
    let n = sample();
    let r = service.deliver_ok(&channel, &n).await;
    assert_eq!(r.path, "/alerts");
    assert_eq!(r.query, format!("token={HOOK_SECRET}"));
    assert_eq!(r.header("authorization"), format!("Bearer {HOOK_SECRET}"));
    assert_eq!(r.header("x-team"), "ops");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.json(),
        n.webhook_body(),
        "exactly the notification's webhook body"
    );
    let m: AmMessage = serde_json::from_value(r.json()).unwrap();
    assert_eq!((m.version.as_str(), m.truncated_alerts), ("4", 0));
    assert_eq!(m.status, "firing");
    assert_eq!(m.alerts.len(), 3);
    assert_eq!(m.alerts[1].labels["order_type"], "pendant & chain <test>");
    assert_eq!(m.alerts[2].status, "resolved");
    assert_eq!(
        m.alerts[0].ends_at.to_rfc3339(),
        "0001-01-01T00:00:00+00:00"
    );
}

#[tokio::test]
async fn webhook_max_alerts_truncates_like_alertmanager() {
    let service = webhook_service().await;
    let n = large(300);
    let body = service
        .deliver_ok(&webhook(&service.url, "max_alerts: 100"), &n)
        .await
        .json();
    assert_eq!(body["alerts"].as_array().unwrap().len(), 100);
    assert_eq!(body["truncatedAlerts"], 200);
    assert_eq!(body["alerts"][0], n.webhook_body()["alerts"][0]);
    let body = service
        .deliver_ok(&webhook(&service.url, ""), &n)
        .await
        .json();
    assert_eq!(body["alerts"].as_array().unwrap().len(), 300);
    assert_eq!(body["truncatedAlerts"], 0);
}

/// The JSON shape of a value: object keys (recursively) and leaf types.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

/// The key sets of the top level and of an alert.
fn keys(v: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let set = |v: &Value| v.as_object().unwrap().keys().cloned().collect();
    (set(v), set(&v["alerts"][0]))
}

#[tokio::test]
async fn webhook_body_has_the_shape_of_a_real_alertmanager_webhook() {
    // What a real Alertmanager posts to a webhook receiver, next to ours.
    let receiver = common::WebhookReceiver::start().await;
    let Some(am) = common::Alertmanager::start(Some(&format!("{}/am", receiver.url()))).await
    else {
        return;
    };
    let alert = json!([{
        "labels": {"alertname": "StuckOrder", "rule": "submitted_over_1h", "order_id": "JW-1"},
        "annotations": {"summary": "stuck"},
        "generatorURL": "http://orderwatch.example/api/v1/alerts",
    }]);
    let resp = common::http_client()
        .post(format!("{}/api/v2/alerts", am.url()))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let theirs = receiver
        .wait_for(|b| !b.is_empty(), Duration::from_secs(30))
        .await
        .remove(0);

    let ours = sample().webhook_body();
    assert_eq!(
        keys(&ours),
        keys(&theirs),
        "ours:\n{ours:#}\nAlertmanager's:\n{theirs:#}"
    );
    let (ours, theirs) = (shape(&ours), shape(&theirs));
    for key in [
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "externalURL",
    ] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    for key in [
        "status",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    ] {
        assert_eq!(
            ours["alerts"][0][key], theirs["alerts"][0][key],
            "alerts[].{key}"
        );
    }
    // And Alertmanager's own body passes the field-for-field check our receiver applies.
    let theirs: Value = receiver.bodies().await.remove(0);
    serde_json::from_value::<AmMessage>(theirs).unwrap();
}

// ---------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------

/// The secrets a channel must never show.
const SECRETS: &[&str] = &[TOKEN, SLACK_SECRET, MM_SECRET, HOOK_SECRET, "AAHsEcReT"];

fn assert_no_secret(e: &DeliveryError) {
    for text in [e.to_string(), format!("{e:?}")] {
        for secret in SECRETS {
            assert!(!text.contains(secret), "a secret in the error: {text}");
        }
    }
}

/// 500, 429 with `Retry-After`, 400 and connection refused, for the channel `make` builds
/// against a base URL.
async fn faults<D: Deliver>(make: impl Fn(&str) -> D, bad_request: Reply, bad_text: &str) {
    fn ok_check(_: &Request) -> Result<(), String> {
        Ok(())
    }
    let service = Service::start(ok_check, Reply::text(200, "ok"), |w| Reply::text(400, w)).await;
    let channel = make(&service.url);
    let kind = channel.kind();
    let n = sample();

    service.fault(Some(Reply::text(500, "internal error")));
    let e = channel.deliver(&n).await.unwrap_err();
    assert!(
        matches!(&e, DeliveryError::Retry(m) if m.contains("500")),
        "{kind}: {e:?}"
    );
    assert_no_secret(&e);

    service.fault(Some(
        Reply::text(429, "slow down").with_header("retry-after", "7"),
    ));
    let e = channel.deliver(&n).await.unwrap_err();
    assert!(
        matches!(&e, DeliveryError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_secs(7)),
        "{kind}: {e:?}"
    );
    assert_no_secret(&e);

    service.fault(Some(bad_request));
    let e = channel.deliver(&n).await.unwrap_err();
    assert!(
        matches!(&e, DeliveryError::Permanent(m) if m.contains("400") && m.contains(bad_text)),
        "{kind}: {e:?}"
    );
    assert_no_secret(&e);

    service.fault(None);
    channel
        .deliver(&n)
        .await
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
    assert_eq!(service.requests().len(), 4);

    // Nothing listens: a transport error, worth a retry, without the URL.
    drop(service);
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let e = make(&closed).deliver(&n).await.unwrap_err();
    assert!(matches!(&e, DeliveryError::Retry(_)), "{kind}: {e:?}");
    assert!(!e.to_string().contains("127.0.0.1"), "{kind}: {e}");
    assert_no_secret(&e);
}

#[tokio::test]
async fn slack_faults_are_classified_without_the_webhook_url() {
    faults(
        |url| slack(url, ""),
        Reply::text(400, "invalid_payload"),
        "invalid_payload",
    )
    .await;
}

#[tokio::test]
async fn mattermost_faults_are_classified_without_the_webhook_url() {
    let body = json!({"id": "web.incoming_webhook.channel.app_error", "message": "Couldn't find the channel.", "status_code": 400});
    faults(
        |url| mattermost(url, ""),
        Reply::json(400, body),
        "Couldn't find the channel.",
    )
    .await;
}

#[tokio::test]
async fn webhook_faults_are_classified_without_the_token() {
    faults(
        |url| webhook(url, ""),
        Reply::text(400, "unknown receiver"),
        "unknown receiver",
    )
    .await;
}

#[tokio::test]
async fn telegram_faults_are_classified_without_the_token() {
    let body =
        json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"});
    faults(
        |url| telegram(url, "chat_id: 42"),
        Reply::json(400, body),
        "chat not found",
    )
    .await;

    // Telegram's own 429: the wait is in the JSON body, not in a header.
    let service = telegram_service().await;
    let channel = telegram(&service.url, "chat_id: 42");
    service.fault(Some(Reply::json(
        429,
        json!({"ok": false, "error_code": 429,
               "description": "Too Many Requests: retry after 13",
               "parameters": {"retry_after": 13}}),
    )));
    let e = channel.deliver(&sample()).await.unwrap_err();
    assert!(
        matches!(&e, DeliveryError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_secs(13)),
        "{e:?}"
    );
    assert_no_secret(&e);

    // A 200 whose JSON says `ok: false` is not a delivery.
    service.fault(Some(Reply::json(
        200,
        json!({"ok": false, "error_code": 400, "description": "Bad Request: odd"}),
    )));
    let e = channel.deliver(&sample()).await.unwrap_err();
    assert!(
        matches!(&e, DeliveryError::Permanent(m) if m.contains("odd")),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

#[test]
fn configs_reject_unknown_keys_and_accept_both_chat_id_forms() {
    let e = serde_saphyr::from_str::<SlackConfig>("webhook_url: https://h/x\nchanel: '#ops'\n")
        .unwrap_err();
    assert!(e.to_string().contains("chanel"), "{e}");
    for (yaml, want) in [
        ("chat_id: -1001234567890", json!(-1001234567890_i64)),
        ("chat_id: '-1001234567890'", json!(-1001234567890_i64)),
        ("chat_id: '@orderwatch_ops'", json!("@orderwatch_ops")),
    ] {
        let cfg: TelegramConfig =
            serde_saphyr::from_str(&format!("bot_token: ${{TG}}\n{yaml}\n")).unwrap();
        assert_eq!(
            serde_json::to_value(&cfg.chat_id.value).unwrap(),
            want,
            "{yaml}"
        );
        assert_eq!(cfg.api_url.value, "https://api.telegram.org");
        assert_eq!(
            (cfg.max_orders, cfg.timeout.0),
            (10, Duration::from_secs(10))
        );
    }
    let cfg: WebhookConfig = serde_saphyr::from_str("url: http://h/x\n").unwrap();
    assert_eq!((cfg.max_alerts, cfg.headers.len()), (1000, 0));
}

#[test]
fn validate_names_each_problem_at_its_line_without_the_secret() {
    let y = Yaml::with_secret("not-a-token-but-secret");
    let mut cfg: TelegramConfig = y.parse(
        "bot_token: ${file:secret}\n\
         chat_id: 'ops channel'\n\
         api_url: ftp://api.example\n\
         text: '<h1>{{ title }}</h1>'\n\
         message_thread_id: 0\n",
    );
    let problems = telegram::validate(&mut cfg, y.dir.path());
    let lines: Vec<u64> = problems.iter().map(|(l, _)| l.line()).collect();
    assert_eq!(lines, [1, 3, 2, 5, 4], "{problems:?}");
    let text = format!("{problems:?}");
    assert!(!text.contains("not-a-token-but-secret"), "{text}");
    assert!(text.contains("api_url must be an http"), "{text}");
    assert!(text.contains("<h1> is not supported"), "{text}");

    let y = Yaml::with_secret("x");
    let mut cfg: SlackConfig = y.parse(
        "webhook_url: ${OW_TEST_UNSET_SLACK_URL}\n\
         text: '{% if %}'\n",
    );
    let problems = slack::validate(&mut cfg, y.dir.path());
    let lines: Vec<u64> = problems.iter().map(|(l, _)| l.line()).collect();
    assert_eq!(lines, [1, 2], "{problems:?}");
    assert!(
        problems[0].1.contains("OW_TEST_UNSET_SLACK_URL"),
        "{problems:?}"
    );

    let mut cfg: MattermostConfig = y.parse(
        "webhook_url: 'https://mm.example/hooks/${file:missing}'\n\
         icon_url: not-a-url\n",
    );
    let problems = mattermost::validate(&mut cfg, y.dir.path());
    let lines: Vec<u64> = problems.iter().map(|(l, _)| l.line()).collect();
    assert_eq!(lines, [1, 2], "{problems:?}");

    let mut cfg: WebhookConfig = y.parse(
        "url: http://hook.example/x\n\
         headers:\n  Authorization: 'Bearer ${file:secret}'\n  Content-Type: text/plain\n",
    );
    let problems = webhook::validate(&mut cfg, y.dir.path());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0.line(), 4, "{problems:?}");
    assert_eq!(cfg.headers["Authorization"].value, "Bearer x");
}

/// The receivers' checks reject what the services reject: the tests above could fail.
#[test]
fn receivers_reject_malformed_payloads() {
    let request = |path: &str, body: Value| Request {
        path: path.to_string(),
        query: String::new(),
        headers: HeaderMap::from_iter([(
            axum::http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        )]),
        body: body.to_string().into_bytes(),
    };
    let slack = |body: Value| check_slack(&request("/services/x", body));
    assert!(slack(json!({"text": "ok &amp; <http://x|link>"})).is_ok());
    assert!(slack(json!({"text": "a & b"})).is_err());
    assert!(slack(json!({"text": "pendant <test>"})).is_err());
    assert!(slack(json!({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(151)}}]})).is_err());
    assert!(slack(json!({"text": "x", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "s".repeat(3001)}}]})).is_err());
    let many: Vec<Value> = (0..51).map(|_| json!({"type": "divider"})).collect();
    assert!(slack(json!({"text": "x", "blocks": many})).is_err());
    assert!(slack(json!({"text": "x", "colour": "red"})).is_err());
    let mut plain = request("/services/x", json!({"text": "x"}));
    plain.headers.clear();
    assert!(check_slack(&plain).is_err(), "content type");

    let mm = |text: &str| check_mattermost(&request("/hooks/x", json!({"text": text})));
    assert!(mm("| a | b |\n|---|---|\n| 1 | x \\| y |").is_ok());
    assert!(mm("| a | b |\n|---|---|\n| 1 | x | y |").is_err());
    assert!(mm(&"x".repeat(16384)).is_err());

    let tg = |path: &str, text: &str| {
        check_telegram(&request(
            path,
            json!({"chat_id": 1, "text": text, "parse_mode": "HTML",
                   "disable_notification": false, "link_preview_options": {"is_disabled": true}}),
        ))
    };
    let path = format!("/bot{TOKEN}/sendMessage");
    assert!(tg(&path, "<b>a &amp; b</b>").is_ok());
    assert!(tg("/sendMessage", "x").is_err());
    assert!(tg(&path, "a & b").is_err());
    assert!(tg(&path, "<test>").is_err());
    assert!(tg(&path, "<b>open").is_err());
    assert!(tg(&path, &"x".repeat(4097)).is_err());
    assert!(tg(&path, &format!("<b>{}</b>", "x".repeat(4096))).is_ok());

    let mut body = sample().webhook_body();
    assert!(check_webhook(&request("/", body.clone())).is_ok());
    body["groupkey"] = body["groupKey"].take();
    assert!(check_webhook(&request("/", body)).is_err());
}
