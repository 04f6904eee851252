//! A site without MQTT: real `benchtel-agent` processes export OTLP/HTTP to
//! a real collector (rotel), whose OTLP exporter forwards the metrics over
//! HTTP (protobuf, gzip) with the site's bearer token to a real
//! `benchtel-watch`, which pushes to a real Alertmanager. Nothing in between
//! is built for the test: the watch must take what a collector makes of the
//! agent's export (batched resources, gzip, its headers and paths).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::agent::{self, Agent, Options};
use support::alertmanager::Alertmanager;
use support::http::sample;
use support::rotel::Rotel;
use support::watch::Watch;

const SITE: &str = "lab";
const TOKEN: &str = "lab-s3cret-token";
/// The agent's heartbeat is much faster than its export: the watch hears a
/// bench once per export, and must judge it by that cadence.
const HEARTBEAT: &str = "250ms";
const EXPORT: &str = "2s";
const EXPORT_S: f64 = 2.0;

/// Seconds, not minutes, so the scenario runs quickly; the logic at
/// production thresholds is tested with a paused clock in
/// `src/watch/fleet/tests.rs`.
fn watch_config(am: &Alertmanager, token_file: &Path) -> String {
    format!(
        r#"
[otlp]
[[otlp.tokens]]
site = "{SITE}"
token_file = {token:?}
[liveness]
offline_after = "3s"
resolve_after = "2s"
[alerts]
alertmanagers = ["{am}"]
resend_interval = "1s"
hold = "1s"
[log]
level = "debug"
"#,
        token = token_file.display().to_string(),
        am = am.url(),
    )
}

/// A token file for the watch, in `dir`.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("lab-token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path
}

/// A bench agent at `SITE` that sends to `collector` only (no MQTT).
fn bench(dir: &Path, id: &str, collector: &Rotel) -> Agent {
    let endpoint = collector.endpoint();
    let cfg = agent::config_with(
        dir,
        &Options {
            bench: id,
            site: SITE,
            otlp_endpoint: Some(&endpoint),
            heartbeat: HEARTBEAT,
            export_interval: EXPORT,
        },
        "",
    );
    Agent::start(dir, &cfg)
}

/// What every process said, for a failed wait.
struct Diag<'a> {
    watch: &'a Watch,
    rotel: &'a Rotel,
    agents: Vec<&'a Agent>,
}

impl Diag<'_> {
    fn dump(&self) -> String {
        let tail = |s: String, n: usize| {
            // The agent logs every heartbeat; they say nothing here.
            let lines: Vec<&str> = s.lines().filter(|l| !l.contains(" heartbeat ")).collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        let mut out = format!(
            "watch /api/v1/benches: {:?}\nwatch log:\n{}\nrotel log:\n{}\n",
            support::http::get(&self.watch.addr(), "/api/v1/benches"),
            tail(self.watch.output(), 20),
            tail(self.rotel.output(), 10),
        );
        for a in &self.agents {
            out.push_str(&format!("agent log:\n{}\n", tail(a.output(), 10)));
        }
        out
    }

    /// Polls `cond` every 50 ms until it holds; panics with every log
    /// after `timeout`.
    fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn bench_json(watch: &Watch, id: &str) -> Option<serde_json::Value> {
    watch.benches().into_iter().find(|b| b["bench_id"] == id)
}

fn offline_alerts_for(am: &Alertmanager, id: &str) -> usize {
    am.active("BenchOffline")
        .iter()
        .filter(|a| a["labels"]["bench_id"] == id)
        .count()
}

#[test]
fn a_site_without_mqtt_is_watched_through_a_collector_and_a_crash_pages() {
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&am, &token_file(dir.path())));
    let rotel = Rotel::start_forwarding_to(
        &format!("http://{}", watch.addr()),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    let doomed = bench(dir.path(), "bench-a", &rotel);
    let survivor = bench(dir.path(), "bench-b", &rotel);
    let diag = Diag {
        watch: &watch,
        rotel: &rotel,
        agents: vec![&doomed, &survivor],
    };

    // 1. The watch learns both benches from what rotel forwards, judges them
    //    online, and learns that they are heard once per export.
    diag.wait(
        "both benches online at their export cadence",
        Duration::from_secs(30),
        || {
            let benches = watch.benches();
            benches.len() == 2
                && benches.iter().all(|b| {
                    b["bench_site"] == SITE
                        && b["liveness"] == "online"
                        && b["heartbeat_interval_seconds"]
                            .as_f64()
                            .is_some_and(|i| (0.75 * EXPORT_S..=1.5 * EXPORT_S).contains(&i))
                })
        },
    );
    let a = bench_json(&watch, "bench-a").unwrap();
    assert_eq!(a["reported_state"], "ready", "{a}");
    let m = watch.metrics();
    for id in ["bench-a", "bench-b"] {
        let labels = [("bench_id", id), ("bench_site", SITE)];
        assert_eq!(sample(&m, "bench_up", &labels), Some(1.0), "{m}");
        let age = sample(&m, "bench_heartbeat_age_seconds", &labels).unwrap();
        assert!((0.0..=3.0 * EXPORT_S).contains(&age), "{id}: age {age}");
    }
    let accepted = sample(
        &m,
        "benchtel_watch_heartbeats_total",
        &[("transport", "otlp"), ("result", "accepted")],
    )
    .unwrap_or(0.0);
    assert!(accepted >= 4.0, "{m}");
    assert_eq!(
        sample(
            &m,
            "benchtel_watch_rejected_total",
            &[("transport", "otlp")]
        ),
        None,
        "rotel's requests are all accepted: {m}"
    );
    assert!(am.alerts().is_empty(), "{:?}", am.alerts());

    // 2. One bench crashes: offline after the grace period, and paged.
    // The grace period is offline_after (3 s), but never less than two of
    // the bench's intervals (two exports).
    let interval = bench_json(&watch, "bench-a").unwrap()["heartbeat_interval_seconds"]
        .as_f64()
        .unwrap();
    let grace = 3.0_f64.max(2.0 * interval);
    doomed.kill9();
    let diag = Diag {
        watch: &watch,
        rotel: &rotel,
        agents: vec![&survivor],
    };
    diag.wait(
        "BenchOffline for bench-a in Alertmanager",
        Duration::from_secs(30),
        || offline_alerts_for(&am, "bench-a") == 1,
    );
    let alert = &am.active("BenchOffline")[0];
    assert_eq!(alert["labels"]["bench_site"], SITE);
    assert_eq!(alert["labels"]["severity"], "critical");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("heartbeats stopped"),
        "{alert}"
    );
    let m = watch.metrics();
    let a = [("bench_id", "bench-a"), ("bench_site", SITE)];
    assert_eq!(sample(&m, "bench_up", &a), Some(0.0), "{m}");
    assert_eq!(
        sample(
            &m,
            "bench_liveness",
            &[("bench_id", "bench-a"), ("state", "offline")]
        ),
        Some(1.0)
    );
    // Paged only once it had been silent for the grace period and then the
    // alert's hold (1 s); a new point may have nudged the interval since.
    let age = sample(&m, "bench_heartbeat_age_seconds", &a).unwrap();
    assert!(
        age >= grace + 1.0 - 0.1,
        "paged at a silence of {age} s, before the grace period of {grace} s"
    );
    assert_eq!(
        sample(
            &m,
            "benchtel_watch_alerts_total",
            &[("alertname", "BenchOffline"), ("state", "firing")]
        ),
        Some(1.0),
        "{m}"
    );
    // The other bench of the site was heard all along.
    assert_eq!(
        sample(&m, "bench_up", &[("bench_id", "bench-b")]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(offline_alerts_for(&am, "bench-b"), 0);
    assert!(am.active("BenchWatchIngestDown").is_empty());
}

#[test]
fn a_collector_with_a_wrong_token_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&am, &token_file(dir.path())));
    let rotel = Rotel::start_forwarding_to(
        &format!("http://{}", watch.addr()),
        &[("Authorization", "Bearer not-the-token")],
    );
    let agent = bench(dir.path(), "bench-x", &rotel);
    let diag = Diag {
        watch: &watch,
        rotel: &rotel,
        agents: vec![&agent],
    };
    // Three refused exports: the collector kept trying and kept being
    // refused, and never got through in between.
    three_refused(&diag, "unauthorized");
    assert!(watch.benches().is_empty(), "{:?}", watch.benches());
    let m = watch.metrics();
    assert_eq!(
        sample(
            &m,
            "benchtel_watch_heartbeats_total",
            &[("transport", "otlp")]
        ),
        None,
        "{m}"
    );
    assert_eq!(sample(&m, "bench_up", &[("bench_id", "bench-x")]), None);
}

#[test]
fn a_token_for_another_site_is_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&am, &token_file(dir.path())));
    let rotel = Rotel::start_forwarding_to(
        &format!("http://{}", watch.addr()),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    // A bench of another site behind the lab's collector.
    let endpoint = rotel.endpoint();
    let cfg = agent::config_with(
        dir.path(),
        &Options {
            bench: "intruder",
            site: "elsewhere",
            otlp_endpoint: Some(&endpoint),
            heartbeat: HEARTBEAT,
            export_interval: EXPORT,
        },
        "",
    );
    let agent = Agent::start(dir.path(), &cfg);
    let diag = Diag {
        watch: &watch,
        rotel: &rotel,
        agents: vec![&agent],
    };
    three_refused(&diag, "forbidden_site");
    assert!(watch.benches().is_empty(), "{:?}", watch.benches());
}

/// Waits for three OTLP requests refused for `reason`: the collector kept
/// trying and was refused every time.
fn three_refused(diag: &Diag, reason: &str) {
    diag.wait(
        &format!("three OTLP requests refused as {reason}"),
        Duration::from_secs(30),
        || {
            sample(
                &diag.watch.metrics(),
                "benchtel_watch_rejected_total",
                &[("transport", "otlp"), ("reason", reason)],
            )
            .is_some_and(|n| n >= 3.0)
        },
    );
}

/// Runs `benchtel-agent ARGS` against the agent whose runtime directory is
/// `run`.
fn agent_cli(cfg: &Path, run: &Path, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_benchtel-agent"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env_remove("BENCHTEL_CONFIG")
        .env("RUNTIME_DIRECTORY", run)
        .env("STATE_DIRECTORY", run.with_file_name("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn over_a_collector_the_heartbeat_records_bring_maintenance_and_the_job_and_a_killed_bench_in_maintenance_never_pages()
 {
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&am, &token_file(dir.path())));
    let rotel = Rotel::start_forwarding_with_logs_to(
        &format!("http://{}", watch.addr()),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    let endpoint = rotel.endpoint();
    let cfg = agent::config_with(
        dir.path(),
        &Options {
            bench: "bench-m",
            site: SITE,
            otlp_endpoint: Some(&endpoint),
            heartbeat: HEARTBEAT,
            export_interval: "1s",
        },
        "",
    );
    let (state, run) = (dir.path().join("state"), dir.path().join("run"));
    let agent = Agent::start_with(
        dir.path(),
        &cfg,
        &[("STATE_DIRECTORY", &state), ("RUNTIME_DIRECTORY", &run)],
    );
    let diag = Diag {
        watch: &watch,
        rotel: &rotel,
        agents: vec![&agent],
    };
    diag.wait("bench-m online", Duration::from_secs(30), || {
        bench_json(&watch, "bench-m").is_some_and(|b| b["liveness"] == "online")
    });
    agent_cli(
        &cfg,
        &run,
        &["context", "set", "--execution-id", "job-otlp"],
    );
    agent_cli(
        &cfg,
        &run,
        &[
            "maintenance",
            "on",
            "--reason",
            "swap the probe",
            "--for",
            "1h",
        ],
    );
    diag.wait(
        "maintenance with its reason, end and job at the watch",
        Duration::from_secs(30),
        || {
            bench_json(&watch, "bench-m").is_some_and(|b| {
                b["liveness"] == "maintenance"
                    && b["maintenance_source"] == "bench"
                    && b["maintenance_reason"] == "swap the probe"
                    && b["maintenance_until"].is_string()
                    && b["execution_id"] == "job-otlp"
            })
        },
    );
    drop(diag);
    agent.kill9();
    // The grace period is 3 s: far past it, still no page.
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(8) {
        assert!(am.active("BenchOffline").is_empty(), "{:?}", am.alerts());
        let b = bench_json(&watch, "bench-m").unwrap();
        assert_eq!(b["liveness"], "maintenance", "{b}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
