//! The real agent with its outbox on a tiny tmpfs that fills up: it stays
//! up, goes live (telemetry straight to the collector from memory), counts
//! every record it loses, says so on `/healthz` and in `outbox status`, and
//! returns to durable mode once space is freed, losing nothing more.
//!
//! Mounting needs root (CI runs as root); anywhere else the test fails and
//! says so, it does not skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::agent::{AGENT, Agent, Options, config_with};
use support::http::{get, wait_for};
use support::receiver::Receiver;

/// A tmpfs mounted for the test; unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            is_root(),
            "tests/full_disk.rs mounts a tmpfs and must run as root (CI does): \
             run it with sudo, e.g. `sudo -E cargo test --test full_disk`"
        );
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount(8) is missing: apt-get install mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    // The last partial chunk may have found room for part of itself.
    let _ = f.write_all(&[0u8; 4096]);
    let _ = f.sync_all();
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

fn healthz(agent: &Agent) -> serde_json::Value {
    get(&agent.listen, "/healthz")
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn outbox_status(cfg: &Path) -> serde_json::Value {
    let out = Command::new(AGENT)
        .args(["outbox", "status", "--json", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "outbox status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

const DISK_FULL: (&str, &str) = ("reason", "disk_full");
const DROPPED: &str = "benchtel_outbox_dropped_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_goes_live_counts_every_loss_and_comes_back_durable() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _mount = Tmpfs::mount(&disk, "8m");
    let endpoint = receiver.endpoint();
    let opts = Options {
        otlp_endpoint: Some(&endpoint),
        ..Options::default()
    };
    let cfg = config_with(dir.path(), &opts, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let old = text
        .lines()
        .find(|l| l.starts_with("path = ") && l.contains("outbox-"))
        .unwrap()
        .to_string();
    let db = disk.join("outbox.db");
    // A small live queue, so a short collector outage overflows it.
    let text = text.replace(
        &old,
        &format!("path = \"{}\"\nlive_max_bytes = 16384", db.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    let agent = Agent::start(dir.path(), &cfg);
    let agent = tokio::task::spawn_blocking(move || {
        wait_for("durable mode at start", Duration::from_secs(30), || {
            healthz(&agent)["outbox"]["mode"] == "durable"
        });
        agent
    })
    .await
    .unwrap();
    assert!(
        receiver
            .wait_until(|r| !r.metrics().is_empty(), Duration::from_secs(30))
            .await,
        "nothing forwarded before the disk filled; agent said:\n{}",
        agent.output()
    );

    // The disk fills up.
    let filler = disk.join("filler");
    fill(&filler);
    let agent = tokio::task::spawn_blocking(move || {
        wait_for("live mode on /healthz", Duration::from_secs(30), || {
            let h = healthz(&agent);
            h["outbox"]["mode"] == "live" && h["outbox"]["reason"] == "disk_full"
        });
        agent
    })
    .await
    .unwrap();
    agent.wait_line(
        &["outbox cannot commit", "live mode"],
        Duration::from_secs(5),
    );
    // Telemetry still reaches a collector that answers.
    let before = receiver.metrics().len();
    assert!(
        receiver
            .wait_until(|r| r.metrics().len() >= before + 3, Duration::from_secs(30))
            .await,
        "no live telemetry while the disk is full; agent said:\n{}",
        agent.output()
    );
    let rss_live = vm_rss_kib(agent.pid());

    // The collector goes away too: the live queue overflows, and every
    // record it pushes out is counted, in memory for now.
    receiver.stop().await;
    let agent = tokio::task::spawn_blocking(move || {
        agent.wait_metric(DROPPED, &[DISK_FULL], Duration::from_secs(60), |v| v >= 3.0);
        agent
    })
    .await
    .unwrap();
    receiver.restart().await;
    assert_eq!(
        healthz(&agent)["status"],
        "ok",
        "the agent stays up and healthy"
    );

    // Space comes back: durable mode by itself, the counts written.
    std::fs::remove_file(&filler).unwrap();
    let agent = tokio::task::spawn_blocking(move || {
        wait_for("durable mode again", Duration::from_secs(30), || {
            healthz(&agent)["outbox"]["mode"] == "durable"
        });
        agent
    })
    .await
    .unwrap();
    let line = agent.wait_line(&["durable mode", "lost_records"], Duration::from_secs(5));
    let lost = agent.metric(DROPPED, &[DISK_FULL]);
    assert!(lost >= 3.0, "{lost}");
    assert!(line.contains(&format!("lost_records={lost}")), "{line}");
    let status = outbox_status(&cfg);
    assert_eq!(
        status["dropped"]["disk_full"]["records"].as_f64(),
        Some(lost),
        "{status:#}"
    );
    assert_eq!(
        status["outbox"]["last_episode"]["lost"]["records"].as_f64(),
        Some(lost),
        "{status:#}"
    );
    // Committed and forwarded again, with no further loss.
    let before = receiver.metrics().len();
    assert!(
        receiver
            .wait_until(|r| r.metrics().len() >= before + 3, Duration::from_secs(30))
            .await,
        "nothing forwarded after the disk recovered; agent said:\n{}",
        agent.output()
    );
    assert_eq!(agent.metric(DROPPED, &[DISK_FULL]), lost);
    assert_eq!(healthz(&agent)["outbox"]["mode"], "durable");
    let wal = std::fs::metadata(disk.join("outbox.db-wal")).map_or(0, |m| m.len());
    assert!(wal <= 4 << 20, "the WAL is {wal} bytes");
    eprintln!("agent VmRSS in live mode: {rss_live} KiB");
    let (exit, stderr) = agent.terminate();
    assert!(exit.success(), "{exit:?}: {stderr}");
}
