//! The heartbeat: proof of life at a fixed interval, with enough context
//! (boot id, uptime, run id, sequence number) for a watcher to tell a
//! reboot, an agent restart and a lost beat apart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::agent::state::{BenchState, Maintenance, Snapshot};
use crate::systemd::Beacon;
use crate::telemetry::context::{self, ExecutionContext};

/// `[sources.heartbeat]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Send heartbeats at all.
    pub enabled: bool,
    /// Time between heartbeats.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            interval: Duration::from_secs(10),
        }
    }
}

/// One heartbeat, as logged and handed to the MQTT publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Beat {
    pub seq: u64,
    pub run_id: String,
    pub boot_id: String,
    pub uptime_s: u64,
    pub state: BenchState,
    /// Why the bench is in that state (`reset_not_ready: …`, the failing
    /// checks, …).
    pub why: String,
    pub agent_version: &'static str,
    pub sent_at: String,
    /// Maintenance set on the bench, with its reason and end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// The execution context the bench works under.
    #[serde(skip_serializing_if = "ExecutionContext::is_empty")]
    pub context: ExecutionContext,
}

/// The kernel's id for this boot: it changes when the bench reboots.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Time since the kernel booted.
pub fn uptime() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

/// Identifies this run of the agent process; the same for every heartbeat
/// and for the MQTT status of the run.
pub fn run_id() -> &'static str {
    static RUN_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN_ID.get_or_init(|| {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // Sequence numbers restart with the process, so a receiver needs
        // the run id to tell "beats were lost" from "the agent restarted".
        // The pid alone repeats across reboots, the start time alone
        // could collide between two agents on one machine.
        format!("{start}-{}", std::process::id())
    })
}

/// The per-run state of the heartbeat and the instruments it records into.
pub struct Heartbeat {
    seq: u64,
    run_id: String,
    boot_id: String,
    beats: Counter<u64>,
    state: Gauge<i64>,
}

impl Heartbeat {
    pub fn new(meter: &Meter) -> Heartbeat {
        Heartbeat {
            seq: 0,
            run_id: run_id().to_string(),
            boot_id: boot_id().unwrap_or_default(),
            beats: meter
                .u64_counter("bench_heartbeats")
                .with_description("Heartbeats sent by the bench agent")
                .build(),
            state: meter
                .i64_gauge("bench_state")
                .with_description("1 for the bench's current state, 0 for the others")
                .build(),
        }
    }

    /// Produces the next beat and records it in the instruments.
    pub fn next_beat(&mut self, bench: &Snapshot) -> Beat {
        let state = bench.state;
        self.seq += 1;
        self.beats.add(1, &[]);
        for s in BenchState::ALL {
            self.state
                .record(i64::from(s == state), &[KeyValue::new("state", s.as_str())]);
        }
        Beat {
            seq: self.seq,
            run_id: self.run_id.clone(),
            boot_id: self.boot_id.clone(),
            uptime_s: uptime().map_or(0, |u| u.as_secs()),
            state,
            why: bench.why.clone(),
            agent_version: env!("CARGO_PKG_VERSION"),
            sent_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            maintenance: bench.maintenance.clone(),
            context: context::current(),
        }
    }
}

/// Beats every `interval` (the first at once) until cancelled. Each beat
/// also replaces the value in `beats`, for whoever wants them live (the
/// MQTT publisher); nobody has to. `beacon` promises the watchdog the next
/// beat within the interval: a loop wedged anywhere stops the pings.
pub async fn run(
    cfg: Config,
    meter: Meter,
    mut bench: watch::Receiver<Snapshot>,
    beats: watch::Sender<Option<Beat>>,
    beacon: Beacon,
    cancel: CancellationToken,
) {
    let mut hb = Heartbeat::new(&meter);
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reported = None;
    loop {
        beacon.busy_for(cfg.interval);
        tokio::select! {
            _ = cancel.cancelled() => {
                beacon.idle();
                return;
            }
            _ = tick.tick() => {}
            // A new state or maintenance goes out at once (on `/metrics`
            // and MQTT), not at the next beat; the beat after it keeps the
            // interval.
            Ok(()) = bench.changed() => {
                let now = bench.borrow();
                if reported == Some((now.state, now.maintenance.clone())) {
                    continue;
                }
                drop(now);
                tick.reset();
            }
        }
        let snapshot = bench.borrow_and_update().clone();
        reported = Some((snapshot.state, snapshot.maintenance.clone()));
        let beat = hb.next_beat(&snapshot);
        log_beat(&beat);
        beats.send_replace(Some(beat));
    }
}

/// The heartbeat's log record: its attributes are the OTLP heartbeat's,
/// maintenance included (the execution context is stamped on every record
/// by the telemetry layer).
fn log_beat(beat: &Beat) {
    let maintenance = beat.maintenance.as_ref();
    let until = maintenance
        .and_then(|m| m.until)
        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
    tracing::info!(
        seq = beat.seq,
        run_id = %beat.run_id,
        boot_id = %beat.boot_id,
        uptime_s = beat.uptime_s,
        state = beat.state.as_str(),
        agent_version = beat.agent_version,
        sent_at = %beat.sent_at,
        maintenance = maintenance.is_some(),
        maintenance_reason = maintenance.and_then(|m| m.reason.as_deref()),
        maintenance_until = until.as_deref(),
        "heartbeat"
    );
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    use super::*;

    fn provider() -> (SdkMeterProvider, InMemoryMetricExporter) {
        let exporter = InMemoryMetricExporter::default();
        let reader = PeriodicReader::builder(exporter.clone()).build();
        (
            SdkMeterProvider::builder().with_reader(reader).build(),
            exporter,
        )
    }

    fn last(exporter: &InMemoryMetricExporter) -> ResourceMetrics {
        exporter.get_finished_metrics().unwrap().pop().unwrap()
    }

    fn heartbeats(rm: &ResourceMetrics) -> u64 {
        rm.scope_metrics()
            .flat_map(|s| s.metrics())
            .filter(|m| m.name() == "bench_heartbeats")
            .map(|m| match m.data() {
                AggregatedMetrics::U64(MetricData::Sum(s)) => {
                    s.data_points().map(|p| p.value()).sum()
                }
                _ => 0,
            })
            .sum()
    }

    fn state_of(rm: &ResourceMetrics) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = rm
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .filter(|m| m.name() == "bench_state")
            .flat_map(|m| match m.data() {
                AggregatedMetrics::I64(MetricData::Gauge(g)) => g
                    .data_points()
                    .map(|p| {
                        let s = p.attributes().next().map(|kv| kv.value.to_string());
                        (s.unwrap_or_default(), p.value())
                    })
                    .collect::<Vec<_>>(),
                _ => vec![],
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn beats_on_the_interval_and_follows_the_state() {
        let (provider, exporter) = provider();
        let (tx, rx) = watch::channel(Snapshot::default());
        let cancel = CancellationToken::new();
        let cfg = Config {
            enabled: true,
            interval: Duration::from_secs(10),
        };
        let (beats_tx, mut beats) = watch::channel(None);
        let beacon = crate::systemd::Liveness::default().beacon("heartbeat", cfg.interval);
        let task = tokio::spawn(run(
            cfg,
            provider.meter("t"),
            rx,
            beats_tx,
            beacon,
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(95)).await;
        provider.force_flush().unwrap();
        let rm = last(&exporter);
        assert_eq!(heartbeats(&rm), 10, "beats at 0, 10, … 90 s");
        let handed = beats.borrow_and_update().clone().unwrap();
        assert_eq!((handed.seq, handed.state), (10, BenchState::Starting));
        assert!(state_of(&rm).contains(&("starting".into(), 1)));
        // A new state is a beat at once, not at the next tick.
        tx.send_modify(|s| s.state = BenchState::Ready);
        tokio::time::sleep(Duration::from_secs(1)).await;
        provider.force_flush().unwrap();
        let rm = last(&exporter);
        assert_eq!(heartbeats(&rm), 11);
        assert_eq!(
            beats.borrow_and_update().as_ref().unwrap().state,
            BenchState::Ready
        );
        // A change that is not the state (a check's verdict) is no beat.
        tx.send_modify(|s| s.why = "something else".into());
        tokio::time::sleep(Duration::from_secs(1)).await;
        provider.force_flush().unwrap();
        assert_eq!(heartbeats(&last(&exporter)), 11);
        // The interval counts from the early beat (at 95 s: the next at 105 s).
        tokio::time::sleep(Duration::from_secs(7)).await;
        provider.force_flush().unwrap();
        assert_eq!(heartbeats(&last(&exporter)), 11);
        tokio::time::sleep(Duration::from_secs(2)).await;
        provider.force_flush().unwrap();
        assert_eq!(heartbeats(&last(&exporter)), 12);
        let rm = last(&exporter);
        let st = state_of(&rm);
        assert!(st.contains(&("ready".into(), 1)), "{st:?}");
        assert!(st.contains(&("starting".into(), 0)), "{st:?}");
        assert_eq!(st.iter().filter(|(_, v)| *v == 1).count(), 1, "{st:?}");
        assert_eq!(st.len(), BenchState::ALL.len(), "{st:?}");
        let cancelled_at = tokio::time::Instant::now();
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(
            cancelled_at.elapsed(),
            Duration::ZERO,
            "cancel must not wait for the next tick"
        );
    }

    #[test]
    fn beats_carry_sequence_run_and_boot() {
        let (provider, _) = provider();
        let mut hb = Heartbeat::new(&provider.meter("t"));
        let at = |state| Snapshot {
            state,
            ..Snapshot::default()
        };
        let a = hb.next_beat(&at(BenchState::Ready));
        let b = hb.next_beat(&at(BenchState::Degraded));
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(a.run_id, b.run_id);
        assert!(a.run_id.ends_with(&format!("-{}", std::process::id())));
        assert_eq!(a.boot_id, boot_id().unwrap());
        assert_eq!(b.state, BenchState::Degraded);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["state"], "degraded");
        assert!(uptime().unwrap() > Duration::ZERO);
    }

    /// The loop is wedged in `send_replace` while a reader holds the last
    /// beat (a publisher that never lets go): the watchdog must hear of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wedged_heartbeat_loop_is_named_by_the_watchdog() {
        use crate::systemd::Liveness;
        let (provider, _) = provider();
        let liveness = Liveness::with_slack(Duration::from_millis(100));
        let interval = Duration::from_millis(50);
        let beacon = liveness.beacon("heartbeat", interval);
        let (_tx, rx) = watch::channel(Snapshot::default());
        let (beats_tx, beats) = watch::channel(None);
        let cancel = CancellationToken::new();
        let cfg = Config {
            enabled: true,
            interval,
        };
        let task = tokio::spawn(run(
            cfg,
            provider.meter("t"),
            rx,
            beats_tx,
            beacon,
            cancel.clone(),
        ));
        // Polled from this thread, not with tokio's timers: a worker
        // blocked in a task can keep the timer driver from turning.
        let until = |want: Option<&'static str>| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while liveness.stalled() != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "stalled() never became {want:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let seq = |b: &watch::Receiver<Option<Beat>>| b.borrow().as_ref().map_or(0, |b| b.seq);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seq(&beats) < 3 {
            assert!(std::time::Instant::now() < deadline, "no beats");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(liveness.stalled(), None, "beating on time");
        let held = beats.borrow();
        until(Some("heartbeat"));
        drop(held);
        until(None);
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(liveness.stalled(), None, "a stopped loop promises nothing");
    }
}
