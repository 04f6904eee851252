//! A check wedged in a blocking call (here a `usb` check reading a sysfs
//! attribute that is a FIFO nobody writes, as a read on a hung mount would)
//! must not stall the agent: the call runs on the blocking pool, the run
//! ends as `timeout`, the scheduler keeps its watchdog promise, and later
//! runs go on (failing at once while the call is still stuck) instead of
//! piling threads onto the mount. (The heartbeat loop's beacon is tested in
//! `agent::sources::heartbeat`, the gate in `agent::checks::offload`.)

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use benchtel::agent::checks::{self, CheckConfig};
use benchtel::systemd::Liveness;
use opentelemetry::metrics::MeterProvider;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(serde::Deserialize)]
struct File {
    checks: Vec<CheckConfig>,
}

fn usb_check(sysfs: &Path) -> Vec<CheckConfig> {
    let text = format!(
        "[[checks]]\nname = \"probe-adapter\"\ntype = \"usb\"\nvid = \"0483\"\npid = \"374b\"\n\
         sysfs = {:?}\ninterval = \"100ms\"\ntimeout = \"200ms\"\n",
        sysfs.to_str().unwrap()
    );
    toml::from_str::<File>(&text).unwrap().checks
}

/// Polls from this thread (a worker blocked in a task can keep tokio's
/// timer driver from turning); false after 15 s.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn until(what: &str, cond: impl FnMut() -> bool) {
    assert!(eventually(cond), "timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_wedged_in_a_blocking_call_neither_stalls_the_scheduler_nor_stops_its_runs() {
    let sysfs = tempfile::tempdir().unwrap();
    let meter = opentelemetry_sdk::metrics::SdkMeterProvider::default().meter("t");
    let mut configs = usb_check(sysfs.path());
    let runtime = benchtel::agent::build::checks(&mut configs, &meter);
    let liveness = Liveness::with_slack(Duration::from_millis(100));
    let (tx, mut rx) = mpsc::channel(64);
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let cancel = CancellationToken::new();
    let task = tokio::spawn(checks::run_all(
        runtime,
        1,
        tx,
        liveness.clone(),
        cancel.clone(),
    ));
    until("a few runs", || runs.load(Ordering::SeqCst) >= 3);
    assert_eq!(liveness.stalled(), None);

    // The device's attribute becomes a FIFO: the next read blocks in open(2).
    let device = sysfs.path().join("1-1");
    std::fs::create_dir(&device).unwrap();
    let fifo = device.join("idVendor");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils) is needed");
    assert!(made.success());
    // Runs go on while the read hangs (interval 100 ms, timeout 200 ms),
    // and the scheduler never breaks its promise.
    let before = runs.load(Ordering::SeqCst);
    let mut stalled = None;
    let went_on = eventually(|| {
        stalled = stalled.or(liveness.stalled());
        runs.load(Ordering::SeqCst) > before + 5
    });
    // Release the read before asserting, so a failing test ends rather
    // than leaving a thread blocked.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(b"0483\n").unwrap();
    drop(writer);
    std::fs::remove_file(&fifo).unwrap();
    assert!(went_on, "runs stopped while one check was wedged");
    assert_eq!(
        stalled, None,
        "the watchdog fired for a check the scheduler gave up on"
    );
    let before = runs.load(Ordering::SeqCst);
    until("runs to go on", || runs.load(Ordering::SeqCst) > before + 2);
    cancel.cancel();
    task.await.unwrap();
}
