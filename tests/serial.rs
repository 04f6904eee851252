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
