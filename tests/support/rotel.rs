//! A real OpenTelemetry collector, rotel (PyPI `rotel`), on an ephemeral
//! port, printing what it receives.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Rotel {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// `$ROTEL_AGENT`, else the binary inside the installed Python package.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ROTEL_AGENT") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        _ => panic!(
            "rotel not found: install it with `python3 -m pip install rotel` \
             (scripts/test does this when run as root)"
        ),
    }
}

impl Rotel {
    /// Receives on an ephemeral port and drops everything (after printing it).
    pub fn start() -> Rotel {
        Rotel::spawn(
            &["--exporter", "blackhole"],
            &[],
            &["metrics", "logs", "traces"],
        )
    }

    /// Receives on an ephemeral port and forwards metrics with its OTLP
    /// exporter over HTTP (protobuf, gzip) to `base_url`, to which rotel
    /// appends `/v1/metrics`, with each `(name, value)` of `headers` on
    /// every request; traces and logs go to a blackhole. The headers go
    /// through the environment, as a token should, not the command line.
    pub fn start_forwarding_to(base_url: &str, headers: &[(&str, &str)]) -> Rotel {
        Rotel::forwarding(base_url, headers, "drop")
    }

    /// Like [`Rotel::start_forwarding_to`], with the logs forwarded too
    /// (to `/v1/logs`).
    pub fn start_forwarding_with_logs_to(base_url: &str, headers: &[(&str, &str)]) -> Rotel {
        Rotel::forwarding(base_url, headers, "watch")
    }

    /// Receives on an ephemeral port and forwards all three signals with
    /// its OTLP exporter over HTTP to `base_url` (`/v1/metrics`,
    /// `/v1/logs`, `/v1/traces`). Fails, saying which, if this rotel lacks
    /// a flag that needs.
    pub fn start_forwarding_all_to(base_url: &str) -> Rotel {
        let args = [
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            base_url,
            "--otlp-exporter-protocol",
            "http",
        ];
        let help = Command::new(binary()).args(["start", "--help"]).output();
        let help = help.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.as_deref().is_ok_and(|h| h.contains(flag)),
                "this rotel has no `{flag}` (needed to forward all signals over OTLP/HTTP): \
                 upgrade it with `python3 -m pip install -U rotel`"
            );
        }
        Rotel::spawn(&args, &[], &[])
    }

    fn forwarding(base_url: &str, headers: &[(&str, &str)], logs: &str) -> Rotel {
        let headers = headers
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        Rotel::spawn(
            &[
                "--exporters",
                "watch:otlp,drop:blackhole",
                "--exporters-metrics",
                "watch",
                "--exporters-traces",
                "drop",
                "--exporters-logs",
                logs,
            ],
            &[
                ("ROTEL_EXPORTER_WATCH_ENDPOINT", base_url),
                ("ROTEL_EXPORTER_WATCH_PROTOCOL", "http"),
                ("ROTEL_EXPORTER_WATCH_CUSTOM_HEADERS", &headers),
            ],
            &["metrics"],
        )
    }

    fn spawn(exporters: &[&str], env: &[(&str, &str)], debug_log: &[&str]) -> Rotel {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("rotel.log");
        let port = super::free_port();
        let grpc = super::free_port();
        let mut cmd = Command::new(binary());
        cmd.arg("start")
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{port}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(exporters);
        for signal in debug_log {
            cmd.args(["--debug-log", signal]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .args(["--debug-log-verbosity", "detailed"])
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap();
        let rotel = Rotel {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rotel did not listen on {port}: {}",
                rotel.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        rotel
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls rotel's output for `needle` until `timeout`.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
