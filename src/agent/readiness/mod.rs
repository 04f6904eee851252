//! The bench's state machine, driven by the verdicts of the checks that
//! affect readiness, by resets of the device under test, and by
//! maintenance:
//!
//! ```text
//!            all up                 one down
//! starting ─────────► ready ◄──────────────► degraded
//!    ▲                  │ DUT reset             │
//!    └──────────────────┴───────────────────────┘
//!   (not ready within the reset limit: degraded, code reset_not_ready)
//! ```
//!
//! Maintenance overlays the machine: while it lasts the bench reports
//! `maintenance`, the machine underneath goes on, and when it ends (by
//! command, or when its end time passes) the bench reports wherever the
//! machine stands. It is kept in `bench.json` (see [`bench_file`]).
//!
//! `bench_ready_time_seconds{from}` records how long readiness took:
//! - `from="agent_start"`: from this agent's start to the first time all
//!   readiness checks pass in this run;
//! - `from="boot"`: from the kernel's boot to that same moment, recorded
//!   only if no earlier run of the agent saw the bench ready in this boot
//!   (an agent restarted while the bench is up does not record it again);
//! - `from="degraded"`: from a check going down to all being up again;
//! - `from="dut_reset"`: from a reset of the device under test (its
//!   console's reset line, a GPIO reset edge, or a mark from the test
//!   harness) until every readiness check has passed again after it; also
//!   in the histogram `bench_dut_ready_seconds`. A reset clears the
//!   readiness verdicts: only results after the reset count.

pub mod bench_file;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::state::{BenchState, CheckStatus, Maintenance, Snapshot};
use bench_file::BenchFile;

/// How long a reset of the device under test may take to become ready, by
/// default, before it counts as a failure.
pub const RESET_LIMIT: Duration = Duration::from_secs(600);

/// Buckets of `bench_dut_ready_seconds`: a microcontroller is back in a
/// second, a Linux board in tens of seconds, a server in minutes.
pub const DUT_READY_BUCKETS: [f64; 14] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0,
];

/// The result code of a reset that never became ready.
pub const RESET_NOT_READY: &str = "reset_not_ready";

/// What told the agent that the device under test was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetSource {
    /// The `reset` pattern of a `serial_watch`.
    Serial,
    /// An edge on a GPIO reset or power line.
    Gpio,
    /// `benchtel-agent mark reset`, over the control socket.
    Mark,
    /// `{"cmd":"dut_reset"}` over MQTT.
    Mqtt,
}

impl ResetSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetSource::Serial => "serial",
            ResetSource::Gpio => "gpio",
            ResetSource::Mark => "mark",
            ResetSource::Mqtt => "mqtt",
        }
    }
}

/// A check's verdict, sent after each of its runs (so that a reset of the
/// device under test, which clears the verdicts, is followed by fresh
/// ones) and whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub check: String,
    pub up: bool,
    pub affects_ready: bool,
}

/// What moves the machine. One channel carries all of it, so a reset seen
/// by a check is applied before that check's next verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Verdict(Verdict),
    /// Maintenance on (with its reason and end) or off.
    Maintenance(Option<Maintenance>),
    DutReset {
        source: ResetSource,
        reason: Option<String>,
        /// The continuous check that saw it (a `serial_watch`), whose
        /// verdict the reset clears as well: it will judge the new boot.
        seen_by: Option<String>,
    },
}

/// How the machine starts.
#[derive(Debug, Clone)]
pub struct Options {
    pub readiness_checks: Vec<String>,
    /// Checks that follow a console or a line (`serial_watch`,
    /// `gpio_reset`) rather than run on an interval.
    pub continuous_checks: BTreeSet<String>,
    /// System uptime when the agent started.
    pub boot_offset: Duration,
    /// This boot's id; `None` where the kernel gives none.
    pub boot_id: Option<String>,
    /// `bench.json`; `None`: nothing is kept (tests, `probe`).
    pub state_file: Option<PathBuf>,
    pub reset_limit: Duration,
}

struct Instruments {
    ready_time: Gauge<f64>,
    dut_ready: Histogram<f64>,
    resets: Counter<u64>,
    reset_failures: Counter<u64>,
}

impl Instruments {
    fn new(meter: &Meter) -> Instruments {
        Instruments {
            ready_time: meter
                .f64_gauge("bench_ready_time")
                .with_unit("s")
                .with_description(
                    "Time until all readiness checks passed: from agent start, from boot, from each degradation and from each reset of the device under test",
                )
                .build(),
            dut_ready: meter
                .f64_histogram("bench_dut_ready")
                .with_unit("s")
                .with_description("Time from a reset of the device under test until the bench was ready again")
                .with_boundaries(DUT_READY_BUCKETS.to_vec())
                .build(),
            resets: meter
                .u64_counter("bench_dut_resets")
                .with_description("Resets of the device under test, by what reported them")
                .build(),
            reset_failures: meter
                .u64_counter("bench_dut_reset_failures")
                .with_description("Resets of the device under test that did not become ready within the limit")
                .build(),
        }
    }
}

/// A reset whose readiness is awaited.
#[derive(Debug, Clone, Copy)]
struct PendingReset {
    at: Instant,
    source: ResetSource,
}

pub struct Readiness {
    /// Where the machine stands (never `Maintenance`: that is an overlay).
    base: BenchState,
    why: String,
    since: SystemTime,
    /// Verdicts of the checks that affect readiness (None: none yet, or
    /// none since the last reset).
    checks: BTreeMap<String, Option<bool>>,
    /// See [`Options::continuous_checks`].
    continuous: BTreeSet<String>,
    /// The last verdict of every check, for `status`.
    last: BTreeMap<String, CheckStatus>,
    maintenance: Option<Maintenance>,
    /// When maintenance ends by itself, on this run's clock.
    maintenance_ends: Option<Instant>,
    started: Instant,
    /// Whether this run has seen the bench ready yet.
    seen_ready: bool,
    boot_offset: Duration,
    boot_id: Option<String>,
    /// The boot in which an agent last recorded `from="boot"`.
    ready_boot_id: Option<String>,
    degraded_since: Option<Instant>,
    reset: Option<PendingReset>,
    reset_limit: Duration,
    state_file: Option<PathBuf>,
    tx: watch::Sender<Snapshot>,
    instruments: Instruments,
}

impl Readiness {
    pub fn new(opts: Options, meter: &Meter, tx: watch::Sender<Snapshot>) -> Readiness {
        let kept = opts
            .state_file
            .as_deref()
            .map(bench_file::load)
            .unwrap_or_default();
        let mut r = Readiness {
            base: BenchState::Starting,
            why: "waiting for the readiness checks".into(),
            since: SystemTime::now(),
            checks: opts
                .readiness_checks
                .into_iter()
                .map(|c| (c, None))
                .collect(),
            continuous: opts.continuous_checks,
            last: BTreeMap::new(),
            maintenance: None,
            maintenance_ends: None,
            started: Instant::now(),
            seen_ready: false,
            boot_offset: opts.boot_offset,
            boot_id: opts.boot_id,
            ready_boot_id: kept.ready_boot_id,
            degraded_since: None,
            reset: None,
            reset_limit: opts.reset_limit,
            state_file: opts.state_file,
            tx,
            instruments: Instruments::new(meter),
        };
        if let Some(m) = kept.maintenance {
            tracing::info!(reason = ?m.reason, "maintenance kept from before the restart");
            r.enter_maintenance(m);
        }
        r.evaluate();
        r.publish();
        r
    }

    /// The state the bench reports.
    pub fn state(&self) -> BenchState {
        match self.maintenance {
            Some(_) => BenchState::Maintenance,
            None => self.base,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state(),
            why: match &self.maintenance {
                Some(m) => format!(
                    "maintenance{}",
                    m.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                None => self.why.clone(),
            },
            since: self.since,
            maintenance: self.maintenance.clone(),
            checks: self.last.clone(),
        }
    }

    /// Applies one verdict; returns the transition if the reported state
    /// changed.
    pub fn on_verdict(&mut self, v: &Verdict) -> Option<(BenchState, BenchState)> {
        let changed = self.last.get(&v.check).is_none_or(|last| last.up != v.up);
        // Checks report after every run: a verdict that repeats what the
        // machine already holds (not cleared by a reset) changes nothing,
        // and costs no snapshot.
        let held = !v.affects_ready || self.checks.get(&v.check) == Some(&Some(v.up));
        if !changed && held {
            return None;
        }
        if changed {
            self.last.insert(
                v.check.clone(),
                CheckStatus {
                    up: v.up,
                    since: SystemTime::now(),
                    affects_ready: v.affects_ready,
                },
            );
        }
        if !v.affects_ready {
            self.publish();
            return None;
        }
        let before = self.state();
        self.checks.insert(v.check.clone(), Some(v.up));
        self.evaluate();
        self.changed(before)
    }

    /// Applies a maintenance command or a reset.
    pub fn on_input(&mut self, input: Input) -> Option<(BenchState, BenchState)> {
        let before = self.state();
        match input {
            Input::Verdict(v) => return self.on_verdict(&v),
            Input::Maintenance(Some(m)) => self.enter_maintenance(m),
            Input::Maintenance(None) => self.leave_maintenance("by command"),
            Input::DutReset {
                source,
                reason,
                seen_by,
            } => self.dut_reset(source, reason, seen_by),
        }
        self.persist();
        self.changed(before)
    }

    /// Time passed: maintenance may end, a reset may run out of time.
    pub fn on_tick(&mut self) -> Option<(BenchState, BenchState)> {
        let before = self.state();
        let now = Instant::now();
        if self.maintenance_ends.is_some_and(|end| end <= now) {
            self.leave_maintenance("its end time passed");
            self.persist();
        }
        if let Some(reset) = self.reset
            && now - reset.at >= self.reset_limit
        {
            self.reset_not_ready(reset);
        }
        self.changed(before)
    }

    /// When `on_tick` has something to do next.
    pub fn next_tick(&self) -> Option<Instant> {
        let reset = self.reset.map(|r| r.at + self.reset_limit);
        [self.maintenance_ends, reset].into_iter().flatten().min()
    }

    fn enter_maintenance(&mut self, m: Maintenance) {
        self.maintenance_ends = m.until.map(|until| {
            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now() + left
        });
        tracing::info!(reason = ?m.reason, until = ?m.until.map(humantime::format_rfc3339_seconds), "maintenance on");
        self.maintenance = Some(m);
        self.since = SystemTime::now();
        self.publish();
    }

    fn leave_maintenance(&mut self, how: &str) {
        if self.maintenance.take().is_none() {
            return;
        }
        self.maintenance_ends = None;
        self.since = SystemTime::now();
        tracing::info!(how, state = self.base.as_str(), "maintenance over");
        self.publish();
    }

    /// A reset clears the verdicts that must be seen again after it: those
    /// of the scheduled checks (they run again on their interval) and of the
    /// console watch that saw the reset (it judges the new boot). Other
    /// continuous checks (`serial_watch`, `gpio_reset`) keep theirs: they
    /// report events, not runs, and may have nothing new to say. While a
    /// reset is pending, further resets (the console's reset line after a
    /// harness's mark, a board resetting again) are counted but do not
    /// restart its clock, so a board that keeps resetting still ends in
    /// `reset_not_ready`.
    fn dut_reset(&mut self, source: ResetSource, reason: Option<String>, seen_by: Option<String>) {
        self.instruments
            .resets
            .add(1, &[KeyValue::new("source", source.as_str())]);
        tracing::info!(source = source.as_str(), reason = ?reason, "device under test reset");
        if self.reset.is_none() {
            self.reset = Some(PendingReset {
                at: Instant::now(),
                source,
            });
        }
        self.degraded_since = None;
        for (check, v) in self.checks.iter_mut() {
            if !self.continuous.contains(check) || seen_by.as_ref() == Some(check) {
                *v = None;
            }
        }
        let why = format!(
            "device under test reset ({}{})",
            source.as_str(),
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        self.set(BenchState::Starting, why);
        // Nothing to wait for: ready again at once.
        self.evaluate();
    }

    fn reset_not_ready(&mut self, reset: PendingReset) {
        self.reset = None;
        let attrs = [
            KeyValue::new("source", reset.source.as_str()),
            KeyValue::new("code", RESET_NOT_READY),
        ];
        self.instruments.reset_failures.add(1, &attrs);
        let why = format!(
            "{RESET_NOT_READY}: not ready {} after a reset of the device under test ({})",
            humantime::format_duration(self.reset_limit),
            reset.source.as_str()
        );
        tracing::warn!(
            code = RESET_NOT_READY,
            source = reset.source.as_str(),
            "{why}"
        );
        self.degraded_since = Some(Instant::now());
        self.set(BenchState::Degraded, why);
    }

    fn evaluate(&mut self) {
        let all_up = self.checks.values().all(|v| *v == Some(true));
        let any_down = self.checks.values().any(|v| *v == Some(false));
        let now = Instant::now();
        match self.base {
            BenchState::Starting if all_up => {
                self.first_ready(now);
                if let Some(reset) = self.reset.take() {
                    let took = (now - reset.at).as_secs_f64();
                    self.record(now - reset.at, "dut_reset");
                    self.instruments
                        .dut_ready
                        .record(took, &[KeyValue::new("source", reset.source.as_str())]);
                }
                self.set(BenchState::Ready, "all readiness checks pass".into());
            }
            BenchState::Ready if any_down => {
                self.degraded_since = Some(now);
                self.set(BenchState::Degraded, self.down_checks());
            }
            BenchState::Degraded if all_up => {
                if let Some(since) = self.degraded_since.take() {
                    self.record(now - since, "degraded");
                }
                self.set(BenchState::Ready, "all readiness checks pass".into());
            }
            BenchState::Degraded if any_down => self.why = self.down_checks(),
            _ => {}
        }
    }

    /// The first time this run sees the bench ready.
    fn first_ready(&mut self, now: Instant) {
        if std::mem::replace(&mut self.seen_ready, true) {
            return;
        }
        let since_start = now - self.started;
        self.record(since_start, "agent_start");
        let recorded = self.boot_id.is_some() && self.ready_boot_id == self.boot_id;
        if !recorded {
            self.record(since_start + self.boot_offset, "boot");
            self.ready_boot_id = self.boot_id.clone();
            self.persist();
        }
    }

    fn down_checks(&self) -> String {
        let down: Vec<&str> = self
            .checks
            .iter()
            .filter(|(_, v)| **v == Some(false))
            .map(|(name, _)| name.as_str())
            .collect();
        format!("down: {}", down.join(", "))
    }

    fn record(&self, d: Duration, from: &'static str) {
        self.instruments
            .ready_time
            .record(d.as_secs_f64(), &[KeyValue::new("from", from)]);
    }

    fn set(&mut self, to: BenchState, why: String) {
        self.why = why;
        if self.base == to {
            return;
        }
        let from = std::mem::replace(&mut self.base, to);
        if self.maintenance.is_none() {
            self.since = SystemTime::now();
        }
        tracing::info!(
            from = from.as_str(),
            to = to.as_str(),
            why = %self.why,
            "bench state changed"
        );
    }

    /// Tells the watchers, returning the transition of the reported state.
    fn changed(&mut self, before: BenchState) -> Option<(BenchState, BenchState)> {
        self.publish();
        let after = self.state();
        (before != after).then_some((before, after))
    }

    fn publish(&self) {
        let snapshot = self.snapshot();
        self.tx.send_if_modified(|old| {
            let changed = *old != snapshot;
            *old = snapshot;
            changed
        });
    }

    fn persist(&self) {
        let Some(path) = &self.state_file else { return };
        let file = BenchFile {
            maintenance: self.maintenance.clone(),
            ready_boot_id: self.ready_boot_id.clone(),
        };
        if let Err(e) = bench_file::save(path, &file) {
            tracing::error!(error = %e, "cannot keep the bench state; it is lost at the next restart");
        }
    }

    /// Applies verdicts, commands and the passing of time until cancelled.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>, cancel: CancellationToken) {
        let mut open = true;
        loop {
            let tick = self.next_tick();
            tokio::select! {
                _ = cancel.cancelled() => return,
                input = inputs.recv(), if open => match input {
                    Some(input) => { self.on_input(input); }
                    // No checks and no commands: only time moves it now.
                    None => open = false,
                },
                _ = sleep_until(tick) => { self.on_tick(); }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
