//! A real Alertmanager (Debian `prometheus-alertmanager`) on an ephemeral
//! port, with no clustering, one per test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http;

pub struct Alertmanager {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A route that sends everything to a receiver with no integrations.
pub const MINIMAL: &str =
    "route:\n  receiver: 'null'\n  group_wait: 1s\nreceivers:\n  - name: 'null'\n";

impl Alertmanager {
    pub fn start() -> Alertmanager {
        Alertmanager::with_config(MINIMAL)
    }

    pub fn with_config(yaml: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("alertmanager.yml");
        std::fs::write(&conf, yaml).unwrap();
        Alertmanager::spawn(&conf, dir)
    }

    /// Starts Alertmanager with the configuration file `config`.
    pub fn from_file(config: &std::path::Path) -> Alertmanager {
        Alertmanager::spawn(config, tempfile::tempdir().unwrap())
    }

    fn spawn(conf: &std::path::Path, dir: tempfile::TempDir) -> Alertmanager {
        let bin = super::require(
            "prometheus-alertmanager",
            "apt-get install prometheus-alertmanager",
        );
        let log = dir.path().join("alertmanager.log");
        let port = super::free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // An empty address keeps it from opening the cluster port.
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let am = Alertmanager {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http::get(&am.addr(), "/-/ready").map(|(c, _)| c) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready: {}",
                am.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        am
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every alert Alertmanager holds as active (firing, not resolved),
    /// whether silenced or inhibited.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let (code, body) = http::get(
            &self.addr(),
            "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true",
        )
        .expect("alertmanager answers");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Active alerts named `name`.
    pub fn active(&self, name: &str) -> Vec<serde_json::Value> {
        self.alerts()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
