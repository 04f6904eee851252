//! A real Mosquitto broker on an ephemeral port, one per test.
//!
//! `Mosquitto::start()` gives a plain listener; `Mosquitto::with_config`
//! takes extra `mosquitto.conf` lines (TLS listeners, password files, ACLs)
//! written after the default listener. The broker can be stopped, frozen
//! (SIGSTOP) and restarted on the same port, so tests can cut the path
//! between benches and the watch.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::with_config("")
    }

    /// A broker whose config has `extra` appended. `extra` may use
    /// `{dir}` for the broker's own temporary directory.
    pub fn with_config(extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let conf = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        let extra = extra.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings true\n\
                 persistence false\n\
                 log_dest stderr\n\
                 log_type error\nlog_type warning\nlog_type notice\n\
                 listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 {extra}\n"
            ),
        )
        .unwrap();
        let mut m = Mosquitto {
            child: None,
            port,
            conf,
            log,
            dir,
        };
        m.restart();
        m
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it accepts.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mosquitto is already running");
        let bin = super::require("mosquitto", "apt-get install mosquitto");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}: {}",
                self.port,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (SIGKILL): clients see their sockets close.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mosquitto is not running").id()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
