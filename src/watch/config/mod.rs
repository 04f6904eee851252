//! `benchtel-watch`'s configuration: `/etc/benchtel/watch.toml` (or
//! `--config`, or `$BENCHTEL_WATCH_CONFIG`). Loaded like the agent's: every
//! mistake collected, each naming the file, the key path and the value, and
//! exit code 78.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use url::Url;

use crate::config::{
    Checker, ConfigError, ConfigErrors, Env, Secret, Section, find_file, parse_table,
};

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
    pub log: crate::config::LogConfig,
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

// ---- the file's shape ----

#[derive(Debug, Clone, Default)]
struct Raw {
    watch: RawWatch,
    mqtt: Option<crate::mqtt::ConnectionConfig>,
    http: RawHttp,
    otlp: RawOtlp,
    registry: RawRegistry,
    benches: RawBenches,
    liveness: RawLiveness,
    ingest: RawIngest,
    storm: RawStorm,
    alerts: RawAlerts,
    log: crate::config::RawLog,
}

/// `[watch]`: this replica.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWatch {
    /// Name of this replica; default: the hostname.
    replica: Option<String>,
}

/// `[http]`: `/metrics`, the bench API and the OTLP receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    /// Address to listen on.
    listen: String,
    /// Largest request body accepted (bytes, as sent).
    max_body_bytes: usize,
    /// Largest request body after gzip decompression.
    max_decompressed_bytes: usize,
    /// File holding the bearer token for `POST /api/v1/benches/{id}/maintenance`;
    /// without it that endpoint answers only to loopback clients.
    admin_token_file: Option<PathBuf>,
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
struct RawOtlp {
    /// Accept OTLP at all.
    enabled: bool,
    /// `[[otlp.tokens]]`: bearer tokens; with none, OTLP is unauthenticated.
    tokens: Vec<RawToken>,
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
struct RawToken {
    /// The site this token may speak for; `*` for every site.
    site: String,
    /// File holding the token.
    token_file: PathBuf,
}

/// `[registry]`: the persisted bench registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRegistry {
    /// SQLite file; default `<state dir>/watch.db`.
    path: Option<PathBuf>,
}

/// `[benches]`: admission of unknown benches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBenches {
    /// Most benches known at once.
    max: usize,
    /// Regex a new bench id must match (anchored by you).
    allow: Option<String>,
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
struct RawLiveness {
    /// Late after this silence; default 3 × the bench's heartbeat interval.
    #[serde(with = "humantime_serde")]
    late_after: Option<Duration>,
    /// Offline after this silence (the grace period).
    #[serde(with = "humantime_serde")]
    offline_after: Duration,
    /// Offline this long after a Last Will unless a heartbeat arrives.
    #[serde(with = "humantime_serde")]
    will_debounce: Duration,
    /// A clean stop pages only after this long.
    #[serde(with = "humantime_serde")]
    stop_window: Duration,
    /// Online this long before an offline alert resolves.
    #[serde(with = "humantime_serde")]
    resolve_after: Duration,
    /// `[[liveness.override]]`: other thresholds for a site or a bench.
    #[serde(rename = "override")]
    overrides: Vec<RawOverride>,
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
struct RawOverride {
    /// The site this applies to.
    site: String,
    /// One bench of that site; absent: the whole site.
    bench: Option<String>,
    #[serde(default, with = "humantime_serde")]
    late_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    offline_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    will_debounce: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    stop_window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    resolve_after: Option<Duration>,
}

/// `[ingest]`: when the watch considers itself deaf.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIngest {
    /// Silence from every bench this long means the watch went deaf;
    /// default: the shortest heartbeat interval of the known benches.
    #[serde(with = "humantime_serde")]
    silence: Option<Duration>,
    /// The silence rule needs at least this many benches expected to send.
    min_benches: usize,
    /// Sites heard over MQTT (`+`: all); partitions the fleet between
    /// replicas.
    sites: Vec<String>,
    /// How often the watch pings itself through the broker; three missed
    /// pings make it deaf.
    #[serde(with = "humantime_serde")]
    ping_interval: Duration,
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
struct RawStorm {
    /// Share of a site's benches (0–1) going offline within `window`.
    share: f64,
    /// The window.
    #[serde(with = "humantime_serde")]
    window: Duration,
    /// Smallest site that can storm.
    min_benches: usize,
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
struct RawAlerts {
    /// Alertmanager base URLs; each gets every alert (replicas do not share).
    alertmanagers: Vec<String>,
    /// `[[alerts.webhook]]`: JSON webhooks.
    webhook: Vec<RawWebhook>,
    /// Firing alerts are re-sent this often.
    #[serde(with = "humantime_serde")]
    resend_interval: Duration,
    /// Alerts wait this long after their condition starts (site outages
    /// are seen as one; blips of the watch's own ingest are not pages).
    #[serde(with = "humantime_serde")]
    hold: Duration,
    /// Resolutions are re-sent for this long.
    #[serde(with = "humantime_serde")]
    resolved_resend: Duration,
    /// Base URL of this watch as people reach it (alerts link to it).
    external_url: String,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    timeout: Duration,
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
struct RawWebhook {
    /// Where to POST.
    url: String,
    /// File of `Name: value` header lines (e.g. Authorization).
    headers_file: Option<PathBuf>,
}

/// Loads and validates. `explicit` is `--config`.
pub fn load(explicit: Option<&Path>, env: &Env) -> Result<WatchConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let found = find_file(
        explicit,
        env.benchtel_watch_config.as_ref(),
        DEFAULT_PATH,
        &mut errors,
    );
    let file = found.label.clone();
    let raw = found
        .text
        .as_deref()
        .map_or_else(Raw::default, |t| parse(&file, t, &mut errors));
    let source = found.exists.then_some(found.path);
    let cfg = resolve(raw, source, &file, env, &mut errors);
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn parse(file: &str, text: &str, errors: &mut Vec<ConfigError>) -> Raw {
    let mut raw = Raw::default();
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
            "watch" => s.parse_into(&mut raw.watch),
            "mqtt" => s.parse_into(&mut raw.mqtt),
            "http" => s.parse_into(&mut raw.http),
            "otlp" => s.parse_into(&mut raw.otlp),
            "registry" => s.parse_into(&mut raw.registry),
            "benches" => s.parse_into(&mut raw.benches),
            "liveness" => s.parse_into(&mut raw.liveness),
            "ingest" => s.parse_into(&mut raw.ingest),
            "storm" => s.parse_into(&mut raw.storm),
            "alerts" => s.parse_into(&mut raw.alerts),
            "log" => s.parse_into(&mut raw.log),
            _ => s.unknown(
                "watch, http, otlp, registry, benches, liveness, ingest, storm, alerts, log",
            ),
        }
    }
    raw
}

fn resolve(
    raw: Raw,
    source: Option<PathBuf>,
    file: &str,
    env: &Env,
    errors: &mut Vec<ConfigError>,
) -> WatchConfig {
    let state_dir = crate::config::state_dir(env);
    let mut check = Checker { file, errors };
    let http = HttpConfig {
        listen: check.socket_addr("http.listen", &raw.http.listen),
        max_body_bytes: check.at_least("http.max_body_bytes", raw.http.max_body_bytes as u64, 1024)
            as usize,
        max_decompressed_bytes: check.at_least(
            "http.max_decompressed_bytes",
            raw.http.max_decompressed_bytes as u64,
            raw.http.max_body_bytes as u64,
        ) as usize,
        admin_token: raw
            .http
            .admin_token_file
            .as_deref()
            .and_then(|p| secret_file(&mut check, "http.admin_token_file", p)),
    };
    let tokens = raw
        .otlp
        .tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            if t.site != "*" {
                check.name(&format!("otlp.tokens[{i}].site"), &t.site);
            }
            let token = secret_file(
                &mut check,
                &format!("otlp.tokens[{i}].token_file"),
                &t.token_file,
            )?;
            Some(SiteToken {
                site: t.site.clone(),
                token,
            })
        })
        .collect();
    let allow = raw
        .benches
        .allow
        .as_deref()
        .and_then(|a| match Regex::new(a) {
            Ok(r) => Some(r),
            Err(e) => {
                check.error(
                    "benches.allow",
                    &format!("{a:?}"),
                    format!("not a regex: {e}"),
                );
                None
            }
        });
    let benches = BenchPolicy {
        max: check.at_least("benches.max", raw.benches.max as u64, 1) as usize,
        allow,
    };
    let base = liveness(&mut check, "liveness", &raw.liveness);
    let overrides = raw
        .liveness
        .overrides
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let key = format!("liveness.override[{i}]");
            check.name(&format!("{key}.site"), &o.site);
            if let Some(b) = &o.bench {
                check.name(&format!("{key}.bench"), b);
            }
            let merged = RawLiveness {
                late_after: o.late_after.or(raw.liveness.late_after),
                offline_after: o.offline_after.unwrap_or(base.offline_after),
                will_debounce: o.will_debounce.unwrap_or(base.will_debounce),
                stop_window: o.stop_window.unwrap_or(base.stop_window),
                resolve_after: o.resolve_after.unwrap_or(base.resolve_after),
                overrides: Vec::new(),
            };
            Override {
                site: o.site.clone(),
                bench: o.bench.clone(),
                liveness: liveness(&mut check, &key, &merged),
            }
        })
        .collect();
    let s = &raw.storm;
    if !(s.share > 0.0 && s.share <= 1.0) {
        check.error("storm.share", &s.share.to_string(), "must be in (0, 1]");
    }
    let storm = Storm {
        share: s.share,
        window: check.positive("storm.window", s.window),
        min_benches: check.at_least("storm.min_benches", s.min_benches as u64, 2) as usize,
    };
    for (i, site) in raw.ingest.sites.iter().enumerate() {
        if site != "+" {
            check.name(&format!("ingest.sites[{i}]"), site);
        }
    }
    if raw.ingest.sites.is_empty() {
        check.error(
            "ingest.sites",
            "[]",
            "name at least one site, or \"+\" for all",
        );
    }
    let ingest = IngestHealth {
        silence: raw
            .ingest
            .silence
            .map(|d| check.positive("ingest.silence", d)),
        min_benches: raw.ingest.min_benches,
        sites: raw.ingest.sites.clone(),
        ping_interval: check.positive("ingest.ping_interval", raw.ingest.ping_interval),
    };
    let alerts = alerts(&mut check, &raw.alerts, &http);
    let replica = raw
        .watch
        .replica
        .clone()
        .unwrap_or_else(crate::config::hostname);
    check.name("watch.replica", &replica);
    check.log_level("log.level", &raw.log.level);
    let mqtt = raw
        .mqtt
        .as_ref()
        .and_then(|m| m.resolve(file, "mqtt", env, check.errors));
    WatchConfig {
        source,
        mqtt,
        replica,
        http,
        otlp: OtlpIngest {
            enabled: raw.otlp.enabled,
            tokens,
        },
        registry_path: raw
            .registry
            .path
            .clone()
            .unwrap_or_else(|| state_dir.join("watch.db")),
        benches,
        liveness: base,
        overrides,
        ingest,
        storm,
        alerts,
        log: crate::config::LogConfig {
            format: raw.log.format,
            level: raw.log.level.clone(),
        },
    }
}

fn liveness(check: &mut Checker<'_>, key: &str, raw: &RawLiveness) -> Thresholds {
    let l = Thresholds {
        late_after: raw
            .late_after
            .map(|d| check.positive(&format!("{key}.late_after"), d)),
        offline_after: check.positive(&format!("{key}.offline_after"), raw.offline_after),
        will_debounce: raw.will_debounce,
        stop_window: raw.stop_window,
        resolve_after: raw.resolve_after,
    };
    if let Some(late) = l.late_after
        && late > l.offline_after
    {
        check.error(
            &format!("{key}.late_after"),
            &format!("\"{}\"", humantime::format_duration(late)),
            format!(
                "must not exceed offline_after (\"{}\")",
                humantime::format_duration(l.offline_after)
            ),
        );
    }
    l
}

fn alerts(check: &mut Checker<'_>, raw: &RawAlerts, http: &HttpConfig) -> Alerts {
    let alertmanagers = raw
        .alertmanagers
        .iter()
        .enumerate()
        .filter_map(|(i, u)| check.endpoint(&format!("alerts.alertmanagers[{i}]"), u))
        .collect();
    let webhooks = raw
        .webhook
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let url = check.endpoint(&format!("alerts.webhook[{i}].url"), &w.url)?;
            let headers = match &w.headers_file {
                None => Vec::new(),
                Some(p) => match crate::config::read_header_file(p) {
                    Ok(pairs) => pairs
                        .into_iter()
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), Secret::new(v.trim())))
                        .collect(),
                    Err(e) => {
                        check.error(
                            &format!("alerts.webhook[{i}].headers_file"),
                            &format!("{:?}", p.display().to_string()),
                            format!("cannot read the headers file: {e}"),
                        );
                        Vec::new()
                    }
                },
            };
            Some(Webhook { url, headers })
        })
        .collect();
    let external = if raw.external_url.is_empty() {
        format!("http://{}/", http.listen)
    } else {
        raw.external_url.clone()
    };
    let external_url = check
        .endpoint("alerts.external_url", &external)
        .unwrap_or_else(|| Url::parse("http://localhost/").expect("a fixed valid URL"));
    Alerts {
        alertmanagers,
        webhooks,
        resend_interval: check.positive("alerts.resend_interval", raw.resend_interval),
        hold: raw.hold,
        resolved_resend: raw.resolved_resend,
        external_url,
        timeout: check.positive("alerts.timeout", raw.timeout),
    }
}

fn secret_file(check: &mut Checker<'_>, key: &str, path: &Path) -> Option<Secret> {
    match crate::config::read_secret(path) {
        Ok(s) => Some(s),
        Err(e) => {
            check.error(
                key,
                &format!("{:?}", path.display().to_string()),
                format!("cannot read the secret file: {e}"),
            );
            None
        }
    }
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
