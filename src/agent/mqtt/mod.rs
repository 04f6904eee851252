//! Live liveness over MQTT: the agent publishes every heartbeat and a
//! retained status to a broker, so `benchtel-watch` hears a bench at once
//! and not behind the outbox's backlog.
//!
//! - Connect with a Last Will: retained `offline`/`connection_lost` on
//!   `benchtel/<site>/<bench>/status`, which the broker publishes if the
//!   connection dies. After every (re)connect: retained `online`.
//! - Each heartbeat goes to `…/heartbeat` (QoS 1, not retained) while
//!   connected. While disconnected, or when the client's small queue is
//!   full, beats are skipped and counted: the outbox keeps their history,
//!   and memory stays bounded however long the broker is away.
//! - With `publish_probes`, check verdicts go to `…/probe/<name>`
//!   (retained) when they change, and again after each reconnect.
//! - Commands on `…/cmd` are applied as the local control socket applies
//!   them. The broker's ACL is their only authentication.
//! - A clean stop publishes retained `offline`/`shutdown`, waits for its
//!   PUBACK, then disconnects, so the broker discards the will: a planned
//!   stop is not an outage.
//!
//! The `[mqtt]` section holds the shared broker keys
//! ([`crate::mqtt::ConnectionConfig`]) and the agent's own ([`Options`]).

mod session;

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::agent::readiness::{Input, Verdict};
use crate::agent::sources::heartbeat::Beat;
use crate::config::{ConfigError, Env, Section};
use crate::mqtt::{Connection, ConnectionConfig};

/// The agent's own keys in `[mqtt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Publish each check's verdict, retained, to `…/probe/<name>` when it changes.
    pub publish_probes: bool,
    /// First delay before reconnecting; it doubles (with jitter) up to `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest delay between reconnect attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            publish_probes: false,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
        }
    }
}

/// The keys of [`Options`], split from the connection keys before each
/// part is parsed with `deny_unknown_fields`.
const OWN_KEYS: [&str; 3] = ["publish_probes", "reconnect_min", "reconnect_max"];

/// `[mqtt]` as written.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    /// `None` when the connection keys did not parse (the error is recorded).
    pub connection: Option<ConnectionConfig>,
    pub options: Options,
}

/// `[mqtt]` resolved: MQTT is on.
#[derive(Debug, Clone)]
pub struct Config {
    pub connection: Connection,
    pub options: Options,
}

/// Parses `[mqtt]`: the agent's keys and the connection's, each strictly.
pub(crate) fn parse_section(s: &mut Section<'_>) -> RawConfig {
    let mut raw = RawConfig::default();
    let Some(table) = s.value.as_table() else {
        s.parse_into(&mut raw.connection);
        return raw;
    };
    let (own, rest): (toml::Table, toml::Table) = table
        .clone()
        .into_iter()
        .partition(|(k, _)| OWN_KEYS.contains(&k.as_str()));
    let own = toml::Value::Table(own);
    let rest = toml::Value::Table(rest);
    Section {
        file: s.file,
        name: s.name,
        value: &own,
        errors: &mut *s.errors,
    }
    .parse_into(&mut raw.options);
    let mut connection = None;
    Section {
        file: s.file,
        name: s.name,
        value: &rest,
        errors: &mut *s.errors,
    }
    .parse_into(&mut connection);
    raw.connection = connection;
    raw
}

/// Checks `[mqtt]`; `None` when absent or when an error was recorded.
pub(crate) fn resolve(
    raw: &RawConfig,
    file: &str,
    env: &Env,
    errors: &mut Vec<ConfigError>,
) -> Option<Config> {
    let connection = raw.connection.as_ref()?.resolve(file, "mqtt", env, errors);
    let o = &raw.options;
    let mut check = crate::config::Checker { file, errors };
    check.positive("mqtt.reconnect_min", o.reconnect_min);
    check.positive("mqtt.reconnect_max", o.reconnect_max);
    if o.reconnect_min > o.reconnect_max {
        check.error(
            "mqtt.reconnect_min",
            &format!("\"{}\"", humantime::format_duration(o.reconnect_min)),
            format!(
                "must not exceed mqtt.reconnect_max (\"{}\")",
                humantime::format_duration(o.reconnect_max)
            ),
        );
    }
    Some(Config {
        connection: connection?,
        options: o.clone(),
    })
}

/// Who is publishing: the topic levels and what goes into every payload.
#[derive(Debug, Clone)]
pub struct Identity {
    pub bench: String,
    pub site: String,
    /// The heartbeat interval, sent as `interval_s` on every beat.
    pub interval: Duration,
    pub run_id: String,
}

impl Identity {
    /// The client id unless `[mqtt] client_id` names one.
    pub fn default_client_id(&self) -> String {
        format!("benchtel-agent-{}-{}", self.site, self.bench)
    }
}

/// What the publisher is connected to inside the agent.
pub struct Links {
    /// The latest heartbeat; a beat replaced before it was read counts as
    /// skipped.
    pub beats: watch::Receiver<Option<Beat>>,
    /// Check verdict changes (only read with `publish_probes`).
    pub verdicts: mpsc::Receiver<Verdict>,
    /// Maintenance on/off, as the control socket sends it.
    /// Commands (maintenance, DUT resets) to the bench's state machine.
    pub readiness: mpsc::Sender<Input>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error(transparent)]
    Options(#[from] crate::mqtt::MqttError),
    #[error("cannot encode the Last Will: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Runs the publisher until `stop` fires, then says `offline`/`shutdown`
/// and disconnects within [`session::SHUTDOWN_DEADLINE`].
pub async fn run(
    cfg: Config,
    identity: Identity,
    links: Links,
    meter: opentelemetry::metrics::Meter,
    stop: CancellationToken,
) -> Result<(), PublisherError> {
    session::run(cfg, identity, links, &meter, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (RawConfig, Vec<ConfigError>) {
        let table: toml::Table = text.parse().unwrap();
        let mut errors = Vec::new();
        let mut s = Section {
            file: "agent.toml",
            name: "mqtt",
            value: &table["mqtt"],
            errors: &mut errors,
        };
        let raw = parse_section(&mut s);
        (raw, errors)
    }

    #[test]
    fn agent_keys_and_connection_keys_are_each_checked() {
        let (raw, errors) = parse(
            "[mqtt]\nurl = \"mqtt://b:1\"\npublish_probes = true\nreconnect_min = \"2s\"\n[mqtt.tls]\nserver_name = \"x\"\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(raw.options.publish_probes);
        assert_eq!(raw.options.reconnect_min, Duration::from_secs(2));
        let c = raw.connection.unwrap();
        assert_eq!(c.url, "mqtt://b:1");
        assert_eq!(c.tls.unwrap().server_name.as_deref(), Some("x"));

        let (_, errors) = parse("[mqtt]\nurl = \"mqtt://b\"\nurll = 1\npublish_probes = \"yes\"\n");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{shown:?}");
        assert!(shown.iter().any(|e| e.contains("mqtt.urll")), "{shown:?}");
        assert!(
            shown
                .iter()
                .any(|e| e.contains("mqtt.publish_probes = \"yes\"")),
            "{shown:?}"
        );
        let (_, errors) = parse("[mqtt]\n[mqtt.tls]\nca_file = 3\n");
        assert!(
            errors[0].to_string().contains("mqtt.tls.ca_file"),
            "{errors:?}"
        );
    }

    #[test]
    fn reconnect_bounds_are_checked() {
        let (raw, errors) =
            parse("[mqtt]\nurl = \"mqtt://b\"\nreconnect_min = \"1m\"\nreconnect_max = \"1s\"\n");
        assert!(errors.is_empty());
        let mut errors = Vec::new();
        assert!(resolve(&raw, "agent.toml", &Env::default(), &mut errors).is_some());
        assert_eq!(errors[0].key, "mqtt.reconnect_min", "{errors:?}");
    }
}
