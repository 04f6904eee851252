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

/// Reads one HTTP/1.x request (head and a `content-length` body) from a
/// server's side of a connection; its path, or `None` if the client went
/// away first. The body is read so that closing does not reset the
/// connection under the answer.
pub fn read_request(conn: &mut impl Read) -> Option<String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let body_len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while raw.len() < head_end + body_len {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    head.split_whitespace().nth(1).map(str::to_string)
}

/// Plain HTTP on 127.0.0.1 that answers every request with a
/// `307 Temporary Redirect` to `base` + the request's path. Returns the port.
pub fn serve_redirect(base: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let Some(path) = read_request(&mut conn) else {
                continue;
            };
            let _ = write!(
                conn,
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {base}{path}\r\n\
                 content-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    port
}
