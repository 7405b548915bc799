//! The HTTP surface as an attacker and a careless operator meet it: writes need JSON and, beyond
//! loopback, a user; basic auth and TLS from an exporter-toolkit web config; users named by a
//! trusted authenticating proxy; bounded bodies and silences; a connection cap and timeouts.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A source nobody listens on: the HTTP surface is what is tested here.
const MAIN: &str = "state_dir: state\nsources:\n  shop:\n    url: \"postgres://nobody@127.0.0.1:9/none\"\n    connect_timeout: 1s\n    orders: { table: orders }\n";

struct Daemon {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// The daemon of `dir/orderwatch.yaml` on `bind` (port 0); `scheme` for the URL.
    async fn start(dir: &Path, bind: &str, scheme: &str) -> Daemon {
        Self::start_reloadable(dir, bind, scheme).await.0
    }

    /// Like `start`; each message on the returned sender is a SIGHUP.
    async fn start_reloadable(
        dir: &Path,
        bind: &str,
        scheme: &str,
    ) -> (Daemon, tokio::sync::mpsc::Sender<()>) {
        let loaded = orderwatch::configure::load(&dir.join("orderwatch.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let daemon = orderwatch::engine::Daemon::build(loaded).unwrap();
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (hup, hups) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(async move {
            orderwatch::serve::serve(
                daemon,
                listener,
                async move {
                    let _ = rx.await;
                },
                Some(hups),
            )
            .await
            .unwrap();
        });
        (
            Daemon {
                url: format!("{scheme}://127.0.0.1:{port}"),
                stop: Some(tx),
                task,
            },
            hup,
        )
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("daemon stops")
            .unwrap();
    }
}

fn write(dir: &Path, main_extra: &str, web: Option<&str>) {
    std::fs::write(
        dir.join("orderwatch.yaml"),
        format!(
            "{MAIN}{main_extra}{}",
            if web.is_some() {
                "web_config_file: web.yml\n"
            } else {
                ""
            }
        ),
    )
    .unwrap();
    if let Some(w) = web {
        std::fs::write(dir.join("web.yml"), w).unwrap();
    }
}

fn silence(created_by: &str) -> Value {
    json!({"matchers": ["rule=~\".*\""], "duration": "1h", "comment": "t", "createdBy": created_by})
}

async fn silences(c: &reqwest::Client, url: &str, auth: Option<(&str, &str)>) -> Vec<Value> {
    let mut r = c.get(format!("{url}/api/v1/silences"));
    if let Some((u, p)) = auth {
        r = r.basic_auth(u, Some(p));
    }
    let v: Value = r.send().await.unwrap().json().await.unwrap();
    v["data"]["silences"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_json_so_a_web_page_cannot_post_them() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "", None);
    let d = Daemon::start(dir.path(), "127.0.0.1:0", "http").await;
    let c = common::http_client();
    // What a form or a no-cors fetch from any web page can send.
    let r = c
        .post(format!("{}/api/v1/silences", d.url))
        .header("Content-Type", "text/plain")
        .header("Origin", "http://evil.example")
        .body(silence("evil").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(silences(&c, &d.url, None).await.is_empty());
    let r = c
        .post(format!("{}/api/v1/silences", d.url))
        .json(&silence("anna"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(silences(&c, &d.url, None).await.len(), 1);
    d.stop().await;
}

/// A page whose domain was re-pointed at 127.0.0.1 (DNS rebinding) sends its own domain as
/// Host: unauthenticated writes need a loopback Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_writes_need_a_loopback_host() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "", None);
    let d = Daemon::start(dir.path(), "127.0.0.1:0", "http").await;
    let c = common::http_client();
    let port = d.url.rsplit(':').next().unwrap().to_string();
    let r = c
        .post(format!("{}/api/v1/silences", d.url))
        .header("Host", format!("evil.example:{port}"))
        .json(&silence("evil"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let r = c
            .post(format!("{}/api/v1/silences", d.url))
            .header("Host", host.clone())
            .json(&silence("anna"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    d.stop().await;
}

/// A reload (SIGHUP) applies new users at once: a removed password stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_basic_auth_users() {
    let dir = tempfile::tempdir().unwrap();
    let web = |pw: &str| {
        format!(
            "basic_auth_users:\n  anna: {}\n",
            bcrypt::hash(pw, 4).unwrap()
        )
    };
    write(dir.path(), "", Some(&web("old-pw")));
    let (d, hup) = Daemon::start_reloadable(dir.path(), "127.0.0.1:0", "http").await;
    let c = common::http_client();
    let status = |pw: &'static str| {
        c.get(format!("{}/metrics", d.url))
            .basic_auth("anna", Some(pw))
            .send()
    };
    assert_eq!(status("old-pw").await.unwrap().status(), 200);
    write(dir.path(), "", Some(&web("new-pw")));
    hup.send(()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while status("new-pw").await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the new password never worked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status("old-pw").await.unwrap().status(),
        401,
        "the old one still works"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_without_auth_writes_are_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "", None);
    let d = Daemon::start(dir.path(), "0.0.0.0:0", "http").await;
    let c = common::http_client();
    let r = c
        .post(format!("{}/api/v1/silences", d.url))
        .json(&silence("anna"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("without authentication"), "{body}");
    let r = c
        .delete(format!("{}/api/v1/silences/x", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c.get(format!("{}/metrics", d.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_and_bodies_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "", None);
    let d = Daemon::start(dir.path(), "127.0.0.1:0", "http").await;
    let c = common::http_client();
    let post = |body: Value| {
        c.post(format!("{}/api/v1/silences", d.url))
            .json(&body)
            .send()
    };
    // 80 000 regex matchers in 2 MB: refused before anything is parsed.
    let many: Vec<String> = (0..80_000)
        .map(|i| format!("order_id=~\"JW-{i}.*\""))
        .collect();
    // Its own client: the server closes that connection after refusing, and a pooled client
    // would otherwise send the next request down the closed connection (a broken pipe).
    let once = common::http_client()
        .post(format!("{}/api/v1/silences", d.url))
        .json(&json!({"matchers": many, "duration": "1h"}))
        .send();
    match once.await {
        Ok(r) => assert_eq!(r.status(), 413),
        // Refused while the client was still sending: the server answered 413 and closed the
        // connection, and the client's write of the rest failed first.
        Err(e) => {
            let why = format!("{e:?}");
            assert!(
                why.contains("BrokenPipe") || why.contains("ConnectionReset"),
                "neither 413 nor a connection closed mid-body: {why}"
            );
        }
    }
    let many: Vec<String> = (0..101).map(|i| format!("order_id=\"JW-{i}\"")).collect();
    let r = post(json!({"matchers": many, "duration": "1h"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("at most 100 matchers"));
    let long = format!("order_id=~\"{}\"", "a".repeat(1100));
    let r = post(json!({"matchers": [long], "duration": "1h"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("at most 1024 bytes"));
    for duration in ["300000y", "2y", "366d"] {
        let r = post(json!({"matchers": ["rule=\"x\""], "duration": duration}))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{duration}");
        assert!(
            r.text().await.unwrap().contains("at most 1 year"),
            "{duration}"
        );
    }
    let r = post(json!({"matchers": ["rule=\"x\""], "endsAt": "9999-01-01T00:00:00Z"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Still serving, nothing stored.
    assert!(silences(&c, &d.url, None).await.is_empty());
    let r = post(json!({"matchers": ["rule=\"x\""], "duration": "365d"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_an_exporter_toolkit_web_config() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("s3cret-pw", 4).unwrap();
    write(
        dir.path(),
        "",
        Some(&format!(
            "basic_auth_users:\n  prometheus: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        )),
    );
    // Beyond loopback: with authentication configured, writes are allowed to users.
    let d = Daemon::start(dir.path(), "0.0.0.0:0", "http").await;
    let c = common::http_client();
    for path in [
        "/metrics",
        "/",
        "/api/v1/alerts",
        "/api/v1/rules",
        "/readyz",
        "/api/v1/silences",
    ] {
        let r = c.get(format!("{}{path}", d.url)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Basic realm=\"orderwatch\""
        );
        assert_eq!(r.headers()["x-frame-options"], "deny");
        let r = c
            .get(format!("{}{path}", d.url))
            .basic_auth("prometheus", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c
            .get(format!("{}{path}", d.url))
            .basic_auth("prometheus", Some("s3cret-pw"))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status() == 503,
            "{path}: {}",
            r.status()
        );
    }
    let r = c.get(format!("{}/healthz", d.url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "healthz stays open for liveness probes");
    // The authenticated user is who made the silence, whatever the body claims.
    let r = c
        .post(format!("{}/api/v1/silences", d.url))
        .basic_auth("prometheus", Some("s3cret-pw"))
        .json(&silence("somebody-else"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list = silences(&c, &d.url, Some(("prometheus", "s3cret-pw"))).await;
    assert_eq!(list[0]["createdBy"], "prometheus");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_user_and_nobody_else_can() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("s3cret-pw", 4).unwrap();
    let web = format!("basic_auth_users:\n  prometheus: {hash}\n");
    write(
        dir.path(),
        "trusted_proxies: [127.0.0.1/32, \"::1\"]\nuser_header: X-Forwarded-User\n",
        Some(&web),
    );
    let d = Daemon::start(dir.path(), "127.0.0.1:0", "http").await;
    let c = common::http_client();
    let r = c
        .get(format!("{}/api/v1/alerts", d.url))
        .header("X-Forwarded-User", "anna@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{}/api/v1/silences", d.url))
        .header("X-Forwarded-User", "anna@example.com")
        .json(&silence("forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list = silences(&c, &d.url, Some(("prometheus", "s3cret-pw"))).await;
    assert_eq!(list[0]["createdBy"], "anna@example.com");
    // Two values (a proxy that appends rather than replaces): neither is believed.
    let r = c
        .get(format!("{}/api/v1/alerts", d.url))
        .header("X-Forwarded-User", "mallory")
        .header("X-Forwarded-User", "anna@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A control character in the header is not a user.
    let r = c
        .get(format!("{}/api/v1/alerts", d.url))
        .header("X-Forwarded-User", "anna\tx")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    d.stop().await;

    // The same header from an address that is not a trusted proxy counts for nothing.
    write(
        dir.path(),
        "trusted_proxies: [10.1.2.3]\nuser_header: X-Forwarded-User\n",
        Some(&web),
    );
    let d = Daemon::start(dir.path(), "127.0.0.1:0", "http").await;
    let r = c
        .get(format!("{}/api/v1/alerts", d.url))
        .header("X-Forwarded-User", "anna@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    d.stop().await;
}

fn tls_client(pki: &common::Pki, with_client_cert: bool) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap(),
        );
    if with_client_cert {
        let mut pem = std::fs::read(&pki.client_cert).unwrap();
        pem.extend(std::fs::read(&pki.client_key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_client_certificates_from_the_web_config() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new(dir.path());
    write(
        dir.path(),
        "",
        Some("tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n"),
    );
    let d = Daemon::start(dir.path(), "127.0.0.1:0", "https").await;
    let r = tls_client(&pki, false)
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("orderwatch_build_info"));
    // Plain HTTP to the TLS port gets nothing useful.
    let plain = common::http_client()
        .get(d.url.replace("https", "http") + "/metrics")
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    d.stop().await;

    write(
        dir.path(),
        "",
        Some(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS13\n",
        ),
    );
    let d = Daemon::start(dir.path(), "127.0.0.1:0", "https").await;
    assert!(
        tls_client(&pki, false)
            .get(format!("{}/metrics", d.url))
            .send()
            .await
            .is_err(),
        "no client certificate, no answer"
    );
    let r = tls_client(&pki, true)
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    d.stop().await;
}

#[test]
fn a_broken_web_config_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "",
        Some(
            "basic_auth_users:\n  prometheus: plain-password\nhttp_server_config:\n  headers:\n    Set-Cookie: x\n",
        ),
    );
    let err = orderwatch::configure::load(&dir.path().join("orderwatch.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("web.yml:2:15: basic_auth_users: prometheus: not a bcrypt hash"),
        "{err}"
    );
    assert!(
        !err.contains("plain-password"),
        "the value is never echoed: {err}"
    );
    assert!(
        err.contains("web.yml:5:17: http_server_config.headers: \"Set-Cookie\" cannot be set"),
        "{err}"
    );
    write(
        dir.path(),
        "",
        Some(
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing-key.pem\n  bogus: 1\n",
        ),
    );
    let err = orderwatch::configure::load(&dir.path().join("orderwatch.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("web.yml:4:3: unknown field `bogus`"), "{err}");
}

/// `orderwatch silence` against `orderwatch run` with TLS and basic auth: its default URL
/// follows `listen` and the web config, the password comes from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_silence_command_speaks_tls_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new(dir.path());
    let hash = bcrypt::hash("s3cret-pw", 4).unwrap();
    let port = common::free_port();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!("listen: 127.0.0.1:{port}\n{MAIN}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("web.yml"),
        format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\nbasic_auth_users:\n  anna: {hash}\n"),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_orderwatch");
    let config = dir.path().join("orderwatch.yaml");
    let web = dir.path().join("web.yml");
    let mut run = std::process::Command::new(bin)
        .arg("-c")
        .arg(&config)
        .arg("--web.config.file")
        .arg(&web)
        .arg("run")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = tls_client(&pki, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "daemon not up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let silence_cmd = |args: &[&str], password: Option<&str>| {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("-c")
            .arg(&config)
            .arg("--web.config.file")
            .arg(&web)
            .arg("silence")
            .args(args)
            .arg("--ca-file")
            .arg(&pki.ca);
        if let Some(p) = password {
            cmd.env("ORDERWATCH_PASSWORD", p);
        }
        cmd.output().unwrap()
    };
    let out = silence_cmd(
        &["add", "rule=\"x\"", "--user", "anna", "-m", "maintenance"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    let out = silence_cmd(
        &["add", "rule=\"x\"", "--user", "anna", "-m", "maintenance"],
        Some("s3cret-pw"),
    );
    assert!(out.status.success(), "{out:?}");
    let out = silence_cmd(&["list", "--user", "anna"], Some("s3cret-pw"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("by anna: maintenance"), "{text}");
    let _ = run.kill();
    let _ = run.wait();
}

/// Beyond the cap the oldest silent connection is closed for each newcomer, and silent ones
/// after the first-byte timeout: the daemon keeps descriptors for its databases and notifiers
/// and a scraper gets in during an idle flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "", None);
    let d = Daemon::start(dir.path(), "127.0.0.1:0", "http").await;
    let addr = d.url.trim_start_matches("http://").to_string();
    let n = orderwatch::http::server::MAX_CONNECTIONS + 60;
    let started = Instant::now();
    let held: Vec<std::net::TcpStream> = (0..n)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    // Those beyond the cap are closed by the server right away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A connection the server closed reads as end-of-file (or a reset); an open one would block.
    let closed = |streams: &[std::net::TcpStream]| {
        streams
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let r = (&**s).read(&mut [0u8; 1]);
                !matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    };
    let early = closed(&held);
    assert!(early >= 60, "only {early} of {n} closed beyond the cap");
    // A scraper still gets in during the flood: the oldest silent connection makes room.
    let r = common::http_client()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The rest are closed once the header-read timeout passes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = closed(&held);
        if c == n {
            break;
        }
        assert!(Instant::now() < deadline, "{c} of {n} closed after 30 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let waited = started.elapsed();
    assert!(
        waited >= orderwatch::http::server::HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "{waited:?}"
    );
    let r = common::http_client()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(held);
    d.stop().await;
}
