//! The rustls client configuration of an `mqtts://` connection: which CAs
//! to trust, which client certificate to present, which name to verify.
//!
//! Everything is read and checked at start-up, so a missing CA file or a
//! key that does not match its certificate is a config error, not a
//! reconnect loop.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::TlsConfig;

/// A resolved TLS setup.
#[derive(Clone)]
pub(super) struct Tls {
    pub config: Arc<ClientConfig>,
    /// What it trusts and presents, for humans.
    pub describe: String,
}

impl Tls {
    /// Reads and checks `[tls]` (absent: system roots, no client
    /// certificate); each mistake goes to `err(key, value, message)`.
    pub fn resolve(
        cfg: Option<&TlsConfig>,
        err: &mut impl FnMut(&str, &str, String),
    ) -> Option<Tls> {
        let default = TlsConfig::default();
        let cfg = cfg.unwrap_or(&default);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut describe = Vec::new();
        let base = match &cfg.ca_file {
            Some(path) => {
                describe.push(format!("ca={}", path.display()));
                ca_verifier(path, &provider, err)
            }
            None => {
                describe.push("ca=system".into());
                system_verifier(&provider, err)
            }
        };
        let name = match &cfg.server_name {
            Some(n) => match ServerName::try_from(n.clone()) {
                Ok(name) => {
                    describe.push(format!("verify as {n}"));
                    Some(name)
                }
                Err(e) => {
                    err(
                        "tls.server_name",
                        &format!("{n:?}"),
                        format!("not a DNS name or IP address: {e}"),
                    );
                    None
                }
            },
            None => None,
        };
        let client = client_cert(cfg, err);
        if client.is_some() {
            describe.push(format!(
                "client cert={}",
                cfg.cert_file.as_deref().unwrap_or(Path::new("")).display()
            ));
        }
        let base = base?;
        let verifier: Arc<dyn ServerCertVerifier> = match name {
            Some(name) => Arc::new(VerifyAs { inner: base, name }),
            None if cfg.server_name.is_some() => return None,
            None => base,
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err("tls", "{…}", format!("no usable TLS version: {e}")))
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match client {
            Some((certs, key)) => match builder.with_client_auth_cert(certs, key) {
                Ok(c) => c,
                Err(e) => {
                    err(
                        "tls.key_file",
                        &show(cfg.key_file.as_deref()),
                        format!("cannot be used with tls.cert_file: {e}"),
                    );
                    return None;
                }
            },
            None if cfg.cert_file.is_some() || cfg.key_file.is_some() => return None,
            None => builder.with_no_client_auth(),
        };
        Some(Tls {
            config: Arc::new(config),
            describe: describe.join(", "),
        })
    }
}

fn show(p: Option<&Path>) -> String {
    format!("{:?}", p.unwrap_or(Path::new("")).display().to_string())
}

/// Trust only the CA certificates in `path` (a private broker CA).
fn ca_verifier(
    path: &Path,
    provider: &Arc<CryptoProvider>,
    err: &mut impl FnMut(&str, &str, String),
) -> Option<Arc<dyn ServerCertVerifier>> {
    let shown = show(Some(path));
    let certs = read_certs(path)
        .map_err(|m| err("tls.ca_file", &shown, m))
        .ok()?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        err(
            "tls.ca_file",
            &shown,
            "holds no usable CA certificate".into(),
        );
        return None;
    }
    match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build() {
        Ok(v) => Some(v),
        Err(e) => {
            err("tls.ca_file", &shown, format!("cannot verify with it: {e}"));
            None
        }
    }
}

/// The operating system's trust store, as the OTLP client uses.
fn system_verifier(
    provider: &Arc<CryptoProvider>,
    err: &mut impl FnMut(&str, &str, String),
) -> Option<Arc<dyn ServerCertVerifier>> {
    match rustls_platform_verifier::Verifier::new(provider.clone()) {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            err(
                "tls.ca_file",
                "(none: system trust store)",
                format!("the system trust store cannot be used: {e}; set tls.ca_file"),
            );
            None
        }
    }
}

/// The client certificate and key, both or neither.
fn client_cert(
    cfg: &TlsConfig,
    err: &mut impl FnMut(&str, &str, String),
) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    match (&cfg.cert_file, &cfg.key_file) {
        (None, None) => None,
        (Some(cert), None) => {
            err(
                "tls.key_file",
                "(missing)",
                format!(
                    "tls.cert_file {:?} needs its key",
                    cert.display().to_string()
                ),
            );
            None
        }
        (None, Some(key)) => {
            err(
                "tls.cert_file",
                "(missing)",
                format!(
                    "tls.key_file {:?} needs its certificate",
                    key.display().to_string()
                ),
            );
            None
        }
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert)
                .map_err(|m| err("tls.cert_file", &show(Some(cert)), m))
                .ok();
            let key = read_key(key)
                .map_err(|m| err("tls.key_file", &show(Some(key)), m))
                .ok();
            Some((certs?, key?))
        }
    }
}

/// The PEM certificates in a file; none is an error.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The first private key in a PEM file. Parse errors are not passed on:
/// they may quote a line of the key.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_string())
}

/// Verifies the broker's certificate against a configured name instead of
/// the URL's host (a broker reached by address or through an alias). The
/// chain, signatures and expiry are checked by the inner verifier as usual.
#[derive(Debug)]
struct VerifyAs {
    inner: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
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

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}
