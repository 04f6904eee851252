//! The real `benchtel-agent` binary as a process, for tests that need its
//! log, its `/metrics` and its signals.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_benchtel-agent");

pub struct Agent {
    child: Child,
    stdout: PathBuf,
    /// `http.listen` of its config.
    pub listen: String,
}

/// A config for tests: fast heartbeats and exports, no host metrics, an
/// unreachable OTLP collector (the outbox keeps everything), `/metrics` on
/// a free port (both outside the ephemeral range, where no other test's
/// server can be started meanwhile), and `extra` appended.
pub fn config(dir: &Path, extra: &str) -> PathBuf {
    config_with(dir, &Options::default(), extra)
}

/// What a test may change in [`config`]'s defaults.
pub struct Options<'a> {
    /// `bench.id`.
    pub bench: &'a str,
    /// `bench.site`.
    pub site: &'a str,
    /// `otlp.endpoint`; `None`: a free port where nothing listens.
    pub otlp_endpoint: Option<&'a str>,
    /// `sources.heartbeat.interval`.
    pub heartbeat: &'a str,
    /// `telemetry.export_interval`.
    pub export_interval: &'a str,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            bench: "test-bench",
            site: "lab",
            otlp_endpoint: None,
            heartbeat: "100ms",
            export_interval: "1s",
        }
    }
}

/// Like [`config`], with `opts` instead of the defaults.
pub fn config_with(dir: &Path, opts: &Options, extra: &str) -> PathBuf {
    let path = dir.join(format!("agent-{}.toml", super::free_port()));
    let otlp = opts.otlp_endpoint.map_or_else(
        || format!("http://127.0.0.1:{}", super::port_outside_ephemeral_range()),
        str::to_string,
    );
    let text = format!(
        r#"
[bench]
id = "{bench}"
site = "{site}"

[otlp]
endpoint = "{otlp}"
backoff_min = "1s"

[outbox]
path = "{outbox}"

[http]
listen = "127.0.0.1:{port}"

[log]
format = "text"
level = "info,benchtel::agent::mqtt=debug"

[telemetry]
export_interval = "{export}"

[sources.heartbeat]
interval = "{heartbeat}"

[sources.host_metrics]
enabled = false
{extra}
"#,
        bench = opts.bench,
        site = opts.site,
        outbox = dir
            .join(format!("outbox-{}.db", super::free_port()))
            .display(),
        port = super::port_outside_ephemeral_range(),
        export = opts.export_interval,
        heartbeat = opts.heartbeat,
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl Agent {
    pub fn start(dir: &Path, config: &Path) -> Agent {
        Agent::start_with(dir, config, &[])
    }

    /// Starts with extra environment variables.
    pub fn start_with(dir: &Path, config: &Path, env: &[(&str, &Path)]) -> Agent {
        let stdout = dir.join(format!("agent-{}.log", super::free_port()));
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
            .env_remove("CREDENTIALS_DIRECTORY")
            .env(
                "STATE_DIRECTORY",
                dir.join(format!("state-{}", super::free_port())),
            )
            .env(
                "RUNTIME_DIRECTORY",
                dir.join(format!("run-{}", super::free_port())),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let listen = std::fs::read_to_string(config)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("listen = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        Agent {
            child,
            stdout,
            listen,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits for a log line containing every one of `needles`, and returns it.
    pub fn wait_line(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .output()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?}; the agent said:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/metrics` as text; empty while the agent does not listen yet.
    pub fn metrics(&self) -> String {
        use std::io::Write;
        let Ok(mut s) = std::net::TcpStream::connect(&self.listen) else {
            return String::new();
        };
        let mut text = String::new();
        if write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").is_ok() {
            let _ = s.read_to_string(&mut text);
        }
        text
    }

    /// The sum of the samples of `name` carrying all `labels` (0 if none).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sample(&self.metrics(), name, labels)
    }

    /// Polls `/metrics` until `name{labels}` satisfies `cond`; returns it.
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        cond: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(name, labels);
            if cond(v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} = {v} never met the condition; /metrics:\n{}\nlog:\n{}",
                self.metrics(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status and stderr.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    e.read_to_string(&mut err).unwrap();
                }
                return (status, err);
            }
            assert!(Instant::now() < deadline, "agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the samples of `name` carrying all `labels` in a Prometheus
/// text exposition (0 if none).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// The value of the one sample of `name` carrying all `labels`, or `None`
/// if there is none (unlike [`sample`], tells 0 from absent).
pub fn find(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The `le` boundaries of histogram `name` (its `_bucket` series carrying
/// all `labels`), in exposition order, `+Inf` as infinity.
pub fn buckets(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .map(|le| match le {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        })
        .collect()
}

/// One bench whose agent a test starts, restarts and drives through its
/// CLI: its config, and a state and runtime directory that stay the same
/// across restarts (as systemd's would).
pub struct Bench {
    dir: tempfile::TempDir,
    /// The config file (a test may edit it between restarts).
    pub cfg: PathBuf,
    state: PathBuf,
    run: PathBuf,
}

impl Bench {
    /// A bench beating every `heartbeat`, with `extra` config appended.
    pub fn new(heartbeat: &str, extra: &str) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            heartbeat,
            ..Options::default()
        };
        let cfg = config_with(dir.path(), &opts, extra);
        let (state, run) = (dir.path().join("state"), dir.path().join("run"));
        Bench {
            dir,
            cfg,
            state,
            run,
        }
    }

    pub fn start(&self) -> Agent {
        Agent::start_with(
            self.dir.path(),
            &self.cfg,
            &[
                ("STATE_DIRECTORY", &self.state),
                ("RUNTIME_DIRECTORY", &self.run),
            ],
        )
    }

    /// Runs `benchtel-agent ARGS` against the running agent; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(AGENT)
            .args(args)
            .arg("--config")
            .arg(&self.cfg)
            .env_remove("BENCHTEL_CONFIG")
            .env("STATE_DIRECTORY", &self.state)
            .env("RUNTIME_DIRECTORY", &self.run)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A readiness check on a file the test creates and removes: the device
/// under test "answers" while it exists.
pub fn file_check(path: &Path) -> String {
    format!(
        "[[checks]]\nname = \"dut-up\"\ntype = \"file\"\npath = \"{}\"\ninterval = \"200ms\"\n",
        path.display()
    )
}

/// The bodies of one signal's records committed in the outbox file
/// (1 metrics, 2 logs, 3 traces).
pub fn committed_bodies(db: &Path, signal: i64) -> Vec<Vec<u8>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT body FROM records WHERE signal = ?1")
        .unwrap();
    stmt.query_map([signal], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
