//! `type = "serial_expect"`: send a command on the console and wait for an
//! answer matching a pattern, e.g. `version` → `Zephyr version (?P<major>\d+)`.
//! Named groups that parse as numbers become `bench_probe_value{probe,value}`.
//! A failure carries the last console lines, so the engineer sees what the
//! board printed.

use std::collections::VecDeque;
use std::time::Duration;

use super::port::{self, PortEvent, PortState, Settings};
use super::{FlowControl, Parity, PortRef};
use crate::agent::checks::{Code, Outcome};
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Device path; prefer `/dev/serial/by-id/…`.
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
    #[serde(with = "serde_regex")]
    pub expect: Regex,
    /// Failure as soon as a line matches, e.g. `Kernel panic|ERROR`.
    #[serde(default, with = "serde_regex")]
    pub fail: Option<Regex>,
    /// Console lines attached to a failure.
    #[serde(default = "ten")]
    pub keep_lines: usize,
}

fn b115200() -> u32 {
    115_200
}
fn settle() -> Duration {
    Duration::from_millis(100)
}
fn crlf() -> String {
    "\r\n".into()
}
fn ten() -> usize {
    10
}

impl Config {
    fn settings(&self, path: std::path::PathBuf) -> Settings {
        Settings {
            path,
            baud: self.baud,
            parity: self.parity,
            flow_control: self.flow_control,
            settle: self.settle,
        }
    }

    pub async fn run(&self, timeout: Duration) -> Outcome {
        let path = match self.port.resolve() {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        let port = port::shared(&self.settings(path));
        let deadline = tokio::time::Instant::now() + timeout;
        // Probes on one console take turns; waiting counts toward the timeout.
        let Ok(_turn) = tokio::time::timeout_at(deadline, port.turn()).await else {
            return Outcome::fail(Code::Busy, "the port stayed in use by other probes");
        };
        let mut events = port.subscribe();
        if let PortState::Gone(why) = port.ready(timeout).await {
            return Outcome::fail(Code::Missing, why);
        }
        if let Some(cmd) = &self.send {
            let line = format!("{cmd}{}", self.line_separator);
            if !port.write(line.into_bytes()).await {
                return Outcome::fail(Code::Missing, "the port owner has stopped");
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
                        console.partial = t.clone();
                        t
                    }
                    Some(PortEvent::Gone(why)) => return Err((Code::Missing, why)),
                    None => {
                        return Err((Code::Missing, "the port owner has stopped".to_string()));
                    }
                };
                if let Some(fail) = self.fail.as_ref().filter(|f| f.is_match(&text)) {
                    return Err((
                        Code::Mismatch,
                        format!("matched fail pattern {fail}: {text:?}"),
                    ));
                }
                if let Some(caps) = self.expect.captures(&text) {
                    return Ok(values(&self.expect, &caps));
                }
            }
        })
        .await;
        match result {
            Ok(Ok(values)) => Outcome {
                values,
                ..Outcome::ok("matched")
            },
            Ok(Err((code, why))) => self.failed(code, why, &console),
            Err(_) => self.failed(
                Code::Timeout,
                format!("no line matched {} within {timeout:?}", self.expect),
                &console,
            ),
        }
    }

    fn failed(&self, code: Code, why: String, console: &Console) -> Outcome {
        let lines = console.last_lines();
        tracing::warn!(port = %self.port.describe(), code = code.as_str(), why = %why, console = %lines, "serial probe failed");
        Outcome::fail(code, format!("{why}; last console lines: {lines:?}"))
    }
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

/// The last console lines, and the unterminated tail (a prompt).
struct Console {
    keep: usize,
    lines: VecDeque<String>,
    partial: String,
}

impl Console {
    fn new(keep: usize) -> Console {
        Console {
            keep,
            lines: VecDeque::new(),
            partial: String::new(),
        }
    }

    fn line(&mut self, text: &str) {
        self.partial.clear();
        self.lines.push_back(text.to_string());
        if self.lines.len() > self.keep {
            self.lines.pop_front();
        }
    }

    fn last_lines(&self) -> String {
        let mut all: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        if !self.partial.is_empty() {
            all.push(&self.partial);
        }
        all.join("\n")
    }
}
