use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/watch")
        .join(kind)
}

fn load_str(text: &str) -> Result<WatchConfig, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watch.toml");
    std::fs::write(&path, text).unwrap();
    load(Some(&path), &Env::default())
}

#[test]
fn every_invalid_fixture_names_its_key_and_value() {
    crate::config::testing::check_invalid_fixtures(&fixtures("invalid"), load);
}

#[test]
fn the_shipped_example_loads_with_its_documented_defaults() {
    let cfg = load(Some(&fixtures("valid").join("full.toml")), &Env::default()).unwrap();
    let defaults = load(Some(Path::new("/nonexistent")), &Env::default());
    assert!(defaults.is_err(), "an explicit missing file is an error");
    let builtin = load(None, &Env::default()).unwrap();
    assert_eq!(cfg.liveness, builtin.liveness);
    assert_eq!(cfg.http.listen, builtin.http.listen);
    assert_eq!(cfg.liveness.offline_after, Duration::from_secs(60));
    assert_eq!(
        cfg.liveness_for("lab2", "b1").offline_after,
        Duration::from_secs(180)
    );
    assert_eq!(
        cfg.liveness_for("lab1", "b1").offline_after,
        Duration::from_secs(60)
    );
}

#[test]
fn a_bench_override_beats_its_site_and_inherits_the_rest() {
    let cfg = load_str(
        r#"
[liveness]
will_debounce = "7s"
[[liveness.override]]
site = "lab1"
offline_after = "2m"
[[liveness.override]]
site = "lab1"
bench = "slow"
offline_after = "5m"
"#,
    )
    .unwrap();
    assert_eq!(
        cfg.liveness_for("lab1", "slow").offline_after,
        Duration::from_secs(300)
    );
    assert_eq!(
        cfg.liveness_for("lab1", "fast").offline_after,
        Duration::from_secs(120)
    );
    assert_eq!(
        cfg.liveness_for("lab1", "slow").will_debounce,
        Duration::from_secs(7)
    );
    assert_eq!(
        cfg.liveness_for("lab9", "x").offline_after,
        Duration::from_secs(60)
    );
}

#[test]
fn tokens_are_read_from_files_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("t");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let cfg = load_str(&format!(
        "[[otlp.tokens]]\nsite = \"lab1\"\ntoken_file = {:?}\n",
        token.display().to_string()
    ))
    .unwrap();
    assert_eq!(cfg.otlp.tokens[0].token.expose(), "s3cret-token");
    assert!(!format!("{cfg:?}").contains("s3cret"));
    assert!(!cfg.summary().contains("s3cret"));
    std::fs::write(&token, "  \n").unwrap();
    let err = load_str(&format!(
        "[[otlp.tokens]]\nsite = \"lab1\"\ntoken_file = {:?}\n",
        token.display().to_string()
    ))
    .unwrap_err();
    assert!(err.to_string().contains("the file is empty"), "{err}");
}

#[test]
fn several_mistakes_are_reported_together() {
    let err =
        load_str("[storm]\nshare = 0\n[alerts]\nresend_interval = \"0s\"\n[benches]\nmax = 0\n")
            .unwrap_err();
    assert_eq!(err.0.len(), 3, "{err}");
}

/// packaging/watch.toml shows every key commented out with its built-in
/// default; a key renamed or moved in code must be moved there too.
#[test]
fn the_packaged_watch_toml_uncommented_equals_the_builtin_defaults() {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/watch.toml"))
            .unwrap();
    // Keys whose shown value is an example, not the default.
    let examples = [
        "admin_token_file",
        "path",
        "allow",
        "late_after",
        "silence",
        "external_url",
    ];
    let mut in_example_table = false;
    let mut text = String::new();
    for line in shipped.lines() {
        if line.starts_with("# [[") {
            in_example_table = true;
        } else if line.is_empty() || line.starts_with('[') {
            in_example_table = false;
        }
        let key_line = line.strip_prefix("# ").filter(|l| {
            l.split_once(" = ")
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        });
        match key_line {
            Some(_) if in_example_table => {}
            Some(l) if examples.contains(&l.split_once(" = ").unwrap().0) => {}
            Some(l) => text.push_str(l),
            None if line.starts_with('[') => text.push_str(line),
            None => {}
        }
        text.push('\n');
    }
    let uncommented = load_str(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    let builtin = load(None, &Env::default()).unwrap();
    let show = |c: &WatchConfig| {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            c.http.listen,
            c.liveness,
            c.storm,
            c.alerts.hold,
            c.alerts.resend_interval,
            c.alerts.resolved_resend,
            c.alerts.timeout,
            c.benches.max
        )
    };
    assert_eq!(show(&uncommented), show(&builtin));
    assert!(text.contains("hold = "), "the file shows alerts.hold");
}
