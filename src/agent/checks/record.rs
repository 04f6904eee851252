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

pub(super) struct Instruments {
    pub(super) boot: Histogram<f64>,
    pub(super) up: Gauge<i64>,
    values: Gauge<f64>,
    failures: Counter<u64>,
    duration: Histogram<f64>,
    probe_success: Gauge<i64>,
    probe_duration: Histogram<f64>,
}

impl Instruments {
    pub(super) fn new(meter: &Meter) -> Instruments {
        Instruments {
            boot: meter
                .f64_histogram("bench_boot_milestone")
                .with_unit("s")
                .with_description("Time from a reset marker on the console to each boot milestone")
                .with_boundaries(BOOT_BUCKETS.to_vec())
                .build(),
            values: meter
                .f64_gauge("bench_probe_value")
                .with_description("Values read by probes, e.g. a firmware version or a signal level")
                .build(),
            up: meter
                .i64_gauge("bench_health_check_up")
                .with_description("1 while a health check is up, 0 while it is down")
                .build(),
            failures: meter
                .u64_counter("bench_health_failures")
                .with_description("Failed health-check runs, by check and result code")
                .build(),
            duration: meter
                .f64_histogram("bench_health_check_duration")
                .with_unit("s")
                .with_description("Duration of health-check runs")
                .with_boundaries(RUN_BUCKETS.to_vec())
                .build(),
            probe_success: meter
                .i64_gauge("bench_probe_success")
                .with_description(
                    "Result of a probe's last run: 1 passed, 0 failed (not the up/down verdict)",
                )
                .build(),
            probe_duration: meter
                .f64_histogram("bench_probe_duration")
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
