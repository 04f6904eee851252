//! Serial probes as checks: maps what the probes report ([`SerialError`],
//! boot [`Event`]s) to result codes, and follows a console for as long as
//! the agent runs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::boot_trace::BootTrace;
use super::record::{Instruments, Labels};
use super::{Code, Outcome};
use crate::agent::probes::serial::watch::{self, BootTracker, Event, Watcher};
use crate::agent::probes::serial::{SerialError, expect};
use crate::agent::readiness::{Input, ResetSource, Verdict};

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
        Event::Missed { .. } | Event::NoAnswer { .. } => Some(Code::Timeout),
        Event::Fatal { .. } => Some(Code::Fatal),
        Event::BootLoop { .. } => Some(Code::BootLoop),
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
            Ok(matched) => Outcome {
                values: matched.values,
                version: matched.version,
                ..Outcome::ok("matched")
            },
            Err(e) => {
                let code = code(&e.error);
                if let Some(lines) = &e.console {
                    tracing::warn!(port = %self.port.describe(), code = code.as_str(), why = %e.error, console = %lines, "serial probe failed");
                }
                Outcome {
                    console: e.console.clone(),
                    ..Outcome::fail(code, e.to_string())
                }
            }
        }
    }
}

/// The detail of a device found up without a boot seen.
fn up_without_boot(e: &Event) -> String {
    match e {
        Event::AssumedBooted { quiet } => {
            format!("no reset in {quiet:?} since the port opened: booted before")
        }
        _ => "answered the alive probe".into(),
    }
}

fn boot_failure(e: &Event, t: &BootTracker) -> String {
    format!("{e:?}; last console lines: {:?}", t.last_lines())
}

/// One boot, for `benchtel-agent probe`: waits up to `timeout` for the
/// board to boot or fail.
pub async fn run_once(cfg: &watch::Config, timeout: Duration) -> Outcome {
    let mut tracker = BootTracker::new(cfg.clone());
    let followed = tokio::time::timeout(timeout, first_verdict(cfg, &mut tracker)).await;
    match followed {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(lost)) => Outcome::fail(Code::Missing, lost.to_string()),
        Err(_) => Outcome {
            console: Some(tracker.last_lines()),
            ..Outcome::fail(
                Code::Timeout,
                format!(
                    "no boot seen within {timeout:?}; last console lines: {:?}",
                    tracker.last_lines()
                ),
            )
        },
    }
}

/// Follows the console until a boot passes or fails.
async fn first_verdict(
    cfg: &watch::Config,
    tracker: &mut BootTracker,
) -> Result<Outcome, SerialError> {
    let mut watcher = Watcher::open(cfg).await?;
    loop {
        for e in watcher.next(tracker).await? {
            let verdict = match &e {
                Event::Booted => Some(Outcome::ok("booted")),
                Event::Alive | Event::AssumedBooted { .. } => {
                    Some(Outcome::ok(up_without_boot(&e)))
                }
                e => boot_code(e).map(|code| Outcome {
                    console: Some(tracker.last_lines()),
                    ..Outcome::fail(code, boot_failure(e, tracker))
                }),
            };
            if let Some(v) = verdict {
                return Ok(v);
            }
        }
    }
}

/// Judges a console watcher's boots: metrics, the failure log, resets of
/// the device under test, and verdicts (at each boot's end, and on change).
struct WatchJudge<'a> {
    labels: &'a Labels,
    affects_ready: bool,
    instruments: &'a Instruments,
    inputs: &'a mpsc::Sender<Input>,
    up: Option<bool>,
    /// When the boot under way started, as the tracker counts it.
    boot_started: Option<tokio::time::Instant>,
    boots: BootTrace<BoxedTracer>,
}

impl WatchJudge<'_> {
    async fn judge(&mut self, ok: bool, code: Code, detail: &str, took: Option<Duration>) {
        let labels = self.labels;
        self.instruments.probe_result(labels, ok, took);
        if !ok {
            self.instruments.failed(labels, code);
            tracing::warn!(check = %labels.name, code = code.as_str(), detail = %detail, "serial watch failure");
        }
        if self.up != Some(ok) {
            self.instruments.up.record(i64::from(ok), &labels.check);
        }
        self.up = Some(ok);
        let verdict = Verdict {
            check: labels.name.to_string(),
            up: ok,
            affects_ready: self.affects_ready,
        };
        // Waits for room: a verdict is never dropped.
        let _ = self.inputs.send(Input::Verdict(verdict)).await;
    }

    /// The events one console line or timer led to, each judged under the
    /// context of the boot it belongs to, so its log lines link to it.
    async fn events(&mut self, events: &[Event], tracker: &BootTracker) {
        for e in events {
            let boot = self.boots.event(e, events, tracker);
            self.event(e, tracker).with_context(boot).await;
        }
    }

    /// One event of the console.
    async fn event(&mut self, e: &Event, tracker: &BootTracker) {
        match e {
            Event::Reset => {
                self.boot_started = Some(tokio::time::Instant::now());
                let reset = Input::DutReset {
                    source: ResetSource::Serial,
                    reason: Some(format!("{} saw a reset", self.labels.name)),
                    seen_by: Some(self.labels.name.to_string()),
                };
                let _ = self.inputs.send(reset).await;
            }
            Event::Milestone { name, after } => {
                let attrs = [
                    self.labels.probe_name.clone(),
                    KeyValue::new("milestone", name.clone()),
                ];
                self.instruments.boot.record(after.as_secs_f64(), &attrs);
            }
            Event::Booted => {
                let took = self.boot_started.take().map(|s| s.elapsed());
                self.judge(true, Code::Ok, "booted", took).await;
            }
            // Up without a boot to time: the device was up already.
            Event::Alive | Event::AssumedBooted { .. } => {
                self.boot_started = None;
                self.judge(true, Code::Ok, &up_without_boot(e), None).await;
            }
            e => {
                if let Some(code) = boot_code(e) {
                    // A boot loop is noticed at a reset: that boot goes on.
                    let took = match e {
                        Event::BootLoop { .. } => None,
                        _ => self.boot_started.take().map(|s| s.elapsed()),
                    };
                    self.judge(false, code, &boot_failure(e, tracker), took)
                        .await;
                }
            }
        }
    }
}

/// A console watcher runs for as long as the agent does, re-opening the
/// port with backoff when the adapter disappears (itself a failure).
///
/// Its runs are boots: each ends when the board booted (a pass), missed a
/// milestone's deadline or printed a fatal line (a failure), timed from the
/// reset marker. A boot loop and a lost port are failures without a run to
/// time. Each reset is also a reset of the device under test for the
/// bench's readiness.
pub(super) async fn run_watch(
    labels: Labels,
    affects_ready: bool,
    cfg: watch::Config,
    instruments: Arc<Instruments>,
    inputs: mpsc::Sender<Input>,
    cancel: CancellationToken,
) {
    let mut tracker = BootTracker::new(cfg.clone());
    let mut judge = WatchJudge {
        labels: &labels,
        affects_ready,
        instruments: &instruments,
        inputs: &inputs,
        up: None,
        boot_started: None,
        boots: BootTrace::new(
            opentelemetry::global::tracer("benchtel"),
            labels.check[0].clone(),
        ),
    };
    let mut retry = Duration::from_secs(1);
    loop {
        let lost = tokio::select! {
            _ = cancel.cancelled() => return,
            lost = follow(&cfg, &mut tracker, &mut judge, &mut retry) => lost,
        };
        judge.boot_started = None;
        judge
            .judge(false, Code::Missing, &lost.to_string(), None)
            .await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(30));
    }
}

/// Follows the console until it is lost; returns why.
async fn follow(
    cfg: &watch::Config,
    tracker: &mut BootTracker,
    judge: &mut WatchJudge<'_>,
    retry: &mut Duration,
) -> SerialError {
    let mut watcher = match Watcher::open(cfg).await {
        Ok(w) => w,
        Err(e) => return e,
    };
    loop {
        // Console lines forwarded during a boot link to its trace.
        let boot = judge.boots.context();
        let events = match watcher.next(tracker).with_context(boot).await {
            Ok(events) => events,
            Err(e) => return e,
        };
        if events.iter().any(|e| matches!(e, Event::Milestone { .. })) {
            *retry = Duration::from_secs(1);
        }
        judge.events(&events, tracker).await;
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
        assert_eq!(boot_code(&fatal), Some(Code::Fatal));
        assert_eq!(
            boot_code(&Event::BootLoop { resets: 3 }),
            Some(Code::BootLoop)
        );
        let silent = Event::NoAnswer {
            waited: Duration::from_secs(5),
        };
        assert_eq!(boot_code(&silent), Some(Code::Timeout));
        assert_eq!(boot_code(&Event::Alive), None);
        assert_eq!(boot_code(&Event::Booted), None);
        assert_eq!(boot_code(&Event::Reset), None);
    }
}
