//! The web config file, in the format of Prometheus' exporter-toolkit (`--web.config.file` of
//! every exporter): TLS for the HTTP server, basic-auth users with bcrypt hashes, extra
//! response headers. Operators reuse the file they already have.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: ca.crt
//!   min_version: TLS12
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$…           # htpasswd -nBC 10 "" | tr -d ':\n'
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::problem::{ConfigError, Problem};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Serve HTTPS with this certificate (and optionally verify client certificates).
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    /// HTTP settings: extra response headers.
    #[serde(default)]
    pub http_server_config: HttpServerConfig,
    /// User name → bcrypt hash. When set, every path but `/healthz` needs these credentials.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, Spanned<String>>,
}

/// `tls_server_config`, as exporter-toolkit spells it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain of the server; relative paths are relative to the web config file.
    pub cert_file: Spanned<PathBuf>,
    /// PEM private key of the server.
    pub key_file: Spanned<PathBuf>,
    /// `NoClientCert` (default), `VerifyClientCertIfGiven` or `RequireAndVerifyClientCert`.
    #[serde(default)]
    pub client_auth_type: Option<Spanned<String>>,
    /// PEM CA certificates that sign client certificates.
    #[serde(default)]
    pub client_ca_file: Option<Spanned<PathBuf>>,
    /// `TLS12` (default) or `TLS13`.
    #[serde(default)]
    pub min_version: Option<Spanned<String>>,
    /// `TLS12` or `TLS13` (default).
    #[serde(default)]
    pub max_version: Option<Spanned<String>>,
}

/// `http_server_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Offer HTTP/2 over TLS (exporter-toolkit's switch; default true).
    #[serde(default)]
    pub http2: Option<bool>,
    /// Response headers added to every answer; only the security headers exporter-toolkit
    /// allows.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
}

/// Headers exporter-toolkit accepts in `http_server_config.headers`.
pub const ALLOWED_HEADERS: &[&str] = &[
    "Cache-Control",
    "Content-Security-Policy",
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
];

/// How client certificates are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Not asked for.
    None,
    /// Verified against `client_ca_file` when a client sends one.
    VerifyIfGiven,
    /// Required and verified.
    RequireAndVerify,
}

/// A loaded web config: the file's settings with paths resolved and the TLS material read.
#[derive(Debug, Clone, Default)]
pub struct Web {
    /// Where it came from (`None`: no web config, plain HTTP without auth).
    pub path: Option<PathBuf>,
    /// TLS material, when HTTPS is configured.
    pub tls: Option<TlsMaterial>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// User name → bcrypt hash.
    pub users: BTreeMap<String, String>,
    /// Whether HTTP/2 is offered over TLS.
    pub http2: bool,
}

/// The PEM files of `tls_server_config`, read and checked.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The server's certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// The server's private key (PEM).
    pub key_pem: Vec<u8>,
    /// CA certificates for client certificates (PEM).
    pub client_ca_pem: Option<Vec<u8>>,
    /// How client certificates are treated.
    pub client_auth: ClientAuth,
    /// Whether TLS 1.2 is allowed (else 1.3 only).
    pub tls12: bool,
    /// Whether TLS 1.3 is allowed.
    pub tls13: bool,
}

/// Reads and checks the web config file at `path`; every problem names file, line and column.
pub fn load_web(path: &Path) -> Result<Web, ConfigError> {
    let one = |message: String| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
        }],
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| one(format!("cannot read the web config file: {e}")))?;
    let file: WebConfig =
        super::problem::parse(path, &text).map_err(|p| ConfigError { problems: vec![p] })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut problems = Vec::new();
    let at = |loc: &serde_saphyr::Location, m: String| ConfigError::at(path, loc, m);
    let mut web = Web {
        path: Some(path.to_path_buf()),
        http2: file.http_server_config.http2.unwrap_or(true),
        ..Web::default()
    };
    for (user, hash) in &file.basic_auth_users {
        if user.is_empty() || user.contains(':') {
            problems.push(at(
                &hash.referenced,
                format!("basic_auth_users: user name {user:?} must be non-empty without ':'"),
            ));
        }
        if let Err(e) = bcrypt_hash_ok(&hash.value) {
            problems.push(at(
                &hash.referenced,
                format!("basic_auth_users: {user}: {e}"),
            ));
        }
        web.users.insert(user.clone(), hash.value.clone());
    }
    for (name, value) in &file.http_server_config.headers {
        match ALLOWED_HEADERS
            .iter()
            .find(|h| h.eq_ignore_ascii_case(name))
        {
            Some(h) => {
                if axum::http::HeaderValue::from_str(&value.value).is_err() {
                    problems.push(at(
                        &value.referenced,
                        format!("http_server_config.headers: {h}: not a valid header value"),
                    ));
                }
                web.headers.push((h.to_string(), value.value.clone()));
            }
            None => problems.push(at(
                &value.referenced,
                format!(
                    "http_server_config.headers: {name:?} cannot be set; allowed: {}",
                    ALLOWED_HEADERS.join(", ")
                ),
            )),
        }
    }
    if let Some(tls) = &file.tls_server_config {
        let read = |p: &Spanned<PathBuf>, what: &str, problems: &mut Vec<Problem>| {
            let full = base.join(&p.value);
            match std::fs::read(&full) {
                Ok(b) => Some(b),
                Err(e) => {
                    problems.push(at(
                        &p.referenced,
                        format!(
                            "tls_server_config: cannot read {what} {}: {e}",
                            full.display()
                        ),
                    ));
                    None
                }
            }
        };
        let cert_pem = read(&tls.cert_file, "cert_file", &mut problems);
        let key_pem = read(&tls.key_file, "key_file", &mut problems);
        let client_ca_pem = tls
            .client_ca_file
            .as_ref()
            .and_then(|p| read(p, "client_ca_file", &mut problems));
        let client_auth = match tls.client_auth_type.as_ref().map(|s| s.value.as_str()) {
            None | Some("NoClientCert") => ClientAuth::None,
            Some("VerifyClientCertIfGiven") => ClientAuth::VerifyIfGiven,
            Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerify,
            Some(other) => {
                let loc = tls.client_auth_type.as_ref().expect("matched").referenced;
                problems.push(at(
                    &loc,
                    format!(
                        "tls_server_config.client_auth_type {other:?}: expected NoClientCert, \
                         VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                    ),
                ));
                ClientAuth::None
            }
        };
        if client_auth != ClientAuth::None && tls.client_ca_file.is_none() {
            problems.push(at(
                &tls.cert_file.referenced,
                "tls_server_config: client_auth_type needs client_ca_file".into(),
            ));
        }
        let version =
            |v: &Option<Spanned<String>>, default: u8, problems: &mut Vec<Problem>| match v
                .as_ref()
                .map(|s| s.value.as_str())
            {
                None => default,
                Some("TLS12") => 12,
                Some("TLS13") => 13,
                Some(other) => {
                    problems.push(at(
                        &v.as_ref().expect("matched").referenced,
                        format!("TLS version {other:?}: expected TLS12 or TLS13"),
                    ));
                    default
                }
            };
        let min = version(&tls.min_version, 12, &mut problems);
        let max = version(&tls.max_version, 13, &mut problems);
        if min > max {
            problems.push(at(
                &tls.cert_file.referenced,
                "tls_server_config: min_version is above max_version".into(),
            ));
        }
        if let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) {
            let material = TlsMaterial {
                cert_pem,
                key_pem,
                client_ca_pem,
                client_auth,
                tls12: min <= 12,
                tls13: max >= 13,
            };
            if let Err(e) = material.check() {
                problems.push(at(
                    &tls.cert_file.referenced,
                    format!("tls_server_config: {e}"),
                ));
            }
            web.tls = Some(material);
        }
    }
    if problems.is_empty() {
        Ok(web)
    } else {
        Err(ConfigError { problems })
    }
}

impl TlsMaterial {
    /// Parses the PEM files and builds the server config: what `run` does at start.
    pub fn check(&self) -> Result<(), String> {
        self.server_config(true).map(drop)
    }

    /// The rustls server config of `tls_server_config` (HTTP/2 offered by ALPN when `http2`).
    pub fn server_config(&self, http2: bool) -> Result<rustls::ServerConfig, String> {
        let m = self;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        crate::tls::ensure_crypto_provider();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&m.cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cert_file: {e}"))?;
        let key =
            PrivateKeyDer::from_pem_slice(&m.key_pem).map_err(|e| format!("key_file: {e}"))?;
        let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        if m.tls13 {
            versions.push(&rustls::version::TLS13);
        }
        if m.tls12 {
            versions.push(&rustls::version::TLS12);
        }
        let builder = rustls::ServerConfig::builder_with_protocol_versions(&versions);
        let builder = match (&m.client_ca_pem, m.client_auth) {
            (Some(ca), ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca) {
                    roots
                        .add(c.map_err(|e| format!("client_ca_file: {e}"))?)
                        .map_err(|e| format!("client_ca_file: {e}"))?;
                }
                let v = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots));
                let v = if m.client_auth == ClientAuth::VerifyIfGiven {
                    v.allow_unauthenticated()
                } else {
                    v
                };
                builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut cfg = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("certificate and key: {e}"))?;
        cfg.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(cfg)
    }
}

/// A bcrypt hash as htpasswd writes it: `$2a$`, `$2b$` or `$2y$`, a cost, 53 characters.
fn bcrypt_hash_ok(h: &str) -> Result<(), String> {
    let parts: Vec<&str> = h.split('$').collect();
    let ok = parts.len() == 4
        && parts[0].is_empty()
        && matches!(parts[1], "2a" | "2b" | "2x" | "2y")
        && parts[2].len() == 2
        && parts[2].parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
        && parts[3].len() == 53;
    if ok {
        Ok(())
    } else {
        // Never echo the value: a plain password put here by mistake must not reach a log.
        Err("not a bcrypt hash (expected $2y$<cost>$… as `htpasswd -nB` prints)".into())
    }
}
