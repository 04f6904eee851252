//! A private CA with a broker certificate and a client certificate, as PEM
//! files, generated per test with rcgen; and an HTTPS server presenting
//! that server certificate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// Writes the files into `dir`; the server certificate names only
    /// `server_names` (DNS names or IP addresses).
    pub fn generate(dir: &Path, server_names: &[&str]) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "benchtel test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let names = server_names.iter().map(|s| s.to_string()).collect();
        let (server_cert, server_key) = leaf(names, "broker");
        let (client_cert, client_key) = leaf(vec!["bench.test".into()], "test-bench");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }

    /// Serves HTTPS on 127.0.0.1 with the server certificate, in threads of
    /// the test process: every request gets `200 OK`, empty. A client
    /// that refuses the certificate just ends its connection. Returns the
    /// port and the count of requests answered.
    pub fn serve_https(&self) -> (u16, Arc<AtomicUsize>) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&self.server_cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&self.server_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let count = count.clone();
                std::thread::spawn(move || answer_ok(rustls::StreamOwned::new(conn, tcp), &count));
            }
        });
        (port, answered)
    }
}

/// Reads one request and answers `200 OK`, empty.
fn answer_ok(
    mut tls: rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
    answered: &AtomicUsize,
) {
    if super::http::read_request(&mut tls).is_none() {
        return;
    }
    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    tls.conn.send_close_notify();
    let _ = tls.flush();
    answered.fetch_add(1, Ordering::Relaxed);
}
