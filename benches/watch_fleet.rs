//! `benchtel-watch` at fleet scale (figures go in BENCHMARKS.md).
//!
//! A real Mosquitto, the real `benchtel-watch` binary subscribed to it, an
//! in-bench HTTP receiver playing Alertmanager, and a load generator: a few
//! MQTT connections publishing heartbeats in the agents' wire format (QoS 1,
//! `interval_s = 10`), each bench at its own phase so the rate is steady.
//! After a warm-up, over a steady window, it measures:
//!
//! - the watch's CPU (utime + stime from `/proc/<pid>/stat`) as a share of
//!   one core, and its RSS (VmRSS sampled every second, VmHWM at the end);
//! - `GET /metrics`: time to the last byte, with and without gzip, and the
//!   body size (scraped every `scrape_every`, alternating);
//! - offline detection: a few hundred benches spread over all sites stop
//!   heartbeating at random instants; per bench, the time from its last
//!   heartbeat to the watch's verdict (the `startsAt` of its `BenchOffline`
//!   alert, which is the tick that judged it offline) and to the alert's
//!   arrival at the receiver;
//! - heartbeat loss: publishes the broker acknowledged against
//!   `benchtel_watch_heartbeats_total` on the watch's `/metrics`.
//!
//! `cargo bench --bench watch_fleet` runs 100 sites × 1000 benches (10 000
//! msg/s) three times; `cargo test --all-targets` runs it tiny as a smoke
//! test. `WATCH_FLEET_BENCHES` (a multiple of 1000), `WATCH_FLEET_RUNS` and
//! `WATCH_FLEET_OFFLINE_AFTER` (seconds) change the full size.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use benchtel::wire::{Heartbeat, Topic};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use support::mosquitto::Mosquitto;
use support::watch::Watch;

/// The size and timing of one run.
#[derive(Debug, Clone)]
struct Plan {
    sites: usize,
    per_site: usize,
    /// Heartbeat interval of every simulated bench, seconds.
    interval: f64,
    connections: usize,
    warmup: Duration,
    window: Duration,
    /// Benches that stop heartbeating during the window.
    stopped: usize,
    /// They stop at random instants within this many seconds of its start.
    stop_spread: f64,
    offline_after: f64,
    /// `alerts.hold`.
    hold: f64,
    scrape_every: Duration,
    runs: usize,
}

impl Plan {
    fn full() -> Plan {
        let benches = env_num("WATCH_FLEET_BENCHES", 100_000.0) as usize;
        let offline_after = env_num("WATCH_FLEET_OFFLINE_AFTER", 60.0);
        let stop_spread = 10.0;
        let hold = 10.0;
        Plan {
            sites: (benches / 1000).max(1),
            per_site: 1000.min(benches),
            interval: 10.0,
            connections: 10,
            warmup: Duration::from_secs(30),
            // Long enough for every stopped bench to be judged and alerted.
            window: Duration::from_secs_f64(stop_spread + offline_after + hold + 10.0),
            stopped: 300,
            stop_spread,
            offline_after,
            hold,
            scrape_every: Duration::from_secs(10),
            runs: env_num("WATCH_FLEET_RUNS", 3.0) as usize,
        }
    }

    fn tiny() -> Plan {
        Plan {
            sites: 2,
            per_site: 100,
            interval: 1.0,
            connections: 2,
            warmup: Duration::from_secs(3),
            window: Duration::from_secs(8),
            stopped: 10,
            stop_spread: 1.0,
            offline_after: 3.0,
            hold: 1.0,
            scrape_every: Duration::from_secs(1),
            runs: 1,
        }
    }

    fn benches(&self) -> usize {
        self.sites * self.per_site
    }
}

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full { Plan::full() } else { Plan::tiny() };
    println!(
        "watch_fleet: {} sites × {} benches = {} benches, one heartbeat each per {} s ({:.0} msg/s) over {} connections; offline_after {} s, hold {} s; {} run(s)",
        plan.sites,
        plan.per_site,
        plan.benches(),
        plan.interval,
        plan.benches() as f64 / plan.interval,
        plan.connections,
        plan.offline_after,
        plan.hold,
        plan.runs
    );
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    costs(&plan);
    let results: Vec<Outcome> = (1..=plan.runs)
        .map(|i| {
            println!("\n== run {i} of {}", plan.runs);
            let o = run(&plan);
            o.print();
            o
        })
        .collect();
    summarize(&plan, &results);
    if !full {
        smoke_checks(&plan, &results[0]);
    }
}

/// The tiny run must at least show that everything was wired up.
fn smoke_checks(plan: &Plan, o: &Outcome) {
    assert_eq!(o.bench_lines, plan.benches(), "every bench on /metrics");
    assert_eq!(o.undetected, 0, "every stopped bench was alerted");
    assert_eq!(o.false_alerts, 0, "no running bench was alerted");
    assert!(o.received > 0 && o.acked > 0, "heartbeats went through");
}

/// What one run measured.
#[derive(Debug, Default, Clone)]
struct Outcome {
    cpu_share: f64,
    mosquitto_cpu_share: f64,
    generator_cpu_share: f64,
    /// Per thread name of the watch: share of one core running, and share
    /// of the window spent runnable but waiting for a CPU.
    threads: Vec<(String, f64, f64)>,
    rss_max_kib: u64,
    hwm_kib: u64,
    scrape_plain: Vec<f64>,
    scrape_gzip: Vec<f64>,
    body_plain: usize,
    body_gzip: usize,
    bench_lines: usize,
    verdict: Vec<f64>,
    pushed: Vec<f64>,
    undetected: usize,
    false_alerts: usize,
    other_alerts: Vec<String>,
    acked: u64,
    published: u64,
    received: u64,
    received_by_result: Vec<(String, u64)>,
    rejected: u64,
    load_before: String,
    load_after: String,
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

impl Outcome {
    fn loss(&self) -> i64 {
        self.acked as i64 - self.received as i64
    }

    fn print(&self) {
        println!(
            "watch CPU {:.1} % of one core (mosquitto {:.1} %, load generator {:.1} %)",
            100.0 * self.cpu_share,
            100.0 * self.mosquitto_cpu_share,
            100.0 * self.generator_cpu_share
        );
        for (name, cpu, wait) in &self.threads {
            println!(
                "  thread {name}: running {:.1} %, waiting for a CPU {:.1} %",
                100.0 * cpu,
                100.0 * wait
            );
        }
        println!(
            "watch RSS max {:.1} MiB in the window, VmHWM {:.1} MiB",
            self.rss_max_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0
        );
        println!(
            "GET /metrics plain: median {:.3} s of {:?} ({} bytes, {} benches); gzip: median {:.3} s of {:?} ({} bytes)",
            median(&self.scrape_plain),
            rounded(&self.scrape_plain),
            self.body_plain,
            self.bench_lines,
            median(&self.scrape_gzip),
            rounded(&self.scrape_gzip),
            self.body_gzip
        );
        println!(
            "offline verdict after the last heartbeat: p50 {:.3} s, p99 {:.3} s, max {:.3} s ({} benches, {} undetected, {} false alerts); alert received: p50 {:.3} s, p99 {:.3} s",
            median(&self.verdict),
            percentile(&self.verdict, 0.99),
            percentile(&self.verdict, 1.0),
            self.verdict.len(),
            self.undetected,
            self.false_alerts,
            median(&self.pushed),
            percentile(&self.pushed, 0.99)
        );
        if !self.other_alerts.is_empty() {
            println!("other alerts: {:?}", self.other_alerts);
        }
        println!(
            "heartbeats: {} published, {} acknowledged by the broker, {} counted by the watch {:?}, loss {} ({:.4} %); {} rejected",
            self.published,
            self.acked,
            self.received,
            self.received_by_result,
            self.loss(),
            100.0 * self.loss() as f64 / self.acked.max(1) as f64,
            self.rejected
        );
        println!(
            "load average before {}, after {}",
            self.load_before, self.load_after
        );
    }
}

fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}

fn summarize(plan: &Plan, all: &[Outcome]) {
    let m = |f: &dyn Fn(&Outcome) -> f64| median(&all.iter().map(f).collect::<Vec<_>>());
    println!("\n== medians over {} run(s)", all.len());
    println!(
        "watch CPU {:.1} % of one core; RSS max {:.1} MiB, VmHWM {:.1} MiB",
        100.0 * m(&|o| o.cpu_share),
        m(&|o| o.rss_max_kib as f64) / 1024.0,
        m(&|o| o.hwm_kib as f64) / 1024.0
    );
    println!(
        "/metrics plain {:.3} s, gzip {:.3} s",
        m(&|o| median(&o.scrape_plain)),
        m(&|o| median(&o.scrape_gzip))
    );
    println!(
        "offline verdict p50 {:.3} s, p99 {:.3} s (grace {:.0} s); alert received p99 {:.3} s",
        m(&|o| median(&o.verdict)),
        m(&|o| percentile(&o.verdict, 0.99)),
        plan.offline_after,
        m(&|o| percentile(&o.pushed, 0.99)),
    );
    println!(
        "heartbeat loss {:.4} %",
        m(&|o| 100.0 * o.loss() as f64 / o.acked.max(1) as f64)
    );
}

fn run(plan: &Plan) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = Mosquitto::with_config(
        // The watch's one session carries the whole fleet: let its
        // in-flight window and queue hold several seconds of it.
        "max_inflight_messages 1000\nmax_queued_messages 200000\n",
    );
    let alerts = Alerts::default();
    let am_port = rt.block_on(alerts.clone().serve());
    let watch = Watch::start(&format!(
        "[mqtt]\nurl = \"{}\"\n[liveness]\noffline_after = \"{}ms\"\n[alerts]\nalertmanagers = [\"http://127.0.0.1:{am_port}\"]\nhold = \"{}ms\"\n[log]\nlevel = \"info\"\n",
        broker.url(),
        (plan.offline_after * 1000.0) as u64,
        (plan.hold * 1000.0) as u64,
    ));
    let mut out = Outcome {
        load_before: loadavg(),
        ..Outcome::default()
    };
    let fleet = fleet(plan);
    let stats = Arc::new(GenStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let window_start = Instant::now() + plan.warmup;
    let t0 = wall() + plan.warmup.as_secs_f64();
    let stopping = pick_stopped(plan, t0);
    let generators: Vec<_> = fleet
        .into_iter()
        .enumerate()
        .map(|(i, benches)| {
            let benches = benches
                .into_iter()
                .map(|mut b| {
                    b.stop_at = stopping.get(&(b.site.clone(), b.id.clone())).copied();
                    b
                })
                .collect();
            rt.spawn(generate(
                broker.port,
                i,
                benches,
                plan.interval,
                stats.clone(),
                stop.clone(),
            ))
        })
        .collect();
    std::thread::sleep(window_start.saturating_duration_since(Instant::now()));

    let pids = [watch.pid(), broker.pid(), std::process::id()];
    let cpu0 = pids.map(cpu_ticks);
    let threads0 = thread_times(watch.pid());
    let started = Instant::now();
    let mut next_scrape = started;
    let mut gzip = false;
    while started.elapsed() < plan.window {
        out.rss_max_kib = out.rss_max_kib.max(status_kib(watch.pid(), "VmRSS"));
        if Instant::now() >= next_scrape {
            scrape_into(&watch.addr(), gzip, &mut out);
            gzip = !gzip;
            next_scrape += plan.scrape_every;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = pids.map(cpu_ticks);
    let share = |i: usize| (cpu1[i] - cpu0[i]) as f64 / clock_ticks() / secs;
    out.cpu_share = share(0);
    out.mosquitto_cpu_share = share(1);
    out.generator_cpu_share = share(2);
    out.threads = thread_shares(&threads0, &thread_times(watch.pid()), secs);
    out.hwm_kib = status_kib(watch.pid(), "VmHWM");

    let deadline = Instant::now() + Duration::from_secs_f64(plan.hold + 30.0);
    while alerts.count(&stopping) < stopping.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    let finished: Vec<Vec<SimBench>> = generators
        .into_iter()
        .map(|g| rt.block_on(g).expect("generator"))
        .collect();
    // Let the broker deliver what it still holds for the watch.
    settle(&watch, stats.acked.load(Ordering::SeqCst));
    detections(&finished, &alerts, &mut out);
    out.published = stats.published.load(Ordering::SeqCst);
    out.acked = stats.acked.load(Ordering::SeqCst);
    heartbeat_counts(&watch.metrics(), &mut out);
    out.load_after = loadavg();
    drop(watch);
    drop(broker);
    rt.shutdown_timeout(Duration::from_secs(2));
    out
}

/// Waits until the watch has counted `acked` heartbeats or its count stops
/// moving.
fn settle(watch: &Watch, acked: u64) {
    let mut last = 0;
    for _ in 0..20 {
        let mut o = Outcome::default();
        heartbeat_counts(&watch.metrics(), &mut o);
        if o.received >= acked || (o.received == last && last > 0) {
            return;
        }
        last = o.received;
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------- costs

/// CPU time of this thread, ns (`/proc/thread-self/schedstat`): wall
/// time on this shared machine says more about the neighbours.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Milliseconds of CPU since `since` (a [`cpu_ns`] reading).
fn ms(since: u64) -> f64 {
    (cpu_ns() - since) as f64 / 1e6
}

/// The watch's parts in this process, on the same fleet, one at a time: what
/// a heartbeat, a tick, a registry save and a scrape cost, and what a bench
/// costs in memory. No broker, no contention: the floor under the figures of
/// the real process.
fn costs(plan: &Plan) {
    use benchtel::watch::bench::{Beat, Transport};
    use benchtel::watch::exposition;
    use benchtel::watch::fleet::Fleet;
    use benchtel::watch::registry::Registry;

    let cfg = benchtel::watch::config::load(None, &benchtel::config::Env::default())
        .expect("default watch config");
    let benches: Vec<SimBench> = fleet(plan).into_iter().flatten().collect();
    let n = benches.len();
    let payload = |b: &SimBench, seq: u64| {
        serde_json::to_vec(&Heartbeat {
            bench: b.id.clone(),
            site: b.site.clone(),
            seq,
            run_id: b.run_id.clone(),
            boot_id: b.boot_id.clone(),
            sent_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            uptime_s: 1000,
            state: "ready".into(),
            why: None,
            agent_version: "0.1.0".into(),
            interval_s: Some(plan.interval),
            maintenance: None,
            context: Default::default(),
        })
        .expect("heartbeat JSON")
    };
    let beat = |body: &[u8]| {
        let hb: Heartbeat = serde_json::from_slice(body).expect("parse");
        Beat {
            transport: Transport::Mqtt,
            run_id: hb.run_id,
            seq: hb.seq,
            sent: Some(wall()),
            state: Some(hb.state),
            interval: hb.interval_s,
            boot_id: Some(hb.boot_id),
            agent_version: Some(hb.agent_version),
            why: None,
            maintenance: None,
            context: None,
        }
    };
    let now0 = wall();
    let rss0 = status_kib(std::process::id(), "VmRSS");
    let mut fleet = Fleet::new(std::sync::Arc::new(cfg), now0);
    for b in &benches {
        fleet
            .receive(&b.site, &b.id, &beat(&payload(b, 1)), now0)
            .expect("admitted");
    }
    let per_bench = (status_kib(std::process::id(), "VmRSS") - rss0) as f64 * 1024.0 / n as f64;
    let bodies: Vec<Vec<u8>> = benches.iter().map(|b| payload(b, 2)).collect();
    let started = cpu_ns();
    let beats: Vec<Beat> = bodies.iter().map(|p| beat(p)).collect();
    let parse_us = ms(started) * 1000.0 / n as f64;
    let started = cpu_ns();
    for (b, beat) in benches.iter().zip(&beats) {
        let _ = fleet.receive(&b.site, &b.id, beat, now0 + 5.0);
    }
    let receive_us = ms(started) * 1000.0 / n as f64;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut registry, _) = Registry::open(&dir.path().join("watch.db")).expect("registry");
    registry.save(&fleet.take_changes()).expect("first save");
    let ticks: Vec<f64> = (0..5)
        .map(|i| {
            let started = cpu_ns();
            let _ = fleet.tick(now0 + 6.0 + f64::from(i));
            ms(started)
        })
        .collect();
    let started = cpu_ns();
    let firing = fleet.firing(now0 + 11.0).len();
    let firing_ms = ms(started);
    // One second of heartbeats, then the registry saver's work.
    let second = (plan.benches() as f64 / plan.interval) as usize;
    for (b, beat) in benches.iter().zip(&beats).take(second) {
        let mut beat = beat.clone();
        beat.seq = 3;
        let _ = fleet.receive(&b.site, &b.id, &beat, now0 + 12.0);
    }
    let started = cpu_ns();
    let changes = fleet.take_changes();
    let take_ms = ms(started);
    let started = cpu_ns();
    registry.save(&changes).expect("save");
    let save_ms = ms(started);
    let started = cpu_ns();
    let snap = exposition::snapshot(&fleet);
    let snapshot_ms = ms(started);
    let started = cpu_ns();
    let mut text = String::new();
    exposition::render(&snap, now0 + 13.0, &mut text);
    let render_ms = ms(started);
    let started = cpu_ns();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).expect("gzip");
    let gzipped = gz.finish().expect("gzip").len();
    let gzip_ms = ms(started);
    println!(
        "in-process costs at {n} benches ({} build of the library, this process, CPU time of its thread):",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "  memory {per_bench:.0} B per bench (Bench is {} B); heartbeat: JSON parse {parse_us:.2} µs, Fleet::receive {receive_us:.2} µs",
        std::mem::size_of::<benchtel::watch::bench::Bench>()
    );
    println!(
        "  Fleet::tick {:.1} ms (median of {:?}); firing() {firing_ms:.1} ms ({firing} alerts)",
        median(&ticks),
        rounded(&ticks)
    );
    println!(
        "  one second of heartbeats ({second}): take_changes {take_ms:.1} ms, Registry::save {save_ms:.1} ms"
    );
    println!(
        "  /metrics: snapshot {snapshot_ms:.1} ms (under the fleet lock), render {render_ms:.1} ms ({} bytes), gzip {gzip_ms:.1} ms ({gzipped} bytes)",
        text.len()
    );
}

// ---------------------------------------------------------------- fleet

/// One simulated bench.
#[derive(Debug, Clone)]
struct SimBench {
    site: String,
    id: String,
    topic: String,
    run_id: String,
    boot_id: String,
    seq: u64,
    /// It stops heartbeating from this wall time on.
    stop_at: Option<f64>,
    /// Wall time of its last heartbeat handed to the client.
    last_sent: f64,
}

/// The benches of each connection: whole sites, round-robin, their
/// benches interleaved so that every site's heartbeats are spread over
/// the whole interval.
fn fleet(plan: &Plan) -> Vec<Vec<SimBench>> {
    let mut conns = vec![Vec::new(); plan.connections];
    for b in 0..plan.per_site {
        for s in 0..plan.sites {
            let n = (s * plan.per_site + b) as u64;
            let (site, id) = (format!("site-{s:03}"), format!("bench-{s:03}-{b:04}"));
            conns[s % plan.connections].push(SimBench {
                topic: Topic::heartbeat(&site, &id),
                // As agents make them: start time in ns and pid; a UUID.
                run_id: format!("{}-{}", 1_764_000_000_000_000_000u64 + n, 1000 + n % 30_000),
                boot_id: format!(
                    "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                    n * 2_654_435_761 % (1 << 32),
                    n % (1 << 16),
                    n % (1 << 12),
                    (n * 7) % (1 << 12),
                    n.wrapping_mul(11_400_714_819_323_198_485) % (1 << 48)
                ),
                site,
                id,
                seq: 0,
                stop_at: None,
                last_sent: 0.0,
            });
        }
    }
    conns
}

/// A small deterministic generator: runs are comparable.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The benches that stop, the same number from every site (so no site
/// looks like an outage), each at a random instant after `t0`.
fn pick_stopped(plan: &Plan, t0: f64) -> HashMap<(String, String), f64> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut out = HashMap::new();
    let per_site = plan.stopped.div_ceil(plan.sites);
    for s in 0..plan.sites {
        let mut chosen = HashSet::new();
        while chosen.len() < per_site.min(plan.per_site) && out.len() < plan.stopped {
            let b = (rng.next() % plan.per_site as u64) as usize;
            if chosen.insert(b) {
                let key = (format!("site-{s:03}"), format!("bench-{s:03}-{b:04}"));
                out.insert(key, t0 + rng.unit() * plan.stop_spread);
            }
        }
    }
    out
}

#[derive(Default)]
struct GenStats {
    published: AtomicU64,
    acked: AtomicU64,
}

/// One MQTT connection publishing the heartbeats of `benches`, each once per
/// `interval` at its own phase; returns the benches with their last send
/// times.
async fn generate(
    port: u16,
    index: usize,
    mut benches: Vec<SimBench>,
    interval: f64,
    stats: Arc<GenStats>,
    stop: Arc<AtomicBool>,
) -> Vec<SimBench> {
    let mut opts = MqttOptions::new(format!("fleet-gen-{index}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let poller = {
        let (stats, stop) = (stats.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        stats.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) if stop.load(Ordering::Relaxed) => return,
                    Err(e) => {
                        eprintln!("load generator {index}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    let n = benches.len() as u64;
    let per_sec = n as f64 / interval;
    let start = Instant::now();
    let mut slots: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * per_sec) as u64;
        while slots < due {
            let b = &mut benches[(slots % n) as usize];
            slots += 1;
            let now = wall();
            if b.stop_at.is_some_and(|t| now >= t) {
                continue;
            }
            b.seq += 1;
            let hb = Heartbeat {
                bench: b.id.clone(),
                site: b.site.clone(),
                seq: b.seq,
                run_id: b.run_id.clone(),
                boot_id: b.boot_id.clone(),
                sent_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                uptime_s: 1000 + b.seq * interval as u64,
                state: "ready".into(),
                why: None,
                agent_version: "0.1.0".into(),
                interval_s: Some(interval),
                maintenance: None,
                context: Default::default(),
            };
            let payload = serde_json::to_vec(&hb).expect("heartbeat JSON");
            b.last_sent = now;
            if client
                .publish(b.topic.clone(), QoS::AtLeastOnce, false, payload)
                .await
                .is_ok()
            {
                stats.published.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Wait for the broker to acknowledge what this connection sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.acked.load(Ordering::Relaxed) < stats.published.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    poller.abort();
    benches
}

// ---------------------------------------------------------------- alerts

/// The Alertmanager stand-in: the first `startsAt` and arrival time of each
/// bench's `BenchOffline`, and every other alert by identity.
#[derive(Clone, Default)]
struct Alerts {
    inner: Arc<Mutex<AlertLog>>,
}

#[derive(Default)]
struct AlertLog {
    offline: HashMap<(String, String), (f64, f64)>,
    other: HashSet<String>,
}

impl Alerts {
    /// Serves on an ephemeral port; returns it.
    async fn serve(self) -> u16 {
        let app = axum::Router::new()
            .route("/api/v2/alerts", post(take_alerts))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    fn count(&self, of: &HashMap<(String, String), f64>) -> usize {
        let log = self.inner.lock().expect("alerts");
        of.keys().filter(|k| log.offline.contains_key(*k)).count()
    }
}

async fn take_alerts(State(alerts): State<Alerts>, body: axum::body::Bytes) -> StatusCode {
    let now = wall();
    let Ok(serde_json::Value::Array(list)) = serde_json::from_slice(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut log = alerts.inner.lock().expect("alerts");
    for a in list {
        let labels = &a["labels"];
        let text = |k: &str| labels[k].as_str().unwrap_or_default().to_string();
        if text("alertname") == "BenchOffline" {
            let starts = a["startsAt"]
                .as_str()
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(f64::NAN, |d| d.as_secs_f64());
            log.offline
                .entry((text("bench_site"), text("bench_id")))
                .or_insert((starts, now));
        } else {
            log.other.insert(labels.to_string());
        }
    }
    StatusCode::OK
}

/// Per stopped bench: verdict and arrival latency after its last heartbeat.
fn detections(finished: &[Vec<SimBench>], alerts: &Alerts, out: &mut Outcome) {
    let log = alerts.inner.lock().expect("alerts");
    let mut stopped = HashSet::new();
    for b in finished.iter().flatten().filter(|b| b.stop_at.is_some()) {
        let key = (b.site.clone(), b.id.clone());
        match log.offline.get(&key) {
            Some((starts, arrived)) => {
                out.verdict.push(starts - b.last_sent);
                out.pushed.push(arrived - b.last_sent);
            }
            None => out.undetected += 1,
        }
        stopped.insert(key);
    }
    out.false_alerts = log.offline.keys().filter(|k| !stopped.contains(*k)).count();
    out.other_alerts = log.other.iter().cloned().collect();
}

// ---------------------------------------------------------------- probes

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // After the command name: state is field 3, utime 14, stime 15.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// Per thread of `pid`: its name, and the ns it ran and waited runnable
/// (`/proc/<pid>/task/<tid>/schedstat`).
fn thread_times(pid: u32) -> HashMap<u32, (String, u64, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
            let mut v = stat.split_whitespace().map(|x| x.parse().unwrap_or(0));
            Some((tid, (comm.trim().to_string(), v.next()?, v.next()?)))
        })
        .collect()
}

/// Running and waiting shares of the window, summed by thread name.
fn thread_shares(
    before: &HashMap<u32, (String, u64, u64)>,
    after: &HashMap<u32, (String, u64, u64)>,
    secs: f64,
) -> Vec<(String, f64, f64)> {
    let mut by_name: Vec<(String, f64, f64)> = Vec::new();
    for (tid, (name, cpu, wait)) in after {
        let (cpu0, wait0) = before.get(tid).map_or((0, 0), |(_, c, w)| (*c, *w));
        let (c, w) = (
            (cpu - cpu0) as f64 / 1e9 / secs,
            (wait - wait0) as f64 / 1e9 / secs,
        );
        match by_name.iter_mut().find(|(n, _, _)| n == name) {
            Some(e) => {
                e.1 += c;
                e.2 += w;
            }
            None => by_name.push((name.clone(), c, w)),
        }
    }
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    by_name
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `GET /metrics`: the time to the last byte, the body as sent, and the
/// number of benches in it (counted after the clock stopped).
fn scrape(addr: &str, gzip: bool) -> (f64, usize, usize) {
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("watch listens");
    let accept = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("response");
    let took = started.elapsed().as_secs_f64();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers")
        + 4;
    let (head, body) = raw.split_at(split);
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let chunked = head.contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    let text = if head.contains("content-encoding: gzip") {
        let mut t = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut t)
            .expect("gzip body");
        t
    } else {
        String::from_utf8(body.clone()).expect("text body")
    };
    let benches = text.lines().filter(|l| l.starts_with("bench_up{")).count();
    (took, body.len(), benches)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

fn scrape_into(addr: &str, gzip: bool, out: &mut Outcome) {
    let (took, size, benches) = scrape(addr, gzip);
    if gzip {
        out.scrape_gzip.push(took);
        out.body_gzip = size;
    } else {
        out.scrape_plain.push(took);
        out.body_plain = size;
    }
    out.bench_lines = benches;
}

/// `benchtel_watch_heartbeats_total{transport="mqtt"}` by result, and the
/// MQTT rejections.
fn heartbeat_counts(metrics: &str, out: &mut Outcome) {
    out.received_by_result.clear();
    out.received = 0;
    out.rejected = 0;
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: u64 = value.parse::<f64>().map_or(0, |v| v as u64);
        if series.starts_with("benchtel_watch_heartbeats_total{") && series.contains("\"mqtt\"") {
            let result = series
                .split("result=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?");
            out.received += value;
            out.received_by_result.push((result.to_string(), value));
        } else if series.starts_with("benchtel_watch_rejected_total{")
            && series.contains("\"mqtt\"")
        {
            out.rejected += value;
        }
    }
}
