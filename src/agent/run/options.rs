//! What the agent's configuration makes of the pipeline's options: the
//! outbox, the SDK (series limits, the span queue) and the forwarder.

use std::time::Duration;

use crate::agent::checks;
use crate::agent::config::{AgentConfig, Compression};
use crate::outbox::StoreOptions;
use crate::outbox::forwarder::ForwarderOptions;
use crate::telemetry::TelemetryOptions;

/// Every commit wakes its lane, so this poll only finds rows another
/// process added (`outbox rejected replay`); the SDK's exports commit every
/// few seconds anyway. Polling each second cost three database reads a
/// second on an idle bench, most of its idle CPU.
const IDLE_POLL: Duration = Duration::from_secs(30);

pub fn store_options(cfg: &AgentConfig) -> StoreOptions {
    StoreOptions {
        path: cfg.outbox.path.clone(),
        max_bytes: cfg.outbox.max_bytes,
        max_age: cfg.outbox.max_age,
        synchronous: cfg.outbox.synchronous,
        live_max_bytes: cfg.outbox.live_max_bytes,
    }
}

/// Instruments whose attributes only take values the code names (states,
/// signals, results, reasons, reset sources): a few series each. Left at
/// the SDK's default, each would reserve a table for 2000 series per reader
/// at start (two readers: OTLP and `/metrics`), about 300 KiB of an idle
/// agent's RSS (BENCHMARKS.md, "Footprint"). Instruments labelled by what
/// the machine has (`bench_disk_used` by mount, `bench_temperature` by
/// sensor, `bench_network_io` by interface) keep the SDK's 2000.
const CLOSED_INSTRUMENTS: [&str; 20] = [
    "bench_heartbeats",
    "bench_state",
    "bench_ready_time",
    "bench_dut_ready",
    "bench_dut_resets",
    "bench_dut_reset_failures",
    "bench_cpu_utilization",
    "bench_memory_used",
    "bench_memory_total",
    "benchtel_host_metrics_overruns",
    "benchtel_mqtt_publishes",
    "benchtel_mqtt_heartbeats_skipped",
    "benchtel_mqtt_commands",
    "benchtel_mqtt_connects",
    "benchtel_mqtt_connected",
    "benchtel_outbox_records",
    "benchtel_outbox_bytes",
    "benchtel_outbox_oldest_age_seconds",
    "benchtel_outbox_dropped",
    "benchtel_outbox_corruptions",
];
const CLOSED_SERIES: usize = 64;
/// Signal × result × status, where the status is whatever HTTP code a
/// collector or a proxy answers: closed in practice, not by the code.
const EXPORT_REQUEST_SERIES: usize = 512;

pub(super) fn telemetry_options(cfg: &AgentConfig) -> TelemetryOptions {
    // Resource attributes from the environment first, so the bench's own
    // identity from the config wins on a clash.
    let mut attributes: Vec<(String, String)> = cfg
        .resource_attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    attributes.extend(cfg.bench.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    attributes.push(("bench.id".into(), cfg.bench.id.clone()));
    attributes.push(("bench.site".into(), cfg.bench.site.clone()));
    TelemetryOptions {
        service_name: cfg.service_name.clone(),
        attributes,
        export_interval: cfg.telemetry.export_interval,
        prometheus: cfg.http.enabled,
        series_limits: vec![
            (&checks::INSTRUMENTS, checks::series_limit(&cfg.checks)),
            (&CLOSED_INSTRUMENTS, CLOSED_SERIES),
            (&["benchtel_export_requests"], EXPORT_REQUEST_SERIES),
        ],
        traces: cfg.telemetry.traces,
        span_queue: span_queue(cfg),
    }
}

/// The span queue holds this long of the spans the configuration makes,
/// so a commit that stalls this long loses none.
const SPAN_QUEUE_SECONDS: f64 = 8.0;

/// Spans the SDK's queue holds: [`SPAN_QUEUE_SECONDS`] of a span per check
/// run and one per host-metric collection, at least 128 (a boot trace of a
/// `serial_watch` comes as a burst) and at most the SDK's 2048.
fn span_queue(cfg: &AgentConfig) -> usize {
    let per_second = |every: Duration| 1.0 / every.as_secs_f64().max(0.1);
    let checks: f64 = cfg
        .checks
        .iter()
        .filter(|c| !c.kind.is_continuous())
        .map(|c| per_second(c.interval))
        .sum();
    let host = &cfg.sources.host_metrics;
    let host = host.collectors.len() as f64 * per_second(host.interval);
    // Bounded by the clamp, so the cast cannot truncate.
    ((checks + host) * SPAN_QUEUE_SECONDS)
        .ceil()
        .clamp(128.0, 2048.0) as usize
}

pub(super) fn forwarder_options(cfg: &AgentConfig) -> ForwarderOptions {
    ForwarderOptions {
        endpoint: cfg.otlp.endpoint.clone(),
        headers: cfg
            .otlp
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect(),
        timeout: cfg.otlp.timeout,
        gzip: cfg.otlp.compression == Compression::Gzip,
        max_request_bytes: cfg.otlp.max_request_bytes,
        batch_max_records: cfg.outbox.batch_max_records,
        backoff_min: cfg.otlp.backoff_min,
        backoff_max: cfg.otlp.backoff_max,
        idle_poll: IDLE_POLL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn load(text: &str) -> AgentConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let env = Env {
            state_directory: Some(dir.path().display().to_string()),
            ..Env::default()
        };
        crate::agent::config::load(Some(&path), &env).unwrap()
    }

    fn tcp_checks(n: usize, interval: &str) -> String {
        (0..n)
            .map(|i| {
                format!(
                    "[[checks]]\nname = \"c{i}\"\ntype = \"tcp\"\n\
                     address = \"127.0.0.1:1\"\ninterval = \"{interval}\"\n"
                )
            })
            .collect()
    }

    #[test]
    fn the_span_queue_holds_eight_seconds_of_the_configured_spans() {
        // Five host collectors every 15 s: the floor.
        assert_eq!(span_queue(&load("")), 128);
        // Fifty checks at 1 s: (50 + 5/15) × 8 = 402.7.
        assert_eq!(span_queue(&load(&tcp_checks(50, "1s"))), 403);
        // Far more than the SDK's default queue: capped there.
        assert_eq!(span_queue(&load(&tcp_checks(400, "100ms"))), 2048);
    }
}
