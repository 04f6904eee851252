//! Serial watch throughput: console text pushed through a real pty pair
//! (socat) as fast as it goes, followed by a `serial_watch` with 20
//! patterns; every line is counted, so dropped lines show.
//!
//! `cargo bench --bench serial_watch` (needs socat); figures in
//! BENCHMARKS.md. `cargo test` runs it with a tiny size.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use benchtel::agent::probes::serial::watch::{BootTracker, Config, Event, Watcher};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let lines: usize = if full { 200_000 } else { 2_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    let (dut, sim) = (dir.path().join("dut"), dir.path().join("sim"));
    let mut socat = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", dut.display()))
        .arg(format!("pty,raw,echo=0,link={}", sim.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat (apt-get install socat)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(dut.exists() && sim.exists()) {
        assert!(Instant::now() < deadline, "no pty pair");
        std::thread::sleep(Duration::from_millis(10));
    }
    // 20 patterns: the reset marker (every line, so lines are counted), 18
    // milestones that never match, and a fatal pattern.
    let mut milestones = String::new();
    for i in 0..18 {
        milestones.push_str(&format!(
            "{{ name = \"m{i}\", pattern = 'never seen {i} \\d+ (ok|fail)', within = \"1h\" }},\n"
        ));
    }
    let cfg: Config = toml::from_str(&format!(
        "port = \"{}\"\nbaud = 921600\nreset = '^\\[ *\\d+\\.\\d+\\] boot'\nfatal = 'Kernel panic|Oops'\nmilestones = [\n{milestones}]\n",
        dut.display()
    ))
    .expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let line_len = 64;
    let writer = std::thread::spawn(move || {
        // Give the watcher time to open the port.
        std::thread::sleep(Duration::from_millis(500));
        let mut f = std::fs::File::options()
            .write(true)
            .open(&sim)
            .expect("sim end");
        let started = Instant::now();
        for i in 0..lines {
            let mut line = format!("[{:8}.000000] boot message {i:>10} ", i / 1000);
            line.truncate(line_len - 2);
            while line.len() < line_len - 2 {
                line.push('.');
            }
            line.push_str("\r\n");
            f.write_all(line.as_bytes()).expect("write");
        }
        started.elapsed()
    });
    let mut tracker = BootTracker::new(cfg.clone());
    let mut seen = 0usize;
    let started = Instant::now();
    rt.block_on(async {
        let follow = async {
            let mut watcher = Watcher::open(&cfg).await.expect("port");
            while seen < lines {
                let events = watcher.next(&mut tracker).await.expect("console");
                seen += events.iter().filter(|e| **e == Event::Reset).count();
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(120), follow).await;
    });
    let took = started.elapsed().saturating_sub(Duration::from_millis(500));
    let wrote = writer.join().expect("writer");
    let _ = socat.kill();
    let _ = socat.wait();
    let mb = (lines * line_len) as f64 / 1e6;
    println!(
        "serial watch, 20 patterns, {lines} lines of {line_len} B ({mb:.1} MB) through a pty: \
         {seen} lines seen ({} lost), {:.2} MB/s (writer done after {:.2} s)",
        lines - seen,
        mb / took.as_secs_f64(),
        wrote.as_secs_f64()
    );
}
