//! `benchtel-watch`'s configuration: `/etc/benchtel/watch.toml` (or
//! `--config`, or `$BENCHTEL_WATCH_CONFIG`). Loaded like the agent's, by the
//! toolkit in [`crate::config`]: every mistake collected, each naming the
//! file, the key path and the value, and exit code 78.
//!
//! - this file: the resolved [`WatchConfig`] and [`load`];
//! - `raw`: the file's shape, one serde struct per section;
//! - `resolve`: defaults applied, secrets read, values checked, one
//!   function per section; `alerts`: the `[alerts]` section.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use url::Url;

use crate::config::{ConfigErrors, Env, LogConfig, Secret};

mod alerts;
mod raw;
mod resolve;

pub const DEFAULT_PATH: &str = "/etc/benchtel/watch.toml";

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub source: Option<PathBuf>,
    /// `[mqtt]`: the broker to hear benches through; `None`: OTLP only.
    pub mqtt: Option<crate::mqtt::Connection>,
    /// This replica's name (`watch` label of its own alerts); default: the
    /// hostname.
    pub replica: String,
    pub http: HttpConfig,
    pub otlp: OtlpIngest,
    pub registry_path: PathBuf,
    pub benches: BenchPolicy,
    pub liveness: Thresholds,
    pub overrides: Vec<Override>,
    pub ingest: IngestHealth,
    pub storm: Storm,
    pub alerts: Alerts,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Requests bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// A gzip body that inflates past this is refused with 413.
    pub max_decompressed_bytes: usize,
    /// Bearer token for `POST /api/v1/benches/{id}/maintenance`.
    pub admin_token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct OtlpIngest {
    pub enabled: bool,
    /// Bearer tokens, each allowed to speak for one site (or `*`).
    pub tokens: Vec<SiteToken>,
}

#[derive(Debug, Clone)]
pub struct SiteToken {
    pub site: String,
    pub token: Secret,
}

/// What to do with heartbeats from benches the watch has not seen before.
#[derive(Debug, Clone)]
pub struct BenchPolicy {
    /// Most benches the registry holds; beyond it new benches are refused
    /// and counted, so label cardinality cannot explode.
    pub max: usize,
    /// New bench ids must match this.
    pub allow: Option<Regex>,
}

/// Thresholds of the liveness model, per bench.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// `late` after this long without a heartbeat; `None`: three of the
    /// bench's own heartbeat intervals.
    pub late_after: Option<Duration>,
    /// `offline` after this long without a heartbeat (the grace period).
    pub offline_after: Duration,
    /// After a Last Will, `offline` once this passes with no heartbeat.
    pub will_debounce: Duration,
    /// A cleanly stopped bench alerts only if it stays down this long.
    pub stop_window: Duration,
    /// An offline alert resolves only after the bench stayed online this
    /// long (flapping hysteresis).
    pub resolve_after: Duration,
}

/// Thresholds for one site, or one bench of a site.
#[derive(Debug, Clone)]
pub struct Override {
    pub site: String,
    pub bench: Option<String>,
    pub liveness: Thresholds,
}

#[derive(Debug, Clone)]
pub struct IngestHealth {
    /// With no heartbeat from anyone for this long, the watch assumes it
    /// went deaf, not that the fleet died. `None`: the shortest heartbeat
    /// interval of the known benches.
    pub silence: Option<Duration>,
    /// The silence rule applies only with at least this many benches
    /// expected to send: one silent bench is just one dead bench.
    pub min_benches: usize,
    /// MQTT topic levels of the sites this replica hears (`+`: all).
    pub sites: Vec<String>,
    /// How often the watch pings itself through the broker.
    pub ping_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Storm {
    /// Share of a site's benches that, going offline within `window`, make
    /// one `BenchSiteOffline` instead of a page per bench.
    pub share: f64,
    pub window: Duration,
    /// Sites smaller than this never storm.
    pub min_benches: usize,
}

#[derive(Debug, Clone)]
pub struct Alerts {
    pub alertmanagers: Vec<Url>,
    pub webhooks: Vec<Webhook>,
    pub resend_interval: Duration,
    /// An alert waits this long after its condition starts before it is
    /// sent: a site that goes down together is seen as one outage, and a
    /// blip of the watch's own ingest is not a page.
    pub hold: Duration,
    /// Resolved alerts are re-sent this long (Prometheus: 15 min).
    pub resolved_resend: Duration,
    /// `generatorURL` of the alerts: where a human sees the bench list.
    pub external_url: Url,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: Url,
    pub headers: Vec<(String, Secret)>,
}

/// Loads and validates. `explicit` is `--config`.
pub fn load(explicit: Option<&Path>, env: &Env) -> Result<WatchConfig, ConfigErrors> {
    crate::config::load(
        explicit,
        env.benchtel_watch_config.as_ref(),
        DEFAULT_PATH,
        |raw: raw::Raw, found, errors| {
            let source = found.exists.then(|| found.path.clone());
            Some(resolve::resolve(raw, source, &found.label, env, errors))
        },
    )
}

impl WatchConfig {
    /// The thresholds that apply to one bench: its own override, else its
    /// site's, else the defaults.
    pub fn liveness_for(&self, site: &str, bench: &str) -> Thresholds {
        let bench_rule = self
            .overrides
            .iter()
            .find(|o| o.site == site && o.bench.as_deref() == Some(bench));
        let site_rule = || {
            self.overrides
                .iter()
                .find(|o| o.site == site && o.bench.is_none())
        };
        bench_rule
            .or_else(site_rule)
            .map_or(self.liveness, |o| o.liveness)
    }

    /// One readable line for the start-up log.
    pub fn summary(&self) -> String {
        let config = match &self.source {
            Some(p) => p.display().to_string(),
            None => format!("none at {DEFAULT_PATH}, built-in defaults"),
        };
        format!(
            "replica={} listen=http://{} mqtt={} registry={} alertmanagers={} webhooks={} otlp={} config={}",
            self.replica,
            self.http.listen,
            self.mqtt
                .as_ref()
                .map_or_else(|| "off".into(), |m| m.describe()),
            self.registry_path.display(),
            self.alerts.alertmanagers.len(),
            self.alerts.webhooks.len(),
            if self.otlp.enabled {
                format!("on ({} tokens)", self.otlp.tokens.len())
            } else {
                "off".into()
            },
            config
        )
    }
}

#[cfg(test)]
mod tests;
