//! TLS for every client of the crate: rustls with the `ring` provider
//! (no C toolchain needed, smaller than aws-lc), installed once per process.

/// Installs the process-wide rustls provider; later calls do nothing.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
