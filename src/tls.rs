//! TLS for every client of the crate: rustls with the `ring` provider
//! (no C toolchain needed, smaller than aws-lc), installed once per process.
//!
//! [`lazy_roots_config`] is a client configuration that reads the system's
//! trust store on the first certificate it verifies, not when it is built.
//! reqwest's own verifying configuration parses the whole CA bundle (about
//! 150 certificates, 100-200 KiB of RSS for the process's life) when the
//! client is built, which a client that only ever speaks plain `http://`
//! pays for nothing.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::Verifier;

/// Installs the process-wide rustls provider; later calls do nothing.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client error with its causes. reqwest's message names the URL
/// but not why (a refused connection, an unknown issuer, no trust store):
/// that is in its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A client configuration for reqwest's `tls_backend_preconfigured` that
/// verifies servers against the system's trust store, read on the first
/// TLS handshake. What reqwest's default rustls path sets and matters here
/// is the same: the installed provider, TLS 1.2 and 1.3, SNI, no client
/// certificate, ALPN `h2` then `http/1.1`.
///
/// A missing or empty trust store is not an error here: every handshake
/// fails instead, saying why.
pub fn lazy_roots_config() -> ClientConfig {
    install_provider();
    // `builder()` takes the provider installed above and rustls's default
    // versions (1.3 and 1.2, all this build has: reqwest's ALL_VERSIONS).
    let builder = ClientConfig::builder();
    let verifier = Arc::new(LazyRoots::new(builder.crypto_provider().clone()));
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// [`rustls_platform_verifier::Verifier`], created on the first
/// verification. Its creation error (no CA certificates found) is kept and
/// returned by every verification, so each failed handshake says why.
#[derive(Debug)]
struct LazyRoots {
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Verifier, rustls::Error>>,
}

impl LazyRoots {
    fn new(provider: Arc<CryptoProvider>) -> LazyRoots {
        LazyRoots {
            provider,
            verifier: OnceLock::new(),
        }
    }

    fn verifier(&self) -> Result<&Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                Verifier::new(self.provider.clone()).map_err(|e| {
                    let why = match e {
                        rustls::Error::General(why) => why,
                        other => other.to_string(),
                    };
                    rustls::Error::General(format!(
                        "the system trust store cannot be used: {why} \
                         (SSL_CERT_FILE, SSL_CERT_DIR, or install ca-certificates)"
                    ))
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    /// Asked when the config is used for a handshake's first message, before
    /// any certificate: answered from the provider, as the platform verifier
    /// (webpki) answers, so the store is not read for it.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schemes offered before the store is read are the ones the real
    /// verifier offers once it is, so the shortcut changes no handshake.
    /// Needs the machine's CA bundle (ca-certificates).
    #[test]
    fn offers_the_platform_verifiers_schemes_without_it() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let lazy = LazyRoots::new(provider.clone());
        let schemes = lazy.supported_verify_schemes();
        assert!(lazy.verifier.get().is_none(), "the store was read");
        let real = Verifier::new(provider).expect("install ca-certificates");
        assert!(!schemes.is_empty());
        assert_eq!(schemes, real.supported_verify_schemes());
    }
}
