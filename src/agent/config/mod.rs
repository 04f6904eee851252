//! The agent's configuration: `/etc/benchtel/agent.toml` (or `--config`, or
//! `$BENCHTEL_CONFIG`), the `OTEL_*` environment, and secrets from files.
//! Plain data: building runtime objects from it (clients, compiled
//! patterns, instruments) is the job of [`crate::agent::run`].
//!
//! - this file: the resolved [`AgentConfig`] and [`load`];
//! - `raw`: the file's shape, one serde struct per section;
//! - `checks`: `[[checks]]`, each entry parsed on its own so every bad check
//!   is reported with its full key path, and their semantic checks;
//! - `resolve`: defaults, environment and secrets applied, values checked,
//!   one function per section;
//! - `otel_env`: the `OTEL_*` variables (headers, resource attributes) and
//!   the control-socket path;
//! - [`probe_sets`]: `[[probe_set]]` entries expanded into checks;
//! - `locate`: only the outbox path and the control socket ([`locate`]),
//!   for the commands beside the running agent, which a mistake elsewhere
//!   in the file must not stop.
//!
//! Finding, reading and parsing the file, and the error type, come from the
//! toolkit in [`crate::config`].

mod checks;
mod locate;
mod otel_env;
pub mod probe_sets;
mod raw;
mod resolve;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::agent::checks::CheckConfig;
use crate::config::{ConfigErrors, Env, LogConfig, Secret};
use crate::outbox::Synchronous;
pub use locate::{Locations, locate};
pub use raw::{Compression, HeartbeatConfig, HostMetricsConfig};

pub const DEFAULT_PATH: &str = "/etc/benchtel/agent.toml";

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// No file at the default path: built-in defaults.
    Defaults,
}

/// The resolved configuration: defaults filled in, environment applied,
/// secrets read, everything validated.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub source: ConfigSource,
    pub service_name: String,
    pub bench: BenchConfig,
    /// From `OTEL_RESOURCE_ATTRIBUTES`; the bench identity wins on a clash.
    pub resource_attributes: BTreeMap<String, String>,
    pub otlp: OtlpConfig,
    pub outbox: OutboxConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub sources: SourcesConfig,
    /// `[[checks]]`: health checks.
    pub checks: Vec<CheckConfig>,
    pub state_dir: PathBuf,
    /// The local control socket (`benchtel-agent context …`).
    pub control_socket: PathBuf,
    /// `[mqtt]`: live heartbeats and status over MQTT; `None`: off.
    pub mqtt: Option<crate::agent::mqtt::Config>,
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub id: String,
    pub site: String,
    pub labels: BTreeMap<String, String>,
    pub max_concurrent_checks: usize,
    pub dut_ready_within: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct OtlpConfig {
    pub endpoint: Url,
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    pub compression: Compression,
    pub max_request_bytes: u64,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub synchronous: Synchronous,
    pub batch_max_records: usize,
    /// Bound of live mode's in-memory queue (full disk).
    pub live_max_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub export_interval: Duration,
    /// `[telemetry] traces`: spans on (the default) or off.
    pub traces: bool,
}

#[derive(Debug, Clone)]
pub struct SourcesConfig {
    pub heartbeat: HeartbeatConfig,
    pub host_metrics: HostMetricsConfig,
}

/// Loads and validates the configuration. `explicit` is `--config`.
pub fn load(explicit: Option<&Path>, env: &Env) -> Result<AgentConfig, ConfigErrors> {
    crate::config::load(
        explicit,
        env.benchtel_config.as_ref(),
        DEFAULT_PATH,
        |raw: raw::RawConfig, found, errors| {
            let source = if found.exists {
                ConfigSource::File(found.path.clone())
            } else {
                ConfigSource::Defaults
            };
            resolve::resolve(raw, source, &found.label, env, errors)
        },
    )
}

impl ConfigSource {
    /// The file's path, or that there is none.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Defaults => format!("none at {DEFAULT_PATH}, built-in defaults"),
        }
    }
}

impl AgentConfig {
    /// One readable line: who the bench is, where its state is, where it
    /// sends. Secrets are counted, never shown.
    pub fn summary(&self) -> String {
        let config = self.source.describe();
        let metrics = if self.http.enabled {
            format!("http://{}/metrics", self.http.listen)
        } else {
            "off".into()
        };
        let mqtt = self
            .mqtt
            .as_ref()
            .map_or_else(|| "off".into(), |m| m.connection.describe());
        // Said only when off: a bench that sends no spans should say why.
        let traces = if self.telemetry.traces {
            ""
        } else {
            " traces=off"
        };
        format!(
            "bench={} site={} state={} outbox={} otlp={} ({} headers) metrics={} mqtt={}{} config={}",
            self.bench.id,
            self.bench.site,
            self.state_dir.display(),
            self.outbox.path.display(),
            self.otlp.endpoint,
            self.otlp.headers.len(),
            metrics,
            mqtt,
            traces,
            config
        )
    }
}

#[cfg(test)]
mod tests;
