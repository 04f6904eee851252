use std::path::{Path, PathBuf};

use super::*;

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
}

fn env_with_state(dir: &Path) -> Env {
    Env {
        state_directory: Some(dir.display().to_string()),
        ..Env::default()
    }
}

fn load_str(text: &str, env: &Env) -> Result<AgentConfig, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    load(Some(&path), env)
}

#[test]
fn every_invalid_fixture_names_its_key_and_value() {
    crate::config::testing::check_invalid_fixtures(&fixtures("invalid"), load);
}

#[test]
fn several_errors_are_all_reported() {
    let errors = load(
        Some(&fixtures("invalid").join("several_errors.toml")),
        &Env::default(),
    )
    .unwrap_err();
    assert_eq!(errors.0.len(), 4, "{errors}");
}

#[test]
fn valid_fixtures_load() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["minimal.toml", "full.toml"] {
        let cfg = load(
            Some(&fixtures("valid").join(name)),
            &env_with_state(dir.path()),
        )
        .unwrap();
        assert_eq!(cfg.outbox.path, dir.path().join("outbox.db"));
    }
    let full = load(
        Some(&fixtures("valid").join("full.toml")),
        &env_with_state(dir.path()),
    )
    .unwrap();
    assert_eq!(full.bench.id, "lab1-bench07");
    assert_eq!(full.outbox.max_age, Duration::from_secs(7 * 86_400));
    assert_eq!(full.outbox.live_max_bytes, 1 << 20);
    assert_eq!(full.sources.host_metrics.collectors.len(), 5);
    let mqtt = full.mqtt.expect("full.toml has [mqtt]");
    assert_eq!(mqtt.connection.keepalive(), Duration::from_secs(15));
    assert!(!mqtt.options.publish_probes);
}

#[test]
fn a_missing_default_file_means_defaults_but_a_named_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(None, &env_with_state(dir.path())).unwrap();
    assert_eq!(cfg.source, ConfigSource::Defaults);
    assert_eq!(cfg.otlp.endpoint.as_str(), "http://localhost:4318/");
    assert_eq!(cfg.http.listen.to_string(), "127.0.0.1:9464");
    assert_eq!(cfg.sources.heartbeat.interval, Duration::from_secs(10));
    assert!(cfg.mqtt.is_none(), "MQTT is off unless configured");
    assert!(cfg.telemetry.traces, "spans are on unless turned off");
    assert!(!cfg.bench.id.is_empty());
    let missing = dir.path().join("nope.toml");
    let err = load(Some(&missing), &Env::default()).unwrap_err();
    assert_eq!(err.0[0].key, "(file)");
    let env = Env {
        benchtel_config: Some(missing.display().to_string()),
        ..Env::default()
    };
    assert!(load(None, &env).is_err());
}

#[test]
fn environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        otel_exporter_otlp_endpoint: Some("https://otel.example:4318".into()),
        otel_exporter_otlp_headers: Some("Authorization=Bearer%20abc,x-org=lab%2C1".into()),
        otel_resource_attributes: Some("deployment.environment=prod,bench.site=ignored".into()),
        otel_service_name: Some("bench-agent-7".into()),
        state_directory: Some(format!("{}:/other", dir.path().display())),
        ..Env::default()
    };
    let cfg = load_str("[otlp]\nendpoint = \"http://file:4318\"\n", &env).unwrap();
    assert_eq!(cfg.otlp.endpoint.as_str(), "https://otel.example:4318/");
    let h: Vec<(&str, &str)> = cfg
        .otlp
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert!(h.contains(&("authorization", "Bearer abc")), "{h:?}");
    assert!(h.contains(&("x-org", "lab,1")), "{h:?}");
    assert_eq!(cfg.resource_attributes["deployment.environment"], "prod");
    assert_eq!(cfg.service_name, "bench-agent-7");
    assert_eq!(cfg.state_dir, dir.path());
    let bad = Env {
        otel_exporter_otlp_endpoint: Some("not a url".into()),
        ..Env::default()
    };
    let err = load_str("", &bad).unwrap_err();
    assert_eq!(err.0[0].file, "env OTEL_EXPORTER_OTLP_ENDPOINT");
}

#[test]
fn secrets_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("headers");
    std::fs::write(&file, "# token\nAuthorization: Bearer sekrit-one\n").unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("otlp-headers"), "x-key=sekrit-two\n").unwrap();
    let env = Env {
        credentials_directory: Some(creds.display().to_string()),
        state_directory: Some(dir.path().display().to_string()),
        ..Env::default()
    };
    let text = format!(
        "[otlp]\nheaders_file = \"{}\"\nheaders = {{ x-inline = \"sekrit-three\" }}\n",
        file.display()
    );
    let cfg = load_str(&text, &env).unwrap();
    assert_eq!(cfg.otlp.headers.len(), 3);
    let shown = format!("{cfg:?} {}", cfg.summary());
    assert!(!shown.contains("sekrit"), "{shown}");
    // A header file with a malformed line is an error that does not echo it.
    std::fs::write(&file, "sekrit-four-no-separator\n").unwrap();
    let err = load_str(&text, &env).unwrap_err().to_string();
    assert!(
        err.contains("otlp.headers_file") && !err.contains("sekrit"),
        "{err}"
    );
}

#[test]
fn every_bad_check_is_reported_at_the_key_inside_it() {
    let errors = load(
        Some(&fixtures("invalid").join("two_bad_checks.toml")),
        &Env::default(),
    )
    .unwrap_err();
    let keys: Vec<(&str, &str)> = errors
        .0
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("checks[0].expect_status", "\"two hundred\""),
            ("checks[2].timeout", "\"soon\""),
        ],
        "{errors}"
    );
}

#[test]
fn a_check_of_an_unknown_type_or_with_a_bad_or_missing_key_names_that_key() {
    let text = r#"
[[checks]]
name = "c"
type = "ping"

[[checks]]
name = "e"
type = "tcp"
address = "192.0.2.1:22"
interval = 5

[[checks]]
type = "tcp"
address = "192.0.2.1:22"

[[checks]]
name = "g"
type = "http"
"#;
    let errors = load_str(text, &Env::default()).unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "checks[0].type",
            "checks[1].interval",
            "checks[2].name",
            "checks[3].url"
        ],
        "{errors}"
    );
    assert_eq!(errors.0[2].value, "(missing)");
    assert_eq!(errors.0[0].value, "\"ping\"");
    assert!(errors.0[0].message.contains("unknown variant"), "{errors}");
}

#[test]
fn traces_can_be_turned_off_and_the_summary_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_with_state(dir.path());
    let on = load_str("[telemetry]\ntraces = true\n", &env).unwrap();
    assert!(on.telemetry.traces);
    assert!(!on.summary().contains("traces"), "{}", on.summary());
    let off = load_str("[telemetry]\ntraces = false\n", &env).unwrap();
    assert!(!off.telemetry.traces);
    assert!(off.summary().contains(" traces=off "), "{}", off.summary());
}
