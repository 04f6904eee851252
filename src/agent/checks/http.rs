//! `type = "http"`: an instrument's or a service's HTTP endpoint answers
//! with the expected status (and body).

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use super::{Code, Outcome};
use crate::config::Pattern;

/// Bodies are read up to this size for `body_regex`.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: url::Url,
    /// HTTP method.
    #[serde(default = "get")]
    pub method: String,
    /// Statuses that count as success.
    #[serde(default = "ok200")]
    pub expect_status: Vec<u16>,
    /// The body must match this regular expression.
    #[serde(default)]
    pub body_regex: Option<Pattern>,
    /// Accept any TLS certificate (self-signed lab instruments).
    #[serde(default)]
    pub insecure: bool,
}

/// Builds the client a check uses.
fn build(insecure: bool) -> Result<reqwest::Client, reqwest::Error> {
    crate::tls::install_provider();
    let builder = reqwest::Client::builder();
    if insecure {
        // reqwest verifies nothing here and reads no trust store.
        return builder.danger_accept_invalid_certs(true).build();
    }
    // reqwest's own verifying client reads the system's trust store when it
    // is built (about 100 KiB of RSS for the agent's life), which checks of
    // only http:// URLs never use; this one reads it on the first handshake.
    builder
        .tls_backend_preconfigured(crate::tls::lazy_roots_config())
        .build()
}

/// The clients of the http checks: one per `insecure` setting instead of
/// one per check, since every client holds its own TLS configuration,
/// trust store and connection pool (ten http checks took 1.4 MiB more RSS
/// with a client each, see `BENCHMARKS.md`), and one per run would cost
/// more than the check itself. Built by the agent's composition root; a
/// client that cannot be built is left for each check to report (and to
/// build again) when it runs. Clones share the clients.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    by_insecure: Arc<[OnceLock<reqwest::Client>; 2]>,
}

impl Clients {
    /// Builds the clients `checks` will use.
    pub fn for_checks<'a>(checks: impl IntoIterator<Item = &'a Config>) -> Clients {
        let clients = Clients::default();
        for cfg in checks {
            let _ = clients.get(cfg.insecure);
        }
        clients
    }

    /// The client for this `insecure` setting, built if it is not yet.
    pub fn get(&self, insecure: bool) -> Result<reqwest::Client, reqwest::Error> {
        let slot = &self.by_insecure[usize::from(insecure)];
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let c = build(insecure)?;
        Ok(slot.get_or_init(|| c).clone())
    }
}

fn get() -> String {
    "GET".into()
}
fn ok200() -> Vec<u16> {
    vec![200]
}

impl Config {
    /// One run with a client of its own (`benchtel-agent probe`).
    pub async fn run(&self) -> Outcome {
        self.run_with(&Clients::default()).await
    }

    /// One run with the agent's shared clients.
    pub async fn run_with(&self, clients: &Clients) -> Outcome {
        let client = match clients.get(self.insecure) {
            Ok(c) => c,
            Err(e) => return Outcome::fail(Code::Error, crate::tls::error_chain(&e)),
        };
        let method = match reqwest::Method::from_bytes(self.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return Outcome::fail(Code::Error, format!("bad method {:?}", self.method)),
        };
        let mut resp = match client.request(method, self.url.clone()).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Outcome::fail(Code::Timeout, e.to_string()),
            Err(e) if e.is_connect() => {
                return Outcome::fail(Code::ConnectionFailed, crate::tls::error_chain(&e));
            }
            Err(e) => return Outcome::fail(Code::Error, crate::tls::error_chain(&e)),
        };
        let status = resp.status().as_u16();
        if !self.expect_status.contains(&status) {
            return Outcome::fail(Code::Mismatch, format!("HTTP {status}"));
        }
        let Some(re) = &self.body_regex else {
            return Outcome::ok(format!("HTTP {status}"));
        };
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_BODY {
                break;
            }
        }
        if re.is_match(&String::from_utf8_lossy(&body)) {
            Outcome::ok(format!("HTTP {status}, body matches"))
        } else {
            Outcome::fail(
                Code::Mismatch,
                format!("HTTP {status}, body does not match {re}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::*;

    #[tokio::test]
    async fn status_body_and_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/ok", get(|| async { "psu: output on" }))
            .route(
                "/down",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "x") }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let cfg = |path: &str, re: Option<&str>| Config {
            url: format!("http://{addr}{path}").parse().unwrap(),
            method: "GET".into(),
            expect_status: vec![200],
            body_regex: re.map(|r| Pattern::new(r).unwrap()),
            insecure: false,
        };
        assert_eq!(cfg("/ok", None).run().await.code, Code::Ok);
        assert_eq!(cfg("/ok", Some("output on")).run().await.code, Code::Ok);
        assert_eq!(
            cfg("/ok", Some("output off")).run().await.code,
            Code::Mismatch
        );
        assert_eq!(cfg("/down", None).run().await.code, Code::Mismatch);
        let closed = crate::agent::checks::tcp::Config {
            address: "127.0.0.1:1".into(),
        };
        assert_eq!(closed.run().await.code, Code::ConnectionFailed);
        let refused = Config {
            url: "http://127.0.0.1:1/".parse().unwrap(),
            ..cfg("/ok", None)
        };
        assert_eq!(refused.run().await.code, Code::ConnectionFailed);
    }
}
