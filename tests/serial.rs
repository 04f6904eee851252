//! Serial probes against simulated firmware on real pseudo-terminals.

mod support;

use std::time::Duration;

use benchtel::agent::checks::Code;
use benchtel::agent::probes::serial::expect::Config;
use support::firmware::{Behaviour, Firmware};

fn probe(port: &std::path::Path, extra: &str) -> Config {
    toml::from_str(&format!(
        r#"
port = "{}"
baud = 921600
settle = "50ms"
send = "version"
expect = 'Zephyr version (?P<major>\d+)\.(?P<minor>\d+)'
fail = "Kernel panic|Oops"
{extra}
"#,
        port.display()
    ))
    .unwrap()
}

#[tokio::test]
async fn expect_matches_and_captures_values() {
    let fw = Firmware::start(Behaviour::ZephyrShell);
    let out = probe(&fw.port(), "").run(Duration::from_secs(5)).await;
    assert_eq!(out.code, Code::Ok, "{out:?}");
    assert_eq!(
        out.values,
        vec![("major".to_string(), 3.0), ("minor".to_string(), 5.0)]
    );
}

#[tokio::test]
async fn a_prompt_without_newline_is_matched() {
    let fw = Firmware::start(Behaviour::ZephyrShell);
    let p = probe(&fw.port(), "").clone();
    let prompt = Config {
        send: Some("help".into()),
        expect: regex::Regex::new(r"uart:~\$ $").unwrap(),
        ..p
    };
    assert_eq!(prompt.run(Duration::from_secs(5)).await.code, Code::Ok);
}

#[tokio::test]
async fn a_hanging_board_times_out_with_its_last_lines() {
    let fw = Firmware::start(Behaviour::Hang);
    let out = probe(&fw.port(), "").run(Duration::from_millis(700)).await;
    assert_eq!(out.code, Code::Timeout, "{out:?}");
    assert!(out.detail.contains("still booting"), "{}", out.detail);
}

#[tokio::test]
async fn fail_patterns_and_garbage() {
    let fw = Firmware::start(Behaviour::Panic);
    let out = probe(&fw.port(), "").run(Duration::from_secs(5)).await;
    assert_eq!(out.code, Code::Mismatch, "{out:?}");
    assert!(out.detail.contains("Kernel panic"), "{}", out.detail);
    let fw = Firmware::start(Behaviour::Garble);
    let out = probe(&fw.port(), "").run(Duration::from_millis(700)).await;
    assert_eq!(out.code, Code::Timeout, "garbage is not an answer: {out:?}");
}

#[tokio::test]
async fn a_vanished_adapter_is_missing() {
    let mut fw = Firmware::start(Behaviour::ZephyrShell);
    let port = fw.port();
    fw.vanish();
    let out = probe(&port, "").run(Duration::from_secs(2)).await;
    assert_eq!(out.code, Code::Missing, "{out:?}");
    let fw = Firmware::start(Behaviour::ZephyrShell);
    let out = probe(&fw.port(), "").run(Duration::from_secs(5)).await;
    assert_eq!(out.code, Code::Ok, "{out:?}");
}

/// `benchtel-agent probe NAME` and `probes list`, as an engineer wiring a
/// bench runs them.
#[test]
fn the_probe_command_runs_one_probe_once() {
    let fw = Firmware::start(Behaviour::ZephyrShell);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[bench]
id = "b1"

[[checks]]
name = "zephyr-version"
type = "serial_expect"
port = "{}"
send = "version"
expect = 'Zephyr version (?P<major>\d+)'

[[checks]]
name = "dut-log"
type = "file"
path = "/nonexistent/dut.log"
affects_ready = false
"#,
            fw.port().display()
        ),
    )
    .unwrap();
    let agent = env!("CARGO_BIN_EXE_benchtel-agent");
    let run = |args: &[&str]| {
        std::process::Command::new(agent)
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env("STATE_DIRECTORY", dir.path())
            .output()
            .unwrap()
    };
    let ok = run(&["probe", "zephyr-version"]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}");
    assert!(
        text.contains("zephyr-version ok") && text.contains("major = 3"),
        "{text}"
    );
    let bad = run(&["probe", "dut-log"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("dut-log missing"));
    let unknown = run(&["probe", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("zephyr-version"));
    let list = run(&["probes", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("serial_expect") && text.contains("dut-log"),
        "{text}"
    );
}

fn watcher(port: &std::path::Path) -> benchtel::agent::probes::serial::watch::Config {
    toml::from_str(&format!(
        r#"
port = "{}"
reset = "U-Boot SPL"
fatal = "Kernel panic"
milestones = [
  {{ name = "spl", pattern = "U-Boot SPL", within = "2s" }},
  {{ name = "kernel", pattern = "Starting kernel", within = "5s" }},
  {{ name = "login", pattern = "login:", within = "10s" }},
]
"#,
        port.display()
    ))
    .unwrap()
}

/// Runs one watch while the board prints `console`.
async fn watch_boot(console: &str) -> benchtel::agent::checks::Outcome {
    use benchtel::agent::probes::serial::watch::run_once;
    let fw = Firmware::start(Behaviour::Hang);
    let cfg = watcher(&fw.port());
    let probe = tokio::spawn(async move { run_once(&cfg, Duration::from_secs(10)).await });
    // Let the probe open the port before the board prints.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    fw.print(console);
    probe.await.unwrap()
}

#[tokio::test]
async fn watch_follows_a_boot_to_the_login_prompt() {
    let out = watch_boot(
        "U-Boot SPL 2024.01\r\nTrying to boot from MMC1\r\n\
         Starting kernel ...\r\n[    0.000000] Linux version 6.6\r\n\r\nbench login: \r\n",
    )
    .await;
    assert_eq!(out.code, Code::Ok, "{out:?}");
}

#[tokio::test]
async fn watch_reports_a_panic_with_the_console() {
    let out = watch_boot(
        "U-Boot SPL 2024.01\r\nStarting kernel ...\r\nKernel panic - not syncing: VFS\r\n",
    )
    .await;
    assert_eq!(out.code, Code::Mismatch, "{out:?}");
    assert!(out.detail.contains("Starting kernel"), "{}", out.detail);
}

#[test]
fn a_probe_set_from_firmware_probes_runs_against_the_board() {
    let fw = Firmware::start(Behaviour::ZephyrShell);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "firmware_probes = [\"{}\"]\n[bench]\nid = \"b1\"\n[[probe_set]]\nuse = \"zephyr-shell\"\nname = \"dut\"\nport = \"{}\"\n",
            benchtel::config::probe_sets::repo_dir().display(),
            fw.port().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_benchtel-agent"))
        .args(["probe", "dut-version", "--config"])
        .arg(&cfg)
        .env("STATE_DIRECTORY", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("major = 3") && text.contains("patch = 0"),
        "{text}"
    );
}

#[tokio::test]
async fn probes_sharing_a_port_take_turns() {
    let fw = Firmware::start(Behaviour::ZephyrShell);
    let (a, b) = (probe(&fw.port(), ""), probe(&fw.port(), ""));
    let (ra, rb) = tokio::join!(a.run(Duration::from_secs(5)), b.run(Duration::from_secs(5)));
    assert_eq!((ra.code, rb.code), (Code::Ok, Code::Ok), "{ra:?} {rb:?}");
}

#[tokio::test]
async fn a_watch_and_an_expect_share_one_console() {
    use benchtel::agent::probes::serial::watch::run_once;
    let fw = Firmware::start(Behaviour::ZephyrShell);
    let cfg = watcher(&fw.port());
    let watching = tokio::spawn(async move { run_once(&cfg, Duration::from_secs(15)).await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The watch holds the port; the expect probe still gets its answer.
    let out = probe(&fw.port(), "").run(Duration::from_secs(5)).await;
    assert_eq!(out.code, Code::Ok, "{out:?}");
    fw.print("U-Boot SPL 2024.01\r\nStarting kernel ...\r\nbench login: \r\n");
    assert_eq!(watching.await.unwrap().code, Code::Ok);
}

#[tokio::test]
async fn a_replugged_adapter_is_missing_then_recovers_at_the_same_path() {
    let mut fw = Firmware::start(Behaviour::ZephyrShell);
    let p = probe(&fw.port(), "");
    assert_eq!(p.run(Duration::from_secs(5)).await.code, Code::Ok);
    fw.vanish();
    assert_eq!(p.run(Duration::from_secs(2)).await.code, Code::Missing);
    fw.replug();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = p.run(Duration::from_secs(2)).await;
        if out.code == Code::Ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered: {out:?}"
        );
    }
}
