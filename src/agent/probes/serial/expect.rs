//! `type = "serial_expect"`: send a command on the console and wait for an
//! answer matching a pattern, e.g. `version` → `Zephyr version (?P<major>\d+)`.
//! Named groups that parse as numbers become `bench_probe_value{probe,value}`;
//! a group `version`, or else `major`, `minor`, `patch`, is the firmware
//! version the probe read.
//! A failure carries the last console lines, so the engineer sees what the
//! board printed.

use std::time::Duration;

use super::console::Console;
use super::port::{PortEvent, PortState};
use super::{FlowControl, Parity, PortRef, SerialError};
use crate::config::Pattern;
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A device path (prefer `/dev/serial/by-id/…`), or a USB identity:
    /// `port = { vid = "0403", pid = "6001", serial = "A10K1234" }`.
    pub port: PortRef,
    /// Baud rate.
    #[serde(default = "b115200")]
    pub baud: u32,
    /// `none`, `odd` or `even`.
    #[serde(default)]
    pub parity: Parity,
    /// `none`, `software` or `hardware`.
    #[serde(default)]
    pub flow_control: FlowControl,
    /// Wait after opening before sending, dropping what arrived.
    #[serde(default = "settle", with = "humantime_serde")]
    pub settle: Duration,
    /// Appended to `send`.
    #[serde(default = "crlf")]
    pub line_separator: String,
    /// What to send (nothing: just wait for `expect`).
    #[serde(default)]
    pub send: Option<String>,
    /// Success when a line (or the unterminated prompt) matches.
    pub expect: Pattern,
    /// Failure as soon as a line matches, e.g. `Kernel panic|ERROR`.
    #[serde(default)]
    pub fail: Option<Pattern>,
    /// Console lines attached to a failure.
    #[serde(default = "ten")]
    pub keep_lines: usize,
}

use super::b115200;
fn settle() -> Duration {
    Duration::from_millis(100)
}
fn crlf() -> String {
    "\r\n".into()
}
fn ten() -> usize {
    10
}

/// A failed exchange, with the console lines seen once it got that far.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}{}", console.as_ref().map(|l| format!("; last console lines: {l:?}")).unwrap_or_default())]
pub struct ExpectError {
    pub error: SerialError,
    /// The last console lines, and the unterminated tail (a prompt).
    pub console: Option<String>,
}

impl From<SerialError> for ExpectError {
    fn from(error: SerialError) -> ExpectError {
        ExpectError {
            error,
            console: None,
        }
    }
}

/// What a match read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matched {
    /// The named groups that parse as numbers.
    pub values: Vec<(String, f64)>,
    /// The firmware version, as printed.
    pub version: Option<String>,
}

impl Config {
    /// Sends `send` and waits for `expect`; on a match, what it read.
    pub async fn exchange(&self, timeout: Duration) -> Result<Matched, ExpectError> {
        let port = super::port::open_shared(
            &self.port,
            self.baud,
            self.parity,
            self.flow_control,
            self.settle,
        )?;
        let deadline = tokio::time::Instant::now() + timeout;
        // Probes on one console take turns; waiting counts toward the timeout.
        let Ok(_turn) = tokio::time::timeout_at(deadline, port.turn()).await else {
            return Err(SerialError::InUse.into());
        };
        let mut events = port.subscribe();
        if let PortState::Gone(why) = port.ready(timeout).await {
            return Err(SerialError::Gone(why).into());
        }
        if let Some(cmd) = &self.send {
            let line = format!("{cmd}{}", self.line_separator);
            if !port.write(line.into_bytes()).await {
                return Err(SerialError::OwnerStopped.into());
            }
        }
        let mut console = Console::new(self.keep_lines);
        let result = tokio::time::timeout_at(deadline, async {
            loop {
                let text = match events.recv().await {
                    Some(PortEvent::Line(t)) => {
                        console.line(&t);
                        t
                    }
                    Some(PortEvent::Partial(t)) => {
                        console.partial(&t);
                        t
                    }
                    Some(PortEvent::Gone(why)) => return Err(SerialError::Gone(why)),
                    None => return Err(SerialError::OwnerStopped),
                };
                if let Some(fail) = self.fail.as_ref().filter(|f| f.is_match(&text)) {
                    return Err(SerialError::FailPattern {
                        pattern: fail.to_string(),
                        line: text,
                    });
                }
                if let Some(caps) = self.expect.captures(&text) {
                    return Ok(Matched {
                        values: values(&self.expect, &caps),
                        version: version(&caps),
                    });
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(SerialError::NoMatch {
                pattern: self.expect.to_string(),
                timeout,
            })
        });
        result.map_err(|error| ExpectError {
            error,
            console: Some(console.last_lines()),
        })
    }
}

/// The group `version`, else `major[.minor[.patch]]` as printed (a
/// version is text: `3.5.0`, `2024.01-rc1`, not a number).
pub fn version(caps: &regex::Captures<'_>) -> Option<String> {
    if let Some(v) = caps.name("version") {
        return Some(v.as_str().trim().to_string());
    }
    let major = caps.name("major")?.as_str().trim();
    let rest = ["minor", "patch"]
        .into_iter()
        .map_while(|n| caps.name(n).map(|m| m.as_str().trim()));
    Some(
        std::iter::once(major)
            .chain(rest)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// Named groups that parse as numbers.
fn values(re: &Regex, caps: &regex::Captures<'_>) -> Vec<(String, f64)> {
    re.capture_names()
        .flatten()
        .filter_map(|name| {
            let v = caps.name(name)?.as_str().trim().parse().ok()?;
            Some((name.to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_version_group_or_major_minor_patch_as_printed() {
        let v = |re: &str, text: &str| version(&Regex::new(re).unwrap().captures(text).unwrap());
        let zephyr = r"Zephyr version (?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)";
        assert_eq!(v(zephyr, "Zephyr version 3.5.0").as_deref(), Some("3.5.0"));
        let uboot = r"U-Boot (?P<version>\S+)";
        assert_eq!(
            v(uboot, "U-Boot 2024.01-rc1 (Jan)").as_deref(),
            Some("2024.01-rc1")
        );
        assert_eq!(v(r"v(?P<major>\d+)", "v7").as_deref(), Some("7"));
        assert_eq!(v(r"OK (?P<rssi>\d+)", "OK 17"), None);
    }
}
