//! Host metrics of the bench machine via `sysinfo`: CPU, memory, disks,
//! temperatures and network bytes. Only what is configured is refreshed:
//! a full `sysinfo` refresh walks every process, which a bench agent has no
//! business paying for.

use std::collections::HashSet;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};
use opentelemetry::trace::{Span, Tracer};
use serde::Deserialize;
use sysinfo::{Components, Disks, Networks, System};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// What to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Collector {
    Cpu,
    Memory,
    Disk,
    Temperature,
    Network,
}

/// `[sources.host_metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Collect host metrics at all.
    pub enabled: bool,
    /// Time between collections.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Which of cpu, memory, disk, temperature, network.
    pub collectors: Vec<Collector>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            interval: Duration::from_secs(15),
            collectors: vec![
                Collector::Cpu,
                Collector::Memory,
                Collector::Disk,
                Collector::Temperature,
                Collector::Network,
            ],
        }
    }
}

/// Filesystems that say nothing about the bench's disks.
const PSEUDO_FS: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "overlay",
    "squashfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "ramfs",
    "autofs",
    "devpts",
    "fuse.portal",
    "nsfs",
    "efivarfs",
];

struct Instruments {
    cpu: Gauge<f64>,
    mem_used: Gauge<u64>,
    mem_total: Gauge<u64>,
    disk_used: Gauge<f64>,
    temperature: Gauge<f64>,
    network: Counter<u64>,
}

pub struct HostMetrics {
    collectors: HashSet<Collector>,
    system: System,
    disks: Option<Disks>,
    components: Option<Components>,
    networks: Option<Networks>,
    instruments: Instruments,
}

impl HostMetrics {
    pub fn new(collectors: &[Collector], meter: &Meter) -> HostMetrics {
        let collectors: HashSet<Collector> = collectors.iter().copied().collect();
        let has = |c| collectors.contains(&c);
        HostMetrics {
            system: System::new(),
            disks: has(Collector::Disk).then(Disks::new_with_refreshed_list),
            components: has(Collector::Temperature).then(Components::new_with_refreshed_list),
            networks: has(Collector::Network).then(Networks::new_with_refreshed_list),
            instruments: Instruments {
                cpu: meter
                    .f64_gauge("bench_cpu_utilization")
                    .with_unit("1")
                    .with_description("CPU utilisation of the bench machine, 0 to 1")
                    .build(),
                mem_used: meter
                    .u64_gauge("bench_memory_used")
                    .with_unit("By")
                    .with_description("Memory in use on the bench machine")
                    .build(),
                mem_total: meter
                    .u64_gauge("bench_memory_total")
                    .with_unit("By")
                    .with_description("Memory of the bench machine")
                    .build(),
                disk_used: meter
                    .f64_gauge("bench_disk_used")
                    .with_unit("1")
                    .with_description("Share of each filesystem in use, 0 to 1")
                    .build(),
                temperature: meter
                    .f64_gauge("bench_temperature")
                    .with_unit("Cel")
                    .with_description("Temperature sensors of the bench machine")
                    .build(),
                network: meter
                    .u64_counter("bench_network_io")
                    .with_unit("By")
                    .with_description("Network bytes by interface and direction")
                    .build(),
            },
            collectors,
        }
    }

    /// One collection; returns how many series were recorded.
    pub fn collect(&mut self) -> usize {
        let mut series = 0;
        let i = &self.instruments;
        if self.collectors.contains(&Collector::Cpu) {
            self.system.refresh_cpu_usage();
            i.cpu
                .record(f64::from(self.system.global_cpu_usage()) / 100.0, &[]);
            series += 1;
        }
        if self.collectors.contains(&Collector::Memory) {
            self.system.refresh_memory();
            i.mem_used.record(self.system.used_memory(), &[]);
            i.mem_total.record(self.system.total_memory(), &[]);
            series += 2;
        }
        if let Some(disks) = &mut self.disks {
            disks.refresh(true);
            for d in disks.list() {
                let fs = d.file_system().to_string_lossy();
                if d.total_space() == 0 || PSEUDO_FS.contains(&fs.as_ref()) {
                    continue;
                }
                let used = 1.0 - d.available_space() as f64 / d.total_space() as f64;
                let mount = d.mount_point().to_string_lossy().into_owned();
                i.disk_used.record(used, &[KeyValue::new("mount", mount)]);
                series += 1;
            }
        }
        if let Some(components) = &mut self.components {
            components.refresh(true);
            for c in components.list() {
                if let Some(t) = c.temperature().filter(|t| t.is_finite()) {
                    let sensor = KeyValue::new("sensor", c.label().to_string());
                    i.temperature.record(f64::from(t), &[sensor]);
                    series += 1;
                }
            }
        }
        if let Some(networks) = &mut self.networks {
            networks.refresh(true);
            for (name, data) in networks.list() {
                if name == "lo" {
                    continue;
                }
                for (direction, bytes) in [
                    ("receive", data.received()),
                    ("transmit", data.transmitted()),
                ] {
                    let attrs = [
                        KeyValue::new("interface", name.clone()),
                        KeyValue::new("direction", direction),
                    ];
                    i.network.add(bytes, &attrs);
                    series += 1;
                }
            }
        }
        series
    }
}

/// Collects every `interval` until cancelled, each run inside a span.
pub async fn run(cfg: Config, meter: Meter, cancel: CancellationToken) {
    let mut host = HostMetrics::new(&cfg.collectors, &meter);
    let tracer = opentelemetry::global::tracer("benchtel");
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut span = tracer.start("host_metrics.collect");
        let series = host.collect();
        span.set_attribute(KeyValue::new("series", series as i64));
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    use super::*;

    /// (metric name, attributes, value) of every f64/u64 gauge point.
    fn collect(collectors: &[Collector]) -> Vec<(String, String, f64)> {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let mut host = HostMetrics::new(collectors, &provider.meter("t"));
        host.collect();
        provider.force_flush().unwrap();
        let rm = exporter.get_finished_metrics().unwrap().pop().unwrap();
        let mut out = Vec::new();
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            let attrs = |a: &mut dyn Iterator<Item = &KeyValue>| {
                a.map(|kv| format!("{}={}", kv.key, kv.value))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            match m.data() {
                AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                    for p in g.data_points() {
                        out.push((m.name().to_string(), attrs(&mut p.attributes()), p.value()));
                    }
                }
                AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                    for p in g.data_points() {
                        out.push((
                            m.name().to_string(),
                            attrs(&mut p.attributes()),
                            p.value() as f64,
                        ));
                    }
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn collects_cpu_memory_and_real_disks() {
        let points = collect(&Config::default().collectors);
        let get = |n: &str| points.iter().filter(|p| p.0 == n).collect::<Vec<_>>();
        let cpu = get("bench_cpu_utilization");
        assert_eq!(cpu.len(), 1);
        assert!((0.0..=1.0).contains(&cpu[0].2));
        assert!(get("bench_memory_used")[0].2 > 0.0);
        assert!(get("bench_memory_total")[0].2 >= get("bench_memory_used")[0].2);
        let disks = get("bench_disk_used");
        assert!(!disks.is_empty(), "this machine has a real root filesystem");
        for d in disks {
            assert!(d.1.starts_with("mount="), "{d:?}");
            assert!((0.0..=1.0).contains(&d.2), "{d:?}");
        }
        // No sensors on a VM: no temperature series, and no error either.
    }

    #[test]
    fn only_configured_collectors_are_recorded() {
        let points = collect(&[Collector::Memory]);
        assert!(
            points.iter().all(|p| p.0.starts_with("bench_memory")),
            "{points:?}"
        );
        assert!(!points.is_empty());
    }
}
