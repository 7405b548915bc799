//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for the pages'
//! tests: open a page at a viewport width, read what the console reported, evaluate an
//! expression, take a screenshot. One browser per test, its profile in a directory of its
//! own, killed on drop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// A running headless Chromium.
pub struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium; `None` (a skip outside CI, a failure with the install hint in CI)
    /// when it is not installed.
    pub fn start() -> Option<Browser> {
        let bin = super::require_bin("chromium", "chromium")?;
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it picked into the profile once it listens.
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break p;
            }
            assert!(Instant::now() < deadline, "chromium did not start in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        };
        Some(Browser {
            child,
            port,
            _profile: profile,
        })
    }

    /// A new tab, `width` × `height` CSS pixels (a phone's metrics below 600).
    pub async fn page(&self, width: u32, height: u32) -> Page {
        let target: Value = super::http_client()
            .put(format!(
                "http://127.0.0.1:{}/json/new?about:blank",
                self.port
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ws = target["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let page = Page::connect(&ws).await;
        for method in ["Runtime.enable", "Log.enable", "Page.enable"] {
            page.call(method, json!({})).await;
        }
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        )
        .await;
        page
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One tab.
pub struct Page {
    out: mpsc::UnboundedSender<String>,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Page {
    async fn connect(url: &str) -> Page {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (p, e) = (pending.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Ok(text) = msg.to_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                match v["id"].as_u64() {
                    Some(id) => {
                        if let Some(tx) = p.lock().unwrap().remove(&id) {
                            let _ = tx.send(v);
                        }
                    }
                    None => e.lock().unwrap().push(v),
                }
            }
        });
        Page {
            out,
            pending,
            events,
            next: 1.into(),
        }
    }

    /// Calls a DevTools method; panics on a protocol error.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.out
            .send(json!({"id": id, "method": method, "params": params}).to_string())
            .unwrap();
        let v = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer in 30 s"))
            .unwrap();
        assert!(v["error"].is_null(), "{method}: {v}");
        v["result"].clone()
    }

    /// Waits until an event `method` arrives that was not there when `seen` events were.
    async fn wait_event(&self, method: &str, seen: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.events.lock().unwrap()[seen..]
                .iter()
                .any(|e| e["method"] == method)
            {
                return;
            }
            assert!(Instant::now() < deadline, "no {method} in 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens `url` and waits for its load event.
    pub async fn open(&self, url: &str) {
        let seen = self.events.lock().unwrap().len();
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_event("Page.loadEventFired", seen).await;
    }

    /// Runs `action` (an expression that starts a navigation) and waits for the next page's
    /// load event.
    pub async fn navigate_by(&self, action: &str) {
        let seen = self.events.lock().unwrap().len();
        self.eval(action).await;
        self.wait_event("Page.loadEventFired", seen).await;
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r["exceptionDetails"].is_null(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// What the console and the browser's log reported as errors so far (script errors,
    /// failed loads, security violations).
    pub fn errors(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e["method"].as_str()? {
                "Runtime.exceptionThrown" => Some(e["params"]["exceptionDetails"].to_string()),
                "Runtime.consoleAPICalled" if e["params"]["type"] == "error" => {
                    Some(e["params"]["args"].to_string())
                }
                "Log.entryAdded" if e["params"]["entry"]["level"] == "error" => {
                    Some(e["params"]["entry"].to_string())
                }
                _ => None,
            })
            .collect()
    }

    /// A full-page PNG, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// Where the pages' screenshots are kept (`target/tmp/pages/`), for a person to look at.
pub fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("pages")
}

/// Text that renders below 14 CSS pixels, as `tag size "text"` lines: every element holding
/// visible text of its own, and every form control.
pub const SMALL_TEXT: &str = r#"[...document.querySelectorAll('body *')]
  .filter(e => e.getClientRects().length > 0 && (['INPUT','BUTTON','SELECT','TEXTAREA'].includes(e.tagName)
     || [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())))
  .map(e => [e.tagName, parseFloat(getComputedStyle(e).fontSize), (e.value || e.textContent).trim().slice(0, 40)])
  .filter(x => x[1] < 14)
  .map(x => x[0] + ' ' + x[1] + 'px ' + JSON.stringify(x[2]))"#;

/// How far the page is wider than the viewport, in CSS pixels (0: no horizontal overflow).
pub const OVERFLOW: &str =
    "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - window.innerWidth";
