//! The real `benchtel-agent` binary as a process: against a real OTLP
//! collector (rotel), killed with SIGKILL while it forwards a backlog, with
//! a byte bound it must enforce, with a corrupt database, and stopped with
//! SIGTERM.

mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal as Sig, kill};
use nix::unistd::Pid;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use support::agent::committed_bodies;
use support::receiver::{Receiver, Reply};

const AGENT: &str = env!("CARGO_BIN_EXE_benchtel-agent");

struct Agent {
    child: Child,
    stdout: PathBuf,
}

impl Agent {
    fn start(dir: &Path, config: &Path) -> Agent {
        let mut cmd = Command::new(AGENT);
        cmd.arg("--config")
            .arg(config)
            .env_remove("BENCHTEL_CONFIG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env("STATE_DIRECTORY", dir.join("state"))
            // The SDK's batch log processor commits every 100 ms instead of
            // every second, so short tests see many commits.
            .env("OTEL_BLRP_SCHEDULE_DELAY", "100");
        Agent::spawn(cmd, dir)
    }

    /// Spawns `cmd` with stdout to a file in `dir` and stderr piped.
    fn spawn(mut cmd: Command, dir: &Path) -> Agent {
        let stdout = dir.join(format!("agent-{}.log", now_ns()));
        let child = cmd
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Agent { child, stdout }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits for a stdout line containing `needle` and returns it.
    fn wait_line(&self, needle: &str) -> String {
        wait_for(needle, Duration::from_secs(30), || {
            self.output().contains(needle)
        });
        let out = self.output();
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap()
            .to_string()
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status and stderr.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        kill(Pid::from_raw(self.child.id() as i32), Sig::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status, err);
            }
            assert!(Instant::now() < deadline, "agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A config for tests: fast heartbeats and exports, short backoff.
fn config(dir: &Path, endpoint: &str, extra: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    let text = format!(
        r#"
[bench]
id = "test-bench"
site = "lab"

[otlp]
endpoint = "{endpoint}"
timeout = "2s"
backoff_min = "20ms"
backoff_max = "300ms"

[outbox]
path = "{outbox}"
batch_max_records = 4

[http]
listen = "127.0.0.1:{port}"

[telemetry]
export_interval = "200ms"

[sources.heartbeat]
interval = "10ms"

[sources.host_metrics]
enabled = false
{extra}
"#,
        outbox = dir.join("outbox.db").display(),
        port = support::free_port(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn attr(rec: &LogRecord, key: &str) -> Option<String> {
    rec.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// (run_id, seq) of every heartbeat log record in `records`.
fn heartbeats<'a>(records: impl IntoIterator<Item = &'a LogRecord>) -> BTreeSet<(String, u64)> {
    records
        .into_iter()
        .filter_map(|r| {
            let run = attr(r, "run_id")?;
            let seq = attr(r, "seq")?.parse().ok()?;
            Some((run, seq))
        })
        .collect()
}

/// The heartbeats committed in the outbox file right now.
fn committed_heartbeats(db: &Path) -> BTreeSet<(String, u64)> {
    let bodies = committed_bodies(db, 2);
    let requests: Vec<ExportLogsServiceRequest> = bodies
        .iter()
        .map(|b| ExportLogsServiceRequest::decode(b.as_slice()).unwrap())
        .collect();
    heartbeats(
        requests
            .iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records),
    )
}

fn outbox_count(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_real_collector_accepts_what_the_agent_sends() {
    let rotel = support::rotel::Rotel::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &rotel.endpoint(), "");
    let agent = Agent::start(dir.path(), &cfg);
    for needle in ["bench_heartbeats", "heartbeat", "test-bench"] {
        assert!(
            rotel.wait_for_output(needle, Duration::from_secs(30)),
            "rotel never printed {needle:?}; rotel said:\n{}\nagent said:\n{}",
            rotel.output(),
            agent.output()
        );
    }
    let (status, stderr) = agent.terminate();
    assert!(status.success(), "{status:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_committed_record() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let cfg = config(dir.path(), &receiver.endpoint(), "");
    // Build a backlog with the collector down.
    receiver.stop().await;
    let agent = Agent::start(dir.path(), &cfg);
    tokio::time::sleep(Duration::from_secs(4)).await;
    agent.kill9();
    receiver.restart().await;
    // A slow collector keeps the agent busy forwarding when it is killed.
    receiver.script(vec![
        Reply::Delay(
            Duration::from_millis(15),
            Box::new(Reply::Ok)
        );
        100_000
    ]);
    let mut committed = BTreeSet::new();
    let mut rng = now_ns() as u64 | 1;
    for _ in 0..20 {
        committed.extend(committed_heartbeats(&db));
        let agent = Agent::start(dir.path(), &cfg);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // The kill moment, not an assertion: anywhere from start-up to
        // well into forwarding.
        tokio::time::sleep(Duration::from_millis(50 + rng % 700)).await;
        agent.kill9();
    }
    committed.extend(committed_heartbeats(&db));
    assert!(
        committed.len() > 150,
        "too small a backlog to mean anything: {}",
        committed.len()
    );
    receiver.script(vec![]);
    let agent = Agent::start(dir.path(), &cfg);
    let out = agent.stdout.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the start-up line", Duration::from_secs(30), || {
            std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("started")
        })
    })
    .await
    .unwrap();
    let db2 = db.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the backlog to drain", Duration::from_secs(120), || {
            outbox_count(&db2) < 20
        })
    })
    .await
    .unwrap();
    let (status, stderr) = agent.terminate();
    assert!(status.success(), "{stderr}");
    let received = heartbeats(receiver.log_records().iter());
    let lost: Vec<_> = committed.difference(&received).collect();
    assert!(
        lost.is_empty(),
        "{} of {} committed heartbeats never arrived, e.g. {:?}",
        lost.len(),
        committed.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
}

#[test]
fn the_byte_bound_drops_the_oldest_and_counts_them_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    // Nothing listens there: everything stays in the outbox.
    let endpoint = format!("http://127.0.0.1:{}", support::free_port());
    let cfg = config(dir.path(), &endpoint, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "batch_max_records = 4",
            "batch_max_records = 4\nmax_bytes = 1048576",
        )
        .replace("export_interval = \"200ms\"", "export_interval = \"20ms\"");
    std::fs::write(&cfg, text).unwrap();
    let mut agent = Agent::start(dir.path(), &cfg);
    // `outbox status --json`, or None while the agent has not yet made it.
    let try_status = || {
        let out = Command::new(AGENT)
            .args(["outbox", "status", "--json", "--config"])
            .arg(&cfg)
            .env("STATE_DIRECTORY", dir.path().join("state"))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    };
    let status = |_: &Path| try_status().expect("outbox status failed");
    let drops = || {
        try_status().map_or(0, |s| {
            s["dropped"]["max_bytes"]["records"].as_u64().unwrap()
        })
    };
    wait_for("the byte bound to be hit", Duration::from_secs(120), || {
        drops() > 0
    });
    let rss_at_bound = rss_kib(agent.child.id());
    // Keep going well past the bound.
    let first_drops = drops();
    wait_for("many more drops", Duration::from_secs(120), || {
        drops() > first_drops + 200
    });
    assert!(agent.is_running());
    let rss_later = rss_kib(agent.child.id());
    agent.kill9();
    // Exact: every record ever appended is either still queued or counted.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let appended: i64 = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'records'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let queued: i64 = conn
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    let bytes: i64 = conn
        .query_row("SELECT sum(length(body)) FROM records", [], |r| r.get(0))
        .unwrap();
    let s = status(&db);
    assert_eq!(
        s["dropped"]["max_bytes"]["records"].as_i64().unwrap(),
        appended - queued
    );
    assert!(bytes <= 1_048_576);
    assert_eq!(s["bytes"].as_i64().unwrap(), bytes);
    // Flat memory: well past the bound, RSS has not run away.
    assert!(
        rss_later < rss_at_bound * 2,
        "RSS grew from {rss_at_bound} KiB to {rss_later} KiB"
    );
}

/// `http.listen` from a config written by `config()`.
fn listen_of(cfg: &Path) -> String {
    std::fs::read_to_string(cfg)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .unwrap()
        .trim_matches('"')
        .to_string()
}

/// A plain HTTP/1.0 GET: (status, whole response), or None if refused.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

/// The value of the first sample of `name` carrying all `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_corrupt_database_is_set_aside_and_the_agent_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let garbage: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&db, &garbage).unwrap();
    let endpoint = format!("http://127.0.0.1:{}", support::free_port());
    let cfg = config(dir.path(), &endpoint, "");
    let mut agent = Agent::start(dir.path(), &cfg);
    let line = agent.wait_line("corrupt");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["level"], "ERROR");
    let moved = json["context"]["moved_to"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read(&moved).unwrap(),
        garbage,
        "the bad file is kept as it was"
    );
    wait_for(
        "new records in the fresh outbox",
        Duration::from_secs(30),
        || outbox_count(&db) > 0,
    );
    assert!(agent.is_running());
    let (status, stderr) = agent.terminate();
    assert!(status.success(), "{stderr}");
    // The next start finds a healthy database: no quarantine loop.
    let agent = Agent::start(dir.path(), &cfg);
    agent.wait_line("started");
    assert!(!agent.output().contains("corrupt"), "{}", agent.output());
    let (status, _) = agent.terminate();
    assert!(status.success());
}

#[test]
fn sigterm_flushes_into_the_outbox_and_forwards_before_exit() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(Receiver::start());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &receiver.endpoint(), "");
    // Long intervals: only the shutdown flush can deliver the metrics.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("export_interval = \"200ms\"", "export_interval = \"1h\"");
    std::fs::write(&cfg, text).unwrap();
    let agent = Agent::start(dir.path(), &cfg);
    wait_for("the first heartbeat", Duration::from_secs(30), || {
        agent.output().contains("\"heartbeat\"")
    });
    assert!(receiver.metric_points("bench_heartbeats").is_empty());
    let (status, stderr) = agent.terminate();
    assert!(status.success(), "{stderr}");
    let points = receiver.metric_points("bench_heartbeats");
    assert!(
        !points.is_empty(),
        "the final flush did not deliver metrics: {stderr}"
    );
    assert_eq!(outbox_count(&dir.path().join("outbox.db")), 0);
}

#[test]
fn bad_configs_exit_78_naming_the_key_and_the_value() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut seen = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect:"))
            .map(str::trim)
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` lines",
            path.display()
        );
        for args in [vec!["validate"], vec![]] {
            let out = Command::new(AGENT)
                .args(&args)
                .arg("--config")
                .arg(&path)
                .env_remove("BENCHTEL_CONFIG")
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{}: {stderr}", path.display());
            assert!(
                stderr.contains(&*path.to_string_lossy()),
                "{}: file not named: {stderr}",
                path.display()
            );
            for want in &expected {
                assert!(
                    stderr.contains(want),
                    "{}: {want:?} not in: {stderr}",
                    path.display()
                );
            }
        }
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} invalid fixtures");
}

#[test]
fn validate_accepts_the_shipped_examples_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("headers");
    std::fs::write(&secret, "authorization=Bearer sup3r-s3cret-t0ken\n").unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[bench]\nid = \"b1\"\n[otlp]\nheaders_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let out = Command::new(AGENT)
        .args(["validate", "--config"])
        .arg(&cfg)
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=an0ther-s3cret")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("bench=b1"), "{all}");
    assert!(
        !all.contains("sup3r-s3cret") && !all.contains("an0ther-s3cret"),
        "{all}"
    );
}

#[test]
fn with_no_config_at_all_it_starts_on_defaults_and_says_where_things_are() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let port = support::free_port();
    // Built-in defaults include /metrics on 127.0.0.1:9464.
    assert!(
        std::net::TcpListener::bind("127.0.0.1:9464").is_ok(),
        "port 9464 is taken by another program; this test runs the agent on its built-in defaults"
    );
    let mut cmd = Command::new(AGENT);
    cmd.env_clear()
        .env("HOME", &home)
        .env("PATH", std::env::var("PATH").unwrap())
        .env("STATE_DIRECTORY", dir.path().join("state"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        );
    let agent = Agent::spawn(cmd, dir.path());
    let line = agent.wait_line("started");
    let state = dir.path().join("state");
    assert!(line.contains(&*state.to_string_lossy()), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(state.join("outbox.db").exists());
    let (status, stderr) = agent.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn local_metrics_and_healthz_carry_the_bench_labels() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", support::free_port());
    let cfg = config(dir.path(), &endpoint, "");
    let listen = listen_of(&cfg);
    let agent = Agent::start(dir.path(), &cfg);
    let get = |path: &str| http_get(&listen, path);
    wait_for(
        "bench_heartbeats_total on /metrics",
        Duration::from_secs(30),
        || get("/metrics").is_some_and(|(_, t)| t.contains("bench_heartbeats_total")),
    );
    let (code, metrics) = get("/metrics").unwrap();
    assert_eq!(code, 200);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("bench_heartbeats_total{"))
        .unwrap();
    assert!(line.contains("bench_id=\"test-bench\""), "{line}");
    assert!(line.contains("bench_site=\"lab\""), "{line}");
    for name in [
        "bench_state{",
        "benchtel_outbox_records",
        "benchtel_outbox_bytes",
        "benchtel_outbox_oldest_age_seconds",
        "benchtel_outbox_dropped_total{",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    let (code, health) = get("/healthz").unwrap();
    assert_eq!(code, 200, "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let (status, _) = agent.terminate();
    assert!(status.success());
}

#[test]
fn tells_systemd_it_is_ready_and_pings_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{}", support::free_port());
    let cfg = config(dir.path(), &endpoint, "");
    let mut cmd = Command::new(AGENT);
    cmd.arg("--config")
        .arg(&cfg)
        .env("STATE_DIRECTORY", dir.path().join("state"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID");
    let agent = Agent::spawn(cmd, dir.path());
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = sock.recv(&mut buf).expect("no notification within 30 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let ready = seen.iter().position(|m| m.contains("READY=1")).unwrap();
    assert!(seen[ready].contains("STATUS=bench=test-bench"), "{seen:?}");
    let (status, _) = agent.terminate();
    assert!(status.success());
    sock.set_nonblocking(true).unwrap();
    let mut rest = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")), "{rest:?}");
}

#[test]
fn checks_drive_readiness_and_reach_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", support::free_port());
    // The instrument comes up only after a while: its port is free for now.
    let instrument_port = support::free_port();
    let checks = format!(
        r#"
[[checks]]
name = "instrument"
type = "tcp"
address = "127.0.0.1:{instrument_port}"
interval = "100ms"
timeout = "1s"

[[checks]]
name = "flaky-tool"
type = "exec"
command = "false"
interval = "100ms"
fail_after = 3
affects_ready = false
"#
    );
    let cfg = config(dir.path(), &endpoint, &checks);
    let listen = listen_of(&cfg);
    let metrics = || {
        http_get(&listen, "/metrics")
            .map(|(_, t)| t)
            .unwrap_or_default()
    };
    let agent = Agent::start(dir.path(), &cfg);
    agent.wait_line("started");
    let started = Instant::now();
    let refused = [("check", "instrument"), ("code", "connection_failed")];
    wait_for(
        "the instrument check to fail",
        Duration::from_secs(30),
        || sample(&metrics(), "bench_health_failures_total", &refused).is_some(),
    );
    let text = metrics();
    let starting = [("bench_id", "test-bench"), ("state", "starting")];
    assert_eq!(sample(&text, "bench_state", &starting), Some(1.0), "{text}");
    // The instrument's boot time, not an assertion.
    std::thread::sleep(Duration::from_millis(1500));
    let _instrument = std::net::TcpListener::bind(("127.0.0.1", instrument_port)).unwrap();
    let up_at = started.elapsed().as_secs_f64();
    agent.wait_line("\"to\":\"ready\"");
    wait_for(
        "bench_state ready on /metrics",
        Duration::from_secs(30),
        || sample(&metrics(), "bench_state", &[("state", "ready")]) == Some(1.0),
    );
    let text = metrics();
    let ready = sample(
        &text,
        "bench_ready_time_seconds",
        &[("from", "agent_start")],
    )
    .unwrap();
    // Ready within a check interval (plus scheduling) of the instrument
    // coming up, counted from agent start (a little before `started`).
    assert!(
        ready >= up_at - 0.5 && ready <= up_at + 2.0,
        "ready after {ready} s, instrument up at {up_at} s"
    );
    let boot = sample(&text, "bench_ready_time_seconds", &[("from", "boot")]).unwrap();
    assert!(boot > ready, "{text}");
    let up = |check| sample(&text, "bench_health_check_up", &[("check", check)]);
    assert_eq!(up("instrument"), Some(1.0), "{text}");
    // The failing check does not affect readiness but is down and counted.
    assert_eq!(up("flaky-tool"), Some(0.0), "{text}");
    let failed = [("check", "flaky-tool"), ("code", "mismatch")];
    assert!(
        sample(&text, "bench_health_failures_total", &failed).unwrap() >= 3.0,
        "{text}"
    );
    // The instrument stays up from now on: its failures are all counted,
    // and a few passing runs follow.
    let refusals = sample(&text, "bench_health_failures_total", &refused).unwrap();
    let runs = |text: &str| {
        sample(
            text,
            "bench_health_check_duration_seconds_count",
            &[("check", "instrument")],
        )
    };
    wait_for(
        "passing runs of the instrument",
        Duration::from_secs(30),
        || runs(&metrics()).is_some_and(|n| n >= refusals + 5.0),
    );
    let metrics_at_stop = metrics();
    let flaky_failures = sample(&metrics_at_stop, "bench_health_failures_total", &failed).unwrap();
    let (status, _) = agent.terminate();
    assert!(status.success());

    // Traced: every run, failed or passing.
    let spans = committed_check_spans(&dir.path().join("outbox.db"));
    let of = |name: &str, error: bool| {
        spans
            .iter()
            .filter(|(n, e)| n == name && *e == error)
            .count() as f64
    };
    let passing = runs(&metrics_at_stop).unwrap() - refusals;
    assert_eq!(of("check instrument", true), refusals, "{spans:?}");
    assert!(
        of("check instrument", false) >= passing,
        "{passing} {spans:?}"
    );
    assert!(of("check flaky-tool", true) >= flaky_failures, "{spans:?}");
}

/// (name, failed) of every check span committed in the outbox file.
fn committed_check_spans(db: &Path) -> Vec<(String, bool)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    let bodies = committed_bodies(db, 3);
    bodies
        .iter()
        .map(|b| ExportTraceServiceRequest::decode(b.as_slice()).unwrap())
        .flat_map(|r| r.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .filter(|s| s.name.starts_with("check "))
        .map(|s| {
            let failed = s
                .status
                .is_some_and(|st| st.code == StatusCode::Error as i32);
            (s.name, failed)
        })
        .collect()
}

#[test]
fn context_and_maintenance_commands_reach_the_running_agent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(Receiver::start());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &receiver.endpoint(), "");
    let agent = Agent::start(dir.path(), &cfg);
    agent.wait_line("started");
    let cli = |args: &[&str]| {
        let out = Command::new(AGENT)
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env("STATE_DIRECTORY", dir.path().join("state"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(&[
        "context",
        "set",
        "--execution-id",
        "ex-42",
        "--task-id",
        "t-7",
        "--correlation-id",
        "c-9",
    ]);
    let line = agent.wait_line("\"execution_id\":\"ex-42\"");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["task_id"], "t-7");
    assert_eq!(json["correlation_id"], "c-9");
    // The OTel log records carry it too.
    wait_for(
        "a stamped log record at the collector",
        Duration::from_secs(30),
        || {
            receiver.log_records().iter().any(|r| {
                attr(r, "execution_id").as_deref() == Some("ex-42")
                    && attr(r, "task_id").as_deref() == Some("t-7")
            })
        },
    );
    cli(&["maintenance", "on"]);
    agent.wait_line("\"state\":\"maintenance\"");
    cli(&["maintenance", "off"]);
    cli(&["context", "clear"]);
    agent.wait_line("execution context cleared");
    // A malformed request is refused with a reason; the agent stays up.
    let sock = dir.path().join("state/control.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    std::io::Write::write_all(&mut s, b"{\"cmd\":\"reboot-everything\"}\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.contains("\"ok\":false") && answer.contains("bad request"),
        "{answer}"
    );
    let (status, stderr) = agent.terminate();
    assert!(status.success(), "{stderr}");
}
