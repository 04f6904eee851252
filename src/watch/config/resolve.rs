//! From the file as written to [`WatchConfig`]: defaults applied, secrets
//! read, every value checked; one function per section.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::raw::{Raw, RawBenches, RawHttp, RawIngest, RawLiveness, RawStorm, RawToken};
use super::{
    BenchPolicy, HttpConfig, IngestHealth, OtlpIngest, Override, SiteToken, Storm, Thresholds,
    WatchConfig, alerts,
};
use crate::config::{Checker, ConfigError, Env, Secret, hostname, state_dir};

pub(super) fn resolve(
    raw: Raw,
    source: Option<PathBuf>,
    file: &str,
    env: &Env,
    errors: &mut Vec<ConfigError>,
) -> WatchConfig {
    let state_dir = state_dir(env);
    let mut check = Checker { file, errors };
    let http = http(&mut check, &raw.http);
    let tokens = tokens(&mut check, &raw.otlp.tokens);
    let benches = benches(&mut check, &raw.benches);
    let base = liveness(&mut check, "liveness", &raw.liveness);
    let overrides = overrides(&mut check, &raw.liveness, &base);
    let storm = storm(&mut check, &raw.storm);
    let ingest = ingest(&mut check, &raw.ingest);
    let alerts = alerts::resolve(&mut check, &raw.alerts, &http);
    let replica = raw.watch.replica.clone().unwrap_or_else(hostname);
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
        log: raw.log,
    }
}

/// `[http]`: the decompressed limit is at least the body limit.
fn http(check: &mut Checker<'_>, raw: &RawHttp) -> HttpConfig {
    HttpConfig {
        listen: check.socket_addr("http.listen", &raw.listen),
        max_body_bytes: check.at_least("http.max_body_bytes", raw.max_body_bytes as u64, 1024)
            as usize,
        max_decompressed_bytes: check.at_least(
            "http.max_decompressed_bytes",
            raw.max_decompressed_bytes as u64,
            raw.max_body_bytes as u64,
        ) as usize,
        admin_token: raw
            .admin_token_file
            .as_deref()
            .and_then(|p| secret_file(check, "http.admin_token_file", p)),
    }
}

/// `[[otlp.tokens]]`: each read from its file.
fn tokens(check: &mut Checker<'_>, raw: &[RawToken]) -> Vec<SiteToken> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, t)| {
            if t.site != "*" {
                check.name(&format!("otlp.tokens[{i}].site"), &t.site);
            }
            let token = secret_file(
                check,
                &format!("otlp.tokens[{i}].token_file"),
                &t.token_file,
            )?;
            Some(SiteToken {
                site: t.site.clone(),
                token,
            })
        })
        .collect()
}

/// `[benches]`: admission of new benches.
fn benches(check: &mut Checker<'_>, raw: &RawBenches) -> BenchPolicy {
    let allow = raw.allow.as_deref().and_then(|a| match Regex::new(a) {
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
    BenchPolicy {
        max: check.at_least("benches.max", raw.max as u64, 1) as usize,
        allow,
    }
}

/// `[liveness]` or one override of it (`key`), merged.
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

/// `[[liveness.override]]`: each inherits what it does not set from
/// `[liveness]` (`base`, as resolved).
fn overrides(check: &mut Checker<'_>, raw: &RawLiveness, base: &Thresholds) -> Vec<Override> {
    raw.overrides
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let key = format!("liveness.override[{i}]");
            check.name(&format!("{key}.site"), &o.site);
            if let Some(b) = &o.bench {
                check.name(&format!("{key}.bench"), b);
            }
            let merged = RawLiveness {
                late_after: o.late_after.or(raw.late_after),
                offline_after: o.offline_after.unwrap_or(base.offline_after),
                will_debounce: o.will_debounce.unwrap_or(base.will_debounce),
                stop_window: o.stop_window.unwrap_or(base.stop_window),
                resolve_after: o.resolve_after.unwrap_or(base.resolve_after),
                overrides: Vec::new(),
            };
            Override {
                site: o.site.clone(),
                bench: o.bench.clone(),
                liveness: liveness(check, &key, &merged),
            }
        })
        .collect()
}

/// `[storm]`: the share is a fraction of a site.
fn storm(check: &mut Checker<'_>, s: &RawStorm) -> Storm {
    if !(s.share > 0.0 && s.share <= 1.0) {
        check.error("storm.share", &s.share.to_string(), "must be in (0, 1]");
    }
    Storm {
        share: s.share,
        window: check.positive("storm.window", s.window),
        min_benches: check.at_least("storm.min_benches", s.min_benches as u64, 2) as usize,
    }
}

/// `[ingest]`: sites are topic levels, or `+` for all.
fn ingest(check: &mut Checker<'_>, raw: &RawIngest) -> IngestHealth {
    for (i, site) in raw.sites.iter().enumerate() {
        if site != "+" {
            check.name(&format!("ingest.sites[{i}]"), site);
        }
    }
    if raw.sites.is_empty() {
        check.error(
            "ingest.sites",
            "[]",
            "name at least one site, or \"+\" for all",
        );
    }
    IngestHealth {
        silence: raw.silence.map(|d| check.positive("ingest.silence", d)),
        min_benches: raw.min_benches,
        sites: raw.sites.clone(),
        ping_interval: check.positive("ingest.ping_interval", raw.ping_interval),
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
