//! A real Mosquitto broker on a port of its own, one per test.
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
        // Not `free_port()`: see `port_outside_ephemeral_range`.
        let port = super::port_outside_ephemeral_range();
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

    /// Starts (again) on the same port and waits until it listens there.
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
        let pid = child.id();
        let child = self.child.insert(child);
        // Something answering on the port is not enough: it could be another
        // test's server, and this mosquitto gone with "Address already in use".
        let deadline = Instant::now() + Duration::from_secs(10);
        while !owns_listener(pid, self.port) {
            if let Ok(Some(exit)) = child.try_wait() {
                panic!(
                    "mosquitto did not listen on {} ({exit}): {}",
                    self.port,
                    self.output()
                );
            }
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

/// Whether process `pid` holds the TCP socket listening on `port`.
fn owns_listener(pid: u32, port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    // sl local_address rem_address st … inode; 0A is LISTEN.
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[3] == "0A")
        .filter(|f| f[1].ends_with(&format!(":{port:04X}")))
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|link| sockets.iter().any(|s| link.as_os_str() == s.as_str()))
}
