//! `type = "serial_expect"`: send a command on the console and wait for an
//! answer matching a pattern, e.g. `version` → `Zephyr version (?P<major>\d+)`.
//! Named groups that parse as numbers become `bench_probe_value{probe,value}`.
//! A failure carries the last console lines, so the engineer sees what the
//! board printed.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{FlowControl, Parity, PortSettings};
use crate::agent::checks::{Code, Outcome};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Device path; prefer `/dev/serial/by-id/…`.
    pub port: PathBuf,
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
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let settings = PortSettings {
            path: &self.port,
            baud: self.baud,
            parity: self.parity,
            flow_control: self.flow_control,
            settle: self.settle,
        };
        let mut port = match super::open(&settings).await {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        if let Some(cmd) = &self.send {
            let line = format!("{cmd}{}", self.line_separator);
            if let Err(e) = port.write_all(line.as_bytes()).await {
                return Outcome::fail(Code::Error, format!("write failed: {e}"));
            }
        }
        let mut console = Console::new(self.keep_lines);
        let result = tokio::time::timeout(timeout, async {
            let mut buf = [0u8; 1024];
            loop {
                let n = match port.read(&mut buf).await {
                    Ok(0) => return Err((Code::Missing, "the port closed".to_string())),
                    Ok(n) => n,
                    Err(e) => return Err((Code::Missing, format!("read failed: {e}"))),
                };
                for text in console.push(&buf[..n]) {
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
        tracing::warn!(port = %self.port.display(), code = code.as_str(), why = %why, console = %lines, "serial probe failed");
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

/// Splits console bytes into lines, keeping the last few and the partial
/// line (a prompt has no newline).
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

    /// Returns the texts to test: each completed line, then the partial.
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.push_str(&String::from_utf8_lossy(bytes));
        let mut out = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            self.lines.push_back(line.clone());
            if self.lines.len() > self.keep {
                self.lines.pop_front();
            }
            out.push(line);
        }
        if !self.partial.is_empty() {
            out.push(self.partial.clone());
        }
        out
    }

    fn last_lines(&self) -> String {
        let mut all: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        if !self.partial.is_empty() {
            all.push(&self.partial);
        }
        all.join("\n")
    }
}
