//! The agent's configuration: `/etc/benchtel/agent.toml` (or `--config`, or
//! `$BENCHTEL_CONFIG`), the `OTEL_*` environment, and secrets from files.
//!
//! Loading collects every mistake before giving up: the file is parsed to a
//! TOML table first, each section is then deserialised on its own (so one bad
//! section does not hide the next), and semantic checks run on whatever
//! parsed. Each error names the file, the key path and the offending value.

mod env;
mod error;
pub mod probe_sets;
mod raw;
mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use env::Env;
pub use error::{ConfigError, ConfigErrors};
pub use raw::{Compression, LogFormat};
pub use secret::Secret;
use url::Url;

pub use crate::agent::checks::CheckConfig;
pub use crate::agent::sources::host_metrics::Collector;
pub use crate::outbox::Synchronous;
pub(crate) use env::{hostname, state_dir};
pub(crate) use raw::{Checker, RawLog, Section, parse_table};
pub use raw::{HeartbeatConfig, HostMetricsConfig};
pub(crate) use secret::read_header_file;
pub use secret::read_secret;

pub const DEFAULT_PATH: &str = "/etc/benchtel/agent.toml";
/// `EX_CONFIG` from sysexits.h: systemd and shell scripts know it.
pub const EX_CONFIG: i32 = 78;

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
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub export_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct SourcesConfig {
    pub heartbeat: HeartbeatConfig,
    pub host_metrics: HostMetricsConfig,
}

/// A configuration file as found: `explicit` (`--config`), else the path
/// in an environment variable, else the default path, which alone may be
/// absent (built-in defaults).
pub(crate) struct FoundFile {
    pub path: PathBuf,
    /// The path as shown in errors.
    pub label: String,
    /// `None`: absent at the default path, or unreadable (an error was
    /// recorded).
    pub text: Option<String>,
    /// False only when the default path is absent.
    pub exists: bool,
}

pub(crate) fn find_file(
    explicit: Option<&Path>,
    from_env: Option<&String>,
    default: &str,
    errors: &mut Vec<ConfigError>,
) -> FoundFile {
    let (path, required) = match (explicit, from_env) {
        (Some(p), _) => (p.to_path_buf(), true),
        (None, Some(p)) => (PathBuf::from(p), true),
        (None, None) => (PathBuf::from(default), false),
    };
    let label = path.display().to_string();
    let (text, exists) = match std::fs::read_to_string(&path) {
        Ok(text) => (Some(text), true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => (None, false),
        Err(e) => {
            errors.push(ConfigError::new(
                &label,
                "(file)",
                &label,
                format!("cannot read the configuration file: {e}"),
            ));
            (None, true)
        }
    };
    FoundFile {
        path,
        label,
        text,
        exists,
    }
}

/// Loads and validates the configuration. `explicit` is `--config`.
pub fn load(explicit: Option<&Path>, env: &Env) -> Result<AgentConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let found = find_file(
        explicit,
        env.benchtel_config.as_ref(),
        DEFAULT_PATH,
        &mut errors,
    );
    let file = found.label.clone();
    let raw = found
        .text
        .as_deref()
        .map_or_else(raw::RawConfig::default, |t| {
            raw::parse(&file, t, &mut errors)
        });
    let source = if found.exists {
        ConfigSource::File(found.path)
    } else {
        ConfigSource::Defaults
    };
    let cfg = resolve(raw, source, &file, env, &mut errors);
    match cfg {
        Some(cfg) if errors.is_empty() => Ok(cfg),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Applies defaults, environment and secrets, and checks every value.
/// `None` only when an error was recorded.
fn resolve(
    raw: raw::RawConfig,
    source: ConfigSource,
    file: &str,
    env: &Env,
    errors: &mut Vec<ConfigError>,
) -> Option<AgentConfig> {
    let endpoint = match &env.otel_exporter_otlp_endpoint {
        Some(e) => raw::Checker {
            file: "env OTEL_EXPORTER_OTLP_ENDPOINT",
            errors,
        }
        .endpoint("otlp.endpoint", e),
        None => raw::Checker { file, errors }.endpoint("otlp.endpoint", &raw.otlp.endpoint),
    };
    let headers = secret::collect_headers(&raw.otlp, env, file, errors);
    let resource_attributes = env::resource_attributes(env, errors);
    let state_dir = env::state_dir(env);
    let search = raw
        .firmware_probes
        .clone()
        .unwrap_or_else(probe_sets::default_search_path);
    let mut checks = raw.checks.clone();
    checks.extend(probe_sets::expand(&raw.probe_set, &search, file, errors));
    let mqtt = raw
        .mqtt
        .as_ref()
        .and_then(|m| crate::agent::mqtt::resolve(m, file, env, errors));
    let mut check = raw::Checker { file, errors };

    let bench = BenchConfig {
        id: raw.bench.id.clone().unwrap_or_else(env::hostname),
        site: raw.bench.site.clone(),
        labels: raw.bench.labels.clone(),
        max_concurrent_checks: check.at_least(
            "bench.max_concurrent_checks",
            raw.bench.max_concurrent_checks as u64,
            1,
        ) as usize,
    };
    check.name("bench.id", &bench.id);
    check.name("bench.site", &bench.site);
    let o = &raw.otlp;
    let otlp = OtlpConfig {
        endpoint: endpoint?,
        headers,
        timeout: check.positive("otlp.timeout", o.timeout),
        compression: o.compression,
        max_request_bytes: check.at_least("otlp.max_request_bytes", o.max_request_bytes, 1024),
        backoff_min: check.positive("otlp.backoff_min", o.backoff_min),
        backoff_max: check.positive("otlp.backoff_max", o.backoff_max),
    };
    if otlp.backoff_min > otlp.backoff_max {
        check.error(
            "otlp.backoff_min",
            &format!("\"{}\"", humantime::format_duration(otlp.backoff_min)),
            format!(
                "must not exceed otlp.backoff_max (\"{}\")",
                humantime::format_duration(otlp.backoff_max)
            ),
        );
    }
    let ob = &raw.outbox;
    let outbox = OutboxConfig {
        path: ob
            .path
            .clone()
            .unwrap_or_else(|| state_dir.join("outbox.db")),
        max_bytes: check.at_least("outbox.max_bytes", ob.max_bytes, 1 << 20),
        max_age: check.positive("outbox.max_age", ob.max_age),
        synchronous: ob.synchronous.into(),
        batch_max_records: ob.batch_max_records.max(1),
    };
    check.at_least("outbox.batch_max_records", ob.batch_max_records as u64, 1);
    let http = HttpConfig {
        enabled: raw.http.enabled,
        listen: check.socket_addr("http.listen", &raw.http.listen),
    };
    check.log_level("log.level", &raw.log.level);
    let telemetry = TelemetryConfig {
        export_interval: check.positive("telemetry.export_interval", raw.telemetry.export_interval),
    };
    check_checks(&mut check, &checks);
    crate::agent::checks::share_patterns(&mut checks);
    check.positive("sources.heartbeat.interval", raw.sources.heartbeat.interval);
    check.positive(
        "sources.host_metrics.interval",
        raw.sources.host_metrics.interval,
    );
    Some(AgentConfig {
        source,
        service_name: env
            .otel_service_name
            .clone()
            .unwrap_or_else(|| "benchtel-agent".into()),
        bench,
        resource_attributes,
        otlp,
        outbox,
        http,
        log: LogConfig {
            format: raw.log.format,
            level: raw.log.level.clone(),
        },
        telemetry,
        sources: SourcesConfig {
            heartbeat: raw.sources.heartbeat,
            host_metrics: raw.sources.host_metrics,
        },
        checks,
        control_socket: env::control_socket(env, &state_dir),
        state_dir,
        mqtt,
    })
}

/// Names unique and label-safe, timings positive, thresholds at least 1.
fn check_checks(check: &mut raw::Checker<'_>, checks: &[CheckConfig]) {
    use crate::agent::checks::Kind;
    use crate::agent::probes::serial::PortRef;
    // One owner opens each port once, so probes sharing it must agree on
    // its line settings.
    let mut bauds: BTreeMap<String, (String, u32)> = BTreeMap::new();
    for (i, c) in checks.iter().enumerate() {
        let (port, baud) = match &c.kind {
            Kind::SerialExpect(p) => (&p.port, p.baud),
            Kind::SerialWatch(w) => (&w.port, w.baud),
            _ => continue,
        };
        let PortRef::Path(path) = port else { continue };
        let path = path.display().to_string();
        match bauds.get(&path) {
            Some((other, b)) if *b != baud => check.error(
                &format!("checks[{i}].baud"),
                &baud.to_string(),
                format!("{path} is also used by check {other:?} at baud {b}; probes sharing a port must agree"),
            ),
            Some(_) => {}
            None => {
                bauds.insert(path, (c.name.clone(), baud));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in checks.iter().enumerate() {
        let key = |k: &str| format!("checks[{i}].{k}");
        check.name(&key("name"), &c.name);
        if !seen.insert(c.name.as_str()) {
            check.error(
                &key("name"),
                &format!("{:?}", c.name),
                "another check has this name",
            );
        }
        check.positive(&key("interval"), c.interval);
        check.positive(&key("timeout"), c.timeout);
        check.at_least(&key("fail_after"), u64::from(c.fail_after), 1);
        check.at_least(&key("recover_after"), u64::from(c.recover_after), 1);
    }
}

impl AgentConfig {
    /// One readable line: who the bench is, where its state is, where it
    /// sends. Secrets are counted, never shown.
    pub fn summary(&self) -> String {
        let config = match &self.source {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Defaults => format!("none at {DEFAULT_PATH}, built-in defaults"),
        };
        let metrics = if self.http.enabled {
            format!("http://{}/metrics", self.http.listen)
        } else {
            "off".into()
        };
        let mqtt = self
            .mqtt
            .as_ref()
            .map_or_else(|| "off".into(), |m| m.connection.describe());
        format!(
            "bench={} site={} state={} outbox={} otlp={} ({} headers) metrics={} mqtt={} config={}",
            self.bench.id,
            self.bench.site,
            self.state_dir.display(),
            self.outbox.path.display(),
            self.otlp.endpoint,
            self.otlp.headers.len(),
            metrics,
            mqtt,
            config
        )
    }
}

#[cfg(test)]
mod tests;
