//! Helpers shared by the integration tests: real programs (rotel,
//! Prometheus, Alertmanager, Mosquitto, simulated firmware, the agent and
//! the watch themselves), an MQTT test client and an in-test OTLP/HTTP
//! receiver. Each test file uses only part of them.
#![allow(dead_code)]

pub mod agent;
pub mod alertmanager;
pub mod fake_bench;
pub mod firmware;
pub mod http;
pub mod mosquitto;
pub mod mqtt;
pub mod otlp;
pub mod pki;
pub mod prometheus;
pub mod receiver;
pub mod rotel;
pub mod watch;
pub mod webhook;

use std::path::PathBuf;

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Finds `program` on PATH; a missing program fails the test with how to
/// install it, it never skips.
pub fn require(program: &str, install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{program} not found: install it with `{install_hint}` \
                 (scripts/test does this when run as root)"
            )
        })
}
