//! Health checks: is the bench usable? One module per kind, a closed enum of
//! kinds, and one scheduling loop shared by all of them.
//!
//! Every run ends in a structured [`Code`], not just pass/fail. A check's
//! verdict (up/down) changes only after `fail_after` consecutive failures or
//! `recover_after` consecutive successes, so one glitch does not flap the
//! bench; only verdict changes are logged and sent to the readiness state
//! machine, while every run is counted, timed and traced.

mod boot_trace;
pub mod exec;
pub mod file;
pub mod gpio;
pub mod http;
mod offload;
mod record;
pub mod serial;
pub mod tcp;
mod trace;
pub mod usb;

pub use offload::Gate;
pub use record::{BOOT_BUCKETS, INSTRUMENTS, Instruments, RUN_BUCKETS, series_limit};

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::agent::probes::gpio as gpio_probe;
use crate::agent::probes::serial::{expect, watch};
use crate::agent::readiness::{Input, Verdict};
use crate::config::Pattern;
use crate::systemd::{Beacon, Liveness};
use record::Labels;
use serial::ExpectCheck;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// The result of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    Ok,
    /// No answer within the timeout.
    Timeout,
    /// The thing checked is not there (file, device, program).
    Missing,
    /// Held by another program (EBUSY).
    Busy,
    /// It answered, but not as expected (status, exit code, body, age).
    Mismatch,
    /// Refused or unreachable.
    ConnectionFailed,
    /// A console printed a fatal line (a kernel panic, an oops).
    Fatal,
    /// The device resets again and again (`boot_loop_resets` within
    /// `boot_loop_window`).
    BootLoop,
    Error,
}

impl Code {
    pub const ALL: [Code; 9] = [
        Code::Ok,
        Code::Timeout,
        Code::Missing,
        Code::Busy,
        Code::Mismatch,
        Code::ConnectionFailed,
        Code::Fatal,
        Code::BootLoop,
        Code::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Timeout => "timeout",
            Code::Missing => "missing",
            Code::Busy => "busy",
            Code::Mismatch => "mismatch",
            Code::ConnectionFailed => "connection_failed",
            Code::Fatal => "fatal",
            Code::BootLoop => "boot_loop",
            Code::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub code: Code,
    /// What was seen, for the log and the span (never a secret).
    pub detail: String,
    /// Values read by probes (`bench_probe_value{probe,value}`).
    pub values: Vec<(String, f64)>,
    /// The last console lines a serial probe saw, for a failure's span.
    pub console: Option<String>,
    /// The firmware version a probe read (`firmware.version` on its span).
    pub version: Option<String>,
}

impl Outcome {
    pub fn ok(detail: impl Into<String>) -> Outcome {
        Outcome {
            code: Code::Ok,
            detail: detail.into(),
            values: Vec::new(),
            console: None,
            version: None,
        }
    }

    pub fn fail(code: Code, detail: impl Into<String>) -> Outcome {
        Outcome {
            code,
            detail: detail.into(),
            values: Vec::new(),
            console: None,
            version: None,
        }
    }
}

/// The kinds of check, chosen by `type = "…"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    Exec(exec::Config),
    Http(http::Config),
    Tcp(tcp::Config),
    File(file::Config),
    Usb(usb::Config),
    SerialExpect(expect::Config),
    SerialWatch(watch::Config),
    GpioLevel(gpio_probe::LevelConfig),
    GpioEdges(gpio_probe::EdgesConfig),
    GpioStuck(gpio_probe::StuckConfig),
    GpioReset(gpio_probe::ResetConfig),
}

/// One `[[checks]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckConfig {
    /// Unique name; the `check` label.
    pub name: String,
    /// Time between runs.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// A run that takes longer ends as `timeout`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures before the check is down.
    #[serde(default = "one")]
    pub fail_after: u32,
    /// Consecutive successes before it is up again.
    #[serde(default = "one")]
    pub recover_after: u32,
    /// Whether the bench is ready only while this check is up.
    #[serde(default = "yes")]
    pub affects_ready: bool,
    #[serde(flatten)]
    pub kind: Kind,
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

impl Kind {
    /// The `type` as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Exec(_) => "exec",
            Kind::Http(_) => "http",
            Kind::Tcp(_) => "tcp",
            Kind::File(_) => "file",
            Kind::Usb(_) => "usb",
            Kind::SerialExpect(_) => "serial_expect",
            Kind::SerialWatch(_) => "serial_watch",
            Kind::GpioLevel(_) => "gpio_level",
            Kind::GpioEdges(_) => "gpio_edges",
            Kind::GpioStuck(_) => "gpio_stuck",
            Kind::GpioReset(_) => "gpio_reset",
        }
    }

    /// Kinds that follow a console or a line for as long as the agent runs
    /// and report events, rather than run on an interval.
    pub fn is_continuous(&self) -> bool {
        matches!(self, Kind::SerialWatch(_) | Kind::GpioReset(_))
    }

    /// Probes of the device under test (serial console, GPIO lines), as
    /// opposed to checks of the bench's own tools; they also get
    /// `bench_probe_success` and `bench_probe_duration_seconds`.
    pub fn is_probe(&self) -> bool {
        match self {
            Kind::Exec(_) | Kind::Http(_) | Kind::Tcp(_) | Kind::File(_) | Kind::Usb(_) => false,
            Kind::SerialExpect(_)
            | Kind::SerialWatch(_)
            | Kind::GpioLevel(_)
            | Kind::GpioEdges(_)
            | Kind::GpioStuck(_)
            | Kind::GpioReset(_) => true,
        }
    }

    async fn run(&self, timeout: Duration, clients: &http::Clients, gate: &Gate) -> Outcome {
        let run = async {
            match self {
                Kind::Exec(c) => c.run(timeout).await,
                Kind::Http(c) => c.run_with(clients).await,
                Kind::Tcp(c) => c.run().await,
                Kind::File(c) => gate.run(c.clone(), |c| c.run()).await,
                Kind::Usb(c) => gate.run(c.clone(), |c| c.run()).await,
                Kind::SerialExpect(c) => c.run(timeout).await,
                Kind::SerialWatch(c) => serial::run_once(c, timeout).await,
                Kind::GpioLevel(c) => gate.run(c.clone(), |c| gpio::run_level(&c)).await,
                Kind::GpioEdges(c) => gate.run(c.clone(), |c| gpio::run_edges(&c)).await,
                Kind::GpioStuck(c) => gate.run(c.clone(), |c| gpio::run_stuck(&c)).await,
                Kind::GpioReset(c) => gate.run(c.clone(), |c| gpio::run_reset_once(&c)).await,
            }
        };
        // Exec enforces its own deadline so it can kill the process group;
        // this outer one is the backstop for every kind.
        match tokio::time::timeout(timeout + Duration::from_secs(1), run).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::fail(Code::Timeout, format!("no result within {timeout:?}")),
        }
    }
}

impl CheckConfig {
    /// One run, as the scheduler would do it (for `benchtel-agent probe`).
    pub async fn run_once(&self) -> Outcome {
        self.kind
            .run(self.timeout, &http::Clients::default(), &Gate::default())
            .await
    }
}

/// Makes checks with the same pattern share one compiled regex: the same
/// probe set on several boards repeats every pattern, and each compiled
/// copy of `Zephyr version (?P<major>\d+)` takes about 48 KiB with its
/// match cache (its lazy-DFA cache alone about 36 KiB, heaptrack). Sharing the [`Pattern`] (one `Arc`) shares the cache pool
/// too, where a cloned `Regex` would build a pool of its own. One pool is
/// enough: all runs are on the agent's one runtime thread, which the pool
/// serves on its fast path; another thread would get a cache of its own
/// from the pool, only slower. Returns how many distinct compiled patterns
/// are left.
pub fn share_patterns(checks: &mut [CheckConfig]) -> usize {
    let mut seen: std::collections::HashMap<String, Pattern> = std::collections::HashMap::new();
    let mut share = |re: &mut Pattern| {
        let first = seen
            .entry(re.as_str().to_string())
            .or_insert_with(|| re.clone());
        *re = first.clone();
    };
    for c in checks {
        match &mut c.kind {
            Kind::SerialExpect(e) => {
                share(&mut e.expect);
                e.fail.iter_mut().for_each(&mut share);
            }
            Kind::SerialWatch(w) => {
                share(&mut w.reset);
                w.fatal.iter_mut().for_each(&mut share);
                w.version.iter_mut().for_each(&mut share);
                w.milestones.iter_mut().for_each(|m| share(&mut m.pattern));
                w.alive.iter_mut().for_each(|a| share(&mut a.expect));
            }
            Kind::Http(h) => h.body_regex.iter_mut().for_each(&mut share),
            _ => {}
        }
    }
    seen.len()
}

/// Consecutive-result hysteresis of one check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hysteresis {
    pub up: Option<bool>,
    fails: u32,
    oks: u32,
}

impl Hysteresis {
    /// Feeds one result; returns the new verdict if it changed.
    pub fn feed(&mut self, ok: bool, fail_after: u32, recover_after: u32) -> Option<bool> {
        if ok {
            self.oks += 1;
            self.fails = 0;
        } else {
            self.fails += 1;
            self.oks = 0;
        }
        let next = match self.up {
            Some(true) | None if !ok && self.fails >= fail_after.max(1) => Some(false),
            Some(false) | None if ok && self.oks >= recover_after.max(1) => Some(true),
            other => other,
        };
        if next != self.up {
            self.up = next;
            return next;
        }
        None
    }
}

/// What running checks share: built once, from the checks' plain
/// configuration, by the agent's composition root
/// ([`crate::agent::build`]).
pub struct Runtime {
    pub checks: Vec<CheckConfig>,
    pub clients: http::Clients,
    pub instruments: Arc<Instruments>,
}

/// Runs every check on its own schedule until cancelled, at most
/// `max_concurrent` at a time; verdicts (and resets a check sees) go to
/// `inputs`.
pub async fn run_all(
    runtime: Runtime,
    max_concurrent: usize,
    verdicts: mpsc::Sender<Input>,
    liveness: Liveness,
    cancel: CancellationToken,
) {
    let Runtime {
        checks,
        clients,
        instruments,
    } = runtime;
    let permits = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let epoch = tokio::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for check in checks {
        let (labels, ready) = (Labels::new(&check.name, &check.kind), check.affects_ready);
        let (out, stop) = (verdicts.clone(), cancel.clone());
        match &check.kind {
            // Continuous: they follow a line or a console, not an interval.
            Kind::GpioReset(r) => set.spawn(gpio::run_reset(labels, ready, r.clone(), out, stop)),
            Kind::SerialWatch(w) => set.spawn(serial::run_watch(
                labels,
                ready,
                w.clone(),
                instruments.clone(),
                out,
                stop,
            )),
            _ => set.spawn(run_one(
                liveness.beacon("checks", Duration::ZERO),
                check,
                clients.clone(),
                epoch,
                permits.clone(),
                instruments.clone(),
                out,
                stop,
            )),
        };
    }
    while set.join_next().await.is_some() {}
}

/// The grid check runs are placed on. Runs that fall on the same grid
/// point share one wake-up of the agent instead of each having its own:
/// with fifty checks at 1 s, that is ten wake-ups a second, not fifty
/// (measured in `BENCHMARKS.md`: wake-ups, not the checks themselves, were
/// most of the agent's own CPU time).
pub const GRID: Duration = Duration::from_millis(100);

/// Spreads first runs over the interval by name, so fifty checks with the
/// same interval do not fire in the same millisecond, and stays stable
/// across restarts. The delay is a whole number of [`GRID`] steps (of the
/// interval itself when it is shorter), counted from the moment all checks
/// start, so checks whose intervals are multiples of the grid keep sharing
/// their wake-ups.
pub fn first_delay(name: &str, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    let step = GRID.min(interval).max(Duration::from_millis(1));
    let steps = (interval.as_millis() / step.as_millis()).max(1) as u64;
    step * (h.finish() % steps) as u32
}

/// `beacon` promises the watchdog each run's end within its timeout (the
/// backstop in `Kind::run`); between runs the check promises nothing.
#[allow(clippy::too_many_arguments)] // each is one shared handle; a struct would only rename them
async fn run_one(
    beacon: Beacon,
    check: CheckConfig,
    clients: http::Clients,
    epoch: tokio::time::Instant,
    permits: Arc<Semaphore>,
    instruments: Arc<Instruments>,
    verdicts: mpsc::Sender<Input>,
    cancel: CancellationToken,
) {
    let tracer = opentelemetry::global::tracer("benchtel");
    let labels = Labels::new(&check.name, &check.kind);
    let span_name: Cow<'static, str> = format!("check {}", check.name).into();
    let mut state = Hysteresis::default();
    let gate = Gate::default();
    let mut next = epoch + first_delay(&check.name, check.interval);
    loop {
        beacon.idle();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += check.interval;
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        let started = Instant::now();
        beacon.busy_for(check.timeout + Duration::from_secs(1));
        // Boxed: the largest kind's run state (reqwest's) would otherwise sit
        // in every check's task for its whole life, not only during a run.
        let run = Box::pin(check.kind.run(check.timeout, &clients, &gate));
        let (outcome, run) = trace::traced(&tracer, span_name.clone(), &labels, run).await;
        // The promise covered the run; what follows (logging, the verdict
        // to readiness) is not the check's to answer for.
        beacon.idle();
        instruments.run(&labels, &outcome, started.elapsed());
        let ok = outcome.code == Code::Ok;
        let change = state.feed(ok, check.fail_after, check.recover_after);
        if let Some(up) = change {
            // The line links to the run that changed the verdict.
            let _run = run.attach();
            if up {
                tracing::info!(check = %check.name, code = outcome.code.as_str(), detail = %outcome.detail, "health check up");
            } else {
                tracing::warn!(check = %check.name, code = outcome.code.as_str(), detail = %outcome.detail, "health check down");
            }
        }
        let Some(up) = state.up else { continue };
        instruments.up.record(i64::from(up), &labels.check);
        // After every run, not only on change: a reset of the device under
        // test clears readiness, which then waits for fresh verdicts.
        let v = Verdict {
            check: check.name.clone(),
            up,
            affects_ready: check.affects_ready,
        };
        if verdicts.send(Input::Verdict(v)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_patterns_share_one_compiled_regex() {
        #[derive(serde::Deserialize)]
        struct File {
            checks: Vec<CheckConfig>,
        }
        let probe = |name: &str, pattern: &str| {
            format!(
                "[[checks]]\nname = \"{name}\"\ntype = \"serial_expect\"\nport = \"/dev/null\"\nexpect = '{pattern}'\n"
            )
        };
        let zephyr = r"Zephyr version (?P<major>\d+)";
        let watch = "[[checks]]\nname = \"w\"\ntype = \"serial_watch\"\nport = \"/dev/null\"\n\
                     reset = 'U-Boot'\nmilestones = []\nalive = { send = '\\r', expect = 'login:' }\n";
        let text = [probe("a", zephyr), probe("b", zephyr), probe("c", "login:")].concat() + watch;
        let mut file: File = toml::from_str(&text).unwrap();
        let expect = |checks: &[CheckConfig], i: usize| match &checks[i].kind {
            Kind::SerialExpect(e) => e.expect.clone(),
            Kind::SerialWatch(w) => w.alive.as_ref().unwrap().expect.clone(),
            other => panic!("{other:?}"),
        };
        let (a, b) = (expect(&file.checks, 0), expect(&file.checks, 1));
        assert!(
            !Pattern::ptr_eq(&a, &b),
            "each is compiled on its own when read"
        );

        assert_eq!(share_patterns(&mut file.checks), 3);
        let [a, b, c, w] = [0, 1, 2, 3].map(|i| expect(&file.checks, i));
        // The same value, so one cache pool: a clone of the `Regex` would
        // be a second pool and fail here.
        assert!(Pattern::ptr_eq(&a, &b));
        assert!(Pattern::ptr_eq(&c, &w), "shared across kinds");
        assert!(!Pattern::ptr_eq(&a, &c));
    }

    #[test]
    fn hysteresis_needs_consecutive_results() {
        let mut h = Hysteresis::default();
        assert_eq!(h.feed(true, 3, 2), None, "one success is not enough");
        assert_eq!(h.feed(true, 3, 2), Some(true));
        assert_eq!(h.feed(false, 3, 2), None);
        assert_eq!(h.feed(false, 3, 2), None);
        assert_eq!(h.feed(true, 3, 2), None, "a success resets the failures");
        assert_eq!(h.feed(false, 3, 2), None);
        assert_eq!(h.feed(false, 3, 2), None);
        assert_eq!(h.feed(false, 3, 2), Some(false));
        assert_eq!(h.feed(true, 3, 2), None);
        assert_eq!(h.feed(true, 3, 2), Some(true));
    }

    #[test]
    fn first_runs_spread_over_the_interval_on_the_grid() {
        let interval = Duration::from_secs(1);
        let mut per_slot = std::collections::BTreeMap::new();
        for i in 0..50 {
            let d = first_delay(&format!("check-{i}"), interval);
            assert!(d < interval, "{d:?}");
            assert_eq!(d.as_millis() % GRID.as_millis(), 0, "{d:?} is off the grid");
            *per_slot.entry(d).or_insert(0) += 1;
        }
        // Every one of the ten grid points is used, none by a crowd.
        assert_eq!(per_slot.len(), 10, "{per_slot:?}");
        assert!(per_slot.values().all(|n| *n <= 10), "{per_slot:?}");
        // Stable across restarts, and spread over long intervals too.
        let long = Duration::from_secs(30);
        assert_eq!(first_delay("psu", long), first_delay("psu", long));
        let spread: std::collections::BTreeSet<_> = (0..50)
            .map(|i| first_delay(&format!("check-{i}"), long))
            .collect();
        assert!(spread.len() > 40, "{spread:?}");
        // An interval shorter than the grid is its own step.
        let short = Duration::from_millis(40);
        assert!((0..20).all(|i| first_delay(&format!("c{i}"), short) == Duration::ZERO));
    }
}
