//! Host metrics of the bench machine via `sysinfo`: CPU, memory, disks,
//! temperatures and network bytes. Only what is configured is refreshed:
//! a full `sysinfo` refresh walks every process, which a bench agent has no
//! business paying for.
//!
//! Each collector runs on its own thread, never on the async runtime: a
//! `statvfs` on a hung NFS or FUSE mount blocks forever, and a slow hwmon
//! sensor for seconds, and neither may hold up the heartbeat (the agent's
//! runtime is single-threaded). A collection has until the next tick; one
//! that has not returned by then is an overrun: that collector's next
//! collections are skipped (no second thread piles up behind the hung one)
//! and counted in `benchtel_host_metrics_overruns_total{collector}`, logged
//! once when the episode starts and once when the collection returns. The
//! other collectors go on.
//!
//! A collector with nothing to report (no hwmon sensors on a VM, no real
//! filesystem in a container) records no series and says so once at debug
//! level; it is not an error, and it is not repeated every interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};
use opentelemetry::trace::{TraceContextExt, Tracer};
use serde::Deserialize;
use sysinfo::{Components, DiskRefreshKind, Disks, MINIMUM_CPU_UPDATE_INTERVAL, Networks, System};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::systemd::Beacon;

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

/// The instruments the collectors record into.
#[derive(Clone)]
struct Instruments {
    cpu: Gauge<f64>,
    mem_used: Gauge<u64>,
    mem_total: Gauge<u64>,
    disk_used: Gauge<f64>,
    temperature: Gauge<f64>,
    network: Counter<u64>,
}

impl Instruments {
    fn new(meter: &Meter) -> Instruments {
        Instruments {
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
        }
    }
}

impl Collector {
    pub fn as_str(self) -> &'static str {
        match self {
            Collector::Cpu => "cpu",
            Collector::Memory => "memory",
            Collector::Disk => "disk",
            Collector::Temperature => "temperature",
            Collector::Network => "network",
        }
    }
}

/// One collector's state: the seam between the schedule and `sysinfo`
/// (tests put a collector that blocks behind it).
pub trait Collect: Send {
    /// One collection into the instruments; returns how many series it
    /// recorded. May block: it runs on the collector's own thread.
    fn collect(&mut self) -> usize;
}

/// Builds a collector, on its own thread (listing disks already calls
/// `statvfs` on every mount).
pub type MakeCollect = Box<dyn FnOnce() -> Box<dyn Collect> + Send>;

/// The `sysinfo` collector for `collector`, recording into `meter`.
pub fn sysinfo_collector(collector: Collector, meter: &Meter) -> MakeCollect {
    let ins = Instruments::new(meter);
    match collector {
        Collector::Cpu => Box::new(move || Box::new(Cpu::new(ins))),
        Collector::Memory => Box::new(move || {
            Box::new(Memory {
                system: System::new(),
                ins,
            })
        }),
        Collector::Disk => Box::new(move || {
            Box::new(Disk {
                disks: Disks::new_with_refreshed_list_specifics(storage()),
                ins,
            })
        }),
        Collector::Temperature => Box::new(move || {
            Box::new(Temperature {
                components: Components::new_with_refreshed_list(),
                ins,
            })
        }),
        Collector::Network => Box::new(move || {
            Box::new(Network {
                networks: Networks::new_with_refreshed_list(),
                ins,
            })
        }),
    }
}

struct Cpu {
    system: System,
    /// When CPU times were last sampled: usage is the difference between two
    /// samples, so a second sample taken too soon says nothing.
    sampled_at: Instant,
    ins: Instruments,
}

impl Cpu {
    fn new(ins: Instruments) -> Cpu {
        let mut system = System::new();
        // The first sample of a fresh `System` is the average since boot;
        // take it now so the first recorded value covers the agent's time.
        system.refresh_cpu_usage();
        Cpu {
            system,
            sampled_at: Instant::now(),
            ins,
        }
    }
}

impl Collect for Cpu {
    fn collect(&mut self) -> usize {
        // A tick right after start (the interval fires at once) comes before
        // the kernel has counted enough jiffies for a meaningful ratio.
        if self.sampled_at.elapsed() < MINIMUM_CPU_UPDATE_INTERVAL {
            return 0;
        }
        self.system.refresh_cpu_usage();
        self.sampled_at = Instant::now();
        let ratio = f64::from(self.system.global_cpu_usage()) / 100.0;
        self.ins.cpu.record(ratio.clamp(0.0, 1.0), &[]);
        1
    }
}

struct Memory {
    system: System,
    ins: Instruments,
}

impl Collect for Memory {
    fn collect(&mut self) -> usize {
        self.system.refresh_memory();
        let total = self.system.total_memory();
        if total == 0 {
            return 0;
        }
        self.ins.mem_used.record(self.system.used_memory(), &[]);
        self.ins.mem_total.record(total, &[]);
        2
    }
}

struct Disk {
    disks: Disks,
    ins: Instruments,
}

impl Collect for Disk {
    fn collect(&mut self) -> usize {
        // Re-reads /proc/mounts, so filesystems mounted later are picked up.
        self.disks.refresh_specifics(true, storage());
        let mut n = 0;
        for d in self.disks.list() {
            let fs = d.file_system().to_string_lossy();
            if d.total_space() == 0 || PSEUDO_FS.contains(&fs.as_ref()) {
                continue;
            }
            // Available, not free: blocks reserved for root are full from a
            // test's point of view, as `df` counts them.
            let used = 1.0 - d.available_space() as f64 / d.total_space() as f64;
            let mount = d.mount_point().to_string_lossy().into_owned();
            self.ins
                .disk_used
                .record(used.clamp(0.0, 1.0), &[KeyValue::new("mount", mount)]);
            n += 1;
        }
        n
    }
}

struct Temperature {
    components: Components,
    ins: Instruments,
}

impl Collect for Temperature {
    fn collect(&mut self) -> usize {
        self.components.refresh(true);
        let mut n = 0;
        for c in self.components.list() {
            if let Some(t) = c.temperature().filter(|t| t.is_finite()) {
                let sensor = KeyValue::new("sensor", c.label().to_string());
                self.ins.temperature.record(f64::from(t), &[sensor]);
                n += 1;
            }
        }
        n
    }
}

struct Network {
    networks: Networks,
    ins: Instruments,
}

impl Collect for Network {
    fn collect(&mut self) -> usize {
        self.networks.refresh(true);
        let mut n = 0;
        for (name, data) in self.networks.list() {
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
                self.ins.network.add(bytes, &attrs);
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
/// on a hung network mount shows up in traces; says once (at debug) when
/// the collector has nothing to record on this machine.
fn collect_traced<T: Tracer>(
    collector: Collector,
    part: &mut dyn Collect,
    reported_empty: &mut bool,
    tracer: &T,
) -> usize
where
    T::Span: Send + Sync + 'static,
{
    let series = tracer.in_span("host_metrics.collect", |cx| {
        let series = part.collect();
        cx.span()
            .set_attribute(KeyValue::new("collector", collector.as_str()));
        cx.span().set_attribute(KeyValue::new(
            "host_metrics.series",
            i64::try_from(series).unwrap_or(i64::MAX),
        ));
        series
    });
    if series > 0 {
        *reported_empty = false;
    } else if collector != Collector::Cpu && !std::mem::replace(reported_empty, true) {
        tracing::debug!(
            collector = collector.as_str(),
            "host metrics: nothing to record on this machine"
        );
    }
    series
}

/// One collector's thread, and the schedule's view of it.
struct Worker {
    collector: Collector,
    requests: SyncSender<()>,
    /// Set when a collection is asked for, cleared by the thread when it
    /// returns.
    busy: Arc<AtomicBool>,
    started: tokio::time::Instant,
    /// The current overrun episode: since when, and collections skipped.
    overrun: Option<(tokio::time::Instant, u64)>,
}

impl Worker {
    fn spawn(collector: Collector, make: MakeCollect) -> std::io::Result<Worker> {
        let (requests, rx) = std::sync::mpsc::sync_channel(1);
        let busy = Arc::new(AtomicBool::new(false));
        let done = busy.clone();
        std::thread::Builder::new()
            .name(format!("host-{}", collector.as_str()))
            .spawn(move || serve(collector, make, &rx, &done))?;
        Ok(Worker {
            collector,
            requests,
            busy,
            started: tokio::time::Instant::now(),
            overrun: None,
        })
    }

    /// Starts a collection, or counts an overrun if the last one is still
    /// running.
    fn tick(&mut self, overruns: &Counter<u64>, interval: Duration) {
        let c = self.collector.as_str();
        if self.busy.load(Ordering::Acquire) {
            overruns.add(1, &[KeyValue::new("collector", c)]);
            match &mut self.overrun {
                Some((_, skipped)) => *skipped += 1,
                None => {
                    tracing::warn!(collector = c, deadline = ?interval,
                        "host metrics: the {c} collection has not returned within its interval \
                         (a hung NFS/FUSE mount or a slow sensor?); skipping it until it does, \
                         counted in benchtel_host_metrics_overruns_total; heartbeats and the \
                         other collectors go on");
                    self.overrun = Some((self.started, 1));
                }
            }
            return;
        }
        if let Some((since, skipped)) = self.overrun.take() {
            tracing::info!(collector = c, skipped, hung_for = ?since.elapsed(),
                "host metrics: the {c} collection returned; collecting again");
        }
        self.busy.store(true, Ordering::Release);
        self.started = tokio::time::Instant::now();
        if let Err(TrySendError::Disconnected(())) = self.requests.try_send(()) {
            // The thread is gone (it panicked): this stays an overrun.
            tracing::error!(
                collector = c,
                "host metrics: the {c} collector thread is gone"
            );
        }
    }
}

/// The collector's thread: builds it, then collects on each request until
/// the schedule goes away.
fn serve(collector: Collector, make: MakeCollect, rx: &Receiver<()>, busy: &AtomicBool) {
    let tracer = opentelemetry::global::tracer("benchtel");
    let mut make = Some(make);
    let mut part: Option<Box<dyn Collect>> = None;
    let mut reported_empty = false;
    while rx.recv().is_ok() {
        if let Some(make) = make.take() {
            part = Some(make());
        }
        if let Some(p) = part.as_mut() {
            collect_traced(collector, p.as_mut(), &mut reported_empty, &tracer);
        }
        busy.store(false, Ordering::Release);
    }
}

/// Collects every `interval` (the first at once) until cancelled, each
/// configured collector on its own thread.
pub async fn run(cfg: Config, meter: Meter, beacon: Beacon, cancel: CancellationToken) {
    let collectors = cfg
        .collectors
        .iter()
        .map(|c| (*c, sysinfo_collector(*c, &meter)))
        .collect();
    run_with(collectors, cfg.interval, &meter, beacon, cancel).await;
}

/// [`run`] with the collectors given: the seam tests use.
pub async fn run_with(
    collectors: Vec<(Collector, MakeCollect)>,
    interval: Duration,
    meter: &Meter,
    beacon: Beacon,
    cancel: CancellationToken,
) {
    let overruns = meter
        .u64_counter("benchtel_host_metrics_overruns")
        .with_description(
            "Host metric collections skipped because the previous one had not returned",
        )
        .build();
    let mut workers = Vec::new();
    for (collector, make) in collectors {
        match Worker::spawn(collector, make) {
            Ok(w) => workers.push(w),
            Err(e) => tracing::error!(collector = collector.as_str(), error = %e,
                "host metrics: cannot start the collector's thread; it is off"),
        }
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        beacon.busy_for(interval);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        for w in &mut workers {
            w.tick(&overruns, interval);
        }
    }
    beacon.idle();
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
        let meter = provider.meter("t");
        let mut parts: Vec<Box<dyn Collect>> = collectors
            .iter()
            .map(|c| sysinfo_collector(*c, &meter)())
            .collect();
        std::thread::sleep(MINIMUM_CPU_UPDATE_INTERVAL);
        for p in &mut parts {
            p.collect();
        }
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
        let mut cpu = sysinfo_collector(Collector::Cpu, &provider.meter("t"))();
        assert_eq!(cpu.collect(), 0, "too soon after start");
        std::thread::sleep(MINIMUM_CPU_UPDATE_INTERVAL);
        assert_eq!(cpu.collect(), 1);
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
        let mut memory = sysinfo_collector(Collector::Memory, &provider.meter("t"))();
        let mut empty = false;
        collect_traced(
            Collector::Memory,
            memory.as_mut(),
            &mut empty,
            &tracers.tracer("t"),
        );
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

    /// A collector that blocks until the test lets it go, as `statvfs` on
    /// a hung mount does; counts how often it was started.
    struct Hung {
        release: std::sync::mpsc::Receiver<()>,
        started: Arc<std::sync::atomic::AtomicUsize>,
        returned: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Collect for Hung {
        fn collect(&mut self) -> usize {
            self.started.fetch_add(1, Ordering::SeqCst);
            // Bounded, so a collection run on the runtime again makes the
            // test fail (too many starts, no overruns) instead of hang.
            let _ = self.release.recv_timeout(Duration::from_secs(20));
            self.returned.fetch_add(1, Ordering::SeqCst);
            0
        }
    }

    /// Overruns of the disk collector (the memory collector runs for real
    /// beside it, in real time against the paused clock: its count says
    /// nothing).
    fn overruns(points: &[Point]) -> Vec<(String, f64)> {
        named(points, "benchtel_host_metrics_overruns")
            .into_iter()
            .filter(|p| p.1 == "collector=disk")
            .map(|p| (p.1.clone(), p.2))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_collector_neither_delays_heartbeats_nor_piles_up() {
        use crate::agent::sources::heartbeat;
        use crate::agent::state::Snapshot;
        use crate::systemd::Liveness;
        use std::sync::atomic::AtomicUsize;
        use tokio::sync::watch;

        let (provider, exporter) = provider();
        let meter = provider.meter("t");
        let (release, rx) = std::sync::mpsc::channel();
        let started = Arc::new(AtomicUsize::new(0));
        let returned = Arc::new(AtomicUsize::new(0));
        let hung = Hung {
            release: rx,
            started: started.clone(),
            returned: returned.clone(),
        };
        let liveness = Liveness::default();
        let cancel = CancellationToken::new();
        let collectors: Vec<(Collector, MakeCollect)> = vec![
            (Collector::Disk, Box::new(move || Box::new(hung))),
            (
                Collector::Memory,
                sysinfo_collector(Collector::Memory, &meter),
            ),
        ];
        let host = tokio::spawn({
            let (meter, beacon, cancel) = (
                meter.clone(),
                liveness.beacon("host_metrics", Duration::from_secs(15)),
                cancel.clone(),
            );
            async move { run_with(collectors, Duration::from_secs(15), &meter, beacon, cancel).await }
        });
        let (_state, state_rx) = watch::channel(Snapshot::default());
        let (beats_tx, beats) = watch::channel(None);
        let hb_cfg = heartbeat::Config {
            enabled: true,
            interval: Duration::from_secs(10),
        };
        let hb = tokio::spawn(heartbeat::run(
            hb_cfg,
            meter.clone(),
            state_rx,
            beats_tx,
            liveness.beacon("heartbeat", Duration::from_secs(10)),
            cancel.clone(),
        ));
        // The first tick is at once; its collection starts on the thread
        // (in real time) and hangs.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while started.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the collection never started"
            );
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
        tokio::time::sleep(Duration::from_secs(95)).await;
        // Beats at 0, 10, … 90 s: none late, while the disk collection
        // started at 0 s has not returned.
        let beat = beats.borrow().clone().expect("heartbeats go out");
        assert_eq!(beat.seq, 10);
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "no second thread behind the hung one"
        );
        // Ticks at 15, 30, … 90 s were skipped and counted; memory went on.
        let got = points(&provider, &exporter);
        assert_eq!(overruns(&got), vec![("collector=disk".to_string(), 6.0)]);
        assert!(!named(&got, "bench_memory_used").is_empty(), "{got:?}");
        assert_eq!(
            liveness.stalled(),
            None,
            "a hung mount is no reason to restart"
        );
        // The mount comes back: a later tick collects again (each tick
        // until the thread has noticed is one more overrun, no more).
        release.send(()).unwrap();
        release.send(()).unwrap();
        let mut ticks = 0;
        while started.load(Ordering::SeqCst) < 2 {
            assert!(ticks < 50, "collections did not resume");
            tokio::time::sleep(Duration::from_secs(15)).await;
            std::thread::sleep(Duration::from_millis(10));
            ticks += 1;
        }
        let after = overruns(&points(&provider, &exporter));
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(
            (6.0..6.0 + f64::from(ticks)).contains(&after[0].1),
            "{after:?} after {ticks} ticks"
        );
        cancel.cancel();
        host.await.unwrap();
        hb.await.unwrap();
    }
}
