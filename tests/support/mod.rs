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

/// A free port on 127.0.0.1 outside the kernel's ephemeral range, for a
/// server that must keep its port: [`free_port`] (in any test running in
/// parallel) and every outgoing connection draw from that range, so they
/// can be handed a port between its release and the server's bind, or
/// while the server is stopped for a restart; never one of these.
pub fn port_outside_ephemeral_range() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let bounds: Vec<u32> = range
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (low, high) = (bounds[0], bounds[1]);
    // From 10000 up (clear of well-known services) to the range, and above it.
    let (below, above) = (low.saturating_sub(10_000), 65_535u32.saturating_sub(high));
    assert!(
        below + above > 0,
        "no port outside the ephemeral range {range}"
    );
    for attempt in 0..1000u32 {
        let r = (RandomState::new().hash_one(attempt) % u64::from(below + above)) as u32;
        let port = if r < below {
            10_000 + r
        } else {
            high + 1 + r - below
        } as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port outside the ephemeral range {range}")
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
