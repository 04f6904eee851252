//! The bench's state machine, driven by the verdicts of the checks that
//! affect readiness: `starting → ready → degraded → ready …`, plus
//! `maintenance`, which only a command enters and leaves.
//!
//! `bench_ready_time_seconds{from}` records how long readiness took:
//! `from="agent_start"` and `from="boot"` for the first time all readiness
//! checks pass, `from="degraded"` for each recovery.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Gauge, Meter};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::checks::Verdict;
use super::state::BenchState;

pub struct Readiness {
    state: BenchState,
    /// Verdicts of the checks that affect readiness (None: no verdict yet).
    checks: BTreeMap<String, Option<bool>>,
    started: Instant,
    /// System uptime when the agent started.
    boot_offset: Duration,
    degraded_since: Option<Instant>,
    /// The state to return to when maintenance ends.
    before_maintenance: BenchState,
    tx: watch::Sender<BenchState>,
    ready_time: Gauge<f64>,
}

impl Readiness {
    pub fn new(
        readiness_checks: impl IntoIterator<Item = String>,
        meter: &Meter,
        tx: watch::Sender<BenchState>,
        boot_offset: Duration,
    ) -> Readiness {
        let mut r = Readiness {
            state: BenchState::Starting,
            checks: readiness_checks.into_iter().map(|c| (c, None)).collect(),
            started: Instant::now(),
            boot_offset,
            degraded_since: None,
            before_maintenance: BenchState::Starting,
            tx,
            ready_time: meter
                .f64_gauge("bench_ready_time")
                .with_unit("s")
                .with_description(
                    "Time until all readiness checks passed: from agent start, from boot, and from each degradation",
                )
                .build(),
        };
        r.evaluate();
        r
    }

    pub fn state(&self) -> BenchState {
        self.state
    }

    /// Applies one verdict; returns the transition if the state changed.
    pub fn on_verdict(&mut self, v: &Verdict) -> Option<(BenchState, BenchState)> {
        if !v.affects_ready {
            return None;
        }
        self.checks.insert(v.check.clone(), Some(v.up));
        self.evaluate()
    }

    /// Enters or leaves maintenance (by command only).
    pub fn set_maintenance(&mut self, on: bool) -> Option<(BenchState, BenchState)> {
        if on == (self.state == BenchState::Maintenance) {
            return None;
        }
        if on {
            self.before_maintenance = self.state;
            return self.set(BenchState::Maintenance);
        }
        // Back to where it was, then judged again on today's verdicts.
        self.set(self.before_maintenance);
        self.evaluate();
        Some((BenchState::Maintenance, self.state))
    }

    fn evaluate(&mut self) -> Option<(BenchState, BenchState)> {
        let all_up = self.checks.values().all(|v| *v == Some(true));
        let any_down = self.checks.values().any(|v| *v == Some(false));
        let now = Instant::now();
        match self.state {
            BenchState::Starting if all_up => {
                let since_start = now - self.started;
                self.record(since_start, "agent_start");
                self.record(since_start + self.boot_offset, "boot");
                self.set(BenchState::Ready)
            }
            BenchState::Ready if any_down => {
                self.degraded_since = Some(now);
                self.set(BenchState::Degraded)
            }
            BenchState::Degraded if all_up => {
                if let Some(since) = self.degraded_since.take() {
                    self.record(now - since, "degraded");
                }
                self.set(BenchState::Ready)
            }
            _ => None,
        }
    }

    fn record(&self, d: Duration, from: &'static str) {
        self.ready_time
            .record(d.as_secs_f64(), &[KeyValue::new("from", from)]);
    }

    fn set(&mut self, to: BenchState) -> Option<(BenchState, BenchState)> {
        let from = std::mem::replace(&mut self.state, to);
        let _ = self.tx.send(to);
        tracing::info!(
            from = from.as_str(),
            to = to.as_str(),
            "bench state changed"
        );
        Some((from, to))
    }

    /// Applies verdicts and maintenance commands until cancelled.
    pub async fn run(
        mut self,
        mut verdicts: mpsc::Receiver<Verdict>,
        mut maintenance: mpsc::Receiver<bool>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                Some(on) = maintenance.recv() => { self.set_maintenance(on); }
                Some(v) = verdicts.recv() => { self.on_verdict(&v); }
                // Both closed (no checks, control socket gone): nothing
                // more can change the state.
                else => {
                    cancel.cancelled().await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    use super::*;

    fn verdict(check: &str, up: bool) -> Verdict {
        Verdict {
            check: check.into(),
            up,
            affects_ready: true,
        }
    }

    fn ready_times(
        provider: &SdkMeterProvider,
        exporter: &InMemoryMetricExporter,
    ) -> BTreeMap<String, f64> {
        provider.force_flush().unwrap();
        let rm = exporter.get_finished_metrics().unwrap().pop().unwrap();
        let mut out = BTreeMap::new();
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            if let AggregatedMetrics::F64(MetricData::Gauge(g)) = m.data() {
                for p in g.data_points() {
                    let from = p.attributes().next().unwrap().value.to_string();
                    out.insert(from, p.value());
                }
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn ready_time_degraded_and_recovery() {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let (tx, rx) = watch::channel(BenchState::Starting);
        let mut r = Readiness::new(
            ["psu".to_string(), "dut-ssh".to_string()],
            &provider.meter("t"),
            tx,
            Duration::from_secs(100),
        );
        assert_eq!(r.state(), BenchState::Starting);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            r.on_verdict(&verdict("psu", true)),
            None,
            "one of two is not ready"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(
            r.on_verdict(&verdict("dut-ssh", true)),
            Some((BenchState::Starting, BenchState::Ready))
        );
        assert_eq!(*rx.borrow(), BenchState::Ready);
        let t = ready_times(&provider, &exporter);
        assert_eq!(t["agent_start"], 30.0);
        assert_eq!(t["boot"], 130.0);
        // A check that does not affect readiness changes nothing.
        let mut other = verdict("camera", false);
        other.affects_ready = false;
        assert_eq!(r.on_verdict(&other), None);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            r.on_verdict(&verdict("psu", false)),
            Some((BenchState::Ready, BenchState::Degraded))
        );
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(
            r.on_verdict(&verdict("psu", true)),
            Some((BenchState::Degraded, BenchState::Ready))
        );
        assert_eq!(ready_times(&provider, &exporter)["degraded"], 15.0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_readiness_checks_means_ready_at_once_and_maintenance_is_sticky() {
        let provider = SdkMeterProvider::builder().build();
        let (tx, rx) = watch::channel(BenchState::Starting);
        let mut r = Readiness::new(
            Vec::<String>::new(),
            &provider.meter("t"),
            tx,
            Duration::ZERO,
        );
        assert_eq!(r.state(), BenchState::Ready);
        assert!(r.set_maintenance(true).is_some());
        assert_eq!(*rx.borrow(), BenchState::Maintenance);
        assert_eq!(r.set_maintenance(true), None);
        assert_eq!(
            r.set_maintenance(false),
            Some((BenchState::Maintenance, BenchState::Ready))
        );
        assert_eq!(r.set_maintenance(false), None);
    }
}
