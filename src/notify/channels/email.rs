//! The `email` channel: one multipart/alternative message (plain text and HTML) per
//! notification, sent over SMTP with lettre on tokio and rustls (ring), the one TLS stack the
//! daemon uses.
//!
//! Three transport modes: `starttls` (the default, port 587; STARTTLS is *required*, so a
//! server or a man in the middle that does not offer it gets nothing, not even the password),
//! `tls` (implicit TLS, port 465) and `none` (plain, for a relay on the same host). Servers are
//! verified against the webpki roots plus an optional `ca_file`, for relays with a corporate CA.
//!
//! Subject and both bodies are minijinja templates over [`MessageContext`]; the defaults name
//! the rule, how many orders, the oldest age and the first N orders, and look right in a mail
//! client (tables and inline CSS only, no external assets). The HTML template is named with an
//! `.html` suffix, so every value in it is HTML-escaped.
//!
//! SMTP 5xx is [`DeliveryError::Permanent`]; everything else that goes wrong on the wire
//! (connection, TLS, timeout, 4xx) is [`DeliveryError::Retry`]. The password is never
//! formatted: not by `Debug`, not in errors (lettre's `tracing` feature, which would log the
//! AUTH exchange, stays off).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::Environment;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_saphyr::Location;

use crate::config::{Dur, EmailConfig, EmailTls, expand_secrets};
use crate::notify::channel::{Deliver, DeliveryError};
use crate::notify::message::Notification;
use crate::notify::template::{MessageContext, environment, render};

/// Template names; `.html` turns on escaping (see [`environment`]).
const SUBJECT: &str = "subject";
const TEXT: &str = "text";
const HTML: &str = "body.html";

/// Default subject: the context's one-line title, e.g. `[FIRING:2] submitted_over_1h (shop, critical)`.
pub const DEFAULT_SUBJECT: &str = "{{ title }}";

/// Default plain-text body: what a terminal mail reader or a phone notification preview shows.
pub const DEFAULT_TEXT: &str = r#"{% if status == "firing" -%}
{{ firing_count }} order{{ "" if firing_count == 1 else "s" }} stuck{% if oldest_age %}, the oldest for {{ oldest_age }}{% endif %}.
{%- else -%}
{{ resolved_count }} order{{ "" if resolved_count == 1 else "s" }} recovered.
{%- endif %}

Rule:     {{ rule or alertname }}
Source:   {{ source }}
Severity: {{ severity }}
{% if summary %}
{{ summary }}
{% endif %}
{%- if description %}
{{ description }}
{% endif %}
{%- if orders %}
Stuck orders, oldest first:
{% for o in orders -%}
- {{ o.order_id }}  {{ o.status }}  {{ o.age }}{% for k, v in o.labels|items %}  {{ k }}={{ v }}{% endfor %}
{%- for l in o.links %}
    {{ l.name }}: {{ l.url }}
{%- endfor %}
{% endfor %}
{%- if more %}
...and {{ more }} more
{% endif %}
{%- endif %}
{%- if resolved %}
Recovered:
{% for o in resolved -%}
- {{ o.order_id }}  {{ o.status }}{% for k, v in o.labels|items %}  {{ k }}={{ v }}{% endfor %}
{% endfor %}
{%- if resolved_more %}
...and {{ resolved_more }} more
{% endif %}
{%- endif %}
{%- if external_url %}
--
orderwatch: {{ external_url }}
{% endif %}"#;

/// Default HTML body: tables and inline CSS only (what mail clients render reliably), no
/// images or external stylesheets.
pub const DEFAULT_HTML: &str = r##"<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
</head>
{%- set color = "#1a7f37" if status == "resolved" else "#cf222e" if severity == "critical" else "#bc4c00" if severity == "warning" else "#0969da" %}
{%- set cell = "padding:6px 8px;border-bottom:1px solid #eaeef2;vertical-align:top;" %}
{%- set head = "padding:6px 8px;border-bottom:2px solid #d0d7de;text-align:left;font-size:12px;color:#57606a;text-transform:uppercase;" %}
<body style="margin:0;padding:0;background:#f6f8fa;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f6f8fa;padding:24px 8px;">
<tr><td align="center">
<table role="presentation" width="640" cellpadding="0" cellspacing="0" style="max-width:640px;width:100%;background:#ffffff;border:1px solid #d0d7de;border-radius:6px;font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;line-height:1.5;color:#1f2328;">
<tr><td style="background:{{ color }};color:#ffffff;padding:16px 24px;border-radius:6px 6px 0 0;font-size:18px;font-weight:600;">{{ title }}</td></tr>
<tr><td style="padding:16px 24px;">
{%- if status == "firing" %}
<p style="margin:0 0 12px;font-size:16px;"><strong>{{ firing_count }}</strong> order{{ "" if firing_count == 1 else "s" }} stuck{% if oldest_age %}, the oldest for <strong>{{ oldest_age }}</strong>{% endif %}.</p>
{%- else %}
<p style="margin:0 0 12px;font-size:16px;"><strong>{{ resolved_count }}</strong> order{{ "" if resolved_count == 1 else "s" }} recovered.</p>
{%- endif %}
<table role="presentation" cellpadding="0" cellspacing="0" style="margin:0 0 12px;">
<tr><td style="padding:2px 16px 2px 0;color:#57606a;">Rule</td><td style="padding:2px 0;"><strong>{{ rule or alertname }}</strong></td></tr>
<tr><td style="padding:2px 16px 2px 0;color:#57606a;">Source</td><td style="padding:2px 0;">{{ source }}</td></tr>
<tr><td style="padding:2px 16px 2px 0;color:#57606a;">Severity</td><td style="padding:2px 0;">{{ severity }}</td></tr>
</table>
{%- if summary %}
<p style="margin:0 0 12px;">{{ summary }}</p>
{%- endif %}
{%- if description %}
<p style="margin:0 0 12px;color:#57606a;">{{ description }}</p>
{%- endif %}
{%- if orders %}
<h3 style="margin:16px 0 8px;font-size:15px;">Stuck orders, oldest first</h3>
<table cellpadding="0" cellspacing="0" width="100%" style="border-collapse:collapse;font-size:13px;">
<tr><th style="{{ head }}">Order</th><th style="{{ head }}">Status</th><th style="{{ head }}">Age</th><th style="{{ head }}">Labels</th><th style="{{ head }}">Links</th></tr>
{%- for o in orders %}
<tr><td style="{{ cell }}font-family:SFMono-Regular,Consolas,Menlo,monospace;white-space:nowrap;">{{ o.order_id }}</td><td style="{{ cell }}">{{ o.status }}</td><td style="{{ cell }}white-space:nowrap;">{{ o.age }}</td><td style="{{ cell }}">
{%- for k, v in o.labels|items %}<span style="display:inline-block;margin:0 4px 2px 0;padding:0 6px;border-radius:10px;background:#eaeef2;color:#1f2328;font-size:12px;">{{ k }}: {{ v }}</span>{% endfor -%}
</td><td style="{{ cell }}">
{%- for l in o.links %}<a href="{{ l.url }}" style="color:#0969da;">{{ l.name }}</a>{% if not loop.last %} &middot; {% endif %}{% endfor -%}
</td></tr>
{%- endfor %}
</table>
{%- if more %}
<p style="margin:8px 0 0;color:#57606a;">&hellip;and {{ more }} more.</p>
{%- endif %}
{%- endif %}
{%- if resolved %}
<h3 style="margin:16px 0 8px;font-size:15px;color:#1a7f37;">Recovered</h3>
<table cellpadding="0" cellspacing="0" width="100%" style="border-collapse:collapse;font-size:13px;">
<tr><th style="{{ head }}">Order</th><th style="{{ head }}">Status</th><th style="{{ head }}">Labels</th></tr>
{%- for o in resolved %}
<tr><td style="{{ cell }}font-family:SFMono-Regular,Consolas,Menlo,monospace;white-space:nowrap;">{{ o.order_id }}</td><td style="{{ cell }}">{{ o.status }}</td><td style="{{ cell }}">
{%- for k, v in o.labels|items %}<span style="display:inline-block;margin:0 4px 2px 0;padding:0 6px;border-radius:10px;background:#eaeef2;color:#1f2328;font-size:12px;">{{ k }}: {{ v }}</span>{% endfor -%}
</td></tr>
{%- endfor %}
</table>
{%- if resolved_more %}
<p style="margin:8px 0 0;color:#57606a;">&hellip;and {{ resolved_more }} more.</p>
{%- endif %}
{%- endif %}
</td></tr>
<tr><td style="padding:12px 24px;border-top:1px solid #d0d7de;font-size:12px;color:#57606a;">
Sent by {% if external_url %}<a href="{{ external_url }}" style="color:#0969da;">orderwatch</a>{% else %}orderwatch{% endif %} to receiver {{ receiver }}.
</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
"##;

/// A `host:port` smarthost, split. IPv6 literals are written `[::1]:25`.
fn parse_smarthost(s: &str) -> Result<(String, u16), String> {
    let expected = "expected host:port, e.g. smtp.example.com:587";
    let (host, port) = s
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| format!("smarthost {s:?}: {expected}"))?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| format!("smarthost {s:?}: unclosed `[`"))?,
        None if host.contains(':') => {
            return Err(format!(
                "smarthost {s:?}: write an IPv6 address in brackets, e.g. [::1]:25"
            ));
        }
        None => host,
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("smarthost {s:?}: {port:?} is not a port; {expected}"))?;
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("smarthost {s:?}: {expected}"));
    }
    Ok((host.to_string(), port))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The CA certificates in a PEM file; an error when it holds none, so a wrong path or a key
/// file given by mistake fails at start-up rather than as a TLS error at 3 a.m.
fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("ca_file {}: cannot read: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file {}: invalid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file {}: no certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Ok(pem)
}

/// The templates of a config, defaults filled in, as an environment.
fn templates(cfg: &EmailConfig) -> Result<Environment<'static>, String> {
    environment(&[
        (SUBJECT, cfg.subject.as_deref().unwrap_or(DEFAULT_SUBJECT)),
        (TEXT, cfg.text.as_deref().unwrap_or(DEFAULT_TEXT)),
        (HTML, cfg.html.as_deref().unwrap_or(DEFAULT_HTML)),
    ])
}

/// Subject, plain-text and HTML body of one notification.
struct Rendered {
    subject: String,
    text: String,
    html: String,
}

fn render_all(
    env: &Environment<'static>,
    n: &Notification,
    max_orders: usize,
    now: DateTime<Utc>,
) -> Result<Rendered, String> {
    let ctx = MessageContext::new(n, max_orders, now);
    // A subject is one header line: newlines from a template would be folded into garbage.
    let subject = render(env, SUBJECT, &ctx)?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let (text, html) = (render(env, TEXT, &ctx)?, render(env, HTML, &ctx)?);
    Ok(Rendered {
        subject: if subject.is_empty() {
            ctx.title
        } else {
            subject
        },
        text,
        html,
    })
}

/// Expands secrets in place (username, password) relative to `base`, resolves `ca_file`
/// relative to `base`, and checks the values (smarthost is host:port, addresses parse, at
/// least one recipient, templates compile and render the sample notification, the CA file
/// holds certificates); returns each problem with the location of the offending value.
/// Problems of fields that carry no location of their own (`to` empty, `ca_file`,
/// templates, `timeout`) are reported at `smarthost`, the block's one required key.
pub fn validate(c: &mut EmailConfig, base: &Path) -> Vec<(Location, String)> {
    let mut problems = Vec::new();
    let block = c.smarthost.referenced;
    let host = match parse_smarthost(&c.smarthost.value) {
        Ok((host, _)) => Some(host),
        Err(e) => {
            problems.push((c.smarthost.referenced, e));
            None
        }
    };
    for (field, value) in [("username", &mut c.username), ("password", &mut c.password)] {
        if let Some(v) = value {
            // expand_secrets names the variable or file, never the value.
            match expand_secrets(&v.value, base) {
                Ok(expanded) => v.value = expanded,
                Err(e) => problems.push((v.referenced, format!("{field}: {e}"))),
            }
        }
    }
    match (&c.username, &c.password) {
        (Some(u), None) => problems.push((
            u.referenced,
            "username without password: set both for SMTP AUTH, or neither".into(),
        )),
        (None, Some(p)) => problems.push((
            p.referenced,
            "password without username: set both for SMTP AUTH, or neither".into(),
        )),
        (Some(u), Some(_)) => {
            if c.tls == EmailTls::None && host.as_deref().is_some_and(|h| !is_loopback(h)) {
                problems.push((
                    u.referenced,
                    "tls: none would send the password in clear to a remote host; use \
                     starttls or tls (tls: none with credentials is allowed for a loopback \
                     smarthost only)"
                        .into(),
                ));
            }
        }
        (None, None) => {}
    }
    if let Err(e) = c.from.value.parse::<Mailbox>() {
        problems.push((
            c.from.referenced,
            format!("from {:?} is not an email address: {e}", c.from.value),
        ));
    }
    if c.to.is_empty() {
        problems.push((block, "`to` needs at least one recipient".into()));
    }
    for to in &c.to {
        if let Err(e) = to.value.parse::<Mailbox>() {
            problems.push((
                to.referenced,
                format!("to {:?} is not an email address: {e}", to.value),
            ));
        }
    }
    if let Some(ca) = &mut c.ca_file {
        if ca.is_relative() {
            *ca = base.join(&*ca);
        }
        if let Err(e) = read_ca_file(ca) {
            problems.push((block, e));
        }
    }
    // Compiling catches syntax errors; rendering the sample catches unknown filters and
    // the like, which minijinja reports only at render time.
    match templates(c) {
        Ok(env) => {
            let sample = Notification::sample("validate", "http://orderwatch.invalid");
            if let Err(e) = render_all(&env, &sample, c.max_orders, Utc::now()) {
                problems.push((block, e));
            }
        }
        Err(e) => problems.push((block, e)),
    }
    if c.timeout.0.is_zero() {
        problems.push((block, "timeout must be greater than 0".into()));
    }
    problems
}

/// The `email` channel, built from a validated [`EmailConfig`]: a transport (TLS settings and
/// credentials resolved once) and the compiled templates.
pub struct Email {
    name: String,
    endpoint: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    env: Environment<'static>,
    max_orders: usize,
    timeout: Duration,
    /// Scrubbed from every error, in case a server echoes it back.
    password: Option<String>,
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Email")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

impl Email {
    /// Builds the channel `name` from a config that went through [`validate`]
    /// (secrets expanded, `ca_file` resolved). Errors name the receiver and the field.
    pub fn new(name: &str, cfg: &EmailConfig) -> Result<Email, String> {
        let err = |e: String| format!("email receiver {name}: {e}");
        let (host, port) = parse_smarthost(&cfg.smarthost.value).map_err(err)?;
        let from: Mailbox = cfg
            .from
            .value
            .parse()
            .map_err(|e| err(format!("from {:?}: {e}", cfg.from.value)))?;
        let to = cfg
            .to
            .iter()
            .map(|t| {
                t.value
                    .parse::<Mailbox>()
                    .map_err(|e| err(format!("to {:?}: {e}", t.value)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(err("`to` needs at least one recipient".into()));
        }
        let env = templates(cfg).map_err(err)?;

        let tls = match cfg.tls {
            EmailTls::None => Tls::None,
            mode => {
                let params = tls_parameters(&host, cfg.ca_file.as_deref()).map_err(err)?;
                // Required, not Opportunistic: a stripped STARTTLS must fail the delivery,
                // not send the message and the password in clear.
                if mode == EmailTls::Starttls {
                    Tls::Required(params)
                } else {
                    Tls::Wrapper(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            // lettre's timeout applies per socket operation; `deliver` bounds the whole
            // exchange with the same value.
            .timeout(Some(cfg.timeout.0));
        let mut password = None;
        if let (Some(user), Some(pass)) = (&cfg.username, &cfg.password) {
            builder = builder.credentials(Credentials::new(user.value.clone(), pass.value.clone()));
            password = Some(pass.value.clone()).filter(|p| !p.is_empty());
        }
        Ok(Email {
            name: name.to_string(),
            endpoint: format!("{}:{port} ({})", host, cfg.tls.as_str()),
            transport: builder.build(),
            from,
            to,
            env,
            max_orders: cfg.max_orders,
            timeout: cfg.timeout.0,
            password,
        })
    }

    /// The message for `n` rendered at `now`: multipart/alternative, text first (mail
    /// clients show the last alternative they can render, so HTML wins where supported).
    fn compose(&self, n: &Notification, now: DateTime<Utc>) -> Result<Message, String> {
        let body = render_all(&self.env, n, self.max_orders, now)?;
        let domain = self.from.email.domain();
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(body.subject)
            .date(now.into())
            .message_id(Some(format!(
                "<{:032x}.{}@{domain}>",
                rand::random::<u128>(),
                now.timestamp_millis()
            )))
            // Every message of one group references the same id, so mail clients thread a
            // group's firing, repeat and resolved messages together.
            .references(format!(
                "<group.{:016x}@{domain}>",
                fnv1a(&[n.receiver.as_bytes(), b"\0", n.group_key.as_bytes()])
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Orderwatch-Group"),
                n.group_key.clone(),
            ));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(body.text, body.html))
            .map_err(|e| format!("building the message: {e}"))
    }

    /// An error's text with every cause once, the password (should a server echo it) removed.
    fn describe(&self, e: &lettre::transport::smtp::Error) -> String {
        let mut s = error_chain(e);
        if let Some(p) = &self.password {
            s = s.replace(p.as_str(), "<redacted>");
        }
        format!("email {} via {}: {s}", self.name, self.endpoint)
    }
}

/// An error and its causes on one line, each said once: lettre's errors print their source
/// after their own text, and so do some of the causes, which a plain walk would repeat.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut texts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(inner) = cur {
        texts.push(inner.to_string());
        cur = inner.source();
    }
    let mut parts: Vec<&str> = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        // A level's own words: its text without the cause it already appended.
        let own = texts
            .get(i + 1)
            .and_then(|next| text.strip_suffix(next.as_str()))
            .map_or(text.as_str(), |own| own.trim_end_matches([':', ' ']));
        if !own.is_empty() && parts.last() != Some(&own) {
            parts.push(own);
        }
    }
    parts.join(": ")
}

/// 64-bit FNV-1a: a stable hash (std's hasher may change between Rust releases, and thread
/// ids must survive upgrades).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// TLS settings for `host`: the webpki roots plus the certificates of `ca_file`. Built on
/// rustls with the ring provider, like every other TLS client of the daemon.
fn tls_parameters(host: &str, ca_file: Option<&Path>) -> Result<TlsParameters, String> {
    crate::tls::ensure_crypto_provider();
    let mut builder =
        TlsParameters::builder(host.to_string()).certificate_store(CertificateStore::WebpkiRoots);
    if let Some(path) = ca_file {
        let pem = read_ca_file(path)?;
        // One `Certificate` from a PEM holds every certificate in it (a bundle is fine).
        let certs =
            Certificate::from_pem(&pem).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        builder = builder.add_root_certificate(certs);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("TLS settings for {host}: {e}"))
}

impl Deliver for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        // A template that fails now fails on every retry too.
        let message = self
            .compose(n, Utc::now())
            .map_err(|e| DeliveryError::Permanent(format!("email {}: {e}", self.name)))?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            // Only a 5xx reply (unknown recipient, relaying denied, bad credentials) says the
            // same message would fail again; connection, TLS, timeouts and 4xx are retried.
            Ok(Err(e)) if e.is_permanent() => Err(DeliveryError::Permanent(self.describe(&e))),
            Ok(Err(e)) => Err(DeliveryError::Retry(self.describe(&e))),
            Err(_) => Err(DeliveryError::Retry(format!(
                "email {} via {}: no complete SMTP exchange within {}",
                self.name,
                self.endpoint,
                Dur(self.timeout)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> EmailConfig {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    const MINIMAL: &str = "smarthost: smtp.example.com:587\nfrom: orderwatch <ow@example.com>\nto: [a@example.com, b@example.com]\n";

    #[test]
    fn only_http_links_reach_the_message() {
        let env = templates(&config(MINIMAL)).unwrap();
        let r = render_all(&env, &Notification::hostile(), 10, Utc::now()).unwrap();
        for body in [&r.text, &r.html] {
            assert!(!body.to_ascii_lowercase().contains("javascript:"), "{body}");
            assert!(!body.contains("data:text"), "{body}");
        }
        assert!(
            // minijinja's HTML escaping writes `/` as `&#x2f;`, which browsers read back.
            r.html.contains(
                "href=\"https:&#x2f;&#x2f;jaeger&#x2f;search?q=a%20b%28c%29%7Cd&amp;who=%40all\""
            ),
            "{}",
            r.html
        );
    }

    fn problems(cfg: &mut EmailConfig) -> Vec<String> {
        validate(cfg, Path::new("/"))
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let cfg = config(MINIMAL);
        assert_eq!(cfg.tls, EmailTls::Starttls);
        assert_eq!(cfg.max_orders, 20);
        assert_eq!(cfg.timeout.0, Duration::from_secs(30));
        assert!(
            serde_saphyr::from_str::<EmailConfig>(&format!("{MINIMAL}smarthost_port: 1\n"))
                .is_err()
        );
        let cfg = config(&format!("{MINIMAL}tls: tls\ntimeout: 5s\nmax_orders: 3\n"));
        assert_eq!(
            (cfg.tls, cfg.timeout.0, cfg.max_orders),
            (EmailTls::Tls, Duration::from_secs(5), 3)
        );
    }

    #[test]
    fn smarthost_forms() {
        assert_eq!(
            parse_smarthost("smtp.example.com:587").unwrap(),
            ("smtp.example.com".into(), 587)
        );
        assert_eq!(parse_smarthost("[::1]:25").unwrap(), ("::1".into(), 25));
        assert_eq!(
            parse_smarthost("127.0.0.1:2525").unwrap(),
            ("127.0.0.1".into(), 2525)
        );
        for bad in [
            "smtp.example.com",
            "smtp.example.com:",
            ":25",
            "host:0",
            "host:99999",
            "::1:25",
            "[::1:25",
            "a b:25",
        ] {
            assert!(parse_smarthost(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_reports_each_problem_at_its_value() {
        let mut cfg = config(
            "smarthost: smtp.example.com\nfrom: not an address\nto: [ok@example.com, 'bad@']\n\
             username: u\nsubject: '{{ title'\n",
        );
        let got = validate(&mut cfg, Path::new("/"));
        let msgs: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
        assert!(msgs.iter().any(|m| m.contains("host:port")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.starts_with("from")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("\"bad@\"")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("username without password")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("template subject")),
            "{msgs:?}"
        );
        let bad_to = got.iter().find(|(_, m)| m.contains("\"bad@\"")).unwrap();
        assert_eq!(bad_to.0.line(), 3, "located at the offending recipient");

        assert!(
            problems(&mut config("smarthost: h:25\nfrom: a@b.c\nto: []\n"))
                .iter()
                .any(|m| m.contains("at least one recipient"))
        );
        assert!(
            problems(&mut config(&format!(
                "{MINIMAL}text: '{{{{ title | no_such_filter }}}}'\n"
            )))
            .iter()
            .any(|m| m.contains("no_such_filter"))
        );
        assert!(
            problems(&mut config(&format!(
                "{MINIMAL}ca_file: /nonexistent/ca.pem\n"
            )))
            .iter()
            .any(|m| m.contains("/nonexistent/ca.pem"))
        );
        assert!(
            problems(&mut config(&format!("{MINIMAL}timeout: 0s\n")))
                .iter()
                .any(|m| m.contains("timeout"))
        );
        assert!(problems(&mut config(MINIMAL)).is_empty());
    }

    #[test]
    fn credentials_are_expanded_and_never_sent_in_clear_to_a_remote_host() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        let creds = "username: ow\npassword: ${file:pw}\n";
        let mut cfg = config(&format!("{MINIMAL}{creds}"));
        assert!(validate(&mut cfg, dir.path()).is_empty());
        assert_eq!(cfg.password.as_ref().unwrap().value, "hunter2");
        assert!(
            !format!("{cfg:?}").contains("hunter2"),
            "Debug redacts the password"
        );
        let email = Email::new("ops", &cfg).unwrap();
        assert!(!format!("{email:?}").contains("hunter2"));

        let mut plain = config(&format!("{MINIMAL}tls: none\n{creds}"));
        let msgs: Vec<String> = validate(&mut plain, dir.path())
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert!(msgs.iter().any(|m| m.contains("in clear")), "{msgs:?}");
        let local =
            "smarthost: 127.0.0.1:25\nfrom: a@example.com\nto: [b@example.com]\ntls: none\n";
        assert!(validate(&mut config(&format!("{local}{creds}")), dir.path()).is_empty());

        let mut missing = config(&format!(
            "{MINIMAL}username: ow\npassword: ${{file:nope}}\n"
        ));
        let msgs: Vec<String> = validate(&mut missing, dir.path())
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("password:") && m.contains("nope")),
            "{msgs:?}"
        );
    }

    #[test]
    fn default_templates_render_firing_and_resolved_orders() {
        let env = templates(&config(MINIMAL)).unwrap();
        let n = Notification::sample("ops", "http://orderwatch.example:9187");
        let r = render_all(&env, &n, 20, Utc::now()).unwrap();
        assert_eq!(r.subject, "[FIRING:2] submitted_over_1h (shop, critical)");
        for id in ["JW-00000042", "JW-00000043", "JW-00000017"] {
            assert!(r.text.contains(id), "{id} in text:\n{}", r.text);
            assert!(r.html.contains(id), "{id} in html");
        }
        assert!(
            r.text.contains("2 orders stuck, the oldest for 3h"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("order_type=pendant & chain <test>"),
            "{}",
            r.text
        );
        assert!(r.text.contains("Recovered:\n- JW-00000017"), "{}", r.text);
        assert!(
            r.text.contains("sample alert, nothing is wrong"),
            "description:\n{}",
            r.text
        );
        assert!(
            r.text
                .contains("orderwatch: http://orderwatch.example:9187"),
            "{}",
            r.text
        );
        assert!(r.html.contains("pendant &amp; chain &lt;test&gt;"));
        assert!(!r.html.contains("<test>"));
        assert!(r.html.contains("#cf222e"), "critical colour");

        let r = render_all(&env, &n, 1, Utc::now()).unwrap();
        assert!(r.text.contains("...and 1 more"), "{}", r.text);
        assert!(!r.text.contains("JW-00000043"));
        assert!(r.html.contains("and 1 more"));

        let mut resolved = n.clone();
        resolved.status = crate::notify::message::NotifyStatus::Resolved;
        resolved
            .alerts
            .retain(|a| a.status == crate::notify::message::NotifyStatus::Resolved);
        let r = render_all(&env, &resolved, 20, Utc::now()).unwrap();
        assert!(
            r.subject.starts_with("[RESOLVED] submitted_over_1h"),
            "{}",
            r.subject
        );
        assert!(r.text.starts_with("1 order recovered."), "{}", r.text);
        assert!(!r.text.contains("Stuck orders"));
        assert!(r.html.contains("#1a7f37") && r.html.contains("Recovered"));
    }

    #[test]
    fn subject_is_one_line_and_message_carries_headers() {
        let mut cfg = config(&format!(
            "{MINIMAL}subject: \"{{{{ rule }}}}\\n  on {{{{ source }}}}\"\n"
        ));
        assert!(validate(&mut cfg, Path::new("/")).is_empty());
        let email = Email::new("ops", &cfg).unwrap();
        let n = Notification::sample("ops", "");
        let raw = String::from_utf8(email.compose(&n, Utc::now()).unwrap().formatted()).unwrap();
        assert!(
            raw.contains("Subject: submitted_over_1h on shop\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("X-Orderwatch-Group: {}:{rule=\"submitted_over_1h\"}\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("Message-ID: <") && raw.contains("@example.com>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("References: <group."), "{raw}");
        assert!(raw.contains("Date: "), "{raw}");
        assert!(
            raw.contains("To: a@example.com, b@example.com\r\n"),
            "{raw}"
        );
        assert!(raw.contains("multipart/alternative"), "{raw}");
        // Two messages of one group share the thread id but not the message id.
        let again = String::from_utf8(email.compose(&n, Utc::now()).unwrap().formatted()).unwrap();
        let header = |s: &str, h: &str| s.lines().find(|l| l.starts_with(h)).unwrap().to_string();
        assert_eq!(header(&raw, "References:"), header(&again, "References:"));
        assert_ne!(header(&raw, "Message-ID:"), header(&again, "Message-ID:"));
    }
}
