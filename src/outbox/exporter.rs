//! OpenTelemetry SDK exporters that encode OTLP protobuf and commit it to the
//! outbox instead of sending it.
//!
//! The SDK's periodic reader and batch processors call these on their own
//! threads with no tokio runtime; committing to SQLite is synchronous, so
//! nothing here needs one. `export` returns `Ok` only after the commit, which
//! is what makes "acknowledged" mean "durable" — or, while the disk takes no
//! writes, after the record was queued for live delivery, where any loss is
//! counted by the outbox itself (`disk_full`) rather than by the SDK, which
//! would only drop the batch.
//!
//! The commit path is under the systemd watchdog: a [`Sink`] given a
//! `commit` beacon promises a deadline before each commit and relaxes after
//! it, so a commit that hangs (a wedged disk, a lock never released) stops
//! the watchdog pings and systemd restarts the agent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message;

use super::forwarder::Wakeups;
use super::{NewRecord, Outbox, Signal};
use crate::systemd::Beacon;

/// How long one commit may take before the watchdog may complain.
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(30);
/// The promise of a sink with no commit under way: none to keep.
const IDLE: Duration = Duration::from_secs(365 * 86_400);

/// Where an exporter commits: the outbox, and the forwarder to wake.
#[derive(Clone)]
pub struct Sink {
    outbox: Arc<Outbox>,
    wakeups: Arc<Wakeups>,
    watch: Option<Arc<CommitWatch>>,
}

/// The `commit` beacon, shared by the three exporters' threads: promised
/// while any commit is under way, relaxed when the last one ends.
struct CommitWatch {
    beacon: Beacon,
    deadline: Duration,
    in_flight: AtomicUsize,
}

/// One commit under way; relaxes the beacon when the last one ends.
struct InFlight<'a>(&'a CommitWatch);

impl CommitWatch {
    fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.beacon.busy_for(self.deadline);
        InFlight(self)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.beacon.busy_for(IDLE);
        }
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("outbox", &self.outbox.options().path)
            .finish()
    }
}

impl Sink {
    pub fn new(outbox: Arc<Outbox>, wakeups: Arc<Wakeups>) -> Sink {
        Sink {
            outbox,
            wakeups,
            watch: None,
        }
    }

    /// Puts the commit path under `beacon` (see the module docs): each
    /// commit promises to end within `deadline`.
    pub fn with_beacon(mut self, beacon: Beacon, deadline: Duration) -> Sink {
        beacon.busy_for(IDLE);
        self.watch = Some(Arc::new(CommitWatch {
            beacon,
            deadline,
            in_flight: AtomicUsize::new(0),
        }));
        self
    }

    pub(crate) fn commit(&self, signal: Signal, items: u64, body: Vec<u8>) -> OTelSdkResult {
        if items == 0 {
            return Ok(());
        }
        let _promise = self.watch.as_deref().map(CommitWatch::enter);
        self.outbox
            .commit(NewRecord {
                signal,
                items,
                body,
            })
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        self.wakeups.wake(signal);
        Ok(())
    }
}

/// Metrics: one record per collection cycle of the periodic reader.
#[derive(Debug)]
pub struct MetricExporter {
    sink: Sink,
}

impl MetricExporter {
    pub fn new(sink: Sink) -> MetricExporter {
        MetricExporter { sink }
    }
}

impl PushMetricExporter for MetricExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let request = ExportMetricsServiceRequest::from(metrics);
        let items = count_data_points(&request);
        self.sink
            .commit(Signal::Metrics, items, request.encode_to_vec())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    // Cumulative: a replayed or duplicated batch then carries totals, not
    // increments, so at-least-once delivery cannot double-count a counter.
    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// Counts the data points of a request (the unit of partial_success).
pub fn count_data_points(request: &ExportMetricsServiceRequest) -> u64 {
    let points = |d: &Data| match d {
        Data::Gauge(g) => g.data_points.len(),
        Data::Sum(s) => s.data_points.len(),
        Data::Histogram(h) => h.data_points.len(),
        Data::ExponentialHistogram(h) => h.data_points.len(),
        Data::Summary(s) => s.data_points.len(),
    };
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter_map(|m| m.data.as_ref())
        .map(|d| points(d) as u64)
        .sum()
}

/// Logs: one record per batch of the batch log processor.
#[derive(Debug)]
pub struct LogsExporter {
    sink: Sink,
    resource: ResourceAttributesWithSchema,
}

impl LogsExporter {
    pub fn new(sink: Sink) -> LogsExporter {
        LogsExporter {
            sink,
            resource: ResourceAttributesWithSchema::default(),
        }
    }
}

impl LogExporter for LogsExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let resource_logs = group_logs_by_resource_and_scope(&batch, &self.resource);
        let request = ExportLogsServiceRequest { resource_logs };
        let items = request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum();
        self.sink
            .commit(Signal::Logs, items, request.encode_to_vec())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

/// Spans: one record per batch of the batch span processor.
#[derive(Debug)]
pub struct SpansExporter {
    sink: Sink,
    resource: ResourceAttributesWithSchema,
}

impl SpansExporter {
    pub fn new(sink: Sink) -> SpansExporter {
        SpansExporter {
            sink,
            resource: ResourceAttributesWithSchema::default(),
        }
    }
}

impl SpanExporter for SpansExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let resource_spans = group_spans_by_resource_and_scope(batch, &self.resource);
        let request = ExportTraceServiceRequest { resource_spans };
        let items = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum();
        self.sink
            .commit(Signal::Traces, items, request.encode_to_vec())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

#[cfg(test)]
mod tests;
