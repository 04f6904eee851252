//! Wiring of the OpenTelemetry SDK: one resource, and meter, logger and
//! tracer providers whose exporters commit into the outbox. The same meter
//! provider also feeds the local Prometheus registry behind `/metrics`, so
//! both views are the same instruments.
//!
//! `tracing` is the logging API: events go to stdout (ADR-010 JSON, with the
//! bench's `bench_id` and `bench_site`, or text) and, through
//! `opentelemetry-appender-tracing`, into OTel log records.
//!
//! Spans can be turned off (`TelemetryOptions::traces`): the global tracer
//! then stays the API's no-op one.

pub mod context;
pub mod json_log;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::{Key, KeyValue};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{BatchLogProcessor, SdkLoggerProvider};
use opentelemetry_sdk::metrics::{Instrument, PeriodicReader, SdkMeterProvider, Stream};
use opentelemetry_sdk::trace::{
    BatchConfig, BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider,
};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::outbox::exporter::{LogsExporter, MetricExporter, Sink, SpansExporter};
pub use json_log::BenchLabels;

/// Crates whose debug chatter would otherwise flow into the outbox.
const QUIET: &str = "hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn,axum=warn";

#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    pub service_name: String,
    /// Resource attributes beyond service.* and host.name: `bench.id`,
    /// `bench.site`, user labels, `OTEL_RESOURCE_ATTRIBUTES`.
    pub attributes: Vec<(String, String)>,
    /// How often the metric reader commits a collection into the outbox.
    pub export_interval: Duration,
    /// Also keep a Prometheus registry for the local `/metrics`.
    pub prometheus: bool,
    /// Groups of instruments (by name) whose series are bounded by the
    /// group's limit instead of the SDK's 2000, which it allocates tables
    /// for up front, per instrument and reader. The first group naming an
    /// instrument wins.
    pub series_limits: Vec<SeriesLimit>,
    /// Spans on (`[telemetry] traces`). Off, the tracer provider has no
    /// processor and is not installed globally, so every span is the global
    /// no-op one: nothing reaches the outbox's traces lane, and log lines
    /// carry no trace ids.
    pub traces: bool,
    /// How many ended spans wait for the outbox at most.
    pub span_queue: usize,
}

/// The one log-format type, as configured (`log.format`, `--log-format`).
pub use crate::config::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the Prometheus exporter: {0}")]
    Prometheus(String),
    #[error("invalid log level {level:?}: {reason}")]
    LogLevel { level: String, reason: String },
    #[error("a global tracing subscriber is already installed")]
    SubscriberTaken,
}

pub struct Telemetry {
    pub meters: SdkMeterProvider,
    pub logs: SdkLoggerProvider,
    pub traces: SdkTracerProvider,
    pub registry: Option<prometheus::Registry>,
}

impl Telemetry {
    /// Starts the providers. Their exporters commit into `sink`.
    pub fn start(opts: &TelemetryOptions, sink: Sink) -> Result<Telemetry, TelemetryError> {
        let resource = resource(opts);
        let reader = PeriodicReader::builder(MetricExporter::new(sink.clone()))
            .with_interval(opts.export_interval)
            .build();
        let mut meters = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(reader)
            .with_view(bounded_view(opts.series_limits.clone()));
        let mut registry = None;
        if opts.prometheus {
            let reg = prometheus::Registry::new();
            let labels: HashSet<Key> = [Key::from("bench.id"), Key::from("bench.site")].into();
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(reg.clone())
                .with_resource_selector(labels)
                .scope_info_enabled(false)
                .build()
                .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
            meters = meters.with_reader(exporter);
            registry = Some(reg);
        }
        let meters = meters.build();
        let logs = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .with_log_processor(context::Stamp)
            .with_log_processor(BatchLogProcessor::builder(LogsExporter::new(sink.clone())).build())
            .build();
        let traces = tracer_provider(opts, resource, sink);
        if opts.traces {
            opentelemetry::global::set_tracer_provider(traces.clone());
        }
        opentelemetry::global::set_meter_provider(meters.clone());
        Ok(Telemetry {
            meters,
            logs,
            traces,
            registry,
        })
    }

    pub fn meter(&self) -> Meter {
        self.meters.meter("benchtel")
    }

    /// Flushes everything the SDK still holds into the outbox and stops the
    /// providers. Blocks: call it off the async runtime.
    pub fn shutdown(&self) {
        for (what, result) in [
            ("traces", self.traces.force_flush()),
            ("logs", self.logs.force_flush()),
            ("metrics", self.meters.force_flush()),
        ] {
            if let Err(e) = result {
                eprintln!("benchtel-agent: flushing {what} into the outbox failed: {e}");
            }
        }
        let _ = self.traces.shutdown();
        let _ = self.logs.shutdown();
        let _ = self.meters.shutdown();
    }
}

/// With `opts.traces`, spans go through the batch processor (its queue
/// `opts.span_queue` long) into the outbox. Off, the provider has no
/// processor, so even a span started on it directly is exported nowhere,
/// and no batch thread or span queue is allocated.
fn tracer_provider(opts: &TelemetryOptions, resource: Resource, sink: Sink) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if !opts.traces {
        return builder.build();
    }
    builder
        .with_span_processor(context::Stamped(
            BatchSpanProcessor::builder(SpansExporter::new(sink))
                .with_batch_config(span_batches(opts.span_queue))
                .build(),
        ))
        .build()
}

/// The SDK allocates its span queue in full at start and touches all of it
/// (368 bytes a span: its default 2048 took 740 KiB of RSS, 512 still
/// 188 KiB), so the queue is sized to the configuration (`queue`, see
/// [`TelemetryOptions::span_queue`]); a full batch of at most 128 is
/// exported at once.
/// `OTEL_BSP_MAX_QUEUE_SIZE` and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` still win.
fn span_batches(queue: usize) -> BatchConfig {
    let mut batches = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        batches = batches.with_max_queue_size(queue);
    }
    if std::env::var_os("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none() {
        batches = batches.with_max_export_batch_size(queue.min(128));
    }
    batches.build()
}

/// Instruments that share a series limit: their names, and the limit.
pub type SeriesLimit = (&'static [&'static str], usize);

/// A view giving each instrument named in `limits` its group's series
/// limit; other instruments keep the SDK's default.
pub fn bounded_view(
    limits: Vec<SeriesLimit>,
) -> impl Fn(&Instrument) -> Option<Stream> + Send + Sync + 'static {
    move |i: &Instrument| {
        let (_, limit) = limits.iter().find(|(names, _)| names.contains(&i.name()))?;
        Stream::builder()
            .with_cardinality_limit((*limit).max(1))
            .build()
            .ok()
    }
}

/// The OTel resource every signal carries.
pub fn resource(opts: &TelemetryOptions) -> Resource {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attrs = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("host.name", host),
    ];
    attrs.extend(
        opts.attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    Resource::builder_empty()
        .with_service_name(opts.service_name.clone())
        .with_attributes(attrs)
        .build()
}

/// Installs the global `tracing` subscriber: stdout in `format`, and OTel log
/// records through `logs` when given. JSON lines carry `component` and the
/// `bench` labels; text lines are for a person who knows which machine
/// they are on, and carry neither.
pub fn init_logging(
    format: LogFormat,
    level: &str,
    component: &str,
    bench: BenchLabels,
    logs: Option<&SdkLoggerProvider>,
) -> Result<(), TelemetryError> {
    let filter =
        EnvFilter::try_new(format!("{level},{QUIET}")).map_err(|e| TelemetryError::LogLevel {
            level: level.to_string(),
            reason: e.to_string(),
        })?;
    let (json, text) = match format {
        LogFormat::Json => (
            Some(json_log::JsonLayer::new(component, bench, || {
                Box::new(std::io::stdout()) as Box<dyn Write>
            })),
            None,
        ),
        LogFormat::Text => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(colour(
                        std::io::stdout().is_terminal(),
                        std::env::var_os("NO_COLOR").as_deref(),
                    )),
            ),
        ),
    };
    let bridge = logs.map(OpenTelemetryTracingBridge::new);
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .with(bridge);
    tracing::subscriber::set_global_default(subscriber).map_err(|_| TelemetryError::SubscriberTaken)
}

/// Whether text logs are coloured: only on a terminal, so journald, files
/// and pipes get plain text, and never when `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
pub fn colour(stdout_is_tty: bool, no_color: Option<&OsStr>) -> bool {
    stdout_is_tty && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    use super::{bounded_view, colour};

    /// (instrument, series, whether one is the overflow series) after ten
    /// series were recorded on each of `names`.
    fn ten_series_each(names: &[&'static str]) -> Vec<(String, usize, bool)> {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .with_view(bounded_view(vec![(&["small"], 4), (&["small", "mid"], 6)]))
            .build();
        let meter = provider.meter("t");
        for name in names {
            let counter = meter.u64_counter(*name).build();
            for i in 0..10 {
                counter.add(1, &[KeyValue::new("i", i)]);
            }
        }
        provider.force_flush().unwrap();
        let rm = exporter.get_finished_metrics().unwrap().pop().unwrap();
        let mut out: Vec<_> = rm
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .map(|m| match m.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    let overflow = sum.data_points().any(|p| {
                        p.attributes()
                            .any(|kv| kv.key.as_str() == "otel.metric.overflow")
                    });
                    (m.name().to_string(), sum.data_points().count(), overflow)
                }
                _ => panic!("unexpected data for {}", m.name()),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn each_instrument_gets_the_limit_of_the_first_group_naming_it() {
        let got = ten_series_each(&["small", "mid", "open"]);
        // A limit of N keeps N series plus the overflow series.
        assert_eq!(
            got,
            vec![
                ("mid".to_string(), 7, true),
                ("open".to_string(), 10, false),
                ("small".to_string(), 5, true),
            ]
        );
    }

    #[test]
    fn colour_only_on_a_terminal_and_not_when_no_color_is_set() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(true, Some(OsStr::new("false"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new(""))));
    }
}
