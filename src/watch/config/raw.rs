//! `watch.toml` as written: one serde struct per section
//! (`deny_unknown_fields`, a default for every key), each parsed on its own
//! by the toolkit's loader.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{LogConfig, RawFile, Section};

#[derive(Debug, Clone, Default)]
pub(super) struct Raw {
    pub(super) watch: RawWatch,
    pub(super) mqtt: Option<crate::mqtt::ConnectionConfig>,
    pub(super) http: RawHttp,
    pub(super) otlp: RawOtlp,
    pub(super) registry: RawRegistry,
    pub(super) benches: RawBenches,
    pub(super) liveness: RawLiveness,
    pub(super) ingest: RawIngest,
    pub(super) storm: RawStorm,
    pub(super) alerts: RawAlerts,
    pub(super) log: LogConfig,
}

/// `[watch]`: this replica.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWatch {
    /// Name of this replica; default: the hostname.
    pub(super) replica: Option<String>,
}

/// `[http]`: `/metrics`, the bench API and the OTLP receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHttp {
    /// Address to listen on.
    pub(super) listen: String,
    /// Largest request body accepted (bytes, as sent).
    pub(super) max_body_bytes: usize,
    /// Largest request body after gzip decompression.
    pub(super) max_decompressed_bytes: usize,
    /// File holding the bearer token for `POST /api/v1/benches/{id}/maintenance`;
    /// without it that endpoint answers only to loopback clients.
    pub(super) admin_token_file: Option<PathBuf>,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: "127.0.0.1:9465".into(),
            max_body_bytes: 4 << 20,
            max_decompressed_bytes: 16 << 20,
            admin_token_file: None,
        }
    }
}

/// `[otlp]`: heartbeats over OTLP/HTTP (`POST /v1/metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOtlp {
    /// Accept OTLP at all.
    pub(super) enabled: bool,
    /// `[[otlp.tokens]]`: bearer tokens; with none, OTLP is unauthenticated.
    pub(super) tokens: Vec<RawToken>,
}

impl Default for RawOtlp {
    fn default() -> Self {
        RawOtlp {
            enabled: true,
            tokens: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    /// The site this token may speak for; `*` for every site.
    pub(super) site: String,
    /// File holding the token.
    pub(super) token_file: PathBuf,
}

/// `[registry]`: the persisted bench registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRegistry {
    /// SQLite file; default `<state dir>/watch.db`.
    pub(super) path: Option<PathBuf>,
}

/// `[benches]`: admission of unknown benches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBenches {
    /// Most benches known at once.
    pub(super) max: usize,
    /// Regex a new bench id must match (anchored by you).
    pub(super) allow: Option<String>,
}

impl Default for RawBenches {
    fn default() -> Self {
        RawBenches {
            max: 200_000,
            allow: None,
        }
    }
}

/// `[liveness]`, also the shape of each `[[liveness.override]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLiveness {
    /// Late after this silence; default 3 × the bench's heartbeat interval.
    #[serde(with = "humantime_serde")]
    pub(super) late_after: Option<Duration>,
    /// Offline after this silence (the grace period).
    #[serde(with = "humantime_serde")]
    pub(super) offline_after: Duration,
    /// Offline this long after a Last Will unless a heartbeat arrives.
    #[serde(with = "humantime_serde")]
    pub(super) will_debounce: Duration,
    /// A clean stop pages only after this long.
    #[serde(with = "humantime_serde")]
    pub(super) stop_window: Duration,
    /// Online this long before an offline alert resolves.
    #[serde(with = "humantime_serde")]
    pub(super) resolve_after: Duration,
    /// `[[liveness.override]]`: other thresholds for a site or a bench.
    #[serde(rename = "override")]
    pub(super) overrides: Vec<RawOverride>,
}

impl Default for RawLiveness {
    fn default() -> Self {
        RawLiveness {
            late_after: None,
            offline_after: Duration::from_secs(60),
            will_debounce: Duration::from_secs(5),
            stop_window: Duration::from_secs(600),
            resolve_after: Duration::from_secs(60),
            overrides: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverride {
    /// The site this applies to.
    pub(super) site: String,
    /// One bench of that site; absent: the whole site.
    pub(super) bench: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub(super) late_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) offline_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) will_debounce: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) stop_window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) resolve_after: Option<Duration>,
}

/// `[ingest]`: when the watch considers itself deaf.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIngest {
    /// Silence from every bench this long means the watch went deaf, with
    /// OTLP-only ingest (with MQTT, the watch's ping proves its path and
    /// silence is the benches' own); default: twice the shortest heartbeat
    /// interval of the benches expected to send.
    #[serde(with = "humantime_serde")]
    pub(super) silence: Option<Duration>,
    /// The silence rule needs at least this many benches expected to send.
    pub(super) min_benches: usize,
    /// Sites heard over MQTT (`+`: all); partitions the fleet between
    /// replicas.
    pub(super) sites: Vec<String>,
    /// How often the watch pings itself through the broker; three missed
    /// pings make it deaf.
    #[serde(with = "humantime_serde")]
    pub(super) ping_interval: Duration,
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            silence: None,
            min_benches: 2,
            sites: vec!["+".into()],
            ping_interval: Duration::from_secs(5),
        }
    }
}

/// `[storm]`: site-wide outages as one alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorm {
    /// Share of a site's benches (0–1) going offline within `window`.
    pub(super) share: f64,
    /// The window.
    #[serde(with = "humantime_serde")]
    pub(super) window: Duration,
    /// Smallest site that can storm.
    pub(super) min_benches: usize,
}

impl Default for RawStorm {
    fn default() -> Self {
        RawStorm {
            share: 0.5,
            window: Duration::from_secs(120),
            min_benches: 4,
        }
    }
}

/// `[alerts]`: where alerts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAlerts {
    /// Alertmanager base URLs; each gets every alert (replicas do not share).
    pub(super) alertmanagers: Vec<String>,
    /// `[[alerts.webhook]]`: JSON webhooks.
    pub(super) webhook: Vec<RawWebhook>,
    /// Firing alerts are re-sent this often.
    #[serde(with = "humantime_serde")]
    pub(super) resend_interval: Duration,
    /// Alerts wait this long after their condition starts (site outages
    /// are seen as one; blips of the watch's own ingest are not pages).
    #[serde(with = "humantime_serde")]
    pub(super) hold: Duration,
    /// Resolutions are re-sent for this long.
    #[serde(with = "humantime_serde")]
    pub(super) resolved_resend: Duration,
    /// Base URL of this watch as people reach it (alerts link to it).
    pub(super) external_url: String,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub(super) timeout: Duration,
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            alertmanagers: Vec::new(),
            webhook: Vec::new(),
            resend_interval: Duration::from_secs(60),
            hold: Duration::from_secs(10),
            resolved_resend: Duration::from_secs(15 * 60),
            external_url: String::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    /// Where to POST.
    pub(super) url: String,
    /// File of `Name: value` header lines (e.g. Authorization).
    pub(super) headers_file: Option<PathBuf>,
}

impl RawFile for Raw {
    const SECTIONS: &'static str =
        "watch, mqtt, http, otlp, registry, benches, liveness, ingest, storm, alerts, log";

    fn section(&mut self, s: &mut Section<'_>) -> bool {
        match s.name {
            "watch" => s.parse_into(&mut self.watch),
            "mqtt" => s.parse_into(&mut self.mqtt),
            "http" => s.parse_into(&mut self.http),
            "otlp" => s.parse_into(&mut self.otlp),
            "registry" => s.parse_into(&mut self.registry),
            "benches" => s.parse_into(&mut self.benches),
            "liveness" => s.parse_into(&mut self.liveness),
            "ingest" => s.parse_into(&mut self.ingest),
            "storm" => s.parse_into(&mut self.storm),
            "alerts" => s.parse_into(&mut self.alerts),
            "log" => s.parse_into(&mut self.log),
            _ => return false,
        }
        true
    }
}
