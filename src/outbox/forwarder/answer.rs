//! Reading the collector's answers: sorted into an [`Outcome`] by the
//! decision table in the forwarder's module doc, `Retry-After`, partial
//! successes, and the [`Answered`] status a request is counted under.

use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::StatusCode;

use crate::outbox::Signal;

/// Response bodies are read up to this size (OTLP responses are tiny).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What one send attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx; `rejected_items` is what a `partial_success` said it refused.
    Delivered {
        rejected_items: u64,
        message: String,
    },
    /// Try the same records again later, not before `after` if given.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// 413: the request was too large; send the same records in halves.
    Split { why: String },
    /// The receiver will never take these records.
    Permanent { status: u16, why: String },
}

/// What came back for one request, as the `status` label of
/// `benchtel_export_requests_total` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// An HTTP status code.
    Http(u16),
    /// Connected, but no answer within `otlp.timeout`.
    Timeout,
    /// No connection (refused, unreachable, TLS or DNS failure).
    Unreachable,
}

impl Answered {
    /// `"401"`, `"timeout"`, or `"none"` when there was no connection.
    pub fn label(self) -> String {
        match self {
            Answered::Http(code) => code.to_string(),
            Answered::Timeout => "timeout".into(),
            Answered::Unreachable => "none".into(),
        }
    }
}

/// Sorts an HTTP answer into an [`Outcome`], by the decision table in the
/// forwarder's module doc.
pub fn classify(
    signal: Signal,
    status: StatusCode,
    retry_after: Option<Duration>,
    is_protobuf: bool,
    body: &[u8],
) -> Outcome {
    if status.is_success() {
        let (rejected_items, message) = if is_protobuf {
            partial_success(signal, body)
        } else {
            (0, String::new())
        };
        return Outcome::Delivered {
            rejected_items,
            message,
        };
    }
    let why = format!("HTTP {status}: {}", snippet(body));
    match status.as_u16() {
        // Retryable by the specification, and 408 (the server gave up
        // waiting for our request: nothing wrong with the data).
        429 | 502 | 503 | 504 | 408 => Outcome::Retry {
            after: retry_after,
            why,
        },
        // Our widening: configuration faults (credentials, proxy
        // credentials, no pipeline for the signal) are fixed by a person,
        // not by moving every record aside meanwhile.
        401 | 403 | 404 | 407 => Outcome::Retry {
            after: retry_after,
            why,
        },
        413 => Outcome::Split { why },
        code => Outcome::Permanent { status: code, why },
    }
}

fn partial_success(signal: Signal, body: &[u8]) -> (u64, String) {
    let decoded = match signal {
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
    };
    decoded.map_or((0, String::new()), |(n, m)| {
        (u64::try_from(n).unwrap_or(0), m)
    })
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

pub(super) async fn read_capped(mut response: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_RESPONSE_BYTES.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_RESPONSE_BYTES {
            break;
        }
    }
    out
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(256)]);
    text.trim().to_string()
}
