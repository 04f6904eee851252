//! `agent.toml` as written: one serde struct per section
//! (`deny_unknown_fields`, a default for every key), each parsed on its own
//! by the toolkit's loader.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::agent::checks::CheckConfig;
use crate::agent::sources::{heartbeat, host_metrics};
use crate::config::{LogConfig, RawFile, Section};
pub use heartbeat::Config as HeartbeatConfig;
pub use host_metrics::Config as HostMetricsConfig;

#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub bench: RawBench,
    pub otlp: RawOtlp,
    pub outbox: RawOutbox,
    pub http: RawHttp,
    pub log: LogConfig,
    pub telemetry: RawTelemetry,
    pub sources: RawSources,
    /// `[[checks]]`; `None` for an entry that did not parse (its error is
    /// recorded), so the others keep their index in error messages.
    pub checks: Vec<Option<CheckConfig>>,
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
    /// A reset of the device under test that is not followed by every
    /// readiness check passing within this long is a failure
    /// (`reset_not_ready`).
    #[serde(with = "humantime_serde")]
    pub dut_ready_within: std::time::Duration,
}

impl Default for RawBench {
    fn default() -> Self {
        RawBench {
            id: None,
            site: "default".into(),
            labels: BTreeMap::new(),
            max_concurrent_checks: 8,
            dut_ready_within: crate::agent::readiness::RESET_LIMIT,
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
    /// While the disk takes no writes, at most this many bytes of new
    /// telemetry wait in memory for the collector; the oldest go first,
    /// counted as `disk_full`.
    pub live_max_bytes: u64,
}

impl Default for RawOutbox {
    fn default() -> Self {
        RawOutbox {
            path: None,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(7 * 86_400),
            synchronous: RawSynchronous::Full,
            batch_max_records: 64,
            live_max_bytes: crate::outbox::live::DEFAULT_MAX_BYTES,
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

/// `[telemetry]`: the OpenTelemetry SDK.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// How often metrics are collected and committed to the outbox.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
    /// Spans (check and probe runs, boots) on or off; off, a bench sends
    /// only metrics and logs, and log lines carry no trace ids.
    pub traces: bool,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        RawTelemetry {
            export_interval: Duration::from_secs(10),
            traces: true,
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

impl RawFile for RawConfig {
    const SECTIONS: &'static str = "bench, otlp, outbox, http, log, telemetry, sources, checks, probe_set, firmware_probes, mqtt";

    fn section(&mut self, s: &mut Section<'_>) -> bool {
        match s.name {
            "bench" => s.parse_into(&mut self.bench),
            "otlp" => s.parse_into(&mut self.otlp),
            "outbox" => s.parse_into(&mut self.outbox),
            "http" => s.parse_into(&mut self.http),
            "log" => s.parse_into(&mut self.log),
            "telemetry" => s.parse_into(&mut self.telemetry),
            "sources" => s.parse_into(&mut self.sources),
            "checks" => self.checks = super::checks::parse(s),
            "probe_set" => s.parse_into(&mut self.probe_set),
            "firmware_probes" => s.parse_into(&mut self.firmware_probes),
            "mqtt" => self.mqtt = Some(crate::agent::mqtt::parse_section(s)),
            _ => return false,
        }
        true
    }
}
