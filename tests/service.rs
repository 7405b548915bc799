//! orderwatch as a systemd service: the unit file passes `systemd-analyze verify` and its
//! security review; the daemon speaks sd_notify (READY, WATCHDOG, RELOADING, STOPPING); SIGHUP
//! reloads config and rules, keeping the old ones when a file is broken and the alert state of
//! the rules that stay; SIGTERM exits 0; `--log-format json` writes one JSON object per line
//! with no personal data and no password.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_orderwatch");
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/orderwatch.service");
const SECRET: &str = "Sup3rS3cretPw";

/// The unit as installed, with ExecStart pointing at the binary under test (verify checks
/// that the executables exist).
fn unit_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(UNIT).unwrap();
    let path = dir.join("orderwatch.service");
    std::fs::write(&path, text.replace("/usr/bin/orderwatch", BIN)).unwrap();
    path
}

#[test]
fn unit_file_passes_systemd_analyze_verify_and_security() {
    let Some(analyze) = common::require_bin("systemd-analyze", "systemd") else {
        return;
    };
    let text = std::fs::read_to_string(UNIT).unwrap();
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=orderwatch",
        "ConfigurationDirectory=orderwatch",
        "User=orderwatch",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(text.contains(directive), "the unit lacks {directive:?}");
    }
    // The paths the unit uses are the ones the Debian package installs.
    let cargo =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    assert!(text.contains("/etc/orderwatch/orderwatch.yaml"));
    assert!(
        cargo.contains("\"etc/orderwatch/orderwatch.yaml\""),
        "cargo-deb assets"
    );

    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    // Warnings (unknown directives, bad values) do not fail verify; they name the unit.
    assert!(
        !said.contains("orderwatch.service:"),
        "systemd-analyze verify warns: {said}"
    );

    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let level: f64 = said
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for orderwatch.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in: {said}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        level <= 2.0,
        "exposure {level} (want ≤ 2.0, \"OK\"): {said}"
    );
}

/// The sd_notify messages a daemon sends, collected from a datagram socket.
struct NotifySocket {
    path: PathBuf,
    got: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        NotifySocket { path, got }
    }

    fn messages(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    fn count(&self, msg: &str) -> usize {
        self.messages().iter().filter(|m| m.contains(msg)).count()
    }

    async fn wait_count(&self, msg: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(msg) < n {
            assert!(
                Instant::now() < deadline,
                "no {n}× {msg}: {:?}",
                self.messages()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The daemon as systemd runs it (a [`common::Process`]) and its HTTP address.
struct Service {
    process: common::Process,
    url: String,
}

impl Service {
    fn start(config: &Path, notify: &NotifySocket, port: u16) -> Service {
        let args = ["--log-format", "json", "run", "-c"].map(std::ffi::OsStr::new);
        let notify_path = notify.path.display().to_string();
        let process = common::Process::start(
            &[&args[..], &[config.as_os_str()]].concat(),
            &[
                ("NOTIFY_SOCKET", notify_path.as_str()),
                ("WATCHDOG_USEC", "1000000"),
                ("ORDERWATCH_LOG", "debug"),
            ],
        );
        Service {
            process,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn signal(&self, sig: &str) {
        self.process.signal(sig);
    }

    fn log(&self) -> String {
        self.process.log()
    }

    async fn get(&self, path: &str) -> String {
        common::http_client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nlog:\n{}", self.log()))
            .text()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path).await).unwrap()
    }

    async fn alerts(&self) -> Vec<Value> {
        self.json("/api/v1/alerts").await["data"]["alerts"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn rule_names(&self) -> Vec<String> {
        let v = self.json("/api/v1/rules").await;
        v["data"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    async fn wait_alert(&self, rule: &str, order: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alerts = self.alerts().await;
            if let Some(a) = alerts
                .iter()
                .find(|a| a["rule"] == rule && a["labels"]["order_id"] == order)
                && a["state"] == state
            {
                return a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {state} alert {rule}/{order}: {alerts:#?}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn metric(metrics: &str, name: &str) -> Option<f64> {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

const SCHEMA: &str = "
CREATE TABLE orders (
  id text PRIMARY KEY, customer_name text, customer_email text,
  status text NOT NULL, status_changed_at timestamptz NOT NULL);
CREATE INDEX ON orders (status, status_changed_at);
INSERT INTO orders VALUES
  ('JW-1', 'Anna Ivanova', 'anna.ivanova@example.com', 'SUBMITTED', now() - interval '3 hours'),
  ('JW-2', 'Boris Petrov', 'boris.petrov@example.com', 'IN_PRODUCTION', now() - interval '30 days');
";

const RULE_1H: &str = "  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    interval: 1s\n";
const RULE_PROD: &str = "  - name: production_over_7d\n    source: shop\n    status: IN_PRODUCTION\n    older_than: 7d\n    interval: 1s\n";

fn write_rules(dir: &Path, rules: &[&str]) {
    std::fs::write(
        dir.join("rules.yaml"),
        format!("rules:\n{}", rules.concat()),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_keeps_old_rules_on_error_and_sigterm_exits_zero() {
    let url = common::pg().fresh_db();
    common::connect(&url)
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // A second source nobody can reach, with a password in its URL: it must never be shown.
    let dead = common::free_port();
    std::fs::write(
        dir.path().join("orderwatch.yaml"),
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: state\nrule_files: [rules.yaml]\nsource_down_after: 1s\n\
             sources:\n  shop:\n    url: \"{url}?sslmode=disable\"\n\
             \x20   orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at }}\n\
             \x20 mes:\n    url: \"postgres://watcher:{SECRET}@127.0.0.1:{dead}/mes?sslmode=disable\"\n\
             \x20   connect_timeout: 1s\n\
             \x20   orders: {{ table: production_orders, id: order_id, status: status, entered_at: status_changed_at }}\n\
             notifiers:\n  log: {{}}\n"
        ),
    )
    .unwrap();
    write_rules(dir.path(), &[RULE_1H]);
    let config = dir.path().join("orderwatch.yaml");
    let notify = NotifySocket::bind(dir.path());
    let d = Service::start(&config, &notify, port);

    notify.wait_count("READY=1", 1).await;
    let first = d.wait_alert("submitted_over_1h", "JW-1", "firing").await;
    let m = d.get("/metrics").await;
    assert_eq!(
        Service::metric(&m, "orderwatch_config_last_reload_successful"),
        Some(1.0)
    );
    // WATCHDOG_USEC=1s: pinged every half second.
    notify.wait_count("WATCHDOG=1", 3).await;

    // A broken rule file: the reload fails, the daemon keeps running the old rules.
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: [1h\n",
    )
    .unwrap();
    d.signal("-HUP");
    notify.wait_count("RELOADING=1", 1).await;
    notify.wait_count("READY=1", 2).await;
    let m = d.get("/metrics").await;
    assert_eq!(
        Service::metric(&m, "orderwatch_config_last_reload_successful"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(d.rule_names().await, vec!["submitted_over_1h"]);
    let still = d.wait_alert("submitted_over_1h", "JW-1", "firing").await;
    assert_eq!(still["activeAt"], first["activeAt"]);
    let log = d.log();
    let failed = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reload failed"))
        })
        .unwrap_or_else(|| panic!("no reload failure logged:\n{log}"));
    assert_eq!(failed["level"], "ERROR");
    assert!(
        failed["error"].as_str().unwrap().contains("rules.yaml:5:"),
        "the error names file and line: {failed}"
    );
    // Values that once panicked the daemon on reload are refused the same way.
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 500000000y\n    interval: 300000y\n    max_findings: 18446744073709551615\n",
    )
    .unwrap();
    d.signal("-HUP");
    notify.wait_count("READY=1", 3).await;
    let m = d.get("/metrics").await;
    assert_eq!(
        Service::metric(&m, "orderwatch_config_last_reload_successful"),
        Some(0.0),
        "{m}"
    );
    // Evaluations go on after the failed reload.
    let evals = |m: &str| {
        Service::metric(
            m,
            "orderwatch_rule_evaluations_total{rule=\"submitted_over_1h\"}",
        )
        .unwrap()
    };
    let before = evals(&m);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(evals(&d.get("/metrics").await) > before);

    // A good file with one more rule: applied; the unchanged rule's alert is the same alert.
    write_rules(dir.path(), &[RULE_1H, RULE_PROD]);
    d.signal("-HUP");
    notify.wait_count("READY=1", 4).await;
    let m = d.get("/metrics").await;
    assert_eq!(
        Service::metric(&m, "orderwatch_config_last_reload_successful"),
        Some(1.0),
        "{m}\nlog:\n{}",
        d.log()
    );
    assert_eq!(
        d.rule_names().await,
        vec!["submitted_over_1h", "production_over_7d"]
    );
    d.wait_alert("production_over_7d", "JW-2", "firing").await;
    let kept = d.wait_alert("submitted_over_1h", "JW-1", "firing").await;
    assert_eq!(kept["activeAt"], first["activeAt"], "alert state survives");
    assert_eq!(kept["firedAt"], first["firedAt"], "not fired a second time");
    let fired_logs = d
        .log()
        .lines()
        .filter(|l| l.contains("\"key\":\"JW-1\"") && l.contains("FIRING"))
        .count();
    assert_eq!(fired_logs, 1, "JW-1 announced once:\n{}", d.log());

    // The first rule removed: its alert resolves and its series leave /metrics.
    write_rules(dir.path(), &[RULE_PROD]);
    d.signal("-HUP");
    notify.wait_count("READY=1", 4).await;
    d.wait_alert("submitted_over_1h", "JW-1", "resolved").await;
    let m = d.get("/metrics").await;
    assert!(
        !m.contains("rule=\"submitted_over_1h\""),
        "series of a removed rule remain:\n{m}"
    );
    assert!(m.contains("orderwatch_stuck_orders{rule=\"production_over_7d\""));

    // SIGTERM: STOPPING=1, exit 0.
    let mut d = d;
    d.signal("-TERM");
    let status = d.process.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status}\n{}", d.log());
    notify.wait_count("STOPPING=1", 1).await;

    // Logs: one JSON object per line with timestamp and level; rule and counts on evaluations;
    // no personal data; no password.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = d.log();
    assert!(!log.is_empty());
    for line in log.lines() {
        let e: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}"));
        assert!(
            e["timestamp"].is_string() && e["level"].is_string(),
            "{line}"
        );
    }
    assert!(
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| e["message"] == "rule evaluated"
                && e["rule"] == "production_over_7d"
                && e["source"] == "shop"
                && e["count"] == 1),
        "no evaluation event with rule, source and count:\n{log}"
    );
    assert!(
        log.contains("\"source\":\"mes\""),
        "the dead source is reported:\n{log}"
    );
    for personal in ["Anna", "Ivanova", "Boris", "@example.com", SECRET] {
        assert!(!log.contains(personal), "{personal:?} in the log:\n{log}");
    }
}

/// The config the Debian package installs, with the shipped rules beside it as in
/// /etc/orderwatch/rules/, passes `orderwatch check --offline` (the unit's ExecStartPre).
#[test]
fn packaged_config_and_rules_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::copy(
        root.join("packaging/etc/orderwatch.yaml"),
        dir.path().join("orderwatch.yaml"),
    )
    .unwrap();
    for f in ["shop.yaml", "mes.yaml", "lost.yaml", "db.yaml"] {
        std::fs::copy(root.join("rules").join(f), dir.path().join("rules").join(f)).unwrap();
    }
    // The packaged http.yaml: no rule until the user fills in a URL.
    let http = std::fs::read_to_string(root.join("packaging/etc/rules/http.yaml")).unwrap();
    std::fs::write(dir.path().join("rules/http.yaml"), &http).unwrap();
    let check = || {
        let out = Command::new(BIN)
            .args(["check", "--offline", "-c"])
            .arg(dir.path().join("orderwatch.yaml"))
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{said}");
        said
    };
    let said = check();
    assert!(said.contains("OK (2 sources, 14 rules"), "{said}");
    // Each commented-out rule in it, uncommented as its comment says, loads.
    let blocks: Vec<&str> = http
        .split("\n\n")
        .filter(|b| b.contains("# rules:"))
        .collect();
    assert_eq!(blocks.len(), 2, "{http}");
    for b in blocks {
        let rule: String = b
            .lines()
            .skip_while(|l| !l.starts_with("# rules:"))
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        std::fs::write(dir.path().join("rules/http.yaml"), &rule).unwrap();
        let said = check();
        assert!(said.contains("OK (2 sources, 15 rules"), "{rule}\n{said}");
    }
    // Every rule file the package installs is one the test copied.
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let shipped: Vec<_> = std::fs::read_dir(root.join("rules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for f in shipped {
        // http.yaml is packaged off (packaging/etc/rules/): its URLs are the user's to fill in.
        let asset = if f == "http.yaml" {
            "\"packaging/etc/rules/http.yaml\"".to_string()
        } else {
            format!("\"rules/{f}\"")
        };
        assert!(
            cargo.contains(&asset),
            "rules/{f} is not in the package's assets"
        );
    }
}
