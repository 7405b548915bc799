//! The `email` channel against a real SMTP server: Debian's aiosmtpd, run by
//! `tests/fixtures/smtp_server.py` on a random port, in plain, STARTTLS and implicit-TLS mode,
//! with a CA and server certificate made here (rcgen). Each delivered message is read back as
//! the raw bytes the server received and parsed as MIME (mail-parser).
//!
//! Faults are real too: a server without STARTTLS, a certificate from another CA, a 550 for
//! the recipient, bad credentials, a closed port, a server that never answers.

use std::path::Path;
use std::time::{Duration, Instant};

use mail_parser::{MessageParser, MimeHeaders, PartType};
use orderwatch::config::EmailConfig;
use orderwatch::notify::channels::email::{self, Email};
use orderwatch::notify::{Deliver, DeliveryError, Notification};

mod common;
use common::Pki;

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and an unrelated CA,
/// as PEM files in `dir`.
fn make_pki(dir: &Path) -> Pki {
    Pki::new(dir)
}

use common::smtp::{Mode, Options, Received, SmtpServer, require_aiosmtpd};

const RECIPIENTS: [&str; 3] = [
    "oncall@example.com",
    "sales-lead@example.com",
    "Shift Manager <shift@example.com>",
];
const ADDRESSES: [&str; 3] = [
    "oncall@example.com",
    "sales-lead@example.com",
    "shift@example.com",
];

/// An email config as a user writes it, validated the way the daemon does (secrets expanded
/// relative to `base`).
fn config(yaml: &str, base: &Path) -> EmailConfig {
    let mut cfg: EmailConfig =
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let problems = email::validate(&mut cfg, base);
    assert!(problems.is_empty(), "{problems:?}\n{yaml}");
    cfg
}

fn yaml(smarthost: &str, tls: &str, extra: &str) -> String {
    let to: Vec<String> = RECIPIENTS.iter().map(|r| format!("'{r}'")).collect();
    format!(
        "smarthost: {smarthost}\ntls: {tls}\nfrom: 'orderwatch <orderwatch@example.com>'\n\
         to: [{}]\ntimeout: 10s\n{extra}",
        to.join(", ")
    )
}

fn sample() -> Notification {
    Notification::sample("ops", "http://orderwatch.example:9187")
}

/// Checks one delivered sample notification: envelope, headers, both MIME parts.
fn check_sample_message(got: &Received, tls: bool) {
    let meta = &got.meta;
    assert_eq!(meta["tls"], tls, "session encryption: {meta}");
    assert_eq!(meta["mail_from"], "orderwatch@example.com", "{meta}");
    let rcpt: Vec<&str> = meta["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(rcpt, ADDRESSES, "every recipient in the envelope");

    let n = sample();
    let msg = MessageParser::default()
        .parse(&got.raw)
        .expect("a MIME message");
    assert_eq!(
        msg.subject(),
        Some("[FIRING:2] submitted_over_1h (shop, critical)")
    );
    let to: Vec<&str> = msg
        .to()
        .expect("To header")
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(to, ADDRESSES, "every recipient in To");
    assert_eq!(
        msg.from().and_then(|f| f.first()).and_then(|a| a.address()),
        Some("orderwatch@example.com")
    );
    assert_eq!(
        msg.header_raw("X-Orderwatch-Group").map(str::trim),
        Some(n.group_key.as_str())
    );
    assert!(
        msg.message_id()
            .is_some_and(|id| id.ends_with("@example.com")),
        "{:?}",
        msg.message_id()
    );
    let date = msg.date().expect("Date header").to_timestamp();
    assert!(
        (chrono::Utc::now().timestamp() - date).abs() < 120,
        "Date is now"
    );

    let root = msg.root_part().content_type().expect("Content-Type");
    assert_eq!(
        (root.ctype(), root.subtype()),
        ("multipart", Some("alternative"))
    );
    assert_eq!((msg.text_body_count(), msg.html_body_count()), (1, 1));
    let PartType::Text(text) = &msg.text_part(0).unwrap().body else {
        panic!("the text alternative is text/plain");
    };
    let PartType::Html(html) = &msg.html_part(0).unwrap().body else {
        panic!("the HTML alternative is text/html");
    };
    for id in ["JW-00000042", "JW-00000043", "JW-00000017"] {
        assert!(text.contains(id), "{id} in the text part:\n{text}");
        assert!(html.contains(id), "{id} in the HTML part:\n{html}");
    }
    assert!(
        text.contains("pendant & chain <test>"),
        "raw label in text:\n{text}"
    );
    assert!(
        html.contains("pendant &amp; chain &lt;test&gt;"),
        "escaped label in HTML:\n{html}"
    );
    assert!(
        !html.contains("<test>"),
        "nothing unescaped in HTML:\n{html}"
    );
    assert!(
        html.contains("href=\"http:&#x2f;&#x2f;orderwatch.example:9187\""),
        "{html}"
    );
}

async fn deliver(email: &Email) -> Result<(), DeliveryError> {
    email.deliver(&sample()).await
}

#[tokio::test]
async fn plain_delivers_one_multipart_message_to_every_recipient() {
    if !require_aiosmtpd() {
        return;
    }
    let server = SmtpServer::start(Mode::Plain, Options::default());
    let cfg = config(&yaml(&server.smarthost(), "none", ""), Path::new("/"));
    let email = Email::new("ops", &cfg).unwrap();
    assert_eq!(email.kind(), "email");
    deliver(&email)
        .await
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    let got = server.received();
    assert_eq!(got.len(), 1, "one message for all recipients");
    check_sample_message(&got[0], false);
}

#[tokio::test]
async fn starttls_with_auth_and_a_private_ca_delivers_encrypted() {
    if !require_aiosmtpd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    std::fs::write(dir.path().join("smtp-password"), "s3cr3t-Pa55\n").unwrap();
    let server = SmtpServer::start(
        Mode::Starttls,
        Options {
            pki: Some(&pki),
            auth: Some("orderwatch:s3cr3t-Pa55"),
            ..Options::default()
        },
    );
    // The CA path is relative to the config file's directory, like every path in the config.
    let extra = "ca_file: ca.pem\nusername: orderwatch\npassword: ${file:smtp-password}\n";
    let cfg = config(&yaml(&server.smarthost(), "starttls", extra), dir.path());
    let email = Email::new("ops", &cfg).unwrap();
    deliver(&email)
        .await
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    let got = server.received();
    assert_eq!(got.len(), 1);
    check_sample_message(&got[0], true);
    assert_eq!(got[0].meta["auth_login"], "orderwatch", "{}", got[0].meta);
    assert!(
        got[0].meta["tls_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{}",
        got[0].meta
    );
}

#[tokio::test]
async fn implicit_tls_with_auth_delivers_encrypted() {
    if !require_aiosmtpd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let server = SmtpServer::start(
        Mode::Tls,
        Options {
            pki: Some(&pki),
            auth: Some("orderwatch:s3cr3t"),
            ..Options::default()
        },
    );
    let extra = format!(
        "ca_file: {}\nusername: orderwatch\npassword: s3cr3t\n",
        pki.ca.display()
    );
    let cfg = config(&yaml(&server.smarthost(), "tls", &extra), Path::new("/"));
    deliver(&Email::new("ops", &cfg).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    let got = server.received();
    assert_eq!(got.len(), 1);
    check_sample_message(&got[0], true);
    assert_eq!(got[0].meta["auth_login"], "orderwatch");
}

#[tokio::test]
async fn starttls_against_a_server_without_tls_sends_nothing() {
    if !require_aiosmtpd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let server = SmtpServer::start(Mode::Plain, Options::default());
    // Without credentials an opportunistic client would send the message in clear; with
    // them it would fail only for want of AUTH. Both must fail on the missing STARTTLS.
    let ca = format!("ca_file: {}\n", pki.ca.display());
    for extra in [
        ca.clone(),
        format!("{ca}username: orderwatch\npassword: never-in-clear\n"),
    ] {
        let cfg = config(
            &yaml(&server.smarthost(), "starttls", &extra),
            Path::new("/"),
        );
        let err = deliver(&Email::new("ops", &cfg).unwrap())
            .await
            .expect_err("STARTTLS is required, not opportunistic");
        assert!(matches!(err, DeliveryError::Retry(_)), "{err:?}");
        assert!(err.to_string().contains("STARTTLS"), "{err}");
        assert!(
            err.to_string().contains(&server.smarthost()),
            "names the server: {err}"
        );
        assert!(server.received().is_empty(), "nothing may be sent in clear");
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    if !require_aiosmtpd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    for mode in [Mode::Starttls, Mode::Tls] {
        let server = SmtpServer::start(
            mode,
            Options {
                pki: Some(&pki),
                ..Options::default()
            },
        );
        let tls = if mode == Mode::Tls { "tls" } else { "starttls" };
        // Trusting another CA, and trusting only the public roots: both must refuse.
        for extra in [
            format!("ca_file: {}\n", pki.other_ca.display()),
            String::new(),
        ] {
            let cfg = config(&yaml(&server.smarthost(), tls, &extra), Path::new("/"));
            let err = deliver(&Email::new("ops", &cfg).unwrap())
                .await
                .expect_err("an untrusted certificate must fail");
            assert!(matches!(err, DeliveryError::Retry(_)), "{mode:?}: {err:?}");
            assert!(
                err.to_string().to_lowercase().contains("certificate"),
                "{mode:?}: says why: {err}"
            );
            assert_eq!(
                err.to_string().matches("certificate").count(),
                1,
                "each cause said once: {err}"
            );
        }
        assert!(server.received().is_empty(), "{mode:?}: nothing delivered");
    }
}

#[tokio::test]
async fn a_rejected_recipient_is_permanent() {
    if !require_aiosmtpd() {
        return;
    }
    let server = SmtpServer::start(
        Mode::Plain,
        Options {
            reject: &["nobody@example.com"],
            ..Options::default()
        },
    );
    let yaml = format!(
        "smarthost: {}\ntls: none\nfrom: orderwatch@example.com\nto: [nobody@example.com]\n",
        server.smarthost()
    );
    let cfg = config(&yaml, Path::new("/"));
    let err = deliver(&Email::new("ops", &cfg).unwrap())
        .await
        .expect_err("550");
    let DeliveryError::Permanent(detail) = &err else {
        panic!("550 must be permanent: {err:?}");
    };
    assert!(
        detail.contains("550") && detail.contains("nobody@example.com"),
        "{detail}"
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn wrong_credentials_are_permanent_and_the_password_never_shows() {
    if !require_aiosmtpd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let server = SmtpServer::start(
        Mode::Starttls,
        Options {
            pki: Some(&pki),
            auth: Some("orderwatch:right-password"),
            ..Options::default()
        },
    );
    let extra = format!(
        "ca_file: {}\nusername: orderwatch\npassword: Wr0ng-Pa55word\n",
        pki.ca.display()
    );
    let cfg = config(
        &yaml(&server.smarthost(), "starttls", &extra),
        Path::new("/"),
    );
    assert!(!format!("{cfg:?}").contains("Wr0ng-Pa55word"));
    let email = Email::new("ops", &cfg).unwrap();
    assert!(!format!("{email:?}").contains("Wr0ng-Pa55word"));
    let err = deliver(&email).await.expect_err("535");
    assert!(matches!(err, DeliveryError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("535"), "{err}");
    assert!(
        !format!("{err} {err:?}").contains("Wr0ng-Pa55word"),
        "{err}"
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_closed_port_is_retried() {
    // No SMTP server needed: a port just bound and released has no listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        &yaml(&format!("127.0.0.1:{port}"), "none", ""),
        Path::new("/"),
    );
    let err = deliver(&Email::new("ops", &cfg).unwrap())
        .await
        .expect_err("connection refused");
    assert!(matches!(err, DeliveryError::Retry(_)), "{err:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_and_is_retried() {
    // A listener that is never accepted from: the kernel completes the TCP handshake, the
    // SMTP greeting never comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let smarthost = silent.local_addr().unwrap().to_string();
    let yaml = yaml(&smarthost, "none", "").replace("timeout: 10s", "timeout: 1s");
    let cfg = config(&yaml, Path::new("/"));
    let started = Instant::now();
    let err = deliver(&Email::new("ops", &cfg).unwrap())
        .await
        .expect_err("timeout");
    assert!(matches!(err, DeliveryError::Retry(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeout: {:?}",
        started.elapsed()
    );
    drop(silent);
}
