use std::path::{Path, PathBuf};

use super::*;

fn config(url: &str) -> ConnectionConfig {
    ConnectionConfig {
        url: url.into(),
        client_id: None,
        keepalive: default_keepalive(),
        username: None,
        password_file: None,
        tls: None,
    }
}

fn resolve(cfg: &ConnectionConfig, env: &Env) -> Result<Connection, Vec<ConfigError>> {
    let mut errors = Vec::new();
    match cfg.resolve("agent.toml", "mqtt", env, &mut errors) {
        Some(c) if errors.is_empty() => Ok(c),
        other => {
            assert!(
                other.is_none(),
                "an error was recorded but a connection returned"
            );
            assert!(!errors.is_empty(), "None without an error");
            Err(errors)
        }
    }
}

fn errors(cfg: &ConnectionConfig) -> String {
    resolve(cfg, &Env::default())
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A self-signed certificate and its key, as PEM files in `dir`.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec![format!("{name}.test")]).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[test]
fn urls_give_host_port_and_tls() {
    for (url, want, port) in [
        ("mqtt://broker.lab", "mqtt://broker.lab:1883", 1883),
        ("mqtt://broker.lab:1884/", "mqtt://broker.lab:1884", 1884),
        ("mqtts://10.0.0.5", "mqtts://10.0.0.5:8883", 8883),
    ] {
        let c = resolve(&config(url), &Env::default()).unwrap();
        assert!(c.describe().starts_with(want), "{}", c.describe());
        let o = c.options("id", None).unwrap();
        assert_eq!(o.broker_address().1, port);
        assert_eq!(
            matches!(o.transport(), rumqttc::Transport::Tls(_)),
            url.starts_with("mqtts")
        );
    }
}

#[test]
fn bad_urls_are_config_errors_naming_the_key() {
    for (url, why) in [
        ("broker.lab", "not a URL"),
        ("broker.lab:1883", "scheme \"broker.lab\" is not mqtt://"),
        ("http://broker.lab", "is not mqtt:// or mqtts://"),
        ("mqtt://", "has no host"),
        ("mqtt://broker.lab/topic", "without a path"),
        ("mqtt://broker.lab?x=1", "without a path or query"),
        ("mqtt://[::1]:1883", "IPv6"),
        ("mqtt://broker.lab:0", "port 0"),
    ] {
        let shown = errors(&config(url));
        assert!(
            shown.contains(&format!("agent.toml: mqtt.url = {url:?}")) && shown.contains(why),
            "{url}: {shown}"
        );
    }
}

#[test]
fn a_password_in_the_url_is_refused_and_not_shown() {
    let shown = errors(&config("mqtt://bench:sekrit@broker.lab"));
    assert!(
        shown.contains("credentials do not belong in the URL"),
        "{shown}"
    );
    assert!(!shown.contains("sekrit"), "{shown}");
    let shown = errors(&config("mqtt://bench:sekrit@[broken"));
    assert!(!shown.contains("sekrit"), "{shown}");
}

#[test]
fn keepalive_and_client_id_are_checked() {
    let mut c = config("mqtt://b");
    c.keepalive = Duration::from_millis(1500);
    c.client_id = Some(" lead".into());
    let shown = errors(&c);
    assert!(shown.contains("mqtt.keepalive = \"1s 500ms\""), "{shown}");
    assert!(shown.contains("mqtt.client_id = \" lead\""), "{shown}");
    let mut c = config("mqtt://b");
    c.keepalive = Duration::ZERO;
    assert!(errors(&c).contains("mqtt.keepalive"));
    let mut c = config("mqtt://b");
    c.keepalive = Duration::from_secs(7);
    let conn = resolve(&c, &Env::default()).unwrap();
    let o = conn.options("benchtel-agent-lab-b1", None).unwrap();
    assert_eq!(o.keep_alive(), Duration::from_secs(7));
    assert_eq!(
        o.client_id(),
        "benchtel-agent-lab-b1",
        "the caller's default"
    );
    assert!(conn.options("", None).is_err());
    c.client_id = Some("configured".into());
    let o = resolve(&c, &Env::default())
        .unwrap()
        .options("default", None)
        .unwrap();
    assert_eq!(o.client_id(), "configured", "the config wins");
}

#[test]
fn the_last_will_is_passed_through() {
    let will = rumqttc::LastWill::new(
        "t/status",
        b"offline".to_vec(),
        rumqttc::QoS::AtLeastOnce,
        true,
    );
    let o = resolve(&config("mqtt://b"), &Env::default())
        .unwrap()
        .options("id", Some(will.clone()))
        .unwrap();
    assert_eq!(o.last_will(), Some(will));
}

#[test]
fn passwords_come_from_the_credential_or_the_file_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "sekrit-file\n").unwrap();
    let mut c = config("mqtt://b");
    c.username = Some("bench07".into());
    c.password_file = Some(file.clone());
    let conn = resolve(&c, &Env::default()).unwrap();
    let o = conn.options("id", None).unwrap();
    let login = o.credentials().unwrap();
    assert_eq!(
        (login.username.as_str(), login.password.as_str()),
        ("bench07", "sekrit-file")
    );
    let shown = format!("{conn:?} {}", conn.describe());
    assert!(!shown.contains("sekrit"), "{shown}");
    assert!(shown.contains("user=bench07 password from file"), "{shown}");

    // systemd's credential wins over the file.
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join(CREDENTIAL_NAME), "sekrit-cred").unwrap();
    let env = Env {
        credentials_directory: Some(creds.display().to_string()),
        ..Env::default()
    };
    let conn = resolve(&c, &env).unwrap();
    assert_eq!(
        conn.options("id", None)
            .unwrap()
            .credentials()
            .unwrap()
            .password,
        "sekrit-cred"
    );
    assert!(
        conn.describe()
            .contains("password from credential mqtt-password")
    );

    // A password without a user cannot be sent.
    c.username = None;
    assert!(errors(&c).contains("a password needs a username"));
}

#[test]
fn missing_empty_or_unreadable_password_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config("mqtt://b");
    c.username = Some("u".into());
    c.password_file = Some(dir.path().join("absent"));
    let shown = errors(&c);
    assert!(
        shown.contains("mqtt.password_file") && shown.contains("cannot read the password file"),
        "{shown}"
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    c.password_file = Some(empty);
    assert!(errors(&c).contains("the file is empty"));
    // A directory cannot be read as a file, whoever runs the test.
    c.password_file = Some(dir.path().to_path_buf());
    assert!(errors(&c).contains("cannot read the password file"));
}

#[test]
fn tls_files_are_read_and_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = self_signed(dir.path(), "ca");
    let (cert, key) = self_signed(dir.path(), "client");
    let (_, other_key) = self_signed(dir.path(), "other");
    let mut c = config("mqtts://broker.lab");
    c.tls = Some(TlsConfig {
        ca_file: Some(ca.clone()),
        cert_file: Some(cert.clone()),
        key_file: Some(key.clone()),
        server_name: Some("broker.internal".into()),
    });
    let conn = resolve(&c, &Env::default()).unwrap();
    let d = conn.describe();
    assert!(
        d.contains(&format!("ca={}", ca.display()))
            && d.contains("verify as broker.internal")
            && d.contains("client cert="),
        "{d}"
    );

    let with = |tls: TlsConfig| {
        let mut c = config("mqtts://broker.lab");
        c.tls = Some(tls);
        errors(&c)
    };
    let shown = with(TlsConfig {
        ca_file: Some(dir.path().join("nope.pem")),
        ..TlsConfig::default()
    });
    assert!(
        shown.contains("mqtt.tls.ca_file") && shown.contains("cannot read"),
        "{shown}"
    );
    let shown = with(TlsConfig {
        ca_file: Some(key.clone()),
        ..TlsConfig::default()
    });
    assert!(shown.contains("holds no PEM certificate"), "{shown}");
    let shown = with(TlsConfig {
        cert_file: Some(cert.clone()),
        ..TlsConfig::default()
    });
    assert!(shown.contains("mqtt.tls.key_file = (missing)"), "{shown}");
    let shown = with(TlsConfig {
        cert_file: Some(cert.clone()),
        key_file: Some(other_key),
        ..TlsConfig::default()
    });
    assert!(
        shown.contains("mqtt.tls.key_file") && shown.contains("cannot be used with tls.cert_file"),
        "{shown}"
    );
    let shown = with(TlsConfig {
        cert_file: Some(cert.clone()),
        key_file: Some(cert.clone()),
        ..TlsConfig::default()
    });
    assert!(shown.contains("holds no PEM private key"), "{shown}");
    assert!(!shown.contains("BEGIN"), "{shown}");
    let shown = with(TlsConfig {
        server_name: Some("not a name!".into()),
        ..TlsConfig::default()
    });
    assert!(
        shown.contains("mqtt.tls.server_name = \"not a name!\""),
        "{shown}"
    );

    let mut plain = config("mqtt://broker.lab");
    plain.tls = Some(TlsConfig::default());
    assert!(errors(&plain).contains("TLS settings need an mqtts:// url"));
}

#[test]
fn every_mistake_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = ConnectionConfig {
        url: "ftp://x".into(),
        client_id: Some(String::new()),
        keepalive: Duration::ZERO,
        username: Some("u".into()),
        password_file: Some(dir.path().join("absent")),
        tls: Some(TlsConfig {
            ca_file: Some(dir.path().join("absent.pem")),
            ..TlsConfig::default()
        }),
    };
    let errs = resolve(&c, &Env::default()).unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    for k in [
        "mqtt.url",
        "mqtt.client_id",
        "mqtt.keepalive",
        "mqtt.password_file",
        "mqtt.tls.ca_file",
    ] {
        assert!(keys.contains(&k), "{k} not in {keys:?}");
    }
}
