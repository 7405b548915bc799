//! An SMTP server for the email tests: Debian's aiosmtpd, run by
//! `tests/fixtures/smtp_server.py` on a random port (plain, STARTTLS or implicit TLS), keeping
//! each message as the raw bytes it received.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Pki;

/// The system interpreter: Debian's python3-aiosmtpd installs for it, not for a pyenv
/// `python3` that may come first on PATH.
pub const PYTHON: &str = "/usr/bin/python3";
pub const APT_PKG: &str = "python3-aiosmtpd";

/// Whether aiosmtpd can be imported; like `require_bin` in tests/common, a missing one fails
/// the test in CI (`CI=true`) and skips it elsewhere, with the install hint either way.
pub fn require_aiosmtpd() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let hint = format!(
        "aiosmtpd is missing for {PYTHON}: apt-get install -y {APT_PKG} (or run scripts/test, which installs it)"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{hint}");
    }
    eprintln!("skipping: {hint}");
    false
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Plain,
    Starttls,
    Tls,
}

/// What the server should do besides accepting mail.
#[derive(Default)]
pub struct Options<'a> {
    pub pki: Option<&'a Pki>,
    /// `user:password` required before MAIL (over TLS only).
    pub auth: Option<&'a str>,
    /// Recipients answered with 550.
    pub reject: &'a [&'a str],
}

/// One message the server accepted.
pub struct Received {
    pub raw: Vec<u8>,
    /// mail_from, rcpt_tos, tls, tls_version, auth_login, ehlo.
    pub meta: Value,
}

/// The aiosmtpd fixture, stopped on drop. Its standard input is its lifeline: when this
/// process closes it (drop) or dies in any way, the server exits and removes its directory.
pub struct SmtpServer {
    child: Child,
    port: u16,
    mail: PathBuf,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start(mode: Mode, opts: Options<'_>) -> SmtpServer {
        let dir = tempfile::Builder::new()
            .prefix("orderwatch-smtp-")
            .tempdir()
            .unwrap();
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).unwrap();
        let log = dir.path().join("server.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp_server.py");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script)
            .arg("--dir")
            .arg(&mail)
            .arg("--cleanup")
            .arg(dir.path())
            .arg("--mode")
            .arg(match mode {
                Mode::Plain => "plain",
                Mode::Starttls => "starttls",
                Mode::Tls => "tls",
            });
        if let Some(pki) = opts.pki {
            cmd.arg("--cert").arg(&pki.cert).arg("--key").arg(&pki.key);
        }
        if let Some(auth) = opts.auth {
            cmd.arg("--auth").arg(auth);
        }
        for r in opts.reject {
            cmd.arg("--reject-rcpt").arg(r);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {PYTHON} {}: {e}", script.display()));
        // The server binds port 0 and says which port it got: no race for a free port.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(port) = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "SMTP fixture did not start (said {line:?}); its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        SmtpServer {
            child,
            port,
            mail,
            dir,
        }
    }

    pub fn smarthost(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The messages accepted so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let mut metas: Vec<PathBuf> = std::fs::read_dir(&self.mail)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        metas.sort();
        metas
            .into_iter()
            .map(|meta| Received {
                raw: std::fs::read(meta.with_extension("eml")).unwrap(),
                meta: serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap(),
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
