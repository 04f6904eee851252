//! `benchtel-watch` hearing benches over a real Mosquitto and paging a real
//! Alertmanager: agents killed, frozen and stopped cleanly, the broker
//! going away, a whole site cut at once (with the shipped Alertmanager
//! config inhibiting the per-bench pages), and garbage on the topics.
//! Thresholds are seconds so the scenarios run quickly.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::agent::{self, Agent};
use support::alertmanager::Alertmanager;
use support::fake_bench::FakeBench;
use support::http::{sample, wait_for};
use support::mosquitto::Mosquitto;
use support::watch::Watch;

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

fn agent_on(dir: &Path, broker: &Mosquitto, mqtt_extra: &str) -> Agent {
    let cfg = agent::config(
        dir,
        &format!(
            "[mqtt]\nurl = \"{}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n{mqtt_extra}",
            broker.url()
        ),
    );
    Agent::start(dir, &cfg)
}

fn offline_pages(am: &Alertmanager) -> usize {
    am.active("BenchOffline").len()
}

fn online(watch: &Watch, bench: &str) {
    wait_for(&format!("{bench} online"), Duration::from_secs(20), || {
        watch.liveness(bench).as_deref() == Some("online")
    });
}

#[test]
fn a_killed_agent_pages_within_debounce_and_a_resend_and_its_return_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&broker, &am, ""));
    let agent = agent_on(dir.path(), &broker, "");
    online(&watch, "test-bench");
    agent.kill9();
    let killed = Instant::now();
    wait_for(
        "BenchOffline in Alertmanager",
        Duration::from_secs(15),
        || offline_pages(&am) == 1,
    );
    let took = killed.elapsed();
    // The will arrives at once; debounce 1 s + hold 1 s, then the next
    // push (resend interval 1 s). Far below the 6 s grace period.
    assert!(took < Duration::from_secs(5), "paged after {took:?}");
    let page = &am.active("BenchOffline")[0];
    assert_eq!(page["labels"]["bench_id"], "test-bench");
    let summary = page["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains("Last Will"), "{summary}");
    let again = agent_on(dir.path(), &broker, "");
    online(&watch, "test-bench");
    let back = Instant::now();
    wait_for("the page resolved", Duration::from_secs(15), || {
        offline_pages(&am) == 0
    });
    assert!(
        back.elapsed() >= Duration::from_secs(1),
        "resolved before the hysteresis"
    );
    drop(again);
}

#[test]
fn a_frozen_agent_is_offline_within_one_and_a_half_keepalives_and_the_debounce() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    // A grace period far longer than the keepalive: only the will can make
    // the bench offline this soon.
    let watch = Watch::start(&watch_config(
        &broker,
        &am,
        "[[liveness.override]]\nsite = \"lab\"\noffline_after = \"60s\"\n",
    ));
    let agent = agent_on(dir.path(), &broker, "keepalive = \"2s\"\n");
    online(&watch, "test-bench");
    // The socket stays open; only the keepalive tells the broker.
    let pid = Pid::from_raw(agent.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    wait_for("offline", Duration::from_secs(20), || {
        watch.liveness("test-bench").as_deref() == Some("offline")
    });
    let took = frozen.elapsed();
    // 1.5 × 2 s keepalive + 1 s debounce = 4 s. Mosquitto 2.0 checks
    // keepalives about once a second (its will came 4.0 s after the freeze
    // when measured alone), and the watch judges once a second: 6 s, plus
    // polling; the grace period, 60 s, is far off.
    assert!(took < Duration::from_millis(7500), "offline after {took:?}");
    assert!(
        took >= Duration::from_secs(3),
        "offline after {took:?}, before the broker could know"
    );
    wait_for("the page", Duration::from_secs(10), || {
        offline_pages(&am) == 1
    });
    let summary = am.active("BenchOffline")[0]["annotations"]["summary"].clone();
    assert!(summary.as_str().unwrap().contains("Last Will"), "{summary}");
    let _ = kill(pid, Signal::SIGCONT);
}

#[test]
fn a_clean_stop_does_not_page_inside_the_stop_window() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&broker, &am, ""));
    let agent = agent_on(dir.path(), &broker, "");
    online(&watch, "test-bench");
    let (status, _) = agent.terminate();
    assert!(status.success());
    let stopped = Instant::now();
    wait_for("stopped", Duration::from_secs(5), || {
        watch.liveness("test-bench").as_deref() == Some("stopped")
    });
    while stopped.elapsed() < Duration::from_secs(4) {
        assert_eq!(offline_pages(&am), 0, "paged inside the stop window");
        assert_eq!(watch.liveness("test-bench").as_deref(), Some("stopped"));
        std::thread::sleep(Duration::from_millis(200));
    }
    // A bench that stays down past the window is paged after all.
    wait_for(
        "BenchOffline after the stop window",
        Duration::from_secs(15),
        || offline_pages(&am) == 1,
    );
    let summary = am.active("BenchOffline")[0]["annotations"]["summary"].clone();
    assert!(
        summary
            .as_str()
            .unwrap()
            .contains("stopped and did not come back")
    );
}

#[test]
fn a_broker_outage_longer_than_the_grace_period_is_one_ingest_page_and_no_bench_page() {
    let mut broker = Mosquitto::start();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&broker, &am, ""));
    let benches: Vec<FakeBench> = (0..3)
        .map(|i| {
            FakeBench::start(
                broker.port,
                "lab",
                &format!("b{i}"),
                Duration::from_millis(500),
            )
        })
        .collect();
    for i in 0..3 {
        online(&watch, &format!("b{i}"));
    }
    broker.stop();
    let down = Instant::now();
    wait_for("BenchWatchIngestDown", Duration::from_secs(15), || {
        am.active("BenchWatchIngestDown").len() == 1
    });
    while down.elapsed() < Duration::from_secs(10) {
        assert_eq!(offline_pages(&am), 0, "{:?}", am.alerts());
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = watch.metrics();
    assert_eq!(sample(&m, "benchtel_watch_ingest_up", &[]), Some(0.0));
    broker.restart();
    wait_for("the ingest page resolved", Duration::from_secs(30), || {
        am.active("BenchWatchIngestDown").is_empty()
    });
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(8) {
        assert_eq!(offline_pages(&am), 0, "{:?}", am.alerts());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(am.alerts().len(), 0, "{:?}", am.alerts());
    drop(benches);
}

/// The shipped Alertmanager example, its receivers pointed at a closed
/// local port so nothing leaves the machine.
fn shipped_alertmanager() -> Alertmanager {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/alertmanager/alertmanager.yml"),
    )
    .unwrap();
    let closed = format!("http://127.0.0.1:{}/", support::free_port());
    let text = text
        .lines()
        .map(|l| match l.find("url: ") {
            Some(i) => format!("{}url: {closed}", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    Alertmanager::with_config(&text)
}

#[test]
fn a_site_cut_at_once_is_one_site_page_and_the_shipped_config_inhibits_the_rest() {
    let broker = Mosquitto::start();
    let am = shipped_alertmanager();
    // A hold of 3 s: long enough for a loaded machine to see all 20 wills
    // before the first bench's page is due.
    let watch = Watch::start(
        &watch_config(
            &broker,
            &am,
            "[storm]\nshare = 0.5\nwindow = \"30s\"\nmin_benches = 4\n",
        )
        .replace("hold = \"1s\"", "hold = \"3s\""),
    );
    let every = Duration::from_millis(500);
    let cut: Vec<FakeBench> = (0..20)
        .map(|i| FakeBench::start(broker.port, "lab1", &format!("s1-{i:02}"), every))
        .collect();
    let others: Vec<FakeBench> = (0..3)
        .map(|i| FakeBench::start(broker.port, "lab2", &format!("s2-{i}"), every))
        .collect();
    wait_for("23 benches online", Duration::from_secs(30), || {
        let b = watch.benches();
        b.len() == 23 && b.iter().all(|x| x["liveness"] == "online")
    });
    FakeBench::cut_all(cut);
    wait_for(
        "one BenchSiteOffline and 20 BenchOffline",
        Duration::from_secs(20),
        || am.active("BenchSiteOffline").len() == 1 && am.active("BenchOffline").len() == 20,
    );
    let site = &am.active("BenchSiteOffline")[0];
    assert_eq!(site["labels"]["bench_site"], "lab1");
    assert_eq!(site["annotations"]["offline_count"], "20");
    assert_eq!(
        site["status"]["inhibitedBy"].as_array().map(Vec::len),
        Some(0)
    );
    wait_for(
        "every bench page inhibited",
        Duration::from_secs(10),
        || {
            am.active("BenchOffline").iter().all(|a| {
                a["labels"]["site_outage"] == "true"
                    && a["status"]["inhibitedBy"]
                        .as_array()
                        .is_some_and(|v| !v.is_empty())
            })
        },
    );
    assert!(am.active("BenchWatchIngestDown").is_empty());
    for i in 0..3 {
        assert_eq!(
            watch.liveness(&format!("s2-{i}")).as_deref(),
            Some("online")
        );
    }
    drop(others);
}

#[test]
fn malformed_messages_are_counted_and_the_watch_carries_on() {
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&broker, &am, ""));
    let pub_ = support::mqtt::Subscriber::connect(broker.port, &[]);
    wait_for("the watch's session", Duration::from_secs(10), || {
        sample(&watch.metrics(), "benchtel_watch_mqtt_connected", &[]) == Some(1.0)
    });
    let good = |bench: &str, site: &str| {
        serde_json::json!({
            "bench": bench, "site": site, "seq": 1, "run_id": "r", "boot_id": "b",
            "sent_at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "uptime_s": 1, "state": "ready", "agent_version": "x", "interval_s": 1.0,
        })
        .to_string()
    };
    // The watch subscribes after its session is up: beat until it hears.
    wait_for("the good heartbeat", Duration::from_secs(15), || {
        pub_.publish("benchtel/lab/b1/heartbeat", &good("b1", "lab"), false);
        std::thread::sleep(Duration::from_millis(100));
        watch.liveness("b1").as_deref() == Some("online")
    });
    pub_.publish("benchtel/lab/b1/heartbeat", "\u{0}\u{1} not json", false);
    pub_.publish("benchtel/lab/b1/heartbeat", &good("other", "lab"), false);
    pub_.publish(
        "benchtel/lab/b1/heartbeat",
        &good("b1", "lab").replace(r#""sent_at":""#, r#""sent_at":"yesterday"#),
        false,
    );
    pub_.publish("benchtel/lab/b1/status", "maybe", false);
    let want = [
        ("malformed_json", 2.0),
        ("topic_mismatch", 1.0),
        ("bad_sent_at", 1.0),
    ];
    let counted = |m: &str, reason: &str| {
        sample(
            m,
            "benchtel_watch_rejected_total",
            &[("transport", "mqtt"), ("reason", reason)],
        )
    };
    wait_for("the rejections counted", Duration::from_secs(10), || {
        let m = watch.metrics();
        want.iter()
            .all(|(reason, n)| counted(&m, reason) == Some(*n))
    });
    assert_eq!(watch.benches().len(), 1, "garbage created no bench");
    let (code, _) = support::http::get(&watch.addr(), "/healthz").unwrap();
    assert_eq!(code, 200);
}

#[test]
fn a_replica_partitioned_by_site_hears_only_its_sites() {
    let broker = Mosquitto::start();
    let am = Alertmanager::start();
    let watch = Watch::start(&watch_config(&broker, &am, "").replace(
        "ping_interval = \"1s\"",
        "ping_interval = \"1s\"\nsites = [\"lab1\"]",
    ));
    let every = Duration::from_millis(500);
    let mine = FakeBench::start(broker.port, "lab1", "x", every);
    let theirs = FakeBench::start(broker.port, "lab2", "y", every);
    online(&watch, "x");
    std::thread::sleep(Duration::from_secs(2));
    let known: Vec<String> = watch
        .benches()
        .iter()
        .map(|b| b["bench_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(known, ["x"]);
    drop((mine, theirs));
}
