//! Serial probes as checks: maps what the probes report ([`SerialError`],
//! boot [`Event`]s) to result codes, and follows a console for as long as
//! the agent runs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::record::{Instruments, Labels};
use super::{Code, Outcome, Verdict};
use crate::agent::probes::serial::watch::{self, BootTracker, Event};
use crate::agent::probes::serial::{SerialError, expect};

/// The result code of a serial probe's error.
pub fn code(e: &SerialError) -> Code {
    match e {
        SerialError::NoAdapter(_) | SerialError::Gone(_) | SerialError::OwnerStopped => {
            Code::Missing
        }
        SerialError::InUse => Code::Busy,
        SerialError::FailPattern { .. } => Code::Mismatch,
        SerialError::NoMatch { .. } => Code::Timeout,
        SerialError::Open { .. } | SerialError::Ambiguous(_) => Code::Error,
    }
}

/// The result code of a boot event that fails; `None` for progress.
pub fn boot_code(e: &Event) -> Option<Code> {
    match e {
        Event::Missed { .. } => Some(Code::Timeout),
        Event::Fatal { .. } | Event::BootLoop { .. } => Some(Code::Mismatch),
        _ => None,
    }
}

/// A `serial_expect` probe run as a check.
pub trait ExpectCheck {
    /// One exchange, ending in a result code.
    fn run(&self, timeout: Duration) -> impl Future<Output = Outcome> + Send;
}

impl ExpectCheck for expect::Config {
    async fn run(&self, timeout: Duration) -> Outcome {
        match self.exchange(timeout).await {
            Ok(values) => Outcome {
                values,
                ..Outcome::ok("matched")
            },
            Err(e) => {
                let code = code(&e.error);
                if let Some(lines) = &e.console {
                    tracing::warn!(port = %self.port.describe(), code = code.as_str(), why = %e.error, console = %lines, "serial probe failed");
                }
                Outcome::fail(code, e.to_string())
            }
        }
    }
}

fn boot_failure(e: &Event, t: &BootTracker) -> String {
    format!("{e:?}; last console lines: {:?}", t.last_lines())
}

/// One boot, for `benchtel-agent probe`: waits up to `timeout` for the
/// board to boot or fail.
pub async fn run_once(cfg: &watch::Config, timeout: Duration) -> Outcome {
    let mut tracker = BootTracker::new(cfg.clone());
    let mut verdict: Option<Outcome> = None;
    let followed = tokio::time::timeout(
        timeout,
        watch::follow(cfg, &mut tracker, |e, t| {
            verdict = match e {
                Event::Booted => Some(Outcome::ok("booted")),
                e => boot_code(e).map(|code| Outcome::fail(code, boot_failure(e, t))),
            };
            verdict.is_some()
        }),
    )
    .await;
    match (verdict, followed) {
        (Some(v), _) => v,
        (None, Ok(stopped)) => Outcome::fail(Code::Missing, lost(stopped)),
        (None, Err(_)) => Outcome::fail(
            Code::Timeout,
            format!(
                "no boot seen within {timeout:?}; last console lines: {:?}",
                tracker.last_lines()
            ),
        ),
    }
}

/// Why following stopped: the port was lost, or (`Ok`) the caller stopped it.
fn lost(followed: Result<(), SerialError>) -> String {
    match followed {
        Ok(()) => "stopped".into(),
        Err(e) => e.to_string(),
    }
}

/// Judges a console watcher's boots: metrics, the failure log and
/// verdicts on change.
struct WatchJudge<'a> {
    labels: &'a Labels,
    affects_ready: bool,
    instruments: &'a Instruments,
    verdicts: &'a mpsc::Sender<Verdict>,
    up: Option<bool>,
}

impl WatchJudge<'_> {
    fn judge(&mut self, ok: bool, code: Code, detail: &str, took: Option<Duration>) {
        let labels = self.labels;
        self.instruments.probe_result(labels, ok, took);
        if !ok {
            self.instruments.failed(labels, code);
            tracing::warn!(check = %labels.name, code = code.as_str(), detail = %detail, "serial watch failure");
        }
        if self.up != Some(ok) {
            self.up = Some(ok);
            self.instruments.up.record(i64::from(ok), &labels.check);
            let _ = self.verdicts.try_send(Verdict {
                check: labels.name.to_string(),
                up: ok,
                affects_ready: self.affects_ready,
            });
        }
    }
}

/// A console watcher runs for as long as the agent does, re-opening the
/// port with backoff when the adapter disappears (itself a failure).
///
/// Its runs are boots: each ends when the board booted (a pass), missed a
/// milestone's deadline or printed a fatal line (a failure), timed from the
/// reset marker. A boot loop and a lost port are failures without a run to
/// time.
pub(super) async fn run_watch(
    labels: Labels,
    affects_ready: bool,
    cfg: watch::Config,
    instruments: Arc<Instruments>,
    verdicts: mpsc::Sender<Verdict>,
    cancel: CancellationToken,
) {
    let mut tracker = BootTracker::new(cfg.clone());
    let mut judge = WatchJudge {
        labels: &labels,
        affects_ready,
        instruments: &instruments,
        verdicts: &verdicts,
        up: None,
    };
    let mut retry = Duration::from_secs(1);
    // When the boot under way started, as the tracker counts it.
    let mut boot_started: Option<tokio::time::Instant> = None;
    loop {
        let followed = tokio::select! {
            _ = cancel.cancelled() => return,
            followed = watch::follow(&cfg, &mut tracker, |e, t| {
                match e {
                    Event::Reset => boot_started = Some(tokio::time::Instant::now()),
                    Event::Milestone { name: m, after } => {
                        let attrs = [labels.probe_name.clone(), KeyValue::new("milestone", m.clone())];
                        instruments.boot.record(after.as_secs_f64(), &attrs);
                        retry = Duration::from_secs(1);
                    }
                    Event::Booted => {
                        let took = boot_started.take().map(|s| s.elapsed());
                        judge.judge(true, Code::Ok, "booted", took);
                    }
                    e => if let Some(code) = boot_code(e) {
                        // A boot loop is noticed at a reset: that boot goes on.
                        let took = match e {
                            Event::BootLoop { .. } => None,
                            _ => boot_started.take().map(|s| s.elapsed()),
                        };
                        judge.judge(false, code, &boot_failure(e, t), took);
                    },
                }
                false
            }) => followed,
        };
        boot_started = None;
        judge.judge(false, Code::Missing, &lost(followed), None);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::probes::serial::PortRef;

    #[test]
    fn an_adapter_that_is_not_there_is_missing_with_its_identity_named() {
        #[derive(serde::Deserialize)]
        struct Probe {
            port: PortRef,
        }
        let by_usb: Probe =
            toml::from_str(r#"port = { vid = "0403", pid = "6001", serial = "A1" }"#).unwrap();
        let err = by_usb.port.resolve().unwrap_err();
        let err = Outcome::fail(code(&err), err.to_string());
        assert_eq!(err.code, Code::Missing);
        assert!(err.detail.contains("0403:6001"), "{}", err.detail);
    }

    #[test]
    fn boot_events_map_to_codes() {
        let missed = Event::Missed {
            name: "kernel".into(),
            within: Duration::from_secs(10),
        };
        assert_eq!(boot_code(&missed), Some(Code::Timeout));
        let fatal = Event::Fatal {
            line: "Kernel panic".into(),
        };
        assert_eq!(boot_code(&fatal), Some(Code::Mismatch));
        assert_eq!(
            boot_code(&Event::BootLoop { resets: 3 }),
            Some(Code::Mismatch)
        );
        assert_eq!(boot_code(&Event::Booted), None);
        assert_eq!(boot_code(&Event::Reset), None);
    }
}
