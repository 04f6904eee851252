//! The first ten minutes of a newcomer with both programs (issue 14), each
//! rough edge with the real binaries: text logs without colours off a
//! terminal; `outbox status` before the agent ever ran; a watch whose
//! alerts go nowhere says so; host names in `http.listen`; unique names
//! from `suggest`; the commands beside the agent past an unrelated config
//! error; a state change on `/metrics` without waiting for the heartbeat.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::agent::{self, Agent};

const AGENT: &str = env!("CARGO_BIN_EXE_benchtel-agent");
const WATCH: &str = env!("CARGO_BIN_EXE_benchtel-watch");
const WAIT: Duration = Duration::from_secs(30);
const NO_OUTBOX: &str = "yet: the agent has not run here, or its state is elsewhere \
                         (STATE_DIRECTORY, outbox.path)";

/// A program with a clean environment: no config from the environment, no
/// OTEL_* overrides, no systemd, no `NO_COLOR`; state and runtime
/// directories under `dir`.
fn program(bin: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for var in [
        "BENCHTEL_CONFIG",
        "BENCHTEL_WATCH_CONFIG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_SERVICE_NAME",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "CREDENTIALS_DIRECTORY",
        "NO_COLOR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("STATE_DIRECTORY", dir.join("state"))
        .env("RUNTIME_DIRECTORY", dir.join("run"));
    cmd
}

/// Runs `bin ARGS` to its end.
fn run(bin: &str, dir: &Path, args: &[&str]) -> Output {
    program(bin, dir).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running program whose stdout and stderr are pipes (not a terminal),
/// read as they come.
struct Piped {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Piped {
    fn spawn(mut cmd: Command) -> Piped {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for mut pipe in pipes {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        Piped { child, output }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits for a line containing every one of `needles`; returns it.
    fn wait_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.output();
            let line = text.lines().find(|l| needles.iter().all(|n| l.contains(n)));
            if let Some(line) = line {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no line said {needles:?}; it said:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the output contains every one of `needles`; returns it.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.output();
            if needles.iter().all(|n| text.contains(n)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "never said {needles:?}; it said:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A watch config: `listen`, a registry in `dir`, and `extra`.
fn watch_config(dir: &Path, listen: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("watch-{}.toml", support::free_port()));
    std::fs::write(
        &path,
        format!(
            "[http]\nlisten = \"{listen}\"\n[registry]\npath = {:?}\n{extra}\n",
            dir.join("watch.db").display().to_string()
        ),
    )
    .unwrap();
    path
}

/// An agent config from [`agent::config`] with `http.listen` on `host`.
fn agent_config_on(dir: &Path, host: &str) -> (PathBuf, u16) {
    let cfg = agent::config(dir, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
        .unwrap()
        .trim_end_matches('"')
        .parse()
        .unwrap();
    let text = text.replace("listen = \"127.0.0.1:", &format!("listen = \"{host}:"));
    std::fs::write(&cfg, text).unwrap();
    (cfg, port)
}

/// An HTTP GET on 127.0.0.1; the whole answer, or `None` while nothing
/// listens.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

fn wait_get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(answer) = get(port, path) {
            return answer;
        }
        assert!(Instant::now() < deadline, "nothing answers on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The answer's status line says 200.
fn assert_200(answer: &str) {
    assert!(
        answer.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "{answer}"
    );
}

#[test]
fn text_logs_into_a_pipe_have_no_colours() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = agent::config(dir.path(), "");
    let mut cmd = program(AGENT, dir.path());
    cmd.arg("--config").arg(&cfg).args(["--log-format", "text"]);
    let agent = Piped::spawn(cmd);
    let text = agent.wait_for(&["started", "bench=test-bench"]);
    assert!(!text.contains('\x1b'), "ANSI escapes in a pipe:\n{text:?}");

    let cfg = watch_config(
        dir.path(),
        &format!("127.0.0.1:{}", support::free_port()),
        "",
    );
    let mut cmd = program(WATCH, dir.path());
    cmd.arg("--config").arg(&cfg).args(["--log-format", "text"]);
    let watch = Piped::spawn(cmd);
    let text = watch.wait_for(&["started", "replica="]);
    assert!(!text.contains('\x1b'), "ANSI escapes in a pipe:\n{text:?}");
}

#[test]
fn outbox_status_before_the_agent_ever_ran_says_so_once_with_exit_66() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "[bench]\nid = \"b1\"\n").unwrap();
    let out = run(
        AGENT,
        dir.path(),
        &["outbox", "status", "--config", cfg.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(66), "{err}");
    let expected = format!(
        "benchtel-agent: no outbox at {} {NO_OUTBOX}\n",
        dir.path().join("state/outbox.db").display()
    );
    assert_eq!(err, expected);
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));

    // `--json` too: nothing on stdout to parse, the same word on stderr.
    let out = run(
        AGENT,
        dir.path(),
        &[
            "outbox",
            "status",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(66));
    assert_eq!(stderr(&out), expected);
}

#[test]
fn a_watch_whose_alerts_go_nowhere_says_so_at_start_and_in_validate() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let quiet = watch_config(dir.path(), &listen, "");
    let out = run(
        WATCH,
        dir.path(),
        &["validate", "--config", quiet.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for word in [
        "alerts are computed but go nowhere",
        "alerts.alertmanagers",
        "[[alerts.webhook]]",
    ] {
        assert!(err.contains(word), "{word:?} not in:\n{err}");
    }

    let mut cmd = program(WATCH, dir.path());
    cmd.arg("--config")
        .arg(&quiet)
        .args(["--log-format", "text"]);
    let watch = Piped::spawn(cmd);
    let text = watch.wait_for(&["started", "replica="]);
    let line = text
        .lines()
        .find(|l| l.contains("alerts are computed but go nowhere"))
        .unwrap_or_else(|| panic!("no warning at start:\n{text}"));
    assert!(
        line.contains("WARN") && line.contains("alerts.alertmanagers"),
        "{line}"
    );
    drop(watch);

    // With somewhere to send them: not a word.
    let routed = watch_config(
        dir.path(),
        &listen,
        "[alerts]\nalertmanagers = [\"http://127.0.0.1:9093\"]\n",
    );
    let out = run(
        WATCH,
        dir.path(),
        &["validate", "--config", routed.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("nowhere"), "{}", stderr(&out));
}

#[test]
fn http_listen_takes_a_host_name_in_the_agent_and_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = agent_config_on(dir.path(), "localhost");
    let cfg_arg = cfg.to_str().unwrap();
    let out = run(AGENT, dir.path(), &["validate", "--config", cfg_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let agent = Agent::start(dir.path(), &cfg);
    let metrics = wait_get(port, "/metrics");
    assert!(metrics.contains("bench_heartbeats_total"), "{metrics}");
    drop(agent);

    let watch_port = support::free_port();
    let wcfg = watch_config(dir.path(), &format!("localhost:{watch_port}"), "");
    let out = run(
        WATCH,
        dir.path(),
        &["validate", "--config", wcfg.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut cmd = program(WATCH, dir.path());
    cmd.arg("--config").arg(&wcfg);
    let _watch = Piped::spawn(cmd);
    let health = wait_get(watch_port, "/healthz");
    assert_200(&health);

    // A name that does not resolve, or no port: the usual config error.
    for (bin, bad) in [
        (AGENT, "no-such-host.invalid:9464"),
        (AGENT, "localhost"),
        (WATCH, "no-such-host.invalid:9465"),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, format!("[http]\nlisten = \"{bad}\"\n")).unwrap();
        let out = run(
            bin,
            dir.path(),
            &["validate", "--config", cfg.to_str().unwrap()],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{bad}: {err}");
        let want = format!("{}: http.listen = \"{bad}\": ", cfg.display());
        assert!(err.contains(&want), "{want:?} not in:\n{err}");
    }
}

/// An agent sending to an http:// collector starts on a machine with no
/// CA store (it never loads one at start), and so do its http checks: one
/// of an http:// URL passes, one of an https:// URL fails when it runs,
/// naming the missing store (were the checks' client to read the store
/// when built, no http check could run at all). Given a store (the test's
/// CA as SSL_CERT_FILE) that check passes: the store is read when needed.
/// Pointed at an https:// collector the agent refuses to start, naming the
/// cause.
#[test]
fn an_http_collector_needs_no_trust_store_an_https_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = agent_config_on(dir.path(), "127.0.0.1");
    let pki = support::pki::Pki::generate(dir.path(), &["127.0.0.1"]);
    let (tls_port, _) = pki.serve_https();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    for (name, url) in [
        ("plain", format!("http://127.0.0.1:{port}/healthz")),
        ("over-tls", format!("https://127.0.0.1:{tls_port}/")),
    ] {
        text += &format!(
            "[[checks]]\nname = \"{name}\"\ntype = \"http\"\nurl = \"{url}\"\ninterval = \"200ms\"\n"
        );
    }
    std::fs::write(&cfg, &text).unwrap();
    let no_store = |cmd: &mut Command| {
        cmd.env("SSL_CERT_FILE", dir.path().join("no-such-bundle.pem"))
            .env("SSL_CERT_DIR", dir.path().join("no-such-dir"));
    };
    let mut cmd = program(AGENT, dir.path());
    no_store(&mut cmd);
    cmd.arg("--config").arg(&cfg);
    let agent = Piped::spawn(cmd);
    let health = wait_get(port, "/healthz");
    assert_200(&health);
    agent.wait_line(&["health check up", "check=plain"]);
    let down = agent.wait_line(&["health check down", "check=over-tls"]);
    assert!(down.contains("No CA certificates"), "{down}");
    drop(agent);

    let mut cmd = program(AGENT, dir.path());
    no_store(&mut cmd);
    cmd.env("SSL_CERT_FILE", &pki.ca).arg("--config").arg(&cfg);
    let agent = Piped::spawn(cmd);
    agent.wait_line(&["health check up", "check=over-tls"]);
    drop(agent);

    let https = dir.path().join("https.toml");
    std::fs::write(
        &https,
        text.replace("endpoint = \"http://", "endpoint = \"https://"),
    )
    .unwrap();
    let mut cmd = program(AGENT, dir.path());
    no_store(&mut cmd);
    let out = cmd.arg("--config").arg(&https).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("No CA certificates"),
        "{}",
        stderr(&out)
    );
}

/// An http:// collector that redirects to https:// is followed there, and
/// the certificate verified against the system's trust store (the test's
/// CA as SSL_CERT_FILE), read on that first handshake.
#[test]
fn an_http_collector_redirecting_to_https_is_verified_by_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::generate(dir.path(), &["127.0.0.1"]);
    let (tls_port, answered) = pki.serve_https();
    let redirect = support::http::serve_redirect(format!("https://127.0.0.1:{tls_port}"));
    let endpoint = format!("http://127.0.0.1:{redirect}");
    let opts = agent::Options {
        otlp_endpoint: Some(&endpoint),
        ..agent::Options::default()
    };
    let cfg = agent::config_with(dir.path(), &opts, "");
    let no_dir = dir.path().join("no-such-dir");
    let env = [
        ("SSL_CERT_FILE", pki.ca.as_path()),
        ("SSL_CERT_DIR", no_dir.as_path()),
    ];
    let agent = Agent::start_with(dir.path(), &cfg, &env);
    support::http::wait_for("an export over https", WAIT, || {
        answered.load(std::sync::atomic::Ordering::Relaxed) > 0
    });
    drop(agent);
}

#[test]
fn suggest_with_several_gpio_chips_prints_each_name_once() {
    let dir = tempfile::tempdir().unwrap();
    let (sys, dev) = (dir.path().join("sys"), dir.path().join("dev"));
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::create_dir_all(&dev).unwrap();
    for chip in ["gpiochip0", "gpiochip1", "gpiochip2"] {
        std::fs::write(dev.join(chip), b"").unwrap();
    }
    let out = run(
        AGENT,
        dir.path(),
        &[
            "suggest",
            "--sys",
            sys.to_str().unwrap(),
            "--dev",
            dev.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("name = "))
        .collect();
    assert_eq!(names.len(), 3, "{text}");
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a name twice:\n{text}");

    // Ready to paste: the snippets are a config the agent takes.
    let cfg = dir.path().join("pasted.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = run(
        AGENT,
        dir.path(),
        &["validate", "--config", cfg.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
}

#[test]
fn commands_beside_the_agent_go_on_past_an_unrelated_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = agent::config(dir.path(), "");
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&good).unwrap();
    std::fs::write(
        &bad,
        format!("{text}\n[[checks]]\nname = \"x\"\ntype = \"nope\"\n"),
    )
    .unwrap();
    let bad_arg = bad.to_str().unwrap();
    let note = format!("the configuration ({}) has 1 error(s)", bad.display());

    // `run` and `validate` stay strict.
    let out = run(AGENT, dir.path(), &["validate", "--config", bad_arg]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));

    // `suggest` reads no configuration at all.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = empty.to_str().unwrap();
    let out = run(
        AGENT,
        dir.path(),
        &["suggest", "--config", bad_arg, "--sys", e, "--dev", e],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("no GPIO chips"), "{}", stdout(&out));

    // Before the agent ran: the outbox path from the file, and why not.
    let out = run(
        AGENT,
        dir.path(),
        &["outbox", "status", "--config", bad_arg],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(66), "{err}");
    assert!(err.contains(&note) && err.contains(NO_OUTBOX), "{err}");

    let env = [
        ("STATE_DIRECTORY", dir.path().join("state")),
        ("RUNTIME_DIRECTORY", dir.path().join("run")),
    ];
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let agent = Agent::start_with(dir.path(), &good, &env);
    agent.wait_line(&["started"], WAIT);
    let out = run(
        AGENT,
        dir.path(),
        &["outbox", "status", "--config", bad_arg],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&note) && err.contains("needs only [outbox]"),
        "{err}"
    );
    let outbox = text
        .lines()
        .find_map(|l| l.strip_prefix("path = "))
        .unwrap()
        .trim_matches('"');
    assert!(stdout(&out).contains(outbox), "{}", stdout(&out));

    let out = run(AGENT, dir.path(), &["status", "--config", bad_arg]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&note), "{err}");
    assert!(stdout(&out).contains("state"), "{}", stdout(&out));

    // What `outbox status` needs is itself wrong: it cannot go on.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[outbox]\npath = 5\n").unwrap();
    let out = run(
        AGENT,
        dir.path(),
        &["outbox", "status", "--config", broken.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("outbox.path = 5"), "{err}");
}

#[test]
fn maintenance_is_on_metrics_at_once_with_an_hourly_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let opts = agent::Options {
        heartbeat: "1h",
        ..agent::Options::default()
    };
    let cfg = agent::config_with(dir.path(), &opts, "");
    let env = [
        ("STATE_DIRECTORY", dir.path().join("state")),
        ("RUNTIME_DIRECTORY", dir.path().join("run")),
    ];
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let agent = Agent::start_with(dir.path(), &cfg, &env);
    let one = |v: f64| v == 1.0;
    agent.wait_metric("bench_state", &[("state", "ready")], WAIT, one);

    let cfg_arg = cfg.to_str().unwrap();
    // A window already over is refused, not an instant no-op.
    let past = ["maintenance", "on", "--until", "2001-01-01T00:00:00Z"];
    let out = run(
        AGENT,
        dir.path(),
        &[&past[..], &["--config", cfg_arg]].concat(),
    );
    assert!(!out.status.success(), "a past --until was accepted");
    assert!(
        stderr(&out).contains("2001-01-01T00:00:00Z is not in the future"),
        "{}",
        stderr(&out)
    );
    let out = run(
        AGENT,
        dir.path(),
        &["maintenance", "on", "--config", cfg_arg],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let asked = Instant::now();
    let maintenance = [("state", "maintenance")];
    agent.wait_metric("bench_state", &maintenance, Duration::from_secs(5), one);
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_eq!(agent.metric("bench_state", &[("state", "ready")]), 0.0);

    let out = run(
        AGENT,
        dir.path(),
        &["maintenance", "off", "--config", cfg_arg],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    agent.wait_metric(
        "bench_state",
        &[("state", "ready")],
        Duration::from_secs(5),
        one,
    );
}
