//! All three signals end to end: a real `benchtel-agent` exports to a real
//! collector (rotel), whose OTLP/HTTP exporter forwards everything to a
//! receiver inside this test, which decodes what arrived (protobuf, not
//! rotel's console output). A serial_watch follows a simulated board on a
//! real pseudo-terminal through a recorded boot.

mod support;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use support::agent::{self, Agent, Options};
use support::firmware::{Behaviour, Firmware};
use support::receiver::Receiver;
use support::rotel::Rotel;

const BENCH: &str = "e2e-bench";
const SITE: &str = "e2e-site";

/// The agent's checks: one that always fails (a closed port), and a watch
/// on the board's console (the patterns of `tests/serial.rs`).
fn checks(console: &std::path::Path, closed: u16) -> String {
    format!(
        r#"
[[checks]]
name = "instrument"
type = "tcp"
address = "127.0.0.1:{closed}"
interval = "500ms"
affects_ready = false

[[checks]]
name = "dut-boot"
type = "serial_watch"
port = "{console}"
reset = "^U-Boot SPL"
fatal = "Kernel panic|Oops:"
version = 'Linux version (?P<version>\S+)'
boot_loop_resets = 1000
affects_ready = false
milestones = [
  {{ name = "spl", pattern = "^U-Boot SPL 20", within = "2s" }},
  {{ name = "u-boot", pattern = "^U-Boot 20", within = "5s" }},
  {{ name = "kernel", pattern = "^Starting kernel", within = "5s" }},
  {{ name = "linux", pattern = '^\[ *[0-9.]+\] Linux version', within = "5s" }},
  {{ name = "systemd", pattern = '^\[  OK  \] Reached target multi-user\.target - Multi-User System\.$', within = "5s" }},
  {{ name = "login", pattern = "^bench login: $", within = "5s" }},
]
"#,
        console = console.display(),
    )
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// Every decoded span, with its resource.
fn spans(r: &Receiver) -> Vec<(Resource, Span)> {
    r.traces()
        .into_iter()
        .flat_map(|t| t.resource_spans)
        .flat_map(|rs| {
            let res = rs.resource.unwrap_or_default();
            rs.scope_spans
                .into_iter()
                .flat_map(|s| s.spans)
                .map(move |s| (res.clone(), s))
        })
        .collect()
}

/// A boot that reached every milestone, with its milestone spans.
fn booted(all: &[(Resource, Span)]) -> Option<(Span, Vec<Span>)> {
    all.iter().map(|(_, s)| s).find_map(|root| {
        let done = root.name == "boot"
            && attr(&root.attributes, "boot.outcome") == Some("booted")
            && attr(&root.attributes, "check") == Some("dut-boot");
        if !done {
            return None;
        }
        let children: Vec<Span> = all
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.parent_span_id == root.span_id && s.name == "milestone")
            .cloned()
            .collect();
        (children.len() == 6).then(|| (root.clone(), children))
    })
}

fn assert_resource(res: &Resource, what: &str) {
    let a = &res.attributes;
    assert_eq!(attr(a, "bench.id"), Some(BENCH), "{what}: {a:?}");
    assert_eq!(attr(a, "bench.site"), Some(SITE), "{what}: {a:?}");
    assert_eq!(
        attr(a, "service.name"),
        Some("benchtel-agent"),
        "{what}: {a:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_logs_check_spans_and_boot_traces_reach_a_collector_and_through_it() {
    let receiver = Receiver::start().await;
    let rotel = Rotel::start_forwarding_all_to(&receiver.endpoint());
    let board = Firmware::start(Behaviour::Hang);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = rotel.endpoint();
    let cfg = agent::config_with(
        dir.path(),
        &Options {
            bench: BENCH,
            site: SITE,
            otlp_endpoint: Some(&endpoint),
            heartbeat: "250ms",
            export_interval: "1s",
        },
        &checks(&board.port(), support::free_port()),
    );
    let agent = Agent::start(dir.path(), &cfg);
    let diag = |what: &str| {
        format!(
            "{what}\nreceived {} requests ({} undecodable)\nspans: {:#?}\nagent:\n{}\nrotel:\n{}",
            receiver.request_count(),
            receiver.decode_errors(),
            spans(&receiver)
                .iter()
                .map(|(_, s)| (&s.name, &s.attributes))
                .collect::<Vec<_>>(),
            agent.output(),
            rotel.output()
        )
    };

    // The watch opens its port when the agent starts: the board boots
    // (the recorded console, with its timing) until a whole boot arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (root, milestones) = loop {
        let replay = board.replay("uboot-linux-login");
        let arrived = receiver
            .wait_until(|r| booted(&spans(r)).is_some(), Duration::from_secs(5))
            .await;
        replay.join().unwrap();
        if arrived {
            break booted(&spans(&receiver)).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            diag("no booted boot trace")
        );
    };

    // The boot trace: its root and a milestone per stage, in order, each
    // from the reset marker.
    assert_eq!(
        attr(&root.attributes, "boot.reason"),
        Some("U-Boot SPL 2024.01 (Jan 08 2024 - 12:00:00 +0000)")
    );
    assert_eq!(attr(&root.attributes, "firmware.version"), Some("6.6.15"));
    assert!(root.parent_span_id.is_empty(), "a trace of its own");
    let mut milestones = milestones;
    milestones.sort_by_key(|s| s.end_time_unix_nano);
    let names: Vec<_> = milestones
        .iter()
        .map(|s| attr(&s.attributes, "milestone").unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["spl", "u-boot", "kernel", "linux", "systemd", "login"]
    );
    for m in &milestones {
        assert_eq!(m.trace_id, root.trace_id);
        assert_eq!(m.start_time_unix_nano, root.start_time_unix_nano);
        assert!(m.end_time_unix_nano <= root.end_time_unix_nano);
    }

    // A check span with its code, failed, and the log line of its verdict
    // linked to one of its runs.
    let linked = receiver
        .wait_until(
            |r| {
                let runs: Vec<Span> = spans(r)
                    .into_iter()
                    .map(|(_, s)| s)
                    .filter(|s| s.name == "check instrument")
                    .collect();
                r.log_records().iter().any(|l| {
                    matches!(l.body.as_ref().and_then(|b| b.value.as_ref()),
                        Some(Value::StringValue(m)) if m == "health check down")
                        && runs
                            .iter()
                            .any(|s| s.span_id == l.span_id && s.trace_id == l.trace_id)
                })
            },
            Duration::from_secs(30),
        )
        .await;
    assert!(linked, "{}", diag("no linked `health check down`"));
    let all = spans(&receiver);
    let run = all
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "check instrument")
        .unwrap();
    assert_eq!(attr(&run.attributes, "check"), Some("instrument"));
    assert_eq!(attr(&run.attributes, "code"), Some("connection_failed"));
    let status = run.status.clone().unwrap_or_default();
    assert_eq!(status.code, StatusCode::Error as i32, "{status:?}");
    assert!(!status.message.is_empty());

    // A heartbeat log record and a metric.
    let beat = receiver
        .wait_until(
            |r| {
                r.log_bodies().iter().any(|b| b == "heartbeat")
                    && !r.metric_points("bench_heartbeats").is_empty()
            },
            Duration::from_secs(30),
        )
        .await;
    assert!(beat, "{}", diag("no heartbeat record or metric"));
    let beat = receiver
        .log_records()
        .into_iter()
        .find(|l| matches!(l.body.as_ref().and_then(|b| b.value.as_ref()), Some(Value::StringValue(m)) if m == "heartbeat"))
        .unwrap();
    assert!(beat.attributes.iter().any(|kv| kv.key == "seq"), "{beat:?}");

    // Every signal carries the bench's resource.
    for (res, _) in &all {
        assert_resource(res, "span");
    }
    for logs in receiver.logs() {
        for rl in logs.resource_logs {
            assert_resource(&rl.resource.unwrap_or_default(), "logs");
        }
    }
    for metrics in receiver.metrics() {
        for rm in metrics.resource_metrics {
            assert_resource(&rm.resource.unwrap_or_default(), "metrics");
        }
    }
    assert_eq!(receiver.decode_errors(), 0);
    let (status, _) = agent.terminate();
    assert!(status.success());
}
