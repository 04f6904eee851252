//! Serial probes against simulated firmware on real pseudo-terminals.

mod support;

use std::time::Duration;

use benchtel::agent::checks::Code;
use benchtel::agent::checks::serial::ExpectCheck;
use benchtel::agent::probes::serial::expect::Config;
use benchtel::config::Pattern;
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
        expect: Pattern::new(r"uart:~\$ $").unwrap(),
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
    use benchtel::agent::checks::serial::run_once;
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
    assert_eq!(out.code, Code::Fatal, "{out:?}");
    assert!(out.detail.contains("Starting kernel"), "{}", out.detail);
}

/// Runs one watch while the board replays a fixture console
/// (`tests/fixtures/consoles/`) with its timing; `watch` is the probe's
/// config without its port.
async fn watch_replay(console: &str, watch: &str) -> benchtel::agent::checks::Outcome {
    use benchtel::agent::checks::serial::run_once;
    use benchtel::agent::probes::serial::watch::Config;
    let fw = Firmware::start(Behaviour::Hang);
    let cfg: Config =
        toml::from_str(&format!("port = \"{}\"\n{watch}", fw.port().display())).unwrap();
    let probe = tokio::spawn(async move { run_once(&cfg, Duration::from_secs(10)).await });
    // Let the probe open the port before the board prints.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let replay = fw.replay(console);
    let out = probe.await.unwrap();
    replay.join().unwrap();
    out
}

/// Anchored patterns: they match only once colour, cursor moves and
/// noise bytes are gone, and `login: $` only on the prompt itself.
const LINUX_BOOT: &str = r#"
reset = "^U-Boot SPL"
fatal = "Kernel panic|Oops:"
milestones = [
  { name = "spl", pattern = "^U-Boot SPL 20", within = "2s" },
  { name = "u-boot", pattern = "^U-Boot 20", within = "5s" },
  { name = "kernel", pattern = "^Starting kernel", within = "5s" },
  { name = "linux", pattern = '^\[ *[0-9.]+\] Linux version', within = "5s" },
  { name = "systemd", pattern = '^\[  OK  \] Reached target multi-user\.target - Multi-User System\.$', within = "5s" },
  { name = "login", pattern = "^bench login: $", within = "5s" },
]
"#;

#[tokio::test]
async fn a_login_prompt_without_a_newline_reaches_login() {
    let out = watch_replay("uboot-linux-login", LINUX_BOOT).await;
    assert_eq!(out.code, Code::Ok, "{out:?}");
}

#[tokio::test]
async fn a_board_resetting_in_a_loop_is_a_boot_loop_not_a_fatal_line() {
    let out = watch_replay("boot-loop", LINUX_BOOT).await;
    assert_eq!(out.code, Code::BootLoop, "{out:?}");
}

#[tokio::test]
async fn u_boots_prompt_reaches_its_milestone() {
    let out = watch_replay(
        "uboot-prompt",
        r#"
reset = "^U-Boot SPL"
milestones = [
  { name = "spl", pattern = "^U-Boot SPL", within = "2s" },
  { name = "u-boot", pattern = "^U-Boot 20", within = "5s" },
  { name = "prompt", pattern = "^=> $", within = "5s" },
]
"#,
    )
    .await;
    assert_eq!(out.code, Code::Ok, "{out:?}");
}

#[tokio::test]
async fn a_zephyr_boot_reaches_its_shell_through_noise_and_colour() {
    let out = watch_replay(
        "zephyr-shell",
        r#"
reset = '^\*\*\* Booting Zephyr OS'
milestones = [
  { name = "main", pattern = "^\\[[0-9:.,]+\\] <inf> main: sensor ready$", within = "2s" },
  { name = "shell", pattern = '^uart:~\$ $', within = "2s" },
]
"#,
    )
    .await;
    assert_eq!(out.code, Code::Ok, "{out:?}");
}

/// One `LINUX_BOOT` watch, with `extra` keys, on a board already running.
async fn watch_linux(fw: &Firmware, extra: &str) -> benchtel::agent::checks::Outcome {
    use benchtel::agent::checks::serial::run_once;
    use benchtel::agent::probes::serial::watch::Config;
    let cfg: Config = toml::from_str(&format!(
        "port = \"{}\"\n{LINUX_BOOT}\n{extra}\n",
        fw.port().display()
    ))
    .unwrap();
    run_once(&cfg, Duration::from_secs(10)).await
}

/// The agent (re)starts while the board idles at its login prompt: no boot
/// will come, the `alive` poke learns that the board is up.
#[tokio::test]
async fn a_board_idling_at_its_prompt_is_up_within_the_alive_timeout() {
    let fw = Firmware::start(Behaviour::LoginPrompt);
    let alive = r#"alive = { send = "\r", expect = "login: $", timeout = "2s" }"#;
    let started = std::time::Instant::now();
    let out = watch_linux(&fw, alive).await;
    assert_eq!(out.code, Code::Ok, "{out:?}");
    assert!(out.detail.contains("alive"), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Without `alive`, a board that never resets while watched is up after
/// `assume_booted_after`, not `starting` for ever.
#[tokio::test]
async fn without_alive_a_quiet_console_counts_as_booted_after_its_grace() {
    let fw = Firmware::start(Behaviour::Hang);
    let out = watch_linux(&fw, r#"assume_booted_after = "1s""#).await;
    assert_eq!(out.code, Code::Ok, "{out:?}");
    assert!(out.detail.contains("booted before"), "{out:?}");
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
            benchtel::agent::config::probe_sets::repo_dir().display(),
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
    use benchtel::agent::checks::serial::run_once;
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

/// Every probe kind the agent can run here (serial_expect, serial_watch on
/// simulated boards; gpio_level on a chip that does not exist, since this
/// machine has no GPIO) reports `bench_probe_success{probe,kind}` per run
/// and `bench_probe_duration_seconds{probe}` on the real agent's /metrics,
/// and every `*_seconds` histogram carries the agent's own buckets.
#[test]
fn probe_results_and_durations_reach_metrics() {
    use benchtel::agent::checks::{BOOT_BUCKETS, RUN_BUCKETS};
    use support::agent::{Agent, buckets, config, find};
    let shell = Firmware::start(Behaviour::ZephyrShell);
    let panicking = Firmware::start(Behaviour::Panic);
    let console = Firmware::start(Behaviour::Hang);
    let dir = tempfile::tempdir().unwrap();
    let closed = support::free_port();
    // recover_after and fail_after are out of reach: the verdicts never
    // change, so what is seen is each run's result, not the verdict.
    let checks = format!(
        r#"
[[checks]]
name = "dut-version"
type = "serial_expect"
port = "{shell}"
send = "version"
expect = 'Zephyr version (?P<major>\d+)'
settle = "0s"
interval = "200ms"
recover_after = 1000000
affects_ready = false

[[checks]]
name = "dut-panics"
type = "serial_expect"
port = "{panicking}"
send = "version"
expect = 'Zephyr version'
fail = "Kernel panic"
settle = "0s"
interval = "200ms"
fail_after = 1000000
affects_ready = false

[[checks]]
name = "power-good"
type = "gpio_level"
chip = "/dev/benchtel-test-no-such-gpiochip"
line = 0
expect = "high"
interval = "200ms"
affects_ready = false

[[checks]]
name = "boot"
type = "serial_watch"
port = "{console}"
reset = "U-Boot SPL"
fatal = "Kernel panic"
boot_loop_resets = 1000
affects_ready = false
milestones = [
  {{ name = "spl", pattern = "U-Boot SPL", within = "5s" }},
  {{ name = "kernel", pattern = "Starting kernel", within = "10s" }},
]

[[checks]]
name = "instrument"
type = "tcp"
address = "127.0.0.1:{closed}"
interval = "200ms"
affects_ready = false
"#,
        shell = shell.port().display(),
        panicking = panicking.port().display(),
        console = console.port().display(),
    );
    let cfg = config(dir.path(), &checks);
    let agent = Agent::start(dir.path(), &cfg);
    let t = Duration::from_secs(30);
    let success = "bench_probe_success";
    let passed = [("probe", "dut-version"), ("kind", "serial_expect")];
    agent.wait_metric(success, &passed, t, |v| v == 1.0);
    let failed = [("probe", "dut-panics"), ("kind", "serial_expect")];
    agent.wait_metric("bench_probe_duration_seconds_count", &failed[..1], t, |v| {
        v >= 3.0
    });
    let gpio = [("probe", "power-good"), ("kind", "gpio_level")];
    agent.wait_metric("bench_probe_duration_seconds_count", &gpio[..1], t, |v| {
        v >= 1.0
    });

    // The watch opens its port when it starts: print boots until one is timed.
    let booted = [("probe", "boot"), ("kind", "serial_watch")];
    let deadline = std::time::Instant::now() + t;
    while find(&agent.metrics(), success, &booted) != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "no boot seen:\n{}",
            agent.metrics()
        );
        console.print("U-Boot SPL 2024.01\r\nStarting kernel ...\r\n");
        std::thread::sleep(Duration::from_millis(300));
    }
    let text = agent.metrics();
    let duration = "bench_probe_duration_seconds";
    for probe in ["dut-version", "dut-panics", "power-good", "boot"] {
        let n = find(&text, &format!("{duration}_count"), &[("probe", probe)]);
        assert!(n.is_some_and(|n| n >= 1.0), "{probe}: {n:?}\n{text}");
    }
    assert_eq!(find(&text, success, &failed), Some(0.0), "{text}");
    assert_eq!(find(&text, success, &gpio), Some(0.0), "{text}");
    // Per run, not the verdict: neither serial_expect probe has one yet.
    for check in ["dut-version", "dut-panics"] {
        let up = find(&text, "bench_health_check_up", &[("check", check)]);
        assert_eq!(up, None, "{check}\n{text}");
    }
    // Checks of the bench's own tools are not probes.
    assert_eq!(find(&text, success, &[("probe", "instrument")]), None);
    assert!(
        find(
            &text,
            "bench_health_check_duration_seconds_count",
            &[("check", "instrument")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // The buckets are the agent's, not the SDK's millisecond defaults.
    let with_inf = |b: &[f64]| b.iter().copied().chain([f64::INFINITY]).collect::<Vec<_>>();
    for (name, labels) in [
        (
            "bench_health_check_duration_seconds",
            [("check", "instrument")],
        ),
        (duration, [("probe", "dut-version")]),
        (duration, [("probe", "boot")]),
    ] {
        assert_eq!(
            buckets(&text, name, &labels),
            with_inf(&RUN_BUCKETS),
            "{name}\n{text}"
        );
    }
    let milestone = [("probe", "boot"), ("milestone", "kernel")];
    assert_eq!(
        buckets(&text, "bench_boot_milestone_seconds", &milestone),
        with_inf(&BOOT_BUCKETS),
        "{text}"
    );

    // A boot that panics is a failed run of the watch.
    console.print("U-Boot SPL 2024.01\r\nKernel panic - not syncing\r\n");
    agent.wait_metric(success, &booted, t, |v| v == 0.0);
    let fatal = [("check", "boot"), ("code", "fatal")];
    agent.wait_metric("bench_health_failures_total", &fatal, t, |v| v >= 1.0);
    let (status, _) = agent.terminate();
    assert!(status.success());
}
