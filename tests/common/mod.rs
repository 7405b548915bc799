//! Shared helpers for the integration tests (`mod common;` in each file under `tests/`).
//!
//! Real parts, offline, per STYLE.md: one throwaway PostgreSQL cluster per test binary with a
//! fresh database per test ([`pg`]), a real Alertmanager on a random port ([`Alertmanager`]),
//! and a local HTTP receiver that records what notifiers POST ([`WebhookReceiver`]). External
//! programs are found with [`require_bin`], which fails loudly in CI and skips with an install
//! hint elsewhere, so a test never passes in CI without having run.
//!
//! Fixtures: a config written and loaded ([`write_config`], [`load`]); the daemon served in
//! this process ([`Running`], with [`Running::wait_ready`]) or run as the binary
//! ([`Process`]); catchers for what it sends ([`WebhookReceiver`], [`Alertmanager`], an SMTP
//! server in [`smtp`]).

// Each test binary uses only some of these helpers.
#![allow(dead_code)]

pub mod browser;
pub mod smtp;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orderwatch::pg_sandbox::PgSandbox;
use serde_json::Value;

/// Env var naming an existing PostgreSQL server (a URL with rights to create databases) to use
/// instead of a sandbox, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
pub const TEST_PG_URL_ENV: &str = "ORDERWATCH_TEST_PG_URL";

/// The PostgreSQL server the tests of one binary share; each test takes its own database
/// with [`Cluster::fresh_db`], so tests never see each other's rows.
///
/// A test that must stop the server (outage simulation) starts its own [`PgSandbox`]
/// instead: stopping this shared one would break the tests running beside it.
pub struct Cluster {
    kind: ClusterKind,
}

enum ClusterKind {
    /// Our own throwaway cluster; stopped when the test binary exits (its guardian does it,
    /// since statics are never dropped).
    Sandbox(PgSandbox),
    /// An existing server from [`TEST_PG_URL_ENV`]; the URL's database is used to run
    /// `CREATE DATABASE`. Databases made there are left behind.
    External(reqwest::Url),
}

/// The role the daemon under test connects as, as users should: it may read every table
/// (`pg_read_all_data`) and every session's activity (`pg_read_all_stats`, for
/// `kind: slow_queries`), and write nothing. Test setup connects as the admin instead
/// ([`connect`] switches). Its password matters only on an external server.
pub const READER: &str = "orderwatch_reader";

/// Creates [`READER`] unless it exists (roles are cluster-wide; test binaries share a server).
pub const CREATE_READER_SQL: &str = "DO $$ BEGIN \
    CREATE ROLE orderwatch_reader LOGIN PASSWORD 'orderwatch_reader'; \
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
    GRANT pg_read_all_data, pg_read_all_stats TO orderwatch_reader";

/// Creates the reader role on a sandbox a test started itself.
pub fn add_reader(sandbox: &PgSandbox) {
    sandbox
        .execute("postgres", CREATE_READER_SQL)
        .unwrap_or_else(|e| panic!("creating role {READER}: {e}"));
}

/// The shared cluster of this test binary, started on first use.
pub fn pg() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let kind = match std::env::var(TEST_PG_URL_ENV) {
            Ok(url) if !url.is_empty() => ClusterKind::External(
                reqwest::Url::parse(&url)
                    .unwrap_or_else(|e| panic!("{TEST_PG_URL_ENV}={url} is not a URL: {e}")),
            ),
            _ => ClusterKind::Sandbox(
                PgSandbox::start()
                    .unwrap_or_else(|e| panic!("starting the test PostgreSQL failed: {e}")),
            ),
        };
        match &kind {
            ClusterKind::Sandbox(sandbox) => add_reader(sandbox),
            ClusterKind::External(url) => admin_execute(url.as_str(), CREATE_READER_SQL),
        }
        Cluster { kind }
    })
}

impl Cluster {
    /// Creates a new, uniquely named, empty database and returns its URL.
    ///
    /// Blocking (tens of milliseconds) but safe to call from inside a tokio runtime.
    pub fn fresh_db(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "ow_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        match &self.kind {
            ClusterKind::Sandbox(sandbox) => sandbox
                .create_database(&name)
                .unwrap_or_else(|e| panic!("creating test database {name}: {e}")),
            ClusterKind::External(url) => {
                admin_execute(url.as_str(), &format!("CREATE DATABASE \"{name}\""))
            }
        }
        self.url_for(&name)
    }

    /// The URL of database `db` on this server, as the read-only [`READER`]: what the daemon
    /// under test connects with. [`connect`] turns it into the admin's for test setup.
    pub fn url_for(&self, db: &str) -> String {
        let mut url = reqwest::Url::parse(&self.admin_url_for(db)).expect("a URL");
        url.set_username(READER).expect("a user");
        url.set_password(Some(READER)).expect("a password");
        url.to_string()
    }

    /// The URL of database `db` as the admin (the superuser of a sandbox).
    pub fn admin_url_for(&self, db: &str) -> String {
        match &self.kind {
            ClusterKind::Sandbox(sandbox) => sandbox.url(db),
            ClusterKind::External(url) => {
                let mut url = url.clone();
                url.set_path(&format!("/{db}"));
                url.to_string()
            }
        }
    }
}

/// `url` with the admin's credentials when it names the [`READER`] (of the shared cluster or
/// of a test's own sandbox, whose superuser is `postgres`); other URLs unchanged.
pub fn admin(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.to_string();
    };
    if parsed.username() != READER {
        return url.to_string();
    }
    let (user, password) = match std::env::var(TEST_PG_URL_ENV) {
        Ok(ext)
            if !ext.is_empty()
                && parsed.port() == reqwest::Url::parse(&ext).ok().and_then(|u| u.port()) =>
        {
            let ext = reqwest::Url::parse(&ext).expect("checked above");
            (
                ext.username().to_string(),
                ext.password().map(str::to_string),
            )
        }
        _ => ("postgres".to_string(), None),
    };
    parsed.set_username(&user).expect("a user");
    parsed
        .set_password(password.as_deref())
        .expect("a password");
    parsed.to_string()
}

/// Runs `sql` on an external server as its admin. tokio-postgres needs a runtime, and the
/// caller may already be inside one (where `block_on` panics), so it runs on a thread with its own.
fn admin_execute(admin_url: &str, sql: &str) {
    let (admin_url, sql) = (admin_url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to {TEST_PG_URL_ENV}: {e}"));
            tokio::spawn(conn);
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        })
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// A plain tokio-postgres connection (no TLS) for setting up and inspecting test data, as the
/// admin even when `url` names the [`READER`].
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let url = &admin(url);
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// Where an executable called `name` is: PATH first, then `/usr/bin` and `/usr/sbin`.
fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Finds an external program a test needs. When it is missing: in CI (`CI=true`) the test
/// panics, because a test that cannot run must not count as passed there; elsewhere it prints
/// the install hint and returns `None`, and the caller returns early.
pub fn require_bin(name: &str, apt_pkg: &str) -> Option<PathBuf> {
    if let Some(path) = find_bin(name) {
        return Some(path);
    }
    missing(name, apt_pkg)
}

fn missing<T>(name: &str, apt_pkg: &str) -> Option<T> {
    let hint = format!(
        "`{name}` is missing: apt-get install -y {apt_pkg} (or run scripts/test, which installs it)"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{hint}");
    }
    eprintln!("skipping: {hint}");
    None
}

/// A reqwest client for local test servers. Our reqwest has no built-in TLS provider, so one
/// is installed first; no proxy, since a CI proxy variable must not capture 127.0.0.1.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("building a reqwest client")
}

/// A free TCP port on 127.0.0.1 (bound, read, released: retry if someone takes it meanwhile).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a program with a lifeline: a `sh` wrapper kills it, then deletes `dir`, when this
/// process's end of a pipe closes, i.e. on [`Lifeline::stop`], on drop, or when the test
/// binary dies in any way (even SIGKILL), so no helper server or its files outlive the tests.
struct Lifeline {
    wrapper: Child,
}

impl Lifeline {
    fn spawn(program: &Path, args: &[String], dir: &Path, log: &Path) -> std::io::Result<Lifeline> {
        // Background jobs of a non-interactive sh get /dev/null as stdin, so the pipe is
        // moved to fd 3 for the watcher; the wrapper exits with the program's status. The
        // directory is removed only once the lifeline closes, so a program that exits early
        // leaves its log to be read.
        const SCRIPT: &str = r#"dir=$1; shift
exec 3<&0
"$@" </dev/null 3<&- &
pid=$!
(
    read -r _ <&3
    kill "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -rf "$dir"
) &
wait "$pid""#;
        let log_file = std::fs::File::create(log)?;
        let wrapper = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("orderwatch-test-lifeline")
            .arg(dir)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        Ok(Lifeline { wrapper })
    }

    /// `Some(status)` once the program has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.wrapper.try_wait().ok().flatten()
    }

    fn stop(&mut self) {
        drop(self.wrapper.stdin.take());
        let _ = self.wrapper.wait();
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server from the Prometheus family (Alertmanager, Prometheus) started on a random
/// 127.0.0.1 port with its config in a directory of its own, ready once `/-/ready` answers.
struct ReadyServer<'a> {
    name: &'a str,
    binary: &'a Path,
    config_file: &'a str,
    config: &'a str,
    /// More files written beside the config (a web config, certificates).
    files: &'a [(&'a str, Vec<u8>)],
    /// Ready once it answers at all (behind TLS and auth `/-/ready` is not reachable plainly).
    any_answer: bool,
}

impl ReadyServer<'_> {
    /// Starts it with the arguments `args(config_path, data_dir, port)` gives. The port is free
    /// when picked but may be taken before the server binds it: up to 5 attempts, each in a
    /// directory of its own since a failed one's lifeline deletes it.
    async fn start(
        &self,
        args: impl Fn(&Path, &Path, u16) -> Vec<String>,
    ) -> (Lifeline, String, tempfile::TempDir) {
        let client = http_client();
        let name = self.name;
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("orderwatch-srv-")
                .tempdir()
                .unwrap();
            let config_path = dir.path().join(self.config_file);
            std::fs::write(&config_path, self.config).unwrap();
            for (name, bytes) in self.files {
                std::fs::write(dir.path().join(name), bytes).unwrap();
            }
            let log = dir.path().join("server.log");
            let port = free_port();
            let mut process = Lifeline::spawn(
                self.binary,
                &args(&config_path, &dir.path().join("data"), port),
                dir.path(),
                &log,
            )
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = process.exited() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("address already in use") {
                        break;
                    }
                    panic!("{name} exited ({status}) before ready; its log:\n{text}");
                }
                let ready = client.get(format!("{url}/-/ready")).send().await;
                if ready.is_ok_and(|r| r.status().is_success() || self.any_answer) {
                    return (process, url, dir);
                }
                if Instant::now() > deadline {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("{name} at {url} not ready after 30s; its log:\n{text}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("{name}: no free port after 5 attempts");
    }
}

/// A web config file's text and the files beside it (certificates).
type WebConfig<'a> = (&'a str, &'a [(&'a str, Vec<u8>)]);

/// A real Alertmanager on a random 127.0.0.1 port with its own storage and no clustering,
/// routing every alert to one receiver. Killed on drop.
pub struct Alertmanager {
    process: Lifeline,
    url: String,
    client: reqwest::Client,
    /// Holds the config, the storage and the log; removed on drop.
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager and waits until `/-/ready` answers. With `Some(url)` its only route
    /// posts to that webhook (group_wait and group_interval 1s, repeat 1h, resolved alerts
    /// sent too; grouped by all labels, so each alert arrives in its own notification); with
    /// `None` alerts are only kept, for tests that read them back with [`alerts`](Self::alerts).
    ///
    /// `None` when the binary is missing outside CI (see [`require_bin`]).
    pub async fn start(webhook_url: Option<&str>) -> Option<Alertmanager> {
        Self::start_with(webhook_url, None, "").await
    }

    /// Like [`start`](Self::start) with `None`, with more top-level config appended (e.g. an
    /// `inhibit_rules:` section).
    pub async fn start_with_config(extra: &str) -> Option<Alertmanager> {
        Self::start_with(None, None, extra).await
    }

    /// Like [`start`](Self::start), behind Alertmanager's own web config (exporter-toolkit:
    /// TLS, basic auth) with the given files beside it; its URL is then https.
    pub async fn start_secured(
        web_config: &str,
        files: &[(&str, Vec<u8>)],
    ) -> Option<Alertmanager> {
        Self::start_with(None, Some((web_config, files)), "").await
    }

    async fn start_with(
        webhook_url: Option<&str>,
        web: Option<WebConfig<'_>>,
        extra: &str,
    ) -> Option<Alertmanager> {
        let binary = find_bin("prometheus-alertmanager")
            .or_else(|| find_bin("alertmanager"))
            .or_else(|| missing::<PathBuf>("prometheus-alertmanager", "prometheus-alertmanager"))?;
        let receiver = match webhook_url {
            Some(url) => format!(
                "  - name: test\n    webhook_configs:\n      - url: '{url}'\n        send_resolved: true\n"
            ),
            None => "  - name: test\n".to_string(),
        };
        let config = format!(
            "route:\n  receiver: test\n  group_by: ['...']\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n{receiver}{extra}"
        );
        let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
        if let Some((yml, extra)) = web {
            files.push(("web.yml", yml.as_bytes().to_vec()));
            files.extend(extra.iter().cloned());
        }
        let (process, url, dir) = ReadyServer {
            name: "Alertmanager",
            binary: &binary,
            config_file: "alertmanager.yml",
            config: &config,
            files: &files,
            any_answer: web.is_some(),
        }
        .start(|config_path, data, port| {
            let mut args = vec![
                format!("--config.file={}", config_path.display()),
                format!("--storage.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".to_string(),
                "--log.level=warn".to_string(),
            ];
            if web.is_some() {
                args.push(format!(
                    "--web.config.file={}",
                    config_path.with_file_name("web.yml").display()
                ));
            }
            args
        })
        .await;
        let url = if web.is_some() {
            url.replace("http://", "https://")
        } else {
            url
        };
        Some(Alertmanager {
            process,
            url,
            client: http_client(),
            _dir: dir,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:9093`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every alert Alertmanager holds now (`GET /api/v2/alerts`).
    pub async fn alerts(&self) -> Vec<Value> {
        let url = format!("{}/api/v2/alerts", self.url);
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: body is not JSON: {e}"))
    }

    /// Polls [`alerts`](Self::alerts) every 200 ms until `pred` holds and returns them; panics
    /// with the last alerts seen when `timeout` passes first.
    pub async fn wait_for(&self, pred: impl Fn(&[Value]) -> bool, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let alerts = self.alerts().await;
            if pred(&alerts) {
                return alerts;
            }
            if Instant::now() > deadline {
                panic!(
                    "Alertmanager: condition not met within {timeout:?}; last alerts:\n{}",
                    serde_json::to_string_pretty(&alerts).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.process.stop();
    }
}

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request path, e.g. `/hooks/abc` (chat services put tokens there).
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body as JSON; a body that is not JSON is kept as a JSON string.
    pub body: Value,
}

/// A local HTTP server standing in for a webhook, a chat service or Alertmanager's receiver:
/// records every body POSTed to any path and answers 200 `{"ok":true}`. Stops on drop.
pub struct WebhookReceiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts on a random 127.0.0.1 port, on the current tokio runtime.
    pub async fn start() -> WebhookReceiver {
        use axum::extract::State;
        use axum::http::{Method, StatusCode, Uri};

        type Shared = Arc<Mutex<Vec<Received>>>;
        async fn record(
            State(received): State<Shared>,
            method: Method,
            uri: Uri,
            headers: axum::http::HeaderMap,
            body: axum::body::Bytes,
        ) -> (StatusCode, axum::Json<Value>) {
            if method != Method::POST {
                return (
                    StatusCode::METHOD_NOT_ALLOWED,
                    axum::Json(serde_json::json!({"ok": false})),
                );
            }
            let body = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            received.lock().unwrap().push(Received {
                path: uri.path().to_string(),
                authorization: headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body,
            });
            (StatusCode::OK, axum::Json(serde_json::json!({"ok": true})))
        }

        let received: Shared = Arc::default();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("webhook receiver failed");
        });
        WebhookReceiver {
            url,
            received,
            server,
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`; any path under it is accepted.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every body received so far, oldest first.
    pub async fn bodies(&self) -> Vec<Value> {
        self.requests().await.into_iter().map(|r| r.body).collect()
    }

    /// Every request received so far with its path, oldest first.
    pub async fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Polls [`bodies`](Self::bodies) every 200 ms until `pred` holds and returns them; panics
    /// with the last bodies seen when `timeout` passes first.
    pub async fn wait_for(&self, pred: impl Fn(&[Value]) -> bool, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let bodies = self.bodies().await;
            if pred(&bodies) {
                return bodies;
            }
            if Instant::now() > deadline {
                panic!(
                    "webhook receiver: condition not met within {timeout:?}; bodies so far:\n{}",
                    serde_json::to_string_pretty(&bodies).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Writes `main` as `dir/orderwatch.yaml` and `rules` as `dir/rules.yaml` (the main file
/// names it in `rule_files`); returns the main file's path.
pub fn write_config(dir: &Path, main: &str, rules: &str) -> PathBuf {
    let path = dir.join("orderwatch.yaml");
    std::fs::write(&path, main).unwrap();
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    path
}

/// Loads `dir/orderwatch.yaml`; a config error fails the test with its message.
pub fn load(dir: &Path) -> orderwatch::config::Loaded {
    orderwatch::configure::load(&dir.join("orderwatch.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// The `orderwatch` binary as a child process (`run`, as systemd starts it): stderr
/// collected for failure messages, killed if the test ends without stopping it.
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Runs `orderwatch ARGS` with `env` added to this process's environment.
    pub fn start(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderwatch"));
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Process { child, log }
    }

    /// Sends `sig` (`-HUP`, `-TERM`, …).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (at most `timeout`) for it to exit; fails the test with its log otherwise.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running daemon on 127.0.0.1:0 (`orderwatch::engine::Daemon` served in this process); stops (gracefully) on drop of `stop`.
pub struct Running {
    /// Base URL of its HTTP server.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Builds the daemon from `dir/orderwatch.yaml` and serves it on a random port.
    pub async fn start(dir: &Path) -> Running {
        let daemon = orderwatch::engine::Daemon::build(load(dir)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            orderwatch::serve::serve(
                daemon,
                listener,
                async move {
                    let _ = rx.await;
                },
                None,
            )
            .await
            .unwrap();
        });
        Running {
            url,
            stop: Some(tx),
            task,
        }
    }

    /// Waits (at most 30 s) until `/readyz` answers 200: every source reached.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = http_client()
                .get(format!("{}/readyz", self.url))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}/readyz: not ready in 30 s",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("daemon stops")
            .unwrap();
    }

    pub async fn get(&self, path: &str) -> String {
        http_client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn alerts(&self) -> Vec<Value> {
        let v: Value = serde_json::from_str(&self.get("/api/v1/alerts").await).unwrap();
        v["data"]["alerts"].as_array().unwrap().clone()
    }

    pub async fn wait_metric(&self, line_prefix: &str, value: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.get("/metrics").await;
            if m.lines()
                .any(|l| l.starts_with(line_prefix) && l.ends_with(&format!(" {value}")))
            {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{line_prefix} … {value}` in:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_alerts(&self, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let a = self.alerts().await;
            if pred(&a) {
                return a;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met; alerts: {a:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A real Prometheus on a random 127.0.0.1 port with its own TSDB, scraping the given targets
/// every second as job `services` (evaluation every second too). Killed on drop.
pub struct Prometheus {
    process: Lifeline,
    url: String,
    client: reqwest::Client,
    /// Holds the config, the TSDB and the log; removed on drop.
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, e.g. from [`TestService::target`])
    /// and waits until `/-/ready` answers. The first scrape follows within about a second.
    ///
    /// `None` when the binary is missing outside CI (see [`require_bin`]).
    pub async fn start(targets: &[String]) -> Option<Prometheus> {
        Self::start_jobs(&[("services", targets)], "").await
    }

    /// Like [`start`](Self::start), with one scrape job per `(job name, targets)`, and
    /// `rules` (the text of a rule file, unless empty) loaded as `rules.yml`.
    pub async fn start_jobs(jobs: &[(&str, &[String])], rules: &str) -> Option<Prometheus> {
        let binary = require_bin("prometheus", "prometheus")?;
        let mut config =
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                .to_string();
        let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
        if !rules.is_empty() {
            config.push_str("rule_files: [rules.yml]\n");
            files.push(("rules.yml", rules.as_bytes().to_vec()));
        }
        config.push_str("scrape_configs:\n");
        for (job, targets) in jobs {
            let targets = targets
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ");
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{targets}]\n"
            ));
        }
        let (process, url, dir) = ReadyServer {
            name: "Prometheus",
            binary: &binary,
            config_file: "prometheus.yml",
            config: &config,
            files: &files,
            any_answer: false,
        }
        .start(|config_path, data, port| {
            vec![
                format!("--config.file={}", config_path.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn".to_string(),
            ]
        })
        .await;
        Some(Prometheus {
            process,
            url,
            client: http_client(),
            _dir: dir,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:9090`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Evaluates `promql` now (`GET /api/v1/query`) and returns `data.result`: for an instant
    /// vector an array of `{"metric": {…}, "value": [ts, "1.5"]}`. Panics when Prometheus
    /// answers with an error (e.g. a PromQL syntax error), with its message.
    pub async fn query(&self, promql: &str) -> Value {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            [("query", promql)],
        )
        .unwrap();
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Prometheus query `{promql}`: {e}"));
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_else(|e| {
            panic!("Prometheus query `{promql}`: body is not JSON ({status}): {e}")
        });
        if body["status"] != "success" {
            panic!(
                "Prometheus query `{promql}` failed ({status}): {} {}",
                body["errorType"], body["error"]
            );
        }
        body["data"]["result"].clone()
    }

    /// Polls [`query`](Self::query) every 250 ms until `pred` holds on the result and returns
    /// it; panics with the last result seen when `timeout` passes first.
    pub async fn wait_for(
        &self,
        promql: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql).await;
            if pred(&result) {
                return result;
            }
            if Instant::now() > deadline {
                panic!(
                    "Prometheus: `{promql}` did not meet the condition within {timeout:?}; \
                     last result:\n{}",
                    serde_json::to_string_pretty(&result).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.process.stop();
    }
}

/// A scrape target standing in for the services orderwatch watches: serves `GET /metrics` in
/// the Prometheus text format with one counter, `http_requests_total{service, code}`, which
/// the test raises with [`add`](Self::add). Stops on drop.
pub struct TestService {
    addr: std::net::SocketAddr,
    counts: Arc<Mutex<std::collections::BTreeMap<(String, u16), u64>>>,
    server: tokio::task::JoinHandle<()>,
}

impl TestService {
    /// Starts on a random 127.0.0.1 port, on the current tokio runtime, with no series yet.
    pub async fn start() -> TestService {
        use axum::extract::State;
        use axum::http::header::CONTENT_TYPE;

        type Shared = Arc<Mutex<std::collections::BTreeMap<(String, u16), u64>>>;
        async fn metrics(
            State(counts): State<Shared>,
        ) -> ([(&'static str, &'static str); 1], String) {
            let mut out = String::from(
                "# HELP http_requests_total HTTP requests handled, by service and status code.\n\
                 # TYPE http_requests_total counter\n",
            );
            for ((service, code), n) in counts.lock().unwrap().iter() {
                out.push_str(&format!(
                    "http_requests_total{{service=\"{}\",code=\"{code}\"}} {n}\n",
                    escape_label_value(service)
                ));
            }
            (
                [(
                    CONTENT_TYPE.as_str(),
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                out,
            )
        }

        let counts: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .with_state(counts.clone());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("test service failed");
        });
        TestService {
            addr,
            counts,
            server,
        }
    }

    /// The scrape target, e.g. `127.0.0.1:40123`, for [`Prometheus::start`].
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// The metrics URL, e.g. `http://127.0.0.1:40123/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    /// Counts `n` more requests of `service` answered with `code`. `n = 0` makes the series
    /// appear at 0, so that a later rise is seen as a rate from the first scrape on.
    pub fn add(&self, service: &str, code: u16, n: u64) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry((service.to_string(), code))
            .or_default() += n;
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A label value escaped for the Prometheus text format: `\`, `"` and newline.
fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A role that may write (not a superuser), made by tests that show a write is stopped anyway.
pub const WRITER: &str = "ow_writer";

/// A real PgBouncer on a random 127.0.0.1 port in front of a PostgreSQL server (a sandbox:
/// trust authentication), serving every database under its own name to [`READER`] and
/// [`WRITER`]. Killed on drop.
pub struct PgBouncer {
    process: Lifeline,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    /// Starts PgBouncer in `pool_mode` (`transaction`, `session`) with `server_conns` server
    /// connections per database, in front of the server `server_url` points at, and waits until
    /// it accepts connections. `None` when the binary is missing outside CI.
    pub async fn start(server_url: &str, pool_mode: &str, server_conns: u32) -> Option<PgBouncer> {
        let binary = require_bin("pgbouncer", "pgbouncer")?;
        let server = reqwest::Url::parse(server_url).expect("a server URL");
        let host = server.host_str().unwrap_or("127.0.0.1").to_string();
        let server_port = server.port().unwrap_or(5432);
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("orderwatch-pgbouncer-")
                .tempdir()
                .unwrap();
            let port = free_port();
            let users: String = [READER, WRITER]
                .iter()
                .map(|u| format!("\"{u}\" \"\"\n"))
                .collect();
            std::fs::write(dir.path().join("users.txt"), users).unwrap();
            std::fs::write(
                dir.path().join("pgbouncer.ini"),
                format!(
                    "[databases]\n* = host={host} port={server_port}\n\
                     [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                     auth_type = trust\nauth_file = {}\npool_mode = {pool_mode}\n\
                     default_pool_size = {server_conns}\nmax_client_conn = 200\n",
                    dir.path().join("users.txt").display()
                ),
            )
            .unwrap();
            // PgBouncer refuses to run as root: as root, it switches to `postgres` (-u), which
            // must read its files.
            let mut args = vec![dir.path().join("pgbouncer.ini").display().to_string()];
            if is_root() {
                let (uid, gid) = postgres_ids();
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    std::os::unix::fs::chown(entry.unwrap().path(), Some(uid), Some(gid)).unwrap();
                }
                std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
                args.insert(0, "postgres".into());
                args.insert(0, "-u".into());
            }
            let log = dir.path().join("server.log");
            let mut process = Lifeline::spawn(&binary, &args, dir.path(), &log)
                .unwrap_or_else(|e| panic!("starting pgbouncer: {e}"));
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = process.exited() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("in use") {
                        break;
                    }
                    panic!("pgbouncer exited ({status}); its log:\n{text}");
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(PgBouncer {
                        process,
                        port,
                        _dir: dir,
                    });
                }
                assert!(
                    Instant::now() < deadline,
                    "pgbouncer not listening after 15 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("pgbouncer: no free port after 5 attempts");
    }

    /// The URL of database `db` through the pooler, as [`READER`].
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{READER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops it now (also done on drop).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the postgres user")
    };
    (id("-u"), id("-g"))
}

/// A test PKI as PEM files in a directory: a CA, a server certificate it signed for
/// `localhost` and `127.0.0.1`, a client certificate it signed (CN `orderwatch`), and an
/// unrelated CA.
pub struct Pki {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// Makes the files in `dir`.
    pub fn new(dir: &Path) -> Pki {
        Pki::for_names(dir, &["localhost", "127.0.0.1"], "orderwatch")
    }

    /// Makes the files in `dir`: the server certificate for `server_names`, the client
    /// certificate with common name `client_cn` (PostgreSQL's `cert` authentication takes the
    /// user name from it).
    pub fn for_names(dir: &Path, server_names: &[&str], client_cn: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert, Issuer::new(params, key))
        };
        let (ca_cert, issuer) = ca("orderwatch test CA");
        let (other_cert, _) = ca("some other CA");
        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf(
            server_names.iter().map(|s| s.to_string()).collect(),
            "orderwatch test server",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) = leaf(vec![], client_cn, ExtendedKeyUsagePurpose::ClientAuth);
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            other_ca: write("other-ca.pem", other_cert.pem()),
            cert: write("server.pem", server),
            key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client),
            client_key: write("client-key.pem", client_key),
        }
    }
}
