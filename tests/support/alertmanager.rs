//! A real Alertmanager (Debian `prometheus-alertmanager`) on an ephemeral
//! port, one per test, with no cluster listener and its state in a
//! temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Alertmanager {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager with the configuration file `config`.
    pub fn start(config: &Path) -> Alertmanager {
        let bin = super::require(
            "prometheus-alertmanager",
            "apt-get install prometheus-alertmanager",
        );
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let log = dir.path().join("alertmanager.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Empty: no gossip listener on 9094.
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut am = Alertmanager {
            child,
            port,
            log,
            _dir: dir,
        };
        am.wait_listening();
        am
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("alertmanager exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
