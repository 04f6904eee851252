//! The real `benchtel-watch` binary as a process: its own config, port and
//! registry, restartable on the same registry, killable with SIGKILL.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prost::Message;

use super::{http, otlp};

pub struct Watch {
    child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Watch {
    /// A watch whose config is `extra` plus its listen address and registry
    /// (which `extra` must not set).
    pub fn start(extra: &str) -> Watch {
        Watch::start_http("", extra)
    }

    /// Like `start`, with extra lines for its `[http]` section.
    pub fn start_http(http: &str, extra: &str) -> Watch {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let conf = dir.path().join("watch.toml");
        std::fs::write(
            &conf,
            format!(
                "[http]\nlisten = \"127.0.0.1:{port}\"\n{http}\n[registry]\npath = {:?}\n[watch]\nreplica = \"test-watch\"\n{extra}\n",
                dir.path().join("watch.db").display().to_string()
            ),
        )
        .unwrap();
        let log = dir.path().join("watch.log");
        let mut w = Watch {
            child: None,
            port,
            conf,
            log,
            dir,
        };
        w.restart();
        w
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "watch already running");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // A benchmark may compare another build of the watch.
        let bin = std::env::var_os("BENCHTEL_WATCH_BIN").map_or_else(
            || env!("CARGO_BIN_EXE_benchtel-watch").into(),
            PathBuf::from,
        );
        let child = Command::new(bin)
            .arg("--config")
            .arg(&self.conf)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http::get(&self.addr(), "/healthz").is_none() {
            assert!(
                Instant::now() < deadline,
                "watch did not start: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("watch running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        c.wait().unwrap()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("watch is not running").id()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http::get(&self.addr(), "/metrics")
            .expect("watch answers")
            .1
    }

    pub fn benches(&self) -> Vec<serde_json::Value> {
        let (code, body) = http::get(&self.addr(), "/api/v1/benches").expect("watch answers");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The liveness the watch gives `bench`, if it knows it.
    pub fn liveness(&self, bench: &str) -> Option<String> {
        self.benches()
            .into_iter()
            .find(|b| b["bench_id"] == bench)
            .and_then(|b| b["liveness"].as_str().map(str::to_string))
    }

    pub fn post_otlp(&self, body: &[u8], headers: &[&str]) -> http::Answer {
        let mut h = vec!["Content-Type: application/x-protobuf"];
        h.extend_from_slice(headers);
        http::post(&self.addr(), "/v1/metrics", &h, body).expect("watch answers")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Benches heartbeating over OTLP from a thread, every `every`, to one or
/// more watches. Each bench can be stopped (it "dies") and started again.
pub struct Beater {
    stop: Arc<AtomicBool>,
    alive: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Beater {
    /// `skew` seconds are added to the bench clock.
    pub fn start(
        addrs: Vec<String>,
        benches: &[(&str, &str)],
        every: Duration,
        skew: f64,
    ) -> Beater {
        let stop = Arc::new(AtomicBool::new(false));
        let alive = Arc::new(std::sync::Mutex::new(
            benches
                .iter()
                .map(|(s, b)| (s.to_string(), b.to_string()))
                .collect::<Vec<_>>(),
        ));
        let (st, al) = (stop.clone(), alive.clone());
        let run_start = (otlp::now_s() * 1e9) as u64;
        let thread = std::thread::spawn(move || {
            let mut count = 0u64;
            while !st.load(Ordering::Relaxed) {
                count += 1;
                let now = otlp::now_s() + skew;
                for (site, bench) in al.lock().unwrap().iter() {
                    let body =
                        otlp::heartbeats(site, bench, run_start, &[(count, now)]).encode_to_vec();
                    for addr in &addrs {
                        let h = ["Content-Type: application/x-protobuf"];
                        let _ = http::post(addr, "/v1/metrics", &h, &body);
                    }
                }
                std::thread::sleep(every);
            }
        });
        Beater {
            stop,
            alive,
            thread: Some(thread),
        }
    }

    pub fn kill(&self, bench: &str) {
        self.alive.lock().unwrap().retain(|(_, b)| b != bench);
    }

    pub fn revive(&self, site: &str, bench: &str) {
        self.alive
            .lock()
            .unwrap()
            .push((site.to_string(), bench.to_string()));
    }
}

impl Drop for Beater {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
