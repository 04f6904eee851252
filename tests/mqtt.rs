//! The agent's MQTT side against a real Mosquitto: heartbeats and the
//! retained status, the Last Will on kill -9, a clean stop that is not an
//! outage, a broker restart, a frozen broker, commands on `…/cmd`, probe
//! verdicts, and TLS, mutual TLS and passwords.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use benchtel::wire::{Heartbeat, OfflineReason, Presence, ProbeVerdict, Status};
use support::agent::{self, Agent};
use support::mosquitto::Mosquitto;
use support::mqtt::{Msg, Subscriber};

const WAIT: Duration = Duration::from_secs(30);

/// One test's bench. Each test has its own id, hence its own topics and
/// MQTT client id: tests run in parallel, and nothing from another test's
/// agent (on a broker shared by mistake) may pass for this one's.
struct Bench {
    id: &'static str,
    heartbeat: String,
    status: String,
    cmd: String,
}

impl Bench {
    fn new(id: &'static str) -> Bench {
        Bench {
            id,
            heartbeat: format!("benchtel/lab/{id}/heartbeat"),
            status: format!("benchtel/lab/{id}/status"),
            cmd: format!("benchtel/lab/{id}/cmd"),
        }
    }

    /// The agent's default client id for this bench at site `lab`.
    fn client_id(&self) -> String {
        format!("benchtel-agent-lab-{}", self.id)
    }

    fn is_status(&self, m: &Msg, presence: Presence, reason: Option<OfflineReason>) -> bool {
        m.topic == self.status && {
            let s = status(m);
            s.status == presence && s.reason == reason
        }
    }

    /// The test agent config for this bench, with `extra` appended.
    fn config(&self, dir: &Path, extra: &str) -> PathBuf {
        let opts = agent::Options {
            bench: self.id,
            ..agent::Options::default()
        };
        agent::config_with(dir, &opts, extra)
    }
}

fn status(m: &Msg) -> Status {
    Status::parse(&m.payload).unwrap_or_else(|| panic!("not a status: {}", m.text()))
}

fn heartbeat(m: &Msg) -> Heartbeat {
    serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("{e}: {}", m.text()))
}

fn mqtt_section(broker: &Mosquitto, extra: &str) -> String {
    format!(
        "[mqtt]\nurl = \"{}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n{extra}",
        broker.url()
    )
}

/// Starts an agent on `broker` and waits for its `online` status.
fn online_agent(
    b: &Bench,
    dir: &Path,
    broker: &Mosquitto,
    sub: &Subscriber,
    extra: &str,
) -> (Agent, Status) {
    let from = sub.len();
    let cfg = b.config(dir, &mqtt_section(broker, extra));
    let agent = Agent::start(dir, &cfg);
    let online = sub.wait_for("online status", from, WAIT, |m| {
        b.is_status(m, Presence::Online, None)
    });
    (agent, status(&online))
}

#[test]
fn heartbeats_carry_the_wire_json_with_rising_seq_and_online_is_retained() {
    let b = Bench::new("beats");
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let dir = tempfile::tempdir().unwrap();
    let (agent, online) = online_agent(&b, dir.path(), &broker, &sub, "");
    let run_id = online.run_id.clone().unwrap();
    assert!(online.sent_at.is_some(), "{online:?}");
    let from = sub.len();
    sub.wait_for("five heartbeats", from, WAIT, |_| {
        sub.on(&b.heartbeat, from).len() >= 5
    });
    let beats: Vec<Heartbeat> = sub.on(&b.heartbeat, from).iter().map(heartbeat).collect();
    for pair in beats.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "{beats:?}");
    }
    let beat = &beats[0];
    assert_eq!((beat.bench.as_str(), beat.site.as_str()), (b.id, "lab"));
    assert_eq!(beat.run_id, run_id, "one run id for status and beats");
    assert_eq!(
        beat.boot_id,
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap()
            .trim()
    );
    assert_eq!(beat.state, "ready", "no readiness checks: ready at once");
    assert_eq!(beat.interval_s, Some(0.1));
    assert_eq!(beat.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(
        humantime::parse_rfc3339(&beat.sent_at).is_ok(),
        "{}",
        beat.sent_at
    );
    assert!(sub.on(&b.heartbeat, from).iter().all(|m| !m.retain));

    // A late subscriber gets the status from the broker's retained store.
    let late = Subscriber::connect(broker.port, &[b.status.as_str()]);
    let kept = late.wait_for("the retained status", 0, WAIT, |m| m.topic == b.status);
    assert!(kept.retain, "status must be retained");
    assert_eq!(status(&kept).status, Presence::Online);

    assert_eq!(agent.metric("benchtel_mqtt_connected", &[]), 1.0);
    agent.wait_metric(
        "benchtel_mqtt_publishes_total",
        &[("topic_kind", "heartbeat"), ("result", "acked")],
        WAIT,
        |v| v >= 5.0,
    );
    assert_eq!(
        agent.metric(
            "benchtel_mqtt_publishes_total",
            &[("topic_kind", "status"), ("result", "acked")]
        ),
        1.0
    );
    let line = agent.wait_line(&["started", "mqtt=mqtt://127.0.0.1"], WAIT);
    assert!(line.contains("keepalive=15s"), "{line}");
}

#[test]
fn kill_9_makes_the_broker_publish_the_will_offline_connection_lost() {
    let b = Bench::new("kill-9");
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let dir = tempfile::tempdir().unwrap();
    let (agent, online) = online_agent(&b, dir.path(), &broker, &sub, "");
    let from = sub.len();
    agent.kill9();
    let will = sub.wait_for("the Last Will", from, WAIT, |m| {
        b.is_status(m, Presence::Offline, Some(OfflineReason::ConnectionLost))
    });
    assert_eq!(
        status(&will).run_id,
        online.run_id,
        "the will names the run"
    );
    let late = Subscriber::connect(broker.port, &[b.status.as_str()]);
    let kept = late.wait_for("the retained status", 0, WAIT, |m| m.topic == b.status);
    assert!(kept.retain);
    assert_eq!(status(&kept).reason, Some(OfflineReason::ConnectionLost));
}

#[test]
fn sigterm_says_offline_shutdown_and_the_will_never_follows() {
    let b = Bench::new("sigterm");
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let dir = tempfile::tempdir().unwrap();
    let (agent, online) = online_agent(&b, dir.path(), &broker, &sub, "");
    let from = sub.len();
    let (exit, stderr) = agent.terminate();
    assert!(exit.success(), "{stderr}");
    let bye = sub.wait_for("offline/shutdown", from, WAIT, |m| {
        b.is_status(m, Presence::Offline, Some(OfflineReason::Shutdown))
    });
    assert_eq!(status(&bye).run_id, online.run_id);
    // The agent is gone and its socket closed. Two round trips through the
    // broker after that: a will, had it been triggered, is routed by then.
    sub.sync();
    sub.sync();
    let after: Vec<Status> = sub.on(&b.status, from).iter().map(status).collect();
    assert_eq!(
        after.last().map(|s| s.reason),
        Some(Some(OfflineReason::Shutdown)),
        "a will followed the clean stop: {after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|s| s.reason == Some(OfflineReason::ConnectionLost)),
        "{after:?}"
    );
    let late = Subscriber::connect(broker.port, &[b.status.as_str()]);
    let kept = late.wait_for("the retained status", 0, WAIT, |m| m.topic == b.status);
    assert_eq!(status(&kept).reason, Some(OfflineReason::Shutdown));
    // Mosquitto itself saw a DISCONNECT, not a dropped socket.
    let log = broker.output();
    assert!(
        log.contains(&format!("Client {} disconnected.", b.client_id())),
        "{log}"
    );
}

#[test]
fn after_a_broker_restart_the_agent_reconnects_says_online_and_beats_again() {
    let b = Bench::new("broker-restart");
    let mut broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let dir = tempfile::tempdir().unwrap();
    let (agent, _) = online_agent(&b, dir.path(), &broker, &sub, "");
    let from = sub.len();
    let before = heartbeat(&sub.wait_for("a heartbeat", from, WAIT, |m| m.topic == b.heartbeat));

    // The first beat may have gone out before the connection was up.
    let skipped_before = agent.metric("benchtel_mqtt_heartbeats_skipped_total", &[]);
    broker.stop();
    agent.wait_metric("benchtel_mqtt_connected", &[], WAIT, |v| v == 0.0);
    agent.wait_line(&["MQTT connection lost"], WAIT);
    // Beats while the broker is away are skipped and counted, not queued.
    agent.wait_metric("benchtel_mqtt_heartbeats_skipped_total", &[], WAIT, |v| {
        v >= skipped_before + 5.0
    });
    let last_seen = sub
        .on(&b.heartbeat, from)
        .last()
        .map_or(before.seq, |m| heartbeat(m).seq);
    broker.restart();

    let online = sub.wait_for("online after the restart", from, WAIT, |m| {
        b.is_status(m, Presence::Online, None)
    });
    assert_eq!(
        status(&online).run_id.as_deref(),
        Some(before.run_id.as_str())
    );
    // The test's own subscriber is back too (it re-subscribes on connect).
    let back = sub.len();
    let after = heartbeat(
        &sub.wait_for("heartbeats after the restart", back, WAIT, |m| {
            m.topic == b.heartbeat
        }),
    );
    assert_eq!(after.run_id, before.run_id);
    assert!(
        after.seq > last_seen + 5,
        "{last_seen} then {}: the skipped beats were not sent late",
        after.seq
    );
    assert_eq!(agent.metric("benchtel_mqtt_connected", &[]), 1.0);
    assert!(agent.metric("benchtel_mqtt_connects_total", &[("result", "failed")]) >= 1.0);
    assert_eq!(
        agent.metric("benchtel_mqtt_connects_total", &[("result", "ok")]),
        2.0
    );
    // Failed attempts are logged when the failure changes, not each time.
    let log = agent.output();
    let lost = log.matches("MQTT connection lost").count();
    let cannot = log.matches("cannot connect to the MQTT broker").count();
    assert_eq!((lost, cannot), (1, 1), "{log}");
}

#[test]
fn a_frozen_broker_fills_the_small_queue_and_beats_are_skipped_not_hoarded() {
    let b = Bench::new("frozen-broker");
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let dir = tempfile::tempdir().unwrap();
    let (agent, _) = online_agent(&b, dir.path(), &broker, &sub, "");
    agent.wait_metric(
        "benchtel_mqtt_publishes_total",
        &[("topic_kind", "heartbeat"), ("result", "acked")],
        WAIT,
        |v| v >= 3.0,
    );
    let pid = Pid::from_raw(broker.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    // The TCP connection stays up (keepalive 15 s), but nothing is
    // acknowledged: 8 in flight, 16 queued, and every further beat is
    // refused by the client and counted.
    let dropped = agent.wait_metric(
        "benchtel_mqtt_publishes_total",
        &[("topic_kind", "heartbeat"), ("result", "dropped")],
        WAIT,
        |v| v >= 10.0,
    );
    let skipped = agent.metric("benchtel_mqtt_heartbeats_skipped_total", &[]);
    assert!(skipped >= dropped, "{skipped} < {dropped}");
    assert_eq!(agent.metric("benchtel_mqtt_connected", &[]), 1.0);
    let beats_then = agent.metric("bench_heartbeats_total", &[]);
    kill(pid, Signal::SIGCONT).unwrap();
    let from = sub.len();
    // What was queued drains, then live beats flow again.
    let later = sub.wait_for("a beat sent after the thaw", from, WAIT, |m| {
        m.topic == b.heartbeat && heartbeat(m).seq as f64 > beats_then
    });
    assert_eq!(heartbeat(&later).state, "ready");
    // Handed to the client at most 8 in flight + 16 queued while frozen.
    let acked = agent.wait_metric(
        "benchtel_mqtt_publishes_total",
        &[("topic_kind", "heartbeat"), ("result", "acked")],
        WAIT,
        |v| v > 0.0,
    );
    let total = agent.metric("bench_heartbeats_total", &[]);
    assert!(
        acked + skipped <= total + 1.0,
        "acked {acked} skipped {skipped} of {total}"
    );
}

#[test]
fn commands_on_cmd_apply_like_the_control_socket_and_bad_ones_are_counted() {
    let b = Bench::new("commands");
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    // A command left retained would be re-applied at every reconnect: the
    // agent refuses it when its subscription delivers it.
    sub.publish(&b.cmd, r#"{"cmd":"maintenance","on":true}"#, true);
    sub.sync();
    let dir = tempfile::tempdir().unwrap();
    let (agent, _) = online_agent(&b, dir.path(), &broker, &sub, "");
    agent.wait_line(&["MQTT command rejected", "retained"], WAIT);
    let from = sub.len();
    sub.wait_for("a beat after the refusal", from, WAIT, |m| {
        m.topic == b.heartbeat
    });
    assert!(
        sub.on(&b.heartbeat, 0)
            .iter()
            .all(|m| heartbeat(m).state == "ready")
    );
    // Clearing the retained command reaches the agent as an empty payload.
    sub.publish(&b.cmd, "", true);

    sub.publish(&b.cmd, r#"{"cmd":"maintenance","on":true}"#, false);
    let from = sub.len();
    sub.wait_for("a beat in maintenance", from, WAIT, |m| {
        m.topic == b.heartbeat && heartbeat(m).state == "maintenance"
    });
    agent.wait_line(&["MQTT command applied", "Maintenance"], WAIT);

    // Unknown and malformed commands are rejected, logged and counted.
    sub.publish(&b.cmd, r#"{"cmd":"reboot"}"#, false);
    agent.wait_line(&["MQTT command rejected", "unknown variant `reboot`"], WAIT);
    sub.publish(&b.cmd, "not json", false);
    agent.wait_line(&["MQTT command rejected", "not json"], WAIT);
    agent.wait_metric(
        "benchtel_mqtt_commands_total",
        &[("result", "rejected")],
        WAIT,
        |v| v == 4.0,
    );

    // Context set over MQTT, then maintenance off.
    sub.publish(
        &b.cmd,
        r#"{"cmd":"context_set","execution_id":"exec-42","task_id":"t-1"}"#,
        false,
    );
    agent.wait_line(&["execution context set", "exec-42"], WAIT);
    sub.publish(&b.cmd, r#"{"cmd":"maintenance","on":false}"#, false);
    let from = sub.len();
    sub.wait_for("beats back to ready", from, WAIT, |m| {
        m.topic == b.heartbeat && heartbeat(m).state == "ready"
    });
    agent.wait_metric(
        "benchtel_mqtt_commands_total",
        &[("result", "applied")],
        WAIT,
        |v| v == 3.0,
    );
    assert_eq!(
        agent.metric("benchtel_mqtt_commands_total", &[("result", "rejected")]),
        4.0
    );
}

#[test]
fn probe_verdicts_are_published_retained_when_they_change() {
    let b = Bench::new("probe-verdicts");
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("dut-console.log");
    std::fs::write(&watched, "boot ok\n").unwrap();
    let extra = format!(
        "publish_probes = true\n\n[[checks]]\nname = \"dut-log\"\ntype = \"file\"\npath = \"{}\"\ninterval = \"100ms\"\n",
        watched.display()
    );
    let (_agent, online) = online_agent(&b, dir.path(), &broker, &sub, &extra);
    let topic = format!("benchtel/lab/{}/probe/dut-log", b.id);
    let topic = topic.as_str();
    let verdict = |m: &Msg| -> ProbeVerdict { serde_json::from_slice(&m.payload).unwrap() };
    let up = sub.wait_for("the up verdict", 0, WAIT, |m| m.topic == topic);
    let v = verdict(&up);
    assert!(v.up && v.affects_ready, "{v:?}");
    assert_eq!(Some(v.run_id), online.run_id);
    let from = sub.len();
    std::fs::remove_file(&watched).unwrap();
    let down = sub.wait_for("the down verdict", from, WAIT, |m| m.topic == topic);
    assert!(!verdict(&down).up);
    let beat = sub.wait_for("a degraded beat", from, WAIT, |m| {
        m.topic == b.heartbeat && heartbeat(m).state == "degraded"
    });
    assert_eq!(heartbeat(&beat).state, "degraded");
    let late = Subscriber::connect(broker.port, &[topic]);
    let kept = late.wait_for("the retained verdict", 0, WAIT, |m| m.topic == topic);
    assert!(kept.retain && !verdict(&kept).up);
}

#[test]
fn with_mqtt_off_nothing_is_published_and_no_metric_claims_a_connection() {
    let b = Bench::new("mqtt-off");
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &b.config(dir.path(), ""));
    agent.wait_metric("bench_heartbeats_total", &[], WAIT, |v| v >= 5.0);
    sub.sync();
    assert!(sub.on(&b.heartbeat, 0).is_empty() && sub.on(&b.status, 0).is_empty());
    assert!(!agent.metrics().contains("benchtel_mqtt_connected"));
    agent.wait_line(&["started", "mqtt=off"], WAIT);
}

// TLS ------------------------------------------------------------------

/// A broker with an extra listener configured by `conf` (`{port}` is
/// replaced); returns it and that listener's port.
fn broker_with_listener(conf: &str) -> (Mosquitto, u16) {
    let port = support::free_port();
    let broker = Mosquitto::with_config(&format!(
        "listener {port} 127.0.0.1\n{}",
        conf.replace("{port}", &port.to_string())
    ));
    (broker, port)
}

fn tls_listener(pki: &support::pki::Pki, extra: &str) -> String {
    format!(
        "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n{extra}",
        pki.ca.display(),
        pki.server_cert.display(),
        pki.server_key.display()
    )
}

/// Starts an agent with `section` as its `[mqtt]` and waits for a
/// heartbeat from it on the plain listener.
fn beats_through(
    b: &Bench,
    dir: &Path,
    sub: &Subscriber,
    section: &str,
    env: &[(&str, &Path)],
) -> Agent {
    let from = sub.len();
    let agent = Agent::start_with(dir, &b.config(dir, section), env);
    let beat = sub.try_wait_for(from, WAIT, |m| m.topic == b.heartbeat);
    assert!(
        beat.is_some(),
        "no heartbeat through the secured listener; the agent said:\n{}",
        agent.output()
    );
    agent
}

#[test]
fn tls_with_a_private_ca_verifies_the_broker_by_the_configured_name() {
    let b = Bench::new("tls");
    let dir = tempfile::tempdir().unwrap();
    // The certificate names only broker.test, not 127.0.0.1.
    let pki = support::pki::Pki::generate(dir.path(), &["broker.test"]);
    let (broker, tls_port) = broker_with_listener(&tls_listener(&pki, ""));
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let ok = beats_through(
        &b,
        dir.path(),
        &sub,
        &format!(
            "[mqtt]\nurl = \"{url}\"\n[mqtt.tls]\nca_file = \"{}\"\nserver_name = \"broker.test\"\n",
            pki.ca.display()
        ),
        &[],
    );
    ok.wait_line(&["MQTT connected", "verify as broker.test"], WAIT);
    drop(ok);
    // Without the name, the address does not match the certificate.
    let cfg = b.config(
        dir.path(),
        &format!(
            "[mqtt]\nurl = \"{url}\"\n[mqtt.tls]\nca_file = \"{}\"\n",
            pki.ca.display()
        ),
    );
    let wrong_name = Agent::start(dir.path(), &cfg);
    wrong_name.wait_line(
        &[
            "cannot connect to the MQTT broker",
            "certificate not valid for name",
        ],
        WAIT,
    );
    // Another CA: the broker is not trusted at all.
    let other = tempfile::tempdir().unwrap();
    let stranger = support::pki::Pki::generate(other.path(), &["broker.test"]);
    let cfg = b.config(
        dir.path(),
        &format!(
            "[mqtt]\nurl = \"{url}\"\n[mqtt.tls]\nca_file = \"{}\"\nserver_name = \"broker.test\"\n",
            stranger.ca.display()
        ),
    );
    let untrusted = Agent::start(dir.path(), &cfg);
    untrusted.wait_line(
        &[
            "cannot connect to the MQTT broker",
            "invalid peer certificate",
        ],
        WAIT,
    );
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let b = Bench::new("mutual-tls");
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::generate(dir.path(), &["127.0.0.1"]);
    let (broker, tls_port) =
        broker_with_listener(&tls_listener(&pki, "require_certificate true\n"));
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let ok = beats_through(
        &b,
        dir.path(),
        &sub,
        &format!(
            "[mqtt]\nurl = \"{url}\"\n[mqtt.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
        &[],
    );
    drop(ok);
    let cfg = b.config(
        dir.path(),
        &format!(
            "[mqtt]\nurl = \"{url}\"\n[mqtt.tls]\nca_file = \"{}\"\n",
            pki.ca.display()
        ),
    );
    let anonymous = Agent::start(dir.path(), &cfg);
    anonymous.wait_line(
        &["cannot connect to the MQTT broker", "CertificateRequired"],
        WAIT,
    );
    assert_eq!(anonymous.metric("benchtel_mqtt_connected", &[]), 0.0);
}

#[test]
fn username_and_password_from_a_file_or_the_systemd_credential() {
    let b = Bench::new("password");
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("mosquitto.passwd");
    let tool = support::require("mosquitto_passwd", "apt-get install mosquitto");
    let made = std::process::Command::new(tool)
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["bench07", "s3cret-pw"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let (broker, port) = broker_with_listener(&format!(
        "allow_anonymous false\npassword_file {}\n",
        passwd.display()
    ));
    let sub = Subscriber::connect(broker.port, &["benchtel/#"]);
    let good = dir.path().join("good-pw");
    std::fs::write(&good, "s3cret-pw\n").unwrap();
    let bad = dir.path().join("bad-pw");
    std::fs::write(&bad, "wrong\n").unwrap();
    let section = |file: &Path| {
        format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nusername = \"bench07\"\npassword_file = \"{}\"\n",
            file.display()
        )
    };
    let ok = beats_through(&b, dir.path(), &sub, &section(&good), &[]);
    let line = ok.wait_line(&["MQTT connected"], WAIT);
    assert!(line.contains("user=bench07 password from file"), "{line}");
    assert!(!ok.output().contains("s3cret-pw"));
    drop(ok);

    let refused = Agent::start(dir.path(), &b.config(dir.path(), &section(&bad)));
    refused.wait_line(
        &["cannot connect to the MQTT broker", "Connection refused"],
        WAIT,
    );

    // systemd's LoadCredential= wins over the (wrong) file.
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("mqtt-password"), "s3cret-pw").unwrap();
    let via_cred = beats_through(
        &b,
        dir.path(),
        &sub,
        &section(&bad),
        &[("CREDENTIALS_DIRECTORY", &creds)],
    );
    via_cred.wait_line(
        &["MQTT connected", "password from credential mqtt-password"],
        WAIT,
    );
}

#[test]
fn validate_checks_the_mqtt_section_and_never_shows_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw-sekrit-77\n").unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[bench]\nid = \"b1\"\n[mqtt]\nurl = \"mqtt://broker.lab\"\nusername = \"b1\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(agent::AGENT)
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("mqtt=mqtt://broker.lab:1883") && all.contains("user=b1 password from file"),
        "{all}"
    );
    assert!(!all.contains("pw-sekrit-77"), "{all}");
}
