//! From the file as written to [`AgentConfig`]: defaults, environment and
//! secrets applied, every value checked; one function per section.

use std::path::Path;

use url::Url;

use super::raw::{RawBench, RawConfig, RawOtlp, RawOutbox};
use super::{
    AgentConfig, BenchConfig, ConfigSource, HttpConfig, OtlpConfig, OutboxConfig, SourcesConfig,
    TelemetryConfig, checks, otel_env,
};
use crate::config::{Checker, ConfigError, Env, Secret, hostname, state_dir};

/// Applies defaults, environment and secrets, and checks every value.
/// `None` only when an error was recorded.
pub(super) fn resolve(
    raw: RawConfig,
    source: ConfigSource,
    file: &str,
    env: &Env,
    errors: &mut Vec<ConfigError>,
) -> Option<AgentConfig> {
    let endpoint = endpoint(&raw.otlp, file, env, errors);
    let headers = otel_env::collect_headers(&raw.otlp, env, file, errors);
    let resource_attributes = otel_env::resource_attributes(env, errors);
    let state_dir = state_dir(env);
    let checks = checks::expand(&raw, file, errors);
    let mqtt = raw
        .mqtt
        .as_ref()
        .and_then(|m| crate::agent::mqtt::resolve(m, file, env, errors));
    let mut check = Checker { file, errors };
    let bench = bench(&mut check, &raw.bench);
    let otlp = otlp(&mut check, &raw.otlp, endpoint, headers);
    let outbox = outbox(&mut check, &raw.outbox, &state_dir);
    let http = HttpConfig {
        enabled: raw.http.enabled,
        listen: check.socket_addr("http.listen", &raw.http.listen),
    };
    check.log_level("log.level", &raw.log.level);
    let telemetry = TelemetryConfig {
        export_interval: check.positive("telemetry.export_interval", raw.telemetry.export_interval),
        traces: raw.telemetry.traces,
    };
    checks::check_all(&mut check, &checks);
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
        otlp: otlp?,
        outbox,
        http,
        log: raw.log,
        telemetry,
        sources: SourcesConfig {
            heartbeat: raw.sources.heartbeat,
            host_metrics: raw.sources.host_metrics,
        },
        checks: checks.into_iter().map(|(_, c)| c).collect(),
        control_socket: otel_env::control_socket(env, &state_dir),
        state_dir,
        mqtt,
    })
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT` wins over `otlp.endpoint`.
fn endpoint(raw: &RawOtlp, file: &str, env: &Env, errors: &mut Vec<ConfigError>) -> Option<Url> {
    match &env.otel_exporter_otlp_endpoint {
        Some(e) => Checker {
            file: "env OTEL_EXPORTER_OTLP_ENDPOINT",
            errors,
        }
        .endpoint("otlp.endpoint", e),
        None => Checker { file, errors }.endpoint("otlp.endpoint", &raw.endpoint),
    }
}

/// `[bench]`: the id defaults to the hostname.
fn bench(check: &mut Checker<'_>, raw: &RawBench) -> BenchConfig {
    let bench = BenchConfig {
        id: raw.id.clone().unwrap_or_else(hostname),
        site: raw.site.clone(),
        labels: raw.labels.clone(),
        max_concurrent_checks: check.at_least(
            "bench.max_concurrent_checks",
            raw.max_concurrent_checks as u64,
            1,
        ) as usize,
        dut_ready_within: check.positive("bench.dut_ready_within", raw.dut_ready_within),
    };
    check.name("bench.id", &bench.id);
    check.name("bench.site", &bench.site);
    bench
}

/// `[otlp]`; `None` without a usable endpoint (its error is recorded).
fn otlp(
    check: &mut Checker<'_>,
    o: &RawOtlp,
    endpoint: Option<Url>,
    headers: Vec<(String, Secret)>,
) -> Option<OtlpConfig> {
    let timeout = check.positive("otlp.timeout", o.timeout);
    let max_request_bytes = check.at_least("otlp.max_request_bytes", o.max_request_bytes, 1024);
    let backoff_min = check.positive("otlp.backoff_min", o.backoff_min);
    let backoff_max = check.positive("otlp.backoff_max", o.backoff_max);
    if backoff_min > backoff_max {
        check.error(
            "otlp.backoff_min",
            &format!("\"{}\"", humantime::format_duration(backoff_min)),
            format!(
                "must not exceed otlp.backoff_max (\"{}\")",
                humantime::format_duration(backoff_max)
            ),
        );
    }
    Some(OtlpConfig {
        endpoint: endpoint?,
        headers,
        timeout,
        compression: o.compression,
        max_request_bytes,
        backoff_min,
        backoff_max,
    })
}

/// `[outbox]`: the database defaults to `<state dir>/outbox.db`.
fn outbox(check: &mut Checker<'_>, ob: &RawOutbox, state_dir: &Path) -> OutboxConfig {
    let outbox = OutboxConfig {
        path: super::locate::outbox_path(ob, state_dir),
        max_bytes: check.at_least("outbox.max_bytes", ob.max_bytes, 1 << 20),
        max_age: check.positive("outbox.max_age", ob.max_age),
        synchronous: ob.synchronous.into(),
        batch_max_records: ob.batch_max_records.max(1),
        live_max_bytes: check.at_least("outbox.live_max_bytes", ob.live_max_bytes, 16 << 10),
    };
    check.at_least("outbox.batch_max_records", ob.batch_max_records as u64, 1);
    outbox
}
