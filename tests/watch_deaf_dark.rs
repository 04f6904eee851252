//! Deaf versus dark, each row of the README's decision table with real
//! processes: the watch is deaf (`BenchWatchIngestDown`, no bench pages)
//! only on evidence about its own path (its broker session, its ping);
//! with a ping that comes back, every bench going silent is its site's
//! outage (`BenchSiteOffline`); over OTLP alone total silence is the
//! documented ingest alert that says which two cases it cannot tell apart.
//! Thresholds are seconds so the scenarios run quickly.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::agent::{self, Agent, Options};
use support::alertmanager::Alertmanager;
use support::http::wait_for;
use support::mosquitto::Mosquitto;
use support::rotel::Rotel;
use support::watch::Watch;

const WAIT: Duration = Duration::from_secs(30);

/// MQTT ingest: ping every second, grace 6 s, silence 3 s (so the old
/// silence rule would have called a dark site deafness).
fn mqtt_watch(broker: &Mosquitto, am: &Alertmanager) -> Watch {
    Watch::start(&format!(
        r#"
[mqtt]
url = "{}"
keepalive = "5s"
[ingest]
ping_interval = "1s"
silence = "3s"
[liveness]
late_after = "2s"
offline_after = "6s"
will_debounce = "1s"
stop_window = "5s"
resolve_after = "2s"
[storm]
share = 0.5
window = "30s"
min_benches = 4
[alerts]
alertmanagers = ["{}"]
resend_interval = "1s"
hold = "3s"
"#,
        broker.url(),
        am.url()
    ))
}

fn mqtt_agents(dir: &Path, broker: &Mosquitto, n: usize) -> Vec<Agent> {
    (0..n)
        .map(|i| {
            let id = format!("bench-{i}");
            let cfg = agent::config_with(
                dir,
                &Options {
                    bench: &id,
                    heartbeat: "500ms",
                    ..Options::default()
                },
                &format!(
                    "[mqtt]\nurl = \"{}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n",
                    broker.url()
                ),
            );
            Agent::start(dir, &cfg)
        })
        .collect()
}

fn all_online(watch: &Watch, n: usize) {
    wait_for(&format!("{n} benches online"), WAIT, || {
        let b = watch.benches();
        b.len() == n && b.iter().all(|x| x["liveness"] == "online")
    });
}

#[test]
fn every_bench_of_a_one_site_fleet_killed_while_the_ping_works_is_a_site_outage_not_deafness() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    let watch = mqtt_watch(&broker, &am);
    let agents = mqtt_agents(dir.path(), &broker, 4);
    all_online(&watch, 4);
    for a in agents {
        a.kill9();
    }
    let killed = Instant::now();
    wait_for("BenchSiteOffline", WAIT, || {
        am.active("BenchSiteOffline").len() == 1 && am.active("BenchOffline").len() == 4
    });
    assert_eq!(
        am.active("BenchSiteOffline")[0]["labels"]["bench_site"],
        "lab"
    );
    assert!(
        am.active("BenchOffline")
            .iter()
            .all(|a| a["labels"]["site_outage"] == "true")
    );
    // Well past the silence (3 s) and the grace period: never deaf.
    while killed.elapsed() < Duration::from_secs(12) {
        assert!(
            am.active("BenchWatchIngestDown").is_empty(),
            "{:?}",
            am.alerts()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let m = watch.metrics();
    assert_eq!(
        support::http::sample(&m, "benchtel_watch_ingest_up", &[]),
        Some(1.0)
    );
}

#[test]
fn the_broker_killed_is_ingest_down_and_no_bench_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start();
    let am = Alertmanager::start();
    let watch = mqtt_watch(&broker, &am);
    let agents = mqtt_agents(dir.path(), &broker, 4);
    all_online(&watch, 4);
    broker.stop(); // SIGKILL
    let killed = Instant::now();
    wait_for("BenchWatchIngestDown", WAIT, || {
        am.active("BenchWatchIngestDown").len() == 1
    });
    let reason = am.active("BenchWatchIngestDown")[0]["annotations"]["reason"].clone();
    assert!(reason.as_str().unwrap().contains("MQTT"), "{reason}");
    while killed.elapsed() < Duration::from_secs(12) {
        assert!(am.active("BenchOffline").is_empty(), "{:?}", am.alerts());
        assert!(am.active("BenchSiteOffline").is_empty());
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(agents);
}

#[test]
fn an_otlp_only_fleet_gone_silent_is_the_ingest_alert_that_says_what_it_cannot_tell_apart() {
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start();
    let watch = Watch::start(&format!(
        r#"
[liveness]
offline_after = "8s"
resolve_after = "2s"
[alerts]
alertmanagers = ["{}"]
resend_interval = "1s"
hold = "1s"
"#,
        am.url()
    ));
    let rotel = Rotel::start_forwarding_to(&format!("http://{}", watch.addr()), &[]);
    let endpoint = rotel.endpoint();
    let agents: Vec<Agent> = (0..3)
        .map(|i| {
            let id = format!("otlp-{i}");
            let cfg = agent::config_with(
                dir.path(),
                &Options {
                    bench: &id,
                    otlp_endpoint: Some(&endpoint),
                    heartbeat: "250ms",
                    export_interval: "1s",
                    ..Options::default()
                },
                "",
            );
            Agent::start(dir.path(), &cfg)
        })
        .collect();
    // A few exports, so each bench's cadence is known.
    all_online(&watch, 3);
    std::thread::sleep(Duration::from_secs(3));
    for a in agents {
        a.kill9();
    }
    let killed = Instant::now();
    wait_for("BenchWatchIngestDown", WAIT, || {
        am.active("BenchWatchIngestDown").len() == 1
    });
    let a = &am.active("BenchWatchIngestDown")[0]["annotations"];
    assert!(
        a["cannot_tell_apart"]
            .as_str()
            .is_some_and(|s| s.contains("ingest path") && s.contains("went dark")),
        "{a}"
    );
    while killed.elapsed() < Duration::from_secs(12) {
        assert!(am.active("BenchOffline").is_empty(), "{:?}", am.alerts());
        std::thread::sleep(Duration::from_millis(250));
    }
}
