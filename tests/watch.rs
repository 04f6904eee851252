//! `benchtel-watch` as a real process, fed OTLP heartbeats, pushing to a
//! real Alertmanager. Thresholds are seconds so the scenarios run quickly;
//! the logic at production thresholds is tested with a paused clock in
//! `src/watch/fleet/tests.rs`.

mod support;

use std::time::Duration;

use support::alertmanager::Alertmanager;
use support::http::{sample, wait_for};
use support::watch::{Beater, Watch};

fn config(am: &Alertmanager, extra: &str) -> String {
    format!(
        r#"
[liveness]
late_after = "1s"
offline_after = "3s"
will_debounce = "1s"
stop_window = "4s"
resolve_after = "2s"
[ingest]
silence = "10s"
[storm]
min_benches = 10
[alerts]
alertmanagers = ["{}"]
resend_interval = "1s"
hold = "1s"
[log]
level = "info"
{extra}
"#,
        am.url()
    )
}

const EVERY: Duration = Duration::from_millis(500);

/// Waits until `n` benches are online and the watch has learnt their
/// interval (until then it assumes 10 s, and a grace of two intervals).
fn settled(watch: &Watch, n: usize) {
    wait_for(
        &format!("{n} benches online at their interval"),
        Duration::from_secs(15),
        || {
            let benches = watch.benches();
            benches.len() == n
                && benches.iter().all(|b| {
                    b["liveness"] == "online"
                        && b["heartbeat_interval_seconds"].as_f64() < Some(2.0)
                })
        },
    );
}

fn offline_alerts_for(am: &Alertmanager, bench: &str) -> usize {
    am.active("BenchOffline")
        .iter()
        .filter(|a| a["labels"]["bench_id"] == bench)
        .count()
}

#[test]
fn a_silent_bench_pages_and_its_return_resolves_the_page() {
    let am = Alertmanager::start();
    let watch = Watch::start(&config(&am, ""));
    let beater = Beater::start(
        vec![watch.addr()],
        &[("lab", "b1"), ("lab", "b2")],
        EVERY,
        0.0,
    );
    settled(&watch, 2);
    beater.kill("b2");
    let killed = std::time::Instant::now();

    wait_for(
        "BenchOffline for b2 in Alertmanager",
        Duration::from_secs(15),
        || offline_alerts_for(&am, "b2") == 1,
    );
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "paged after {took:?}, before the grace period"
    );
    let alert = &am.active("BenchOffline")[0];
    assert_eq!(alert["labels"]["bench_site"], "lab");
    assert_eq!(alert["labels"]["site_outage"], "false");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["annotations"]["last_state"], "ready");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("heartbeats stopped")
    );
    assert_eq!(offline_alerts_for(&am, "b1"), 0);
    let metrics = watch.metrics();
    assert_eq!(
        sample(&metrics, "bench_up", &[("bench_id", "b2")]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "bench_liveness",
            &[("bench_id", "b2"), ("state", "offline")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &metrics,
            "bench_heartbeat_age_seconds",
            &[("bench_id", "b2")]
        )
        .unwrap()
            >= 3.0
    );
    assert_eq!(
        sample(
            &metrics,
            "benchtel_watch_alerts_total",
            &[("alertname", "BenchOffline"), ("state", "firing")]
        ),
        Some(1.0)
    );
    beater.revive("lab", "b2");
    wait_for(
        "the page resolved in Alertmanager",
        Duration::from_secs(15),
        || offline_alerts_for(&am, "b2") == 0,
    );
    let metrics = watch.metrics();
    assert_eq!(
        sample(
            &metrics,
            "benchtel_watch_alerts_total",
            &[("alertname", "BenchOffline"), ("state", "resolved")]
        ),
        Some(1.0)
    );
}

#[test]
fn a_restarted_watch_neither_pages_the_living_nor_forgets_the_dead() {
    let am = Alertmanager::start();
    let mut watch = Watch::start(&config(&am, ""));
    let beater = Beater::start(
        vec![watch.addr()],
        &[("lab", "a"), ("lab", "b"), ("lab", "c")],
        EVERY,
        0.0,
    );
    settled(&watch, 3);
    // Let the registry save (once a second), then crash the watch.
    std::thread::sleep(Duration::from_millis(1500));
    watch.kill9();
    beater.kill("c");
    std::thread::sleep(Duration::from_secs(5));
    watch.restart();
    let restarted = std::time::Instant::now();
    assert_eq!(
        watch.benches().len(),
        3,
        "the registry remembers every bench"
    );
    wait_for("BenchOffline for c", Duration::from_secs(15), || {
        offline_alerts_for(&am, "c") == 1
    });
    assert!(
        restarted.elapsed() >= Duration::from_secs(3),
        "c was given a full grace period after the restart"
    );
    assert_eq!(am.active("BenchOffline").len(), 1, "{:?}", am.alerts());
    assert!(am.active("BenchWatchIngestDown").is_empty());
}

#[test]
fn a_firing_alert_survives_a_watch_restart() {
    let am = Alertmanager::start();
    let mut watch = Watch::start(&config(&am, ""));
    let beater = Beater::start(
        vec![watch.addr()],
        &[("lab", "a"), ("lab", "b")],
        EVERY,
        0.0,
    );
    settled(&watch, 2);
    beater.kill("b");
    wait_for("BenchOffline for b", Duration::from_secs(15), || {
        offline_alerts_for(&am, "b") == 1
    });
    let starts_at = am.active("BenchOffline")[0]["startsAt"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(watch.terminate().code(), Some(0), "{}", watch.output());
    watch.restart();
    // Still firing after the restart, with the same start: re-sent from the
    // registry, not raised anew.
    std::thread::sleep(Duration::from_secs(3));
    let after = am.active("BenchOffline");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["startsAt"], starts_at);
    let listed = watch.benches();
    let b = listed.iter().find(|x| x["bench_id"] == "b").unwrap();
    assert_eq!(b["alert"], "firing");
}

#[test]
fn two_replicas_push_one_alert() {
    let am = Alertmanager::start();
    let w1 = Watch::start(&config(&am, ""));
    let w2 = Watch::start(&config(&am, ""));
    let beater = Beater::start(
        vec![w1.addr(), w2.addr()],
        &[("lab", "a"), ("lab", "b")],
        EVERY,
        0.0,
    );
    settled(&w1, 2);
    settled(&w2, 2);
    beater.kill("b");
    wait_for("both replicas fired", Duration::from_secs(15), || {
        [&w1, &w2].iter().all(|w| {
            sample(
                &w.metrics(),
                "benchtel_watch_alerts_total",
                &[("alertname", "BenchOffline"), ("state", "firing")],
            ) == Some(1.0)
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        am.active("BenchOffline").len(),
        1,
        "Alertmanager deduplicates identical alerts"
    );
}

#[test]
fn benches_an_hour_ahead_or_behind_are_fine_and_their_skew_is_exported() {
    let am = Alertmanager::start();
    let watch = Watch::start(&config(&am, ""));
    let ahead = Beater::start(vec![watch.addr()], &[("lab", "ahead")], EVERY, 3600.0);
    let behind = Beater::start(vec![watch.addr()], &[("lab", "behind")], EVERY, -3600.0);
    settled(&watch, 2);
    std::thread::sleep(Duration::from_secs(6));
    assert!(am.alerts().is_empty(), "{:?}", am.alerts());
    for b in watch.benches() {
        assert_eq!(b["liveness"], "online", "{b}");
    }
    let m = watch.metrics();
    let a = sample(&m, "bench_clock_skew_seconds", &[("bench_id", "ahead")]).unwrap();
    let b = sample(&m, "bench_clock_skew_seconds", &[("bench_id", "behind")]).unwrap();
    assert!((a - 3600.0).abs() < 2.0, "{a}");
    assert!((b + 3600.0).abs() < 2.0, "{b}");
    drop((ahead, behind));
}

#[test]
fn an_old_replay_does_not_revive_an_offline_bench() {
    use prost::Message;
    let am = Alertmanager::start();
    let watch = Watch::start(&config(&am, ""));
    let beater = Beater::start(
        vec![watch.addr()],
        &[("lab", "a"), ("lab", "b")],
        EVERY,
        0.0,
    );
    settled(&watch, 2);
    beater.kill("b");
    wait_for("b offline", Duration::from_secs(10), || {
        watch.liveness("b").as_deref() == Some("offline")
    });
    // b's outbox replays ten minutes of old beats through a collector.
    let now = support::otlp::now_s();
    let points: Vec<(u64, f64)> = (1..=60)
        .map(|i| (1000 + i, now - 600.0 + i as f64 * 5.0 - 30.0))
        .collect();
    let body = support::otlp::heartbeats("lab", "b", 42, &points).encode_to_vec();
    let (code, text) = watch.post_otlp(&body, &[]);
    assert_eq!(code, 200, "{text}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(watch.liveness("b").as_deref(), Some("offline"));
    let m = watch.metrics();
    assert_eq!(
        sample(
            &m,
            "benchtel_watch_heartbeats_total",
            &[("transport", "otlp"), ("result", "stale")]
        ),
        Some(60.0)
    );
}

#[test]
fn bad_configs_exit_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("watch.toml");
    std::fs::write(&conf, "[liveness]\noffline_after = \"soon\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_benchtel-watch"))
        .args(["validate", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("liveness.offline_after = \"soon\""), "{err}");
}

#[test]
fn maintenance_and_retirement_through_the_api_need_the_admin_token() {
    let am = Alertmanager::start();
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "adm1n\n").unwrap();
    let watch = Watch::start_http(
        &format!(
            "admin_token_file = {:?}",
            token.path().display().to_string()
        ),
        &config(&am, ""),
    );
    let beater = Beater::start(
        vec![watch.addr()],
        &[("lab", "a"), ("lab", "b")],
        EVERY,
        0.0,
    );
    settled(&watch, 2);
    let post = |path: &str, auth: Option<&str>, body: &str| {
        let mut headers = vec!["Content-Type: application/json".to_string()];
        if let Some(t) = auth {
            headers.push(format!("Authorization: Bearer {t}"));
        }
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        support::http::post(&watch.addr(), path, &h, body.as_bytes()).unwrap()
    };
    assert_eq!(
        post("/api/v1/benches/b/maintenance", None, r#"{"on":true}"#).0,
        401
    );
    assert_eq!(
        post(
            "/api/v1/benches/b/maintenance",
            Some("wrong"),
            r#"{"on":true}"#
        )
        .0,
        401
    );
    let (code, body) = post(
        "/api/v1/benches/b/maintenance",
        Some("adm1n"),
        r#"{"on":true}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        post("/api/v1/benches/nope/maintenance", Some("adm1n"), "{}").0,
        404
    );
    wait_for("b in maintenance", Duration::from_secs(5), || {
        watch.liveness("b").as_deref() == Some("maintenance")
    });
    beater.kill("b");
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        am.alerts().is_empty(),
        "a bench in maintenance paged: {:?}",
        am.alerts()
    );
    let (code, _) = post("/api/v1/benches/b/retire", Some("adm1n"), "");
    assert_eq!(code, 200);
    assert_eq!(watch.benches().len(), 1);
    let m = watch.metrics();
    assert_eq!(
        sample(&m, "bench_up", &[("bench_id", "b")]),
        None,
        "retired benches are no longer exported"
    );
}

#[test]
fn webhooks_get_each_firing_and_resolution_once_even_after_failures() {
    let am = Alertmanager::start();
    let hook = support::webhook::Webhook::start();
    let watch = Watch::start(&config(
        &am,
        &format!("[[alerts.webhook]]\nurl = \"{}\"\n", hook.url()),
    ));
    let beater = Beater::start(
        vec![watch.addr()],
        &[("lab", "a"), ("lab", "b")],
        EVERY,
        0.0,
    );
    settled(&watch, 2);
    // The receiver is down for the first two attempts: retried with backoff.
    hook.fail_next(2);
    beater.kill("b");
    wait_for("the firing webhook", Duration::from_secs(20), || {
        hook.bodies().len() == 1
    });
    let fired = &hook.bodies()[0];
    assert_eq!(fired["status"], "firing");
    assert_eq!(fired["alerts"][0]["labels"]["alertname"], "BenchOffline");
    assert_eq!(fired["alerts"][0]["labels"]["bench_id"], "b");
    beater.revive("lab", "b");
    wait_for("the resolved webhook", Duration::from_secs(20), || {
        hook.bodies().len() == 2
    });
    let resolved = &hook.bodies()[1];
    assert_eq!(resolved["status"], "resolved");
    assert!(resolved["alerts"][0]["endsAt"].is_string());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        hook.bodies().len(),
        2,
        "each event is delivered once, not re-sent"
    );
    let m = watch.metrics();
    let ok = sample(
        &m,
        "benchtel_watch_alert_sends_total",
        &[("receiver", &hook.url()), ("result", "ok")],
    );
    assert_eq!(ok, Some(2.0), "{m}");
}
