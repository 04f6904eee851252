//! Host metrics of the bench machine via `sysinfo`: CPU, memory, disks,
//! temperatures and network bytes. Only what is configured is refreshed:
//! a full `sysinfo` refresh walks every process, which a bench agent has no
//! business paying for.
//!
//! A collector with nothing to report (no hwmon sensors on a VM, no real
//! filesystem in a container) records no series and says so once at debug
//! level; it is not an error, and it is not repeated every interval.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};
use opentelemetry::trace::{TraceContextExt, Tracer};
use serde::Deserialize;
use sysinfo::{Components, DiskRefreshKind, Disks, MINIMUM_CPU_UPDATE_INTERVAL, Networks, System};
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

/// The `sysinfo` handles for the configured collectors and the instruments
/// they record into. [`run`] calls [`HostMetrics::collect`] on every tick.
pub struct HostMetrics {
    collectors: HashSet<Collector>,
    system: System,
    /// When CPU times were last sampled: usage is the difference between two
    /// samples, so a second sample taken too soon says nothing.
    cpu_sampled_at: Instant,
    disks: Option<Disks>,
    components: Option<Components>,
    networks: Option<Networks>,
    /// Collectors already reported (at debug) as having nothing to record.
    reported_empty: HashSet<Collector>,
    instruments: Instruments,
}

impl HostMetrics {
    pub fn new(collectors: &[Collector], meter: &Meter) -> HostMetrics {
        let collectors: HashSet<Collector> = collectors.iter().copied().collect();
        let has = |c| collectors.contains(&c);
        let mut system = System::new();
        if has(Collector::Cpu) {
            // The first sample of a fresh `System` is the average since boot;
            // take it now so the first recorded value covers the agent's time.
            system.refresh_cpu_usage();
        }
        HostMetrics {
            system,
            cpu_sampled_at: Instant::now(),
            disks: has(Collector::Disk)
                .then(|| Disks::new_with_refreshed_list_specifics(storage())),
            components: has(Collector::Temperature).then(Components::new_with_refreshed_list),
            networks: has(Collector::Network).then(Networks::new_with_refreshed_list),
            reported_empty: HashSet::new(),
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
        let mut recorded = Vec::new();
        if self.collectors.contains(&Collector::Cpu) {
            recorded.push((Collector::Cpu, self.collect_cpu()));
        }
        if self.collectors.contains(&Collector::Memory) {
            recorded.push((Collector::Memory, self.collect_memory()));
        }
        if self.disks.is_some() {
            recorded.push((Collector::Disk, self.collect_disks()));
        }
        if self.components.is_some() {
            recorded.push((Collector::Temperature, self.collect_temperatures()));
        }
        if self.networks.is_some() {
            recorded.push((Collector::Network, self.collect_networks()));
        }
        for &(collector, n) in &recorded {
            if n > 0 {
                self.reported_empty.remove(&collector);
            } else if collector != Collector::Cpu && self.reported_empty.insert(collector) {
                tracing::debug!(
                    ?collector,
                    "host metrics: nothing to record on this machine"
                );
            }
        }
        recorded.iter().map(|(_, n)| n).sum()
    }

    fn collect_cpu(&mut self) -> usize {
        // A tick right after start (the interval fires at once) comes before
        // the kernel has counted enough jiffies for a meaningful ratio.
        if self.cpu_sampled_at.elapsed() < MINIMUM_CPU_UPDATE_INTERVAL {
            return 0;
        }
        self.system.refresh_cpu_usage();
        self.cpu_sampled_at = Instant::now();
        let ratio = f64::from(self.system.global_cpu_usage()) / 100.0;
        self.instruments.cpu.record(ratio.clamp(0.0, 1.0), &[]);
        1
    }

    fn collect_memory(&mut self) -> usize {
        self.system.refresh_memory();
        let total = self.system.total_memory();
        if total == 0 {
            return 0;
        }
        self.instruments
            .mem_used
            .record(self.system.used_memory(), &[]);
        self.instruments.mem_total.record(total, &[]);
        2
    }

    fn collect_disks(&mut self) -> usize {
        let Some(disks) = &mut self.disks else {
            return 0;
        };
        // Re-reads /proc/mounts, so filesystems mounted later are picked up.
        disks.refresh_specifics(true, storage());
        let mut n = 0;
        for d in disks.list() {
            let fs = d.file_system().to_string_lossy();
            if d.total_space() == 0 || PSEUDO_FS.contains(&fs.as_ref()) {
                continue;
            }
            // Available, not free: blocks reserved for root are full from a
            // test's point of view, as `df` counts them.
            let used = 1.0 - d.available_space() as f64 / d.total_space() as f64;
            let mount = d.mount_point().to_string_lossy().into_owned();
            self.instruments
                .disk_used
                .record(used.clamp(0.0, 1.0), &[KeyValue::new("mount", mount)]);
            n += 1;
        }
        n
    }

    fn collect_temperatures(&mut self) -> usize {
        let Some(components) = &mut self.components else {
            return 0;
        };
        components.refresh(true);
        let mut n = 0;
        for c in components.list() {
            if let Some(t) = c.temperature().filter(|t| t.is_finite()) {
                let sensor = KeyValue::new("sensor", c.label().to_string());
                self.instruments.temperature.record(f64::from(t), &[sensor]);
                n += 1;
            }
        }
        n
    }

    fn collect_networks(&mut self) -> usize {
        let Some(networks) = &mut self.networks else {
            return 0;
        };
        networks.refresh(true);
        let mut n = 0;
        for (name, data) in networks.list() {
            if name == "lo" {
                continue;
            }
            // `received()`/`transmitted()` are bytes since the previous
            // refresh (0 for an interface seen for the first time), so adding
            // them keeps the counter monotonic across interface resets.
            for (direction, bytes) in [
                ("receive", data.received()),
                ("transmit", data.transmitted()),
            ] {
                let attrs = [
                    KeyValue::new("interface", name.clone()),
                    KeyValue::new("direction", direction),
                ];
                self.instruments.network.add(bytes, &attrs);
                n += 1;
            }
        }
        n
    }
}

/// Space only: the default refresh also reads /proc/diskstats for I/O
/// counters nobody here records.
fn storage() -> DiskRefreshKind {
    DiskRefreshKind::nothing().with_storage()
}

/// One collection inside a `host_metrics.collect` span, so a slow `statfs`
/// on a hung network mount shows up in traces.
fn collect_traced<T: Tracer>(host: &mut HostMetrics, tracer: &T)
where
    T::Span: Send + Sync + 'static,
{
    tracer.in_span("host_metrics.collect", |cx| {
        let series = host.collect();
        cx.span().set_attribute(KeyValue::new(
            "host_metrics.series",
            i64::try_from(series).unwrap_or(i64::MAX),
        ));
    });
}

/// Collects every `interval` (the first at once) until cancelled.
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
        collect_traced(&mut host, &tracer);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    use super::*;

    /// A data point: metric name, `k=v` attributes joined by commas, value.
    type Point = (String, String, f64);

    fn provider() -> (SdkMeterProvider, InMemoryMetricExporter) {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        (provider, exporter)
    }

    fn points(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> Vec<Point> {
        provider.force_flush().unwrap();
        let rm = exporter.get_finished_metrics().unwrap().pop().unwrap();
        let mut out = Vec::new();
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            let name = m.name().to_string();
            let attrs = |a: &mut dyn Iterator<Item = &KeyValue>| {
                let mut kv: Vec<_> = a.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
                kv.sort();
                kv.join(",")
            };
            match m.data() {
                AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                    for p in g.data_points() {
                        out.push((name.clone(), attrs(&mut p.attributes()), p.value()));
                    }
                }
                AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                    for p in g.data_points() {
                        out.push((name.clone(), attrs(&mut p.attributes()), p.value() as f64));
                    }
                }
                AggregatedMetrics::U64(MetricData::Sum(s)) => {
                    for p in s.data_points() {
                        out.push((name.clone(), attrs(&mut p.attributes()), p.value() as f64));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// One collection, after the minimum CPU sampling interval, as on a tick.
    fn collect(collectors: &[Collector]) -> Vec<Point> {
        let (provider, exporter) = provider();
        let mut host = HostMetrics::new(collectors, &provider.meter("t"));
        std::thread::sleep(MINIMUM_CPU_UPDATE_INTERVAL);
        host.collect();
        points(&provider, &exporter)
    }

    fn named<'a>(points: &'a [Point], name: &str) -> Vec<&'a Point> {
        points.iter().filter(|p| p.0 == name).collect()
    }

    #[test]
    fn collects_cpu_memory_and_real_disks() {
        let points = collect(&Config::default().collectors);
        let cpu = named(&points, "bench_cpu_utilization");
        assert_eq!(cpu.len(), 1, "{points:?}");
        assert!((0.0..=1.0).contains(&cpu[0].2), "{cpu:?}");
        let used = named(&points, "bench_memory_used");
        let total = named(&points, "bench_memory_total");
        assert!(used[0].2 > 0.0, "{used:?}");
        assert!(total[0].2 >= used[0].2, "{total:?} {used:?}");
        let disks = named(&points, "bench_disk_used");
        assert!(
            disks.iter().any(|d| d.1 == "mount=/"),
            "this machine has a real root filesystem: {disks:?}"
        );
        for d in disks {
            assert!((0.0..=1.0).contains(&d.2), "{d:?}");
            assert!(!d.1.contains("/proc") && !d.1.contains("/sys/"), "{d:?}");
        }
        // A VM has no hwmon sensors: no temperature series, and no error.
        for t in named(&points, "bench_temperature") {
            assert!(t.1.starts_with("sensor="), "{t:?}");
        }
        for n in named(&points, "bench_network_io") {
            assert!(n.1.starts_with("direction="), "{n:?}");
            assert!(!n.1.ends_with("interface=lo"), "loopback is skipped: {n:?}");
        }
    }

    #[test]
    fn only_configured_collectors_are_recorded() {
        let without_disk: Vec<Collector> = Config::default()
            .collectors
            .into_iter()
            .filter(|c| *c != Collector::Disk)
            .collect();
        let points = collect(&without_disk);
        assert!(named(&points, "bench_disk_used").is_empty(), "{points:?}");
        assert!(
            !named(&points, "bench_memory_used").is_empty(),
            "{points:?}"
        );

        let points = collect(&[Collector::Memory]);
        assert!(!points.is_empty());
        assert!(
            points.iter().all(|p| p.0.starts_with("bench_memory")),
            "{points:?}"
        );
    }

    #[test]
    fn the_first_cpu_sample_waits_for_a_baseline() {
        let (provider, exporter) = provider();
        let mut host = HostMetrics::new(&[Collector::Cpu], &provider.meter("t"));
        assert_eq!(host.collect(), 0, "too soon after start");
        std::thread::sleep(MINIMUM_CPU_UPDATE_INTERVAL);
        assert_eq!(host.collect(), 1);
        assert_eq!(
            named(&points(&provider, &exporter), "bench_cpu_utilization").len(),
            1
        );
    }

    #[test]
    fn each_collection_is_a_span_counting_its_series() {
        let spans = InMemorySpanExporter::default();
        let tracers = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let (provider, _) = provider();
        let mut host = HostMetrics::new(&[Collector::Memory], &provider.meter("t"));
        collect_traced(&mut host, &tracers.tracer("t"));
        let finished = spans.get_finished_spans().unwrap();
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].name, "host_metrics.collect");
        let series = finished[0]
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "host_metrics.series")
            .map(|kv| kv.value.clone());
        assert_eq!(series, Some(opentelemetry::Value::I64(2)));
    }
}
