//! Plain HTTP/1.0 over a TCP socket, for tests that talk to real processes
//! without an async runtime.

use std::io::{Read, Write};

/// A response: status and body.
pub type Answer = (u16, String);

fn exchange(addr: &str, request: &[u8]) -> Option<Answer> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(request).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((code, body))
}

/// `GET path`: (status, body), or `None` if the connection failed.
pub fn get(addr: &str, path: &str) -> Option<Answer> {
    exchange(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

/// `POST path` with extra header lines (`Name: value`) and a body.
pub fn post(addr: &str, path: &str, headers: &[&str], body: &[u8]) -> Option<Answer> {
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    exchange(addr, &bytes)
}

/// The value of the first sample of `name` carrying all `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
