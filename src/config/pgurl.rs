//! libpq's TLS parameters in a `postgres://` URL, which tokio-postgres does not parse:
//! `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`),
//! `sslrootcert` (a PEM file, or `system` for the OS trust store), `sslcert` and `sslkey`
//! (a client certificate). They are taken out of the URL, checked, and turned into a rustls
//! configuration with libpq's semantics.

use std::path::{Path, PathBuf};

use crate::tls::{Check, ClientTls, Trust};

/// `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (libpq's `allow` is taken as this too), unverified.
    #[default]
    Prefer,
    /// TLS required; verified as `verify-ca` when `sslrootcert` is given (as libpq does).
    Require,
    /// TLS, the chain verified, not the host name.
    VerifyCa,
    /// TLS, the chain and the host name verified.
    VerifyFull,
}

/// Where the root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file.
    File(PathBuf),
    /// The OS trust store (`sslrootcert=system`).
    System,
}

/// The TLS settings of one source, paths resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTls {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`.
    pub root: Option<RootCert>,
    /// `sslcert`.
    pub cert: Option<PathBuf>,
    /// `sslkey`.
    pub key: Option<PathBuf>,
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        // libpq does not read `+` as a space in connection URIs.
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Takes libpq's TLS parameters out of `url`: the URL tokio-postgres can parse (with an
/// `sslmode` it knows) and the settings, relative paths resolved against `base`.
pub fn split_tls(url: &str, base: &Path) -> Result<(String, PgTls), String> {
    let Some((head, query)) = url.split_once('?') else {
        return Ok((url.to_string(), PgTls::default()));
    };
    let mut tls = PgTls::default();
    let mut kept = Vec::new();
    let path = |v: &str| base.join(decode(v));
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "sslmode" => {
                tls.mode = match decode(v).as_str() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode {other:?}: expected disable, allow, prefer, require, \
                             verify-ca or verify-full"
                        ));
                    }
                }
            }
            "sslrootcert" => {
                tls.root = Some(match decode(v).as_str() {
                    "system" => RootCert::System,
                    _ => RootCert::File(path(v)),
                })
            }
            "sslcert" => tls.cert = Some(path(v)),
            "sslkey" => tls.key = Some(path(v)),
            _ => kept.push(kv),
        }
    }
    // libpq: with sslrootcert=system the default mode is verify-full, and weaker ones are
    // refused (they would trust every certificate the OS trusts for any name).
    if tls.root == Some(RootCert::System) {
        if !query.contains("sslmode=") {
            tls.mode = SslMode::VerifyFull;
        } else if tls.mode != SslMode::VerifyFull {
            return Err("sslrootcert=system needs sslmode=verify-full (as libpq)".into());
        }
    }
    // libpq: verify-ca needs a root certificate file. Against a public store it would accept
    // any publicly trusted certificate for any name, which authenticates nothing.
    if tls.mode == SslMode::VerifyCa && !matches!(tls.root, Some(RootCert::File(_))) {
        return Err(
            "sslmode=verify-ca needs sslrootcert=FILE (the CA that signed the server)".into(),
        );
    }
    if tls.cert.is_some() != tls.key.is_some() {
        return Err("sslcert and sslkey go together".into());
    }
    // tokio-postgres knows these three; verification is ours.
    kept.push(match tls.mode {
        SslMode::Disable => "sslmode=disable",
        SslMode::Prefer => "sslmode=prefer",
        _ => "sslmode=require",
    });
    Ok((format!("{head}?{}", kept.join("&")), tls))
}

impl PgTls {
    /// The rustls configuration (files read now), or `None` for `sslmode=disable`.
    pub fn client(&self) -> Result<Option<ClientTls>, String> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let read = |p: &Path, what: &str| {
            std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()))
        };
        let trust = match &self.root {
            Some(RootCert::File(p)) => {
                let pem = read(p, "sslrootcert")?;
                crate::tls::certificates(&pem, "sslrootcert")?;
                Trust::Pem(pem)
            }
            Some(RootCert::System) => Trust::System,
            None => Trust::Mozilla,
        };
        let check = match (self.mode, &self.root) {
            (SslMode::VerifyFull, _) => Check::Full,
            (SslMode::VerifyCa, _) | (SslMode::Require, Some(RootCert::File(_))) => Check::Chain,
            _ => Check::EncryptOnly,
        };
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((read(c, "sslcert")?, read(k, "sslkey")?)),
            _ => None,
        };
        let t = ClientTls {
            trust,
            check,
            identity,
        };
        // Built once here so a bad file fails `check --offline`, not the first connection.
        t.config()?;
        Ok(Some(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_are_taken_out() {
        let (url, tls) = split_tls(
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert=ca%20dir/ca.pem&connect_timeout=3&sslcert=/c.pem&sslkey=k.pem",
            Path::new("/etc/ow"),
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?connect_timeout=3&sslmode=require");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(
            tls.root,
            Some(RootCert::File("/etc/ow/ca dir/ca.pem".into()))
        );
        assert_eq!(tls.cert, Some("/c.pem".into()));
        assert_eq!(tls.key, Some("/etc/ow/k.pem".into()));
        let (url, tls) = split_tls("postgres://u@h/db?sslrootcert=system", Path::new("/")).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(url, "postgres://u@h/db?sslmode=require");
        assert!(
            split_tls(
                "postgres://u@h/db?sslrootcert=system&sslmode=require",
                Path::new("/")
            )
            .is_err()
        );
        assert!(split_tls("postgres://u@h/db?sslcert=c.pem", Path::new("/")).is_err());
        assert!(split_tls("postgres://u@h/db?sslmode=bogus", Path::new("/")).is_err());
        assert!(split_tls("postgres://u@h/db?sslmode=verify-ca", Path::new("/")).is_err());
        assert_eq!(
            split_tls("postgres://u@h/db", Path::new("/")).unwrap().0,
            "postgres://u@h/db"
        );
    }
}
