//! Where every run of every check and probe is recorded: the instruments,
//! their histogram buckets, and the label sets each check builds once, so
//! that recording a run allocates nothing for its labels.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

use super::{Code, Kind, Outcome};

/// Bucket boundaries (seconds) of `bench_health_check_duration_seconds` and
/// `bench_probe_duration_seconds`. A run takes from a millisecond (a file,
/// a local TCP connect) to its timeout (seconds); a GPIO edge window, a
/// `gpio_stuck` hold or a boot followed by `serial_watch` can take minutes.
/// The SDK's default buckets (0, 5, 10 … 10 000) are meant for milliseconds
/// and would put nearly every run in the first one.
pub const RUN_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Bucket boundaries (seconds) of `bench_boot_milestone_seconds`: from a
/// reset marker to the first bootloader line (well under a second) up to a
/// login prompt (tens of seconds to minutes on a slow board).
pub const BOOT_BUCKETS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0,
];

/// The instruments of checks and probes, as the SDK names them (before the
/// exporters add a unit suffix). Their series are bounded by the
/// configuration ([`series_limit`]), not by the SDK's default of 2000.
pub const INSTRUMENTS: [&str; 7] = [
    "bench_boot_milestone",
    "bench_probe_value",
    "bench_health_check_up",
    "bench_health_failures",
    "bench_health_check_duration",
    "bench_probe_success",
    "bench_probe_duration",
];

/// How many series any one of [`INSTRUMENTS`] can have with `checks`: a
/// failure series per check and result code is the most a check makes,
/// plus its probe values and boot milestones.
///
/// The SDK allocates each instrument's tables for its series limit up front
/// (two of 2001 entries per instrument and reader by default), and sixty
/// checks writing into them touch nearly every page: sized to the
/// configuration, a busy agent's RSS is 0.8 MiB smaller (`BENCHMARKS.md`).
pub fn series_limit(checks: &[super::CheckConfig]) -> usize {
    let per_check = |c: &super::CheckConfig| {
        let extra = match &c.kind {
            Kind::SerialExpect(e) => e.expect.capture_names().flatten().count(),
            Kind::SerialWatch(w) => w.milestones.len(),
            Kind::GpioEdges(_) => 1,
            _ => 0,
        };
        Code::ALL.len() + extra
    };
    checks.iter().map(per_check).sum::<usize>().max(1)
}

/// The instruments every check records into, built once by the agent's
/// composition root.
pub struct Instruments {
    pub(super) boot: Histogram<f64>,
    pub(super) up: Gauge<i64>,
    values: Gauge<f64>,
    failures: Counter<u64>,
    duration: Histogram<f64>,
    probe_success: Gauge<i64>,
    probe_duration: Histogram<f64>,
}

impl Instruments {
    pub fn new(meter: &Meter) -> Instruments {
        Instruments {
            boot: meter
                .f64_histogram(INSTRUMENTS[0])
                .with_unit("s")
                .with_description("Time from a reset marker on the console to each boot milestone")
                .with_boundaries(BOOT_BUCKETS.to_vec())
                .build(),
            values: meter
                .f64_gauge(INSTRUMENTS[1])
                .with_description("Values read by probes, e.g. a firmware version or a signal level")
                .build(),
            up: meter
                .i64_gauge(INSTRUMENTS[2])
                .with_description("1 while a health check is up, 0 while it is down")
                .build(),
            failures: meter
                .u64_counter(INSTRUMENTS[3])
                .with_description("Failed health-check runs, by check and result code")
                .build(),
            duration: meter
                .f64_histogram(INSTRUMENTS[4])
                .with_unit("s")
                .with_description("Duration of health-check runs")
                .with_boundaries(RUN_BUCKETS.to_vec())
                .build(),
            probe_success: meter
                .i64_gauge(INSTRUMENTS[5])
                .with_description(
                    "Result of a probe's last run: 1 passed, 0 failed (not the up/down verdict)",
                )
                .build(),
            probe_duration: meter
                .f64_histogram(INSTRUMENTS[6])
                .with_unit("s")
                .with_description(
                    "Duration of probe runs; for serial_watch, from the reset marker to the boot's verdict",
                )
                .with_boundaries(RUN_BUCKETS.to_vec())
                .build(),
        }
    }

    /// Records one finished run of a scheduled check or probe.
    pub(super) fn run(&self, labels: &Labels, outcome: &Outcome, took: Duration) {
        let took = took.as_secs_f64();
        self.duration.record(took, &labels.check);
        if outcome.code != Code::Ok {
            self.failed(labels, outcome.code);
        }
        if let Some(probe) = &labels.probe {
            self.probe_success
                .record(i64::from(outcome.code == Code::Ok), &probe.success);
            self.probe_duration.record(took, &probe.duration);
        }
        for (name, v) in &outcome.values {
            let attrs = [
                labels.probe_name.clone(),
                KeyValue::new("value", name.clone()),
            ];
            self.values.record(*v, &attrs);
        }
    }

    /// Counts a failed run.
    pub(super) fn failed(&self, labels: &Labels, code: Code) {
        let attrs = [
            labels.check[0].clone(),
            KeyValue::new("code", code.as_str()),
        ];
        self.failures.add(1, &attrs);
    }

    /// The result of a probe whose runs are not scheduled (`serial_watch`):
    /// `took` is `None` when there is no run to time (a lost port).
    pub(super) fn probe_result(&self, labels: &Labels, ok: bool, took: Option<Duration>) {
        if let Some(probe) = &labels.probe {
            self.probe_success.record(i64::from(ok), &probe.success);
            if let Some(took) = took {
                self.probe_duration
                    .record(took.as_secs_f64(), &probe.duration);
            }
        }
    }
}

/// The label sets of one check, built once; cloning them is a reference
/// count, not a string copy.
pub(super) struct Labels {
    pub(super) name: Arc<str>,
    /// `{check}`
    pub(super) check: [KeyValue; 1],
    /// `probe="…"`, for `bench_probe_value` and `bench_boot_milestone_seconds`.
    pub(super) probe_name: KeyValue,
    /// Only for the probe kinds.
    probe: Option<ProbeLabels>,
}

struct ProbeLabels {
    /// `{probe,kind}`
    success: [KeyValue; 2],
    /// `{probe}`
    duration: [KeyValue; 1],
}

impl Labels {
    pub(super) fn new(name: &str, kind: &Kind) -> Labels {
        let name: Arc<str> = Arc::from(name);
        let probe_name = KeyValue::new("probe", name.clone());
        let probe = kind.is_probe().then(|| ProbeLabels {
            success: [probe_name.clone(), KeyValue::new("kind", kind.type_name())],
            duration: [probe_name.clone()],
        });
        Labels {
            check: [KeyValue::new("check", name.clone())],
            name,
            probe_name,
            probe,
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    use super::*;
    use crate::agent::checks::CheckConfig;

    fn checks() -> Vec<CheckConfig> {
        #[derive(serde::Deserialize)]
        struct File {
            checks: Vec<CheckConfig>,
        }
        let file: File = toml::from_str(
            r#"
[[checks]]
name = "psu"
type = "tcp"
address = "127.0.0.1:1"
[[checks]]
name = "version"
type = "serial_expect"
port = "/dev/null"
expect = 'v(?P<major>\d+)\.(?P<minor>\d+)'
[[checks]]
name = "boot"
type = "serial_watch"
port = "/dev/null"
reset = "SPL"
milestones = [
  { name = "spl", pattern = "SPL", within = "1s" },
  { name = "kernel", pattern = "kernel", within = "5s" },
  { name = "login", pattern = "login:", within = "9s" },
]
[[checks]]
name = "led"
type = "gpio_edges"
line = "LED"
window = "1s"
min_edges = 1
"#,
        )
        .unwrap();
        file.checks
    }

    /// (instrument, whether an overflow series appeared, series) after
    /// recording everything `checks` can make.
    fn record_all(limit: usize) -> Vec<(String, bool, usize)> {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .with_view(crate::telemetry::bounded_view(vec![(&INSTRUMENTS, limit)]))
            .build();
        let instruments = Instruments::new(&provider.meter("t"));
        for c in checks() {
            let labels = Labels::new(&c.name, &c.kind);
            let mut outcome = Outcome::ok("");
            outcome.values = vec![("major".into(), 3.0), ("minor".into(), 5.0)];
            for code in Code::ALL {
                outcome.code = code;
                instruments.run(&labels, &outcome, Duration::from_millis(3));
                instruments.up.record(1, &labels.check);
            }
            for m in ["spl", "kernel", "login"] {
                let attrs = [labels.probe_name.clone(), KeyValue::new("milestone", m)];
                instruments.boot.record(1.0, &attrs);
            }
        }
        provider.force_flush().unwrap();
        let rm = exporter.get_finished_metrics().unwrap().pop().unwrap();
        let mut out = Vec::new();
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            let sets: Vec<Vec<String>> = match m.data() {
                AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                    .data_points()
                    .map(|p| p.attributes().map(|kv| kv.key.to_string()).collect())
                    .collect(),
                AggregatedMetrics::F64(MetricData::Gauge(g)) => g
                    .data_points()
                    .map(|p| p.attributes().map(|kv| kv.key.to_string()).collect())
                    .collect(),
                AggregatedMetrics::I64(MetricData::Gauge(g)) => g
                    .data_points()
                    .map(|p| p.attributes().map(|kv| kv.key.to_string()).collect())
                    .collect(),
                AggregatedMetrics::U64(MetricData::Sum(s)) => s
                    .data_points()
                    .map(|p| p.attributes().map(|kv| kv.key.to_string()).collect())
                    .collect(),
                _ => panic!("unexpected data for {}", m.name()),
            };
            let overflow = sets
                .iter()
                .any(|keys| keys.iter().any(|k| k == "otel.metric.overflow"));
            out.push((m.name().to_string(), overflow, sets.len()));
        }
        out
    }

    #[test]
    fn the_series_limit_holds_every_series_checks_can_make() {
        let limit = series_limit(&checks());
        let got = record_all(limit);
        assert_eq!(got.len(), INSTRUMENTS.len(), "{got:?}");
        assert!(got.iter().all(|(_, overflow, _)| !overflow), "{got:?}");
        let failures = got.iter().find(|(n, ..)| n == "bench_health_failures");
        // Four checks, every code but ok.
        let failing = Code::ALL.len() - 1;
        assert_eq!(failures.map(|f| f.2), Some(4 * failing), "{got:?}");
        // The limit is what the SDK enforces: one less and something spills.
        let smaller = record_all(4 * failing - 1);
        assert!(
            smaller.iter().any(|(_, overflow, _)| *overflow),
            "{smaller:?}"
        );
        assert!(
            limit < 100,
            "sized to the config, not the SDK's 2000: {limit}"
        );
    }
}
