//! TLS client configurations (rustls with ring, our one TLS stack) for everything orderwatch
//! connects to: PostgreSQL (libpq's `sslmode`, `sslrootcert`, `sslcert`, `sslkey`) and
//! Alertmanager (Prometheus' `tls_config`: `ca_file`, `cert_file`, `key_file`,
//! `server_name`, `insecure_skip_verify`).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Installs ring as rustls's process-wide crypto provider (one TLS stack throughout).
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Which certificate authorities a server certificate may chain to.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The Mozilla roots built in (webpki-roots).
    Mozilla,
    /// The operating system's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured), as
    /// libpq's `sslrootcert=system`.
    System,
    /// These PEM certificates only (a private CA, a cloud database's CA, a self-signed server).
    Pem(Vec<u8>),
}

/// How much of the server certificate is checked.
#[derive(Debug, Clone)]
pub enum Check {
    /// Nothing (encryption without authentication: libpq's `require` without a root
    /// certificate, Prometheus' `insecure_skip_verify`). Handshake signatures are still checked.
    EncryptOnly,
    /// The chain up to a trusted root, not the name (libpq's `verify-ca`).
    Chain,
    /// The chain and that the certificate names the host connected to (`verify-full`).
    Full,
    /// The chain and that the certificate names this host (Prometheus' `server_name`).
    FullAs(String),
}

/// Everything a client TLS configuration is made of.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// Trusted roots.
    pub trust: Trust,
    /// What is checked.
    pub check: Check,
    /// A client certificate chain and its key (PEM), when the server asks for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// The rustls client configuration; an error names what could not be read.
    pub fn config(&self) -> Result<ClientConfig, String> {
        ensure_crypto_provider();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match &self.check {
            Check::EncryptOnly => Arc::new(EncryptOnly),
            check => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("trusted roots: {e}"))?;
                match check {
                    Check::Chain => Arc::new(OtherName {
                        inner: webpki,
                        name: None,
                    }),
                    Check::FullAs(name) => Arc::new(OtherName {
                        inner: webpki,
                        name: Some(
                            ServerName::try_from(name.clone())
                                .map_err(|e| format!("server_name {name:?}: {e}"))?,
                        ),
                    }),
                    _ => webpki,
                }
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let certs = certificates(cert, "client certificate")?;
                let key =
                    PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("client certificate and key: {e}"))
            }
        }
    }

    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.trust {
            Trust::Mozilla => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Trust::System => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(format!(
                        "the system trust store holds no certificate{}",
                        found
                            .errors
                            .first()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    ));
                }
            }
            Trust::Pem(pem) => {
                for c in certificates(pem, "CA certificate")? {
                    roots.add(c).map_err(|e| format!("CA certificate: {e}"))?;
                }
            }
        }
        Ok(roots)
    }
}

/// The certificates of a PEM file; at least one.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{what}: no certificate (-----BEGIN CERTIFICATE-----) in it"
        ));
    }
    Ok(certs)
}

/// Accepts any certificate but still checks handshake signatures: encryption without
/// authentication, exactly what libpq's `sslmode=require` gives.
#[derive(Debug)]
struct EncryptOnly;

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// The chain is verified as webpki does it, with another rule for the name: `name: None`
/// accepts a certificate for any name (libpq's `verify-ca`), `Some` checks that name whatever
/// host was dialled (Prometheus' `server_name`).
#[derive(Debug)]
struct OtherName {
    inner: Arc<WebPkiServerVerifier>,
    name: Option<ServerName<'static>>,
}

impl ServerCertVerifier for OtherName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.name.as_ref().unwrap_or(server_name);
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        {
            // webpki checks the chain before the name: this error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if self.name.is_none() => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
