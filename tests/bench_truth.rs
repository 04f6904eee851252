//! The bench's verdict through a lab's everyday life, with real agent
//! processes: maintenance set on the bench survives an agent restart and
//! rides in every MQTT heartbeat (real Mosquitto); a reset of the device
//! under test marked by the harness is timed until the checks are back;
//! `status` says what the bench is doing and why.

mod support;

use std::time::Duration;

use benchtel::wire::Heartbeat;
use support::agent::{Bench, file_check};
use support::mosquitto::Mosquitto;
use support::mqtt::{Msg, Subscriber};

const WAIT: Duration = Duration::from_secs(30);
const HEARTBEAT: &str = "benchtel/lab/test-bench/heartbeat";

fn heartbeat(m: &Msg) -> Heartbeat {
    serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("{e}: {}", m.text()))
}

fn mqtt(broker: &Mosquitto) -> String {
    format!(
        "[mqtt]\nurl = \"{}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n",
        broker.url()
    )
}

#[test]
fn maintenance_survives_an_agent_restart_and_rides_in_every_mqtt_heartbeat() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let bench = Bench::new("500ms", &mqtt(&broker));
    let agent = bench.start();
    sub.wait_for("a first heartbeat", 0, WAIT, |m| m.topic == HEARTBEAT);

    bench.cli(&[
        "context",
        "set",
        "--execution-id",
        "job-1234",
        "--task-id",
        "flash",
    ]);
    let from = sub.len();
    bench.cli(&[
        "maintenance",
        "on",
        "--reason",
        "reflashing the DUT",
        "--for",
        "2h",
    ]);
    let beat = sub.wait_for("a beat in maintenance", from, WAIT, |m| {
        m.topic == HEARTBEAT && heartbeat(m).state == "maintenance"
    });
    let hb = heartbeat(&beat);
    let m = hb.maintenance.expect("maintenance in the heartbeat");
    assert_eq!(m.reason.as_deref(), Some("reflashing the DUT"));
    let left = m.until.unwrap().duration_since(m.since).unwrap();
    assert!(
        left > Duration::from_secs(7190) && left <= Duration::from_secs(7200),
        "{left:?}"
    );
    assert_eq!(hb.context.execution_id.as_deref(), Some("job-1234"));
    let status = bench.cli(&["status"]);
    assert!(
        status.contains("state        maintenance") && status.contains("reflashing the DUT"),
        "{status}"
    );

    // Restarted (an upgrade, `systemctl restart`): still in maintenance,
    // from the first heartbeat it publishes.
    let (exit, _) = agent.terminate();
    assert!(exit.success());
    let from = sub.len();
    let agent = bench.start();
    let first = sub.wait_for("the first beat after the restart", from, WAIT, |m| {
        m.topic == HEARTBEAT
    });
    let hb = heartbeat(&first);
    assert_eq!(hb.state, "maintenance", "{}", first.text());
    assert_eq!(
        hb.maintenance.and_then(|m| m.reason).as_deref(),
        Some("reflashing the DUT")
    );

    // Ended by command: back to ready at once.
    let from = sub.len();
    bench.cli(&["maintenance", "off"]);
    let beat = sub.wait_for("a beat out of maintenance", from, WAIT, |m| {
        m.topic == HEARTBEAT && heartbeat(m).state == "ready"
    });
    assert_eq!(heartbeat(&beat).maintenance, None);
    let (exit, _) = agent.terminate();
    assert!(exit.success());
}

#[test]
fn a_marked_dut_reset_is_timed_until_the_checks_are_back_up() {
    let dir = tempfile::tempdir().unwrap();
    let dut = dir.path().join("dut-answers");
    let bench = Bench::new("100ms", &file_check(&dut));
    std::fs::write(&dut, "up").unwrap();
    let agent = bench.start();
    let ready = |v: f64| v == 1.0;
    agent.wait_metric("bench_state", &[("state", "ready")], WAIT, ready);

    // The harness power-cycles the board: it stops answering, and comes
    // back after a while.
    bench.cli(&["mark", "reset", "--reason", "power cycle"]);
    std::fs::remove_file(&dut).unwrap();
    agent.wait_metric("bench_state", &[("state", "starting")], WAIT, ready);
    let status = bench.cli(&["status"]);
    assert!(
        status.contains("device under test reset (mark: power cycle)"),
        "{status}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&dut, "up").unwrap();
    agent.wait_metric("bench_state", &[("state", "ready")], WAIT, ready);

    let from = [("from", "dut_reset")];
    agent.wait_metric("bench_ready_time_seconds", &from, WAIT, |v| v >= 1.5);
    let took = agent.metric("bench_ready_time_seconds", &from);
    assert!(took < 10.0, "{took}");
    let source = [("source", "mark")];
    assert_eq!(agent.metric("bench_dut_ready_seconds_count", &source), 1.0);
    assert_eq!(agent.metric("bench_dut_resets_total", &source), 1.0);
    let (exit, _) = agent.terminate();
    assert!(exit.success());
}
