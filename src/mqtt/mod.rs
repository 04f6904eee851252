//! MQTT broker connections, shared by the agent (which publishes) and the
//! watch (which subscribes): the `[mqtt]` connection keys, their
//! validation into the usual config errors, and the `rumqttc` options built
//! from them.
//!
//! TLS is our own `rustls` 0.23 client configuration with the `ring`
//! provider, handed to `rumqttc` whole, so certificates are verified by the
//! same rustls and webpki as the OTLP client's (see `.cargo/audit.toml` for
//! why rumqttc still links an older webpki it never calls).
//!
//! Secrets (the password, the client key) are read at start-up and never
//! shown: not in [`Connection::describe`], not in `Debug`, not in config
//! errors. `rumqttc::MqttOptions`' own `Debug` prints the password, so
//! never log the options themselves.

mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Env, Secret, read_secret};

pub const DEFAULT_PORT: u16 = 1883;
pub const DEFAULT_TLS_PORT: u16 = 8883;
/// The credential systemd's `LoadCredential=mqtt-password:…` provides.
pub const CREDENTIAL_NAME: &str = "mqtt-password";
/// The largest packet either side accepts; heartbeats are a few hundred
/// bytes, a command a few dozen.
const MAX_PACKET_BYTES: usize = 64 * 1024;

fn default_keepalive() -> Duration {
    Duration::from_secs(15)
}

/// The broker connection (`[mqtt]` in agent.toml and watch.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]` (TLS); the port defaults to 1883 or 8883.
    pub url: String,
    /// MQTT client id; the default is the program's (the agent's is `benchtel-agent-<site>-<bench>`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Keepalive: the broker gives up on a silent client after 1.5 × this and publishes its Last Will.
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive: Duration,
    /// User name for the broker's password check.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password; `$CREDENTIALS_DIRECTORY/mqtt-password` wins when it exists.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `[mqtt.tls]`: certificates for an `mqtts://` broker.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM CA certificate(s) the broker's certificate must chain to; default: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The name the broker's certificate must carry, when the URL's host is an address or an alias.
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT client id {0:?} must be 1 to 65535 bytes without leading spaces")]
    ClientId(String),
}

/// A validated broker connection: files read, TLS configured, ready to
/// build [`rumqttc::MqttOptions`] from.
#[derive(Clone)]
pub struct Connection {
    /// `scheme://host:port`, for humans.
    url: String,
    host: String,
    port: u16,
    client_id: Option<String>,
    keepalive: Duration,
    username: Option<String>,
    password: Option<Secret>,
    /// Where the password came from, for humans.
    password_source: Option<String>,
    tls: Option<tls::Tls>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl ConnectionConfig {
    /// Checks every value and reads every file, recording each mistake in
    /// `errors` under `key` (the section's path, e.g. `mqtt`). `None` only
    /// when an error was recorded.
    pub fn resolve(
        &self,
        file: &str,
        key: &str,
        env: &Env,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Connection> {
        let before = errors.len();
        let mut err = |k: &str, value: &str, message: String| {
            errors.push(ConfigError::new(
                file,
                &format!("{key}.{k}"),
                value,
                message,
            ));
        };
        let target = parse_url(&self.url).map_err(|m| err("url", &show_url(&self.url), m));
        if let Some(id) = &self.client_id
            && !client_id_ok(id)
        {
            err(
                "client_id",
                &format!("{id:?}"),
                "must be 1 to 65535 bytes without leading spaces".into(),
            );
        }
        let secs = self.keepalive.as_secs_f64();
        if !(1.0..=65535.0).contains(&secs) || self.keepalive.subsec_nanos() != 0 {
            err(
                "keepalive",
                &format!("\"{}\"", humantime::format_duration(self.keepalive)),
                "must be whole seconds from 1s to 65535s (MQTT sends it in seconds)".into(),
            );
        }
        let (password, password_source) = self.password(env, &mut err);
        if password.is_some() && self.username.is_none() {
            err(
                "password_file",
                &show_path(self.password_file.as_deref().unwrap_or(Path::new(""))),
                "a password needs a username".into(),
            );
        }
        // With a bad URL the TLS files are still checked, so every mistake
        // shows in one run.
        let tls = match (&target, &self.tls) {
            (Ok((true, _, _)), cfg) | (Err(_), cfg @ Some(_)) => {
                tls::Tls::resolve(cfg.as_ref(), &mut err)
            }
            (Ok((false, _, _)), Some(_)) => {
                err(
                    "tls",
                    "{…}",
                    "TLS settings need an mqtts:// url (this one is mqtt://)".into(),
                );
                None
            }
            _ => None,
        };
        let (secure, host, port) = target.ok()?;
        if errors.len() > before {
            return None;
        }
        Some(Connection {
            url: format!("{}://{host}:{port}", if secure { "mqtts" } else { "mqtt" }),
            host,
            port,
            client_id: self.client_id.clone(),
            keepalive: self.keepalive,
            username: self.username.clone(),
            password,
            password_source,
            tls,
        })
    }

    /// The password: `$CREDENTIALS_DIRECTORY/mqtt-password` if it exists,
    /// else `password_file`.
    fn password(
        &self,
        env: &Env,
        err: &mut impl FnMut(&str, &str, String),
    ) -> (Option<Secret>, Option<String>) {
        if let Some(dir) = &env.credentials_directory {
            let path = Path::new(dir).join(CREDENTIAL_NAME);
            if path.exists() {
                return match read_secret(&path) {
                    Ok(s) => (Some(s), Some(format!("credential {CREDENTIAL_NAME}"))),
                    Err(e) => {
                        err(
                            "password_file",
                            &show_path(&path),
                            format!("cannot read the {CREDENTIAL_NAME} credential: {e}"),
                        );
                        (None, None)
                    }
                };
            }
        }
        let Some(path) = &self.password_file else {
            return (None, None);
        };
        match read_secret(path) {
            Ok(s) => (Some(s), Some(format!("file {}", path.display()))),
            Err(e) => {
                err(
                    "password_file",
                    &show_path(path),
                    format!("cannot read the password file: {e}"),
                );
                (None, None)
            }
        }
    }
}

impl Connection {
    /// Options for one client of this broker. `client_id` is the program's
    /// default, used unless the config names one; `will` is the Last Will.
    pub fn options(
        &self,
        client_id: &str,
        will: Option<rumqttc::LastWill>,
    ) -> Result<rumqttc::MqttOptions, MqttError> {
        let id = self.client_id.as_deref().unwrap_or(client_id);
        if !client_id_ok(id) {
            return Err(MqttError::ClientId(id.to_string()));
        }
        let mut o = rumqttc::MqttOptions::new(id, &self.host, self.port);
        // Checked in resolve: whole seconds in 1..=65535, which rumqttc
        // requires (it asserts).
        o.set_keep_alive(self.keepalive)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some(user) = &self.username {
            let password = self.password.as_ref().map_or("", Secret::expose);
            o.set_credentials(user, password);
        }
        if let Some(tls) = &self.tls {
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.config.clone()),
            ));
        }
        if let Some(will) = will {
            o.set_last_will(will);
        }
        Ok(o)
    }

    /// The client id the config names, if any.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    pub fn keepalive(&self) -> Duration {
        self.keepalive
    }

    /// One line for start-up logs: where, how, as whom; never a secret.
    pub fn describe(&self) -> String {
        let mut out = format!("{} keepalive={}s", self.url, self.keepalive.as_secs());
        if let Some(id) = &self.client_id {
            out.push_str(&format!(" client_id={id}"));
        }
        if let Some(tls) = &self.tls {
            out.push_str(&format!(" tls=({})", tls.describe));
        }
        match (&self.username, &self.password_source) {
            (Some(u), Some(from)) => out.push_str(&format!(" user={u} password from {from}")),
            (Some(u), None) => out.push_str(&format!(" user={u} (no password)")),
            _ => {}
        }
        out
    }
}

/// `(tls, host, port)` of an `mqtt://` or `mqtts://` URL.
fn parse_url(text: &str) -> Result<(bool, String, u16), String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    let secure = match url.scheme() {
        "mqtt" => false,
        "mqtts" => true,
        other => {
            return Err(format!("scheme {other:?} is not mqtt:// or mqtts:// (TLS)"));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL: use username and password_file".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err("must be only scheme://host[:port], without a path or query".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(_)) => {
            return Err("IPv6 address literals are not supported; use a host name".into());
        }
        _ => return Err("has no host".into()),
    };
    let port = url.port().unwrap_or(if secure {
        DEFAULT_TLS_PORT
    } else {
        DEFAULT_PORT
    });
    if port == 0 {
        return Err("port 0 is not a broker port".into());
    }
    Ok((secure, host, port))
}

/// A URL as it may be shown in an error: any password in it replaced.
fn show_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            format!("{:?}", u.as_str())
        }
        Ok(_) => format!("{text:?}"),
        // Unparseable: it may still hold `user:password@`; show nothing
        // after a '@'.
        Err(_) => match text.rsplit_once('@') {
            Some((_, host)) => format!("\"<redacted>@{host}\""),
            None => format!("{text:?}"),
        },
    }
}

fn show_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// MQTT 3.1.1 allows up to 65535 bytes; rumqttc refuses leading spaces.
fn client_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 65535 && !id.starts_with(' ')
}

#[cfg(test)]
mod tests;
