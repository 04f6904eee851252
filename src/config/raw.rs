//! The file's shape (serde, `deny_unknown_fields`) and the checks that turn
//! parse failures and bad values into [`ConfigError`]s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::error::ConfigError;
use crate::agent::checks::CheckConfig;
use crate::agent::sources::{heartbeat, host_metrics};
pub use heartbeat::Config as HeartbeatConfig;
pub use host_metrics::Config as HostMetricsConfig;

#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub bench: RawBench,
    pub otlp: RawOtlp,
    pub outbox: RawOutbox,
    pub http: RawHttp,
    pub log: RawLog,
    pub telemetry: RawTelemetry,
    pub sources: RawSources,
    pub checks: Vec<CheckConfig>,
    /// `[[probe_set]]` entries, expanded into checks.
    pub probe_set: Vec<toml::Table>,
    /// Where probe sets are looked up.
    pub firmware_probes: Option<Vec<PathBuf>>,
    /// `[mqtt]`; absent: MQTT off.
    pub mqtt: Option<crate::agent::mqtt::RawConfig>,
}

/// `[bench]`: who this bench is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBench {
    /// Bench id; default: the hostname. Becomes `bench.id` / `bench_id`.
    pub id: Option<String>,
    /// Site (lab) the bench belongs to; `bench.site` / `bench_site`.
    pub site: String,
    /// Extra resource attributes for every signal.
    pub labels: BTreeMap<String, String>,
    /// Most health checks running at the same moment.
    pub max_concurrent_checks: usize,
}

impl Default for RawBench {
    fn default() -> Self {
        RawBench {
            id: None,
            site: "default".into(),
            labels: BTreeMap::new(),
            max_concurrent_checks: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// `[otlp]`: where and how to send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOtlp {
    /// Collector base URL; `/v1/metrics` etc. are appended.
    pub endpoint: String,
    /// Request headers (prefer `headers_file` for secrets).
    pub headers: BTreeMap<String, String>,
    /// File of `name: value` lines, e.g. an Authorization header.
    pub headers_file: Option<PathBuf>,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `gzip` or `none`.
    pub compression: Compression,
    /// Merged requests stop growing past this many bytes (before gzip).
    pub max_request_bytes: u64,
    /// First retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest retry delay (jitter on top).
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RawOtlp {
    fn default() -> Self {
        RawOtlp {
            endpoint: "http://localhost:4318".into(),
            headers: BTreeMap::new(),
            headers_file: None,
            timeout: Duration::from_secs(10),
            compression: Compression::Gzip,
            max_request_bytes: 4 << 20,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RawSynchronous {
    #[default]
    Full,
    Normal,
}

impl From<RawSynchronous> for crate::outbox::Synchronous {
    fn from(s: RawSynchronous) -> Self {
        match s {
            RawSynchronous::Full => crate::outbox::Synchronous::Full,
            RawSynchronous::Normal => crate::outbox::Synchronous::Normal,
        }
    }
}

/// `[outbox]`: the durable queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutbox {
    /// Database file; default `<state dir>/outbox.db`.
    pub path: Option<PathBuf>,
    /// Byte bound; the oldest records are dropped (and counted) past it.
    pub max_bytes: u64,
    /// Age bound; older records are dropped (and counted).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// `full` (survives power loss) or `normal` (survives a crash).
    pub synchronous: RawSynchronous,
    /// Most records merged into one request while draining a backlog.
    pub batch_max_records: usize,
}

impl Default for RawOutbox {
    fn default() -> Self {
        RawOutbox {
            path: None,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(7 * 86_400),
            synchronous: RawSynchronous::Full,
            batch_max_records: 64,
        }
    }
}

/// `[http]`: the local `/metrics` and `/healthz` endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// Serve `/metrics` and `/healthz`.
    pub enabled: bool,
    /// Address to listen on.
    pub listen: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// ADR-010 JSON lines.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// `[log]`: stdout logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `json` or `text`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,benchtel::outbox=debug`.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// `[telemetry]`: the OpenTelemetry SDK.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// How often metrics are collected and committed to the outbox.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        RawTelemetry {
            export_interval: Duration::from_secs(10),
        }
    }
}

/// `[sources.*]`: each source's own configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSources {
    /// `[sources.heartbeat]`
    pub heartbeat: HeartbeatConfig,
    /// `[sources.host_metrics]`
    pub host_metrics: HostMetricsConfig,
}

/// Parses `text`, one section at a time so every section's errors show.
pub fn parse(file: &str, text: &str, errors: &mut Vec<ConfigError>) -> RawConfig {
    let mut raw = RawConfig::default();
    let Some(table) = parse_table(file, text, errors) else {
        return raw;
    };
    for (name, value) in &table {
        let mut s = Section {
            file,
            name,
            value,
            errors: &mut *errors,
        };
        match name.as_str() {
            "bench" => s.parse_into(&mut raw.bench),
            "otlp" => s.parse_into(&mut raw.otlp),
            "outbox" => s.parse_into(&mut raw.outbox),
            "http" => s.parse_into(&mut raw.http),
            "log" => s.parse_into(&mut raw.log),
            "telemetry" => s.parse_into(&mut raw.telemetry),
            "sources" => s.parse_into(&mut raw.sources),
            "checks" => s.parse_into(&mut raw.checks),
            "probe_set" => s.parse_into(&mut raw.probe_set),
            "firmware_probes" => s.parse_into(&mut raw.firmware_probes),
            "mqtt" => raw.mqtt = Some(crate::agent::mqtt::parse_section(&mut s)),
            _ => s.unknown("bench, otlp, outbox, http, log, telemetry, sources, checks, probe_set, firmware_probes, mqtt"),
        }
    }
    raw
}

/// The file as a TOML table; a syntax error is recorded with its line.
pub(crate) fn parse_table(
    file: &str,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<toml::Table> {
    match text.parse() {
        Ok(t) => Some(t),
        Err(e) => {
            let (key, value) = syntax_location(text, &e);
            errors.push(ConfigError::new(
                file,
                &key,
                &value,
                e.message().to_string(),
            ));
            None
        }
    }
}

/// One top-level section of a file, deserialised on its own so that its
/// errors do not hide the next section's.
pub(crate) struct Section<'a> {
    pub file: &'a str,
    pub name: &'a str,
    pub value: &'a toml::Value,
    pub errors: &'a mut Vec<ConfigError>,
}

impl Section<'_> {
    pub fn parse_into<T: DeserializeOwned>(&mut self, slot: &mut T) {
        match serde_path_to_error::deserialize::<_, T>(self.value.clone()) {
            Ok(v) => *slot = v,
            Err(e) => {
                let inner = e.path().to_string();
                let key = if inner == "." || inner.is_empty() {
                    self.name.to_string()
                } else if inner.starts_with('[') {
                    format!("{}{inner}", self.name)
                } else {
                    format!("{}.{inner}", self.name)
                };
                let value = lookup(self.value, &inner).map_or_else(|| "(missing)".into(), show);
                self.errors.push(ConfigError::new(
                    self.file,
                    &key,
                    &value,
                    e.into_inner().message().to_string(),
                ));
            }
        }
    }

    /// Records this section as unknown; `expected` lists the known ones.
    pub fn unknown(&mut self, expected: &str) {
        self.errors.push(ConfigError::new(
            self.file,
            self.name,
            &show(self.value),
            format!("unknown key; expected one of {expected}"),
        ));
    }
}

fn lookup<'v>(value: &'v toml::Value, path: &str) -> Option<&'v toml::Value> {
    path.replace('[', ".[")
        .split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect::<Vec<_>>()
        .iter()
        .try_fold(value, |v, part| match v {
            toml::Value::Table(t) => t.get(part.as_str()),
            toml::Value::Array(a) => part
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i)),
            _ => None,
        })
}

/// A value as written; a table inline and one level deep, so an error in
/// an array entry (e.g. one `[[checks]]`) still shows the offending part.
fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(t) => {
            let items: Vec<String> = t
                .iter()
                .map(|(k, v)| match v {
                    toml::Value::Table(_) => format!("{k} = {{…}}"),
                    other => format!("{k} = {other}"),
                })
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// The key and text of the line a syntax error points at.
fn syntax_location(text: &str, e: &toml::de::Error) -> (String, String) {
    let Some(span) = e.span() else {
        return ("(syntax)".into(), String::new());
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    (format!("(syntax, line {line_no})"), line.to_string())
}

/// Semantic checks; each records an error and returns a usable fallback.
pub struct Checker<'a> {
    pub file: &'a str,
    pub errors: &'a mut Vec<ConfigError>,
}

impl Checker<'_> {
    pub fn error(&mut self, key: &str, value: &str, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(self.file, key, value, message));
    }

    pub fn positive(&mut self, key: &str, d: Duration) -> Duration {
        if d.is_zero() {
            self.error(key, "\"0s\"", "must be greater than zero");
            return Duration::from_secs(1);
        }
        d
    }

    pub fn at_least(&mut self, key: &str, v: u64, min: u64) -> u64 {
        if v < min {
            self.error(key, &v.to_string(), format!("must be at least {min}"));
            return min;
        }
        v
    }

    /// Ids become MQTT topic levels and Prometheus label values.
    pub fn name(&mut self, key: &str, v: &str) {
        let ok = !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            self.error(
                key,
                &format!("{v:?}"),
                "must be non-empty and use only letters, digits, '.', '_' and '-'",
            );
        }
    }

    pub fn endpoint(&mut self, key: &str, v: &str) -> Option<Url> {
        match Url::parse(v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                self.error(
                    key,
                    &format!("{v:?}"),
                    "must be an http:// or https:// URL with a host",
                );
                None
            }
            Err(e) => {
                self.error(key, &format!("{v:?}"), format!("not a URL: {e}"));
                None
            }
        }
    }

    pub fn socket_addr(&mut self, key: &str, v: &str) -> SocketAddr {
        v.parse().unwrap_or_else(|e| {
            self.error(key, &format!("{v:?}"), format!("not an address:port: {e}"));
            SocketAddr::from(([127, 0, 0, 1], 9464))
        })
    }

    pub fn log_level(&mut self, key: &str, v: &str) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(v) {
            self.error(key, &format!("{v:?}"), format!("not a log filter: {e}"));
        }
    }
}
