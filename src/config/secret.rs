//! Secrets (headers, tokens, broker passwords): read from files or the
//! environment, and never printed.

use std::fmt;
use std::path::Path;

/// A value that must not reach logs, errors or `validate` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A one-value secret file (a password, a bearer token): its content with
/// surrounding whitespace removed. An empty file is an error, so a
/// forgotten secret is not an empty password.
pub fn read_secret(path: &Path) -> std::io::Result<Secret> {
    let text = std::fs::read_to_string(path)?;
    let value = text.trim();
    if value.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(Secret::new(value))
}

/// A header as sent: the name trimmed and lower-case, the value trimmed
/// and secret.
pub(crate) fn header(name: &str, value: &str) -> (String, Secret) {
    (name.trim().to_ascii_lowercase(), Secret::new(value.trim()))
}

/// The headers of a header file (see [`read_header_file`]), as sent.
pub(crate) fn read_headers(path: &Path) -> std::io::Result<Vec<(String, Secret)>> {
    let pairs = read_header_file(path)?;
    Ok(pairs.iter().map(|(k, v)| header(k, v)).collect())
}

/// `Key: value` or `key=value` lines; `#` starts a comment line.
fn read_header_file(path: &Path) -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let split = match (line.find(':'), line.find('=')) {
            (Some(c), Some(e)) => Some(c.min(e)),
            (Some(i), None) | (None, Some(i)) => Some(i),
            (None, None) => None,
        };
        let Some(i) = split else {
            // The line is not echoed: it may hold a secret.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {} is not `name: value` or `name=value`", n + 1),
            ));
        };
        out.push((line[..i].to_string(), line[i + 1..].to_string()));
    }
    Ok(out)
}

/// Percent-decoding, as the OTel spec asks for `OTEL_*` lists.
pub(crate) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s.trim())
        .decode_utf8_lossy()
        .into_owned()
}
