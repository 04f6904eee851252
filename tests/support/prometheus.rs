//! A real Prometheus (Debian `prometheus`) on an ephemeral port, one per
//! test, with its TSDB in a temporary directory. It scrapes the given
//! targets every second and evaluates the given rule files every second.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// `scrape` is a list of (job name, `host:port` target); `rules` are
    /// rule files to load.
    pub fn start(scrape: &[(&str, &str)], rules: &[&Path]) -> Prometheus {
        let bin = super::require("prometheus", "apt-get install prometheus");
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        config.push_str("rule_files:\n");
        for r in rules {
            config.push_str(&format!("  - {:?}\n", r.display().to_string()));
        }
        config.push_str(if scrape.is_empty() {
            "scrape_configs: []\n"
        } else {
            "scrape_configs:\n"
        });
        for (job, target) in scrape {
            config.push_str(&format!(
                "  - job_name: {job:?}\n    static_configs:\n      - targets: [{target:?}]\n"
            ));
        }
        let conf = dir.path().join("prometheus.yml");
        std::fs::write(&conf, config).unwrap();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut p = Prometheus {
            child,
            port,
            log,
            _dir: dir,
        };
        p.wait_listening();
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What Prometheus logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
