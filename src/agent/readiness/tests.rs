//! The state machine on tokio's paused clock: readiness, resets of the
//! device under test, maintenance, and agent restarts (a new machine on the
//! same `bench.json`).

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

struct Bench {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
    rx: watch::Receiver<Snapshot>,
    r: Readiness,
}

fn options(checks: &[&str], state_file: Option<PathBuf>, boot_id: &str) -> Options {
    Options {
        readiness_checks: checks.iter().map(|c| c.to_string()).collect(),
        continuous_checks: BTreeSet::from(["console".to_string()]),
        boot_offset: Duration::from_secs(100),
        boot_id: Some(boot_id.into()),
        state_file,
        reset_limit: Duration::from_secs(300),
    }
}

fn bench(opts: Options) -> Bench {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let (tx, rx) = watch::channel(Snapshot::default());
    let r = Readiness::new(opts, &provider.meter("t"), tx);
    Bench {
        provider,
        exporter,
        rx,
        r,
    }
}

impl Bench {
    /// Gauge points by their `from`, histogram counts and counter sums by
    /// metric name and attributes.
    fn metrics(&self) -> BTreeMap<String, f64> {
        self.provider.force_flush().unwrap();
        let rm = self.exporter.get_finished_metrics().unwrap().pop().unwrap();
        let mut out = BTreeMap::new();
        // Attribute values sorted: the SDK keeps them in no fixed order.
        let key = |name: &str, mut attrs: Vec<String>| {
            attrs.sort();
            format!("{name}{{{}}}", attrs.join(","))
        };
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            match m.data() {
                AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                    for p in g.data_points() {
                        let from = p.attributes().next().unwrap().value.to_string();
                        out.insert(from, p.value());
                    }
                }
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    for p in h.data_points() {
                        let attrs = p.attributes().map(|kv| kv.value.to_string()).collect();
                        out.insert(key(m.name(), attrs), p.count() as f64);
                        out.insert(format!("{}_sum", m.name()), p.sum());
                    }
                }
                AggregatedMetrics::U64(MetricData::Sum(s)) => {
                    for p in s.data_points() {
                        let attrs = p.attributes().map(|kv| kv.value.to_string()).collect();
                        out.insert(key(m.name(), attrs), p.value() as f64);
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// `check`, the last one, passes after a marked reset: ready, with the
/// reset timed at `secs`; returns the metrics.
fn ready_after_reset(b: &mut Bench, check: &str, secs: f64) -> BTreeMap<String, f64> {
    assert_eq!(
        b.r.on_verdict(&verdict(check, true)),
        Some((BenchState::Starting, BenchState::Ready))
    );
    let t = b.metrics();
    assert_eq!(t["dut_reset"], secs);
    assert_eq!(t["bench_dut_ready{mark}"], 1.0);
    t
}

/// `check` passes again `secs` after the bench went degraded: ready, with
/// that recovery time.
async fn recovers(b: &mut Bench, check: &str, secs: u64) {
    pass(secs).await;
    assert_eq!(
        b.r.on_verdict(&verdict(check, true)),
        Some((BenchState::Degraded, BenchState::Ready))
    );
    assert_eq!(b.metrics()["degraded"], secs as f64);
}

async fn pass(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn ready_time_degraded_and_recovery() {
    let mut b = bench(options(&["psu", "dut-ssh"], None, "b1"));
    assert_eq!(b.r.state(), BenchState::Starting);
    pass(10).await;
    assert_eq!(
        b.r.on_verdict(&verdict("psu", true)),
        None,
        "one of two is not ready"
    );
    pass(20).await;
    assert_eq!(
        b.r.on_verdict(&verdict("dut-ssh", true)),
        Some((BenchState::Starting, BenchState::Ready))
    );
    assert_eq!(b.rx.borrow().state, BenchState::Ready);
    let t = b.metrics();
    assert_eq!(t["agent_start"], 30.0);
    assert_eq!(t["boot"], 130.0);
    // A check that does not affect readiness changes nothing but its status.
    let mut other = verdict("camera", false);
    other.affects_ready = false;
    assert_eq!(b.r.on_verdict(&other), None);
    assert!(!b.rx.borrow().checks["camera"].up);
    pass(60).await;
    assert_eq!(
        b.r.on_verdict(&verdict("psu", false)),
        Some((BenchState::Ready, BenchState::Degraded))
    );
    assert_eq!(b.rx.borrow().why, "down: psu");
    recovers(&mut b, "psu", 15).await;
}

#[tokio::test(start_paused = true)]
async fn no_readiness_checks_means_ready_at_once_and_maintenance_is_sticky() {
    let mut b = bench(options(&[], None, "b1"));
    assert_eq!(b.r.state(), BenchState::Ready);
    let on = || {
        Input::Maintenance(Some(Maintenance {
            reason: None,
            since: SystemTime::now(),
            until: None,
        }))
    };
    assert!(b.r.on_input(on()).is_some());
    assert_eq!(b.rx.borrow().state, BenchState::Maintenance);
    assert_eq!(b.r.on_input(on()), None);
    assert_eq!(
        b.r.on_input(Input::Maintenance(None)),
        Some((BenchState::Maintenance, BenchState::Ready))
    );
    assert_eq!(b.r.on_input(Input::Maintenance(None)), None);
}

#[tokio::test(start_paused = true)]
async fn boot_ready_time_is_recorded_once_per_boot_across_agent_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(bench_file::FILE_NAME);
    let mut first = bench(options(&["psu"], Some(file.clone()), "boot-1"));
    pass(5).await;
    first.r.on_verdict(&verdict("psu", true));
    assert_eq!(first.metrics()["boot"], 105.0);
    // The agent restarts while the bench is up: same boot.
    let mut again = bench(options(&["psu"], Some(file.clone()), "boot-1"));
    pass(2).await;
    again.r.on_verdict(&verdict("psu", true));
    let t = again.metrics();
    assert_eq!(t["agent_start"], 2.0);
    assert!(!t.contains_key("boot"), "{t:?}");
    // The bench reboots: a new boot id.
    let mut rebooted = bench(options(&["psu"], Some(file), "boot-2"));
    pass(7).await;
    rebooted.r.on_verdict(&verdict("psu", true));
    assert_eq!(rebooted.metrics()["boot"], 107.0);
}

#[tokio::test(start_paused = true)]
async fn maintenance_survives_a_restart_and_ends_when_its_time_passes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(bench_file::FILE_NAME);
    let mut b = bench(options(&["psu"], Some(file.clone()), "b1"));
    b.r.on_verdict(&verdict("psu", true));
    let m = Maintenance {
        reason: Some("reflashing".into()),
        since: SystemTime::now(),
        until: Some(SystemTime::now() + Duration::from_secs(60)),
    };
    b.r.on_input(Input::Maintenance(Some(m.clone())));
    drop(b);
    let mut b = bench(options(&["psu"], Some(file.clone()), "b1"));
    let snap = b.rx.borrow().clone();
    assert_eq!(snap.state, BenchState::Maintenance);
    assert_eq!(snap.maintenance, Some(m));
    assert_eq!(snap.why, "maintenance: reflashing");
    // The verdicts go on underneath.
    b.r.on_verdict(&verdict("psu", true));
    assert_eq!(b.r.state(), BenchState::Maintenance);
    let end = b.r.next_tick().expect("an end time to wait for");
    tokio::time::sleep_until(end - Duration::from_secs(1)).await;
    assert_eq!(b.r.on_tick(), None);
    pass(1).await;
    assert_eq!(
        b.r.on_tick(),
        Some((BenchState::Maintenance, BenchState::Ready))
    );
    assert_eq!(
        bench_file::load(&file).maintenance,
        None,
        "forgotten on disk"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dut_reset_is_timed_until_every_readiness_check_passes_again() {
    let mut b = bench(options(&["ssh", "http"], None, "b1"));
    b.r.on_verdict(&verdict("ssh", true));
    b.r.on_verdict(&verdict("http", true));
    pass(100).await;
    let reset = Input::DutReset {
        source: ResetSource::Mark,
        reason: Some("power cycle".into()),
        seen_by: None,
    };
    assert_eq!(
        b.r.on_input(reset),
        Some((BenchState::Ready, BenchState::Starting))
    );
    assert_eq!(
        b.rx.borrow().why,
        "device under test reset (mark: power cycle)"
    );
    pass(4).await;
    // A result from before the board came back does not count twice: both
    // checks must pass after the reset.
    assert_eq!(b.r.on_verdict(&verdict("ssh", true)), None);
    pass(8).await;
    let t = ready_after_reset(&mut b, "http", 12.0);
    assert_eq!(t["bench_dut_ready_sum"], 12.0);
    assert_eq!(t["bench_dut_resets{mark}"], 1.0);
    assert_eq!(t["agent_start"], 0.0, "not recorded again");
}

#[tokio::test(start_paused = true)]
async fn a_reset_that_never_becomes_ready_is_a_failure_of_its_own() {
    let mut b = bench(options(&["ssh"], None, "b1"));
    b.r.on_verdict(&verdict("ssh", true));
    b.r.on_input(Input::DutReset {
        source: ResetSource::Gpio,
        reason: None,
        seen_by: None,
    });
    b.r.on_verdict(&verdict("ssh", false));
    assert_eq!(b.r.state(), BenchState::Starting);
    tokio::time::sleep_until(b.r.next_tick().unwrap()).await;
    assert_eq!(
        b.r.on_tick(),
        Some((BenchState::Starting, BenchState::Degraded))
    );
    assert!(
        b.rx.borrow().why.starts_with(RESET_NOT_READY),
        "{:?}",
        b.rx.borrow().why
    );
    let t = b.metrics();
    assert_eq!(
        t["bench_dut_reset_failures{gpio,reset_not_ready}"], 1.0,
        "{t:?}"
    );
    assert_eq!(b.r.next_tick(), None);
    recovers(&mut b, "ssh", 30).await;
}

#[tokio::test(start_paused = true)]
async fn the_run_loop_applies_inputs_and_ends_maintenance_on_time() {
    let b = bench(options(&["ssh"], None, "b1"));
    let mut rx = b.rx.clone();
    let (itx, irx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(b.r.run(irx, cancel.clone()));
    itx.send(Input::Verdict(verdict("ssh", true)))
        .await
        .unwrap();
    rx.wait_for(|s| s.state == BenchState::Ready).await.unwrap();
    itx.send(Input::Maintenance(Some(Maintenance {
        reason: None,
        since: SystemTime::now(),
        until: Some(SystemTime::now() + Duration::from_secs(600)),
    })))
    .await
    .unwrap();
    rx.wait_for(|s| s.state == BenchState::Maintenance)
        .await
        .unwrap();
    let t0 = Instant::now();
    rx.wait_for(|s| s.state == BenchState::Ready).await.unwrap();
    assert_eq!(Instant::now() - t0, Duration::from_secs(600));
    cancel.cancel();
    task.await.unwrap();
}

/// A bench ready on an ssh check and a console watch, then reset by the
/// harness's mark.
fn ready_then_marked() -> Bench {
    let mut b = bench(options(&["ssh", "console"], None, "b1"));
    b.r.on_verdict(&verdict("ssh", true));
    b.r.on_verdict(&verdict("console", true));
    b.r.on_input(Input::DutReset {
        source: ResetSource::Mark,
        reason: None,
        seen_by: None,
    });
    b
}

#[tokio::test(start_paused = true)]
async fn a_marked_reset_waits_for_the_console_only_once_the_console_saw_it() {
    let mut b = ready_then_marked();
    pass(1).await;
    // The console shows the board resetting: its watch will judge the new
    // boot; the clock still runs from the mark.
    b.r.on_input(Input::DutReset {
        source: ResetSource::Serial,
        reason: None,
        seen_by: Some("console".into()),
    });
    pass(2).await;
    assert_eq!(
        b.r.on_verdict(&verdict("ssh", true)),
        None,
        "the console has not booted"
    );
    pass(7).await;
    let t = ready_after_reset(&mut b, "console", 10.0);
    assert_eq!(t["bench_dut_resets{mark}"], 1.0);
    assert_eq!(t["bench_dut_resets{serial}"], 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_console_that_says_nothing_after_a_mark_keeps_its_verdict() {
    let mut b = ready_then_marked();
    pass(3).await;
    assert_eq!(
        b.r.on_verdict(&verdict("ssh", true)),
        Some((BenchState::Starting, BenchState::Ready)),
        "a watch reports boots, not runs: it is not waited for"
    );
}

#[tokio::test(start_paused = true)]
async fn a_board_that_keeps_resetting_runs_out_of_time() {
    let mut b = bench(options(&["ssh"], None, "b1"));
    b.r.on_verdict(&verdict("ssh", true));
    let reset = || Input::DutReset {
        source: ResetSource::Serial,
        reason: None,
        seen_by: None,
    };
    b.r.on_input(reset());
    for _ in 0..2 {
        pass(140).await;
        b.r.on_input(reset());
        assert_eq!(b.r.on_tick(), None);
    }
    pass(20).await;
    assert_eq!(
        b.r.on_tick(),
        Some((BenchState::Starting, BenchState::Degraded)),
        "300 s after the first reset"
    );
    assert_eq!(b.metrics()["bench_dut_resets{serial}"], 3.0);
}
