//! What the bench says reaches the on-call through `benchtel-watch`, with
//! real agents, a real Mosquitto and a real Alertmanager: maintenance set
//! on the bench (`benchtel-agent maintenance on`) keeps a killed or stopped
//! bench from paging, across a watch restart, until it ends; and a page
//! names the job the bench was running (`benchtel-agent context set`) and
//! why it went (a Last Will, a DUT reset that never became ready).
//! Thresholds are seconds so the scenarios run quickly.

mod support;

use std::time::{Duration, Instant};

use support::agent::{Bench, file_check};
use support::alertmanager::Alertmanager;
use support::http::wait_for;
use support::mosquitto::Mosquitto;
use support::watch::Watch;
use support::webhook::Webhook;

const WAIT: Duration = Duration::from_secs(30);

/// Grace period 6 s, stop window 5 s, will debounce 1 s, hold 1 s.
fn watch_config(broker: &Mosquitto, am: &Alertmanager, extra: &str) -> String {
    format!(
        r#"
[mqtt]
url = "{}"
keepalive = "5s"
[ingest]
ping_interval = "1s"
silence = "10s"
[liveness]
late_after = "2s"
offline_after = "6s"
will_debounce = "1s"
stop_window = "5s"
resolve_after = "2s"
[alerts]
alertmanagers = ["{}"]
resend_interval = "1s"
hold = "1s"
{extra}
"#,
        broker.url(),
        am.url()
    )
}

/// A bench on `broker`, beating every 500 ms.
fn bench(broker: &Mosquitto, extra: &str) -> Bench {
    let mqtt = format!(
        "[mqtt]\nurl = \"{}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n{extra}",
        broker.url()
    );
    Bench::new("500ms", &mqtt)
}

fn view(watch: &Watch, bench: &str) -> serde_json::Value {
    watch
        .benches()
        .into_iter()
        .find(|b| b["bench_id"] == bench)
        .unwrap_or_default()
}

fn in_maintenance(watch: &Watch, reason: &str) {
    wait_for("maintenance at the watch", WAIT, || {
        let v = view(watch, "test-bench");
        v["liveness"] == "maintenance"
            && v["maintenance_source"] == "bench"
            && v["maintenance_reason"] == reason
    });
}

fn online(watch: &Watch) {
    wait_for("online", WAIT, || {
        watch.liveness("test-bench").as_deref() == Some("online")
    });
}

/// No page for `long`, and the bench stays in maintenance.
fn never_paged(watch: &Watch, am: &Alertmanager, long: Duration) {
    let from = Instant::now();
    while from.elapsed() < long {
        assert!(am.active("BenchOffline").is_empty(), "{:?}", am.alerts());
        assert_eq!(watch.liveness("test-bench").as_deref(), Some("maintenance"));
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn maintenance_then_kill_9_never_pages_even_across_a_watch_restart() {
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    let mut watch = Watch::start(&watch_config(&broker, &am, ""));
    let bench = bench(&broker, "");
    let agent = bench.start();
    online(&watch);
    bench.cli(&["maintenance", "on", "--reason", "reflashing the DUT"]);
    in_maintenance(&watch, "reflashing the DUT");
    let m = support::http::sample(
        &watch.metrics(),
        "bench_liveness",
        &[("bench_id", "test-bench"), ("state", "maintenance")],
    );
    assert_eq!(m, Some(1.0));
    agent.kill9();
    // The Last Will (1 s debounce) and the grace period (6 s) both pass.
    never_paged(&watch, &am, Duration::from_secs(9));
    // The registry keeps it: a restarted watch does not page either.
    watch.kill9();
    watch.restart();
    never_paged(&watch, &am, Duration::from_secs(9));
    assert_eq!(view(&watch, "test-bench")["maintenance_source"], "bench");
}

#[test]
fn maintenance_then_a_clean_stop_never_pages_even_after_the_stop_window() {
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&broker, &am, ""));
    let bench = bench(&broker, "");
    let agent = bench.start();
    online(&watch);
    bench.cli(&["maintenance", "on", "--reason", "moving the rack"]);
    in_maintenance(&watch, "moving the rack");
    let (exit, _) = agent.terminate();
    assert!(exit.success());
    // Stop window 5 s, and well past it.
    never_paged(&watch, &am, Duration::from_secs(10));
}

#[test]
fn maintenance_that_ends_while_the_bench_is_silent_pages_after_one_grace_period() {
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&broker, &am, ""));
    let bench = bench(&broker, "");
    let agent = bench.start();
    online(&watch);
    bench.cli(&["maintenance", "on", "--reason", "short job", "--for", "6s"]);
    in_maintenance(&watch, "short job");
    let until = view(&watch, "test-bench")["maintenance_until"].clone();
    assert!(until.is_string(), "the end is shown: {until}");
    agent.kill9();
    let killed = Instant::now();
    wait_for("out of maintenance", Duration::from_secs(15), || {
        watch.liveness("test-bench").as_deref() != Some("maintenance")
    });
    let ended = Instant::now();
    assert!(am.active("BenchOffline").is_empty(), "{:?}", am.alerts());
    // One grace period (6 s) from the end, not the Last Will's debounce.
    while ended.elapsed() < Duration::from_secs(4) {
        assert!(am.active("BenchOffline").is_empty(), "{:?}", am.alerts());
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for("BenchOffline", Duration::from_secs(20), || {
        am.active("BenchOffline").len() == 1
    });
    assert!(killed.elapsed() >= Duration::from_secs(8));
}

#[test]
fn a_page_names_the_job_that_context_set_gave_in_alertmanager_the_api_and_webhooks() {
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    let hook = Webhook::start();
    let watch = Watch::start(&watch_config(
        &broker,
        &am,
        &format!("[[alerts.webhook]]\nurl = \"{}\"\n", hook.url()),
    ));
    let bench = bench(&broker, "");
    let agent = bench.start();
    online(&watch);
    bench.cli(&[
        "context",
        "set",
        "--execution-id",
        "job-1234",
        "--task-id",
        "flash",
        "--correlation-id",
        "req-9",
    ]);
    wait_for("the context at the watch", WAIT, || {
        view(&watch, "test-bench")["execution_id"] == "job-1234"
    });
    agent.kill9();
    wait_for("BenchOffline", WAIT, || {
        am.active("BenchOffline").len() == 1
    });
    let page = &am.active("BenchOffline")[0]["annotations"];
    assert_eq!(page["execution_id"], "job-1234", "{page}");
    assert_eq!(page["task_id"], "flash");
    assert_eq!(page["correlation_id"], "req-9");
    assert_eq!(page["reason"], "last_will");
    let v = view(&watch, "test-bench");
    assert_eq!(v["offline_reason"], "last_will");
    assert_eq!(v["task_id"], "flash");
    wait_for("the webhook", WAIT, || !hook.bodies().is_empty());
    let body = &hook.bodies()[0]["alerts"][0]["annotations"];
    assert_eq!(body["execution_id"], "job-1234", "{body}");
    assert_eq!(body["correlation_id"], "req-9");
}

/// A readiness check on a file: the device under test answers while it
/// exists.
#[test]
fn a_bench_lost_after_a_dut_reset_that_never_became_ready_is_paged_with_that_reason() {
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&broker, &am, ""));
    let dir = tempfile::tempdir().unwrap();
    let dut = dir.path().join("dut-answers");
    std::fs::write(&dut, "up").unwrap();
    let bench = bench(&broker, &file_check(&dut));
    // `[bench]` comes first in the agent's file: set its limit there.
    let text = std::fs::read_to_string(&bench.cfg).unwrap().replacen(
        "site = \"lab\"\n",
        "site = \"lab\"\ndut_ready_within = \"1s\"\n",
        1,
    );
    std::fs::write(&bench.cfg, text).unwrap();
    let agent = bench.start();
    wait_for("ready at the watch", WAIT, || {
        view(&watch, "test-bench")["reported_state"] == "ready"
    });
    bench.cli(&["context", "set", "--execution-id", "job-77"]);
    bench.cli(&["mark", "reset", "--reason", "power cycle"]);
    std::fs::remove_file(&dut).unwrap();
    wait_for("degraded at the watch", WAIT, || {
        view(&watch, "test-bench")["reported_state"] == "degraded"
    });
    agent.kill9();
    wait_for("BenchOffline", WAIT, || {
        am.active("BenchOffline").len() == 1
    });
    let page = &am.active("BenchOffline")[0]["annotations"];
    assert_eq!(page["reason"], "dut_reset_not_ready", "{page}");
    assert_eq!(page["execution_id"], "job-77");
}
