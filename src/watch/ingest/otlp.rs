//! Heartbeats over OTLP/HTTP: `POST /v1/metrics` (protobuf or JSON,
//! optionally gzip), for sites that send through an OpenTelemetry
//! Collector's `otlphttp` exporter instead of MQTT.
//!
//! A heartbeat is a data point of the agent's `bench_heartbeats` counter:
//! the resource's `bench.id` and `bench.site` say whose, the cumulative
//! value is the sequence number, the start time identifies the agent run,
//! and the point's time is the bench clock's send time. A point whose value
//! did not grow is a re-export of the same count, not a new beat. Other
//! metrics in the request are ignored, except `bench_state` (the state the
//! bench reports).
//!
//! Every rejection is answered with a reason and counted: no or wrong
//! bearer token (401), a token speaking for another site (403), a body over
//! the size limit, as sent or inflated (413), an unknown content type or
//! encoding (415), and a body that does not decode (400). Points of benches
//! the admission policy refuses are reported as OTLP `partial_success`.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;

use super::super::bench::{Beat, Transport};
use super::super::shared::Shared;

/// The agent's heartbeat counter, as the SDK names it (and as a collector
/// that added the Prometheus suffix would).
const HEARTBEATS: [&str; 2] = ["bench_heartbeats", "bench_heartbeats_total"];
const STATE: &str = "bench_state";

/// Heartbeats of one resource (one bench) in a request.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchBeats {
    pub site: String,
    pub bench: String,
    pub beats: Vec<Beat>,
}

/// What a request holds: heartbeats per bench, and heartbeat points that
/// name no bench.
#[derive(Debug, Default, PartialEq)]
pub struct Extracted {
    pub benches: Vec<BenchBeats>,
    pub anonymous_points: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing or malformed Authorization: Bearer token")]
    Unauthorized,
    #[error("this token may not speak for site {0:?}")]
    ForbiddenSite(String),
    #[error("request body over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body inflates past {limit} bytes")]
    InflatesTooLarge { limit: usize },
    #[error("unsupported content type {0:?}; use application/x-protobuf or application/json")]
    ContentType(String),
    #[error("unsupported content encoding {0:?}; use gzip or none")]
    Encoding(String),
    #[error("malformed body: {0}")]
    Malformed(String),
}

impl Rejection {
    fn status(&self) -> StatusCode {
        match self {
            Rejection::Unauthorized => StatusCode::UNAUTHORIZED,
            Rejection::ForbiddenSite(_) => StatusCode::FORBIDDEN,
            Rejection::TooLarge { .. } | Rejection::InflatesTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Rejection::ContentType(_) | Rejection::Encoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Rejection::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Rejection::Unauthorized => "unauthorized",
            Rejection::ForbiddenSite(_) => "forbidden_site",
            Rejection::TooLarge { .. } => "too_large",
            Rejection::InflatesTooLarge { .. } => "inflates_too_large",
            Rejection::ContentType(_) => "content_type",
            Rejection::Encoding(_) => "content_encoding",
            Rejection::Malformed(_) => "malformed",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Protobuf,
    Json,
}

/// `POST /v1/metrics`.
pub async fn handle(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let (scope, format, request) =
            read::<ExportMetricsServiceRequest>(&shared, &headers, body).await?;
        let extracted = extract(&request);
        in_scope(
            scope.as_deref(),
            extracted.benches.iter().map(|b| b.site.as_str()),
        )?;
        Ok((format, extracted))
    }
    .await;
    match result {
        Ok((format, extracted)) => accept(&shared, extracted, format),
        Err(rejection) => reject(&shared, rejection),
    }
}

/// Authorizes, reads, inflates and decodes an OTLP request; returns the
/// site the token may speak for (`None`: any), the format and the request.
pub(super) async fn read<T>(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Option<String>, Format, T), Rejection>
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    let limit = shared.cfg.http.max_body_bytes;
    let site_scope = authorize(shared, headers)?;
    let format = format_of(headers)?;
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Rejection::TooLarge { limit })?;
    let bytes = inflate(headers, raw, shared.cfg.http.max_decompressed_bytes)?;
    Ok((site_scope, format, decode(&bytes, format)?))
}

/// Refuses a request that speaks for a site its token may not.
pub(super) fn in_scope<'a>(
    scope: Option<&str>,
    mut sites: impl Iterator<Item = &'a str>,
) -> Result<(), Rejection> {
    let Some(scope) = scope else {
        return Ok(());
    };
    match sites.find(|s| *s != scope) {
        Some(other) => Err(Rejection::ForbiddenSite(other.to_string())),
        None => Ok(()),
    }
}

/// Answers and counts a rejected request.
pub(super) fn reject(shared: &Shared, rejection: Rejection) -> Response {
    shared
        .stats
        .rejected
        .with_label_values(&["otlp", rejection.reason()])
        .inc();
    tracing::debug!(reason = %rejection, "OTLP request rejected");
    (rejection.status(), rejection.to_string()).into_response()
}

/// An OTLP answer in the request's format.
pub(super) fn respond<T: Message + serde::Serialize>(response: &T, format: Format) -> Response {
    match format {
        Format::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            response.encode_to_vec(),
        )
            .into_response(),
        Format::Json => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(response).unwrap_or_else(|_| b"{}".to_vec()),
        )
            .into_response(),
    }
}

/// The site a request may speak for: `None` for any (no tokens configured,
/// or a `*` token).
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<Option<String>, Rejection> {
    let tokens = &shared.cfg.otlp.tokens;
    if tokens.is_empty() {
        return Ok(None);
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Rejection::Unauthorized)?;
    let found = tokens
        .iter()
        .find(|t| constant_time_eq(t.token.expose().as_bytes(), given.trim().as_bytes()))
        .ok_or(Rejection::Unauthorized)?;
    Ok((found.site != "*").then(|| found.site.clone()))
}

/// Compares without leaking, through timing, how much of a token matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn format_of(headers: &HeaderMap) -> Result<Format, Rejection> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    match mime {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        other => Err(Rejection::ContentType(other.to_string())),
    }
}

fn inflate(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Bytes, Rejection> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(raw),
        "gzip" => {
            let mut out = Vec::new();
            // Read one byte past the limit to tell "exactly the limit" from
            // "more": a gzip bomb stops here, not in memory.
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Rejection::Malformed(format!("gzip: {e}")))?;
            if out.len() > limit {
                return Err(Rejection::InflatesTooLarge { limit });
            }
            Ok(Bytes::from(out))
        }
        other => Err(Rejection::Encoding(other.to_string())),
    }
}

fn decode<T>(bytes: &[u8], format: Format) -> Result<T, Rejection>
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    match format {
        Format::Protobuf => {
            T::decode(bytes).map_err(|e| Rejection::Malformed(format!("protobuf: {e}")))
        }
        Format::Json => {
            serde_json::from_slice(bytes).map_err(|e| Rejection::Malformed(format!("JSON: {e}")))
        }
    }
}

/// Finds the heartbeats (and reported states) in a request.
pub fn extract(req: &ExportMetricsServiceRequest) -> Extracted {
    let mut out = Extracted::default();
    for rm in &req.resource_metrics {
        let attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let (bench, site) = (
            string_attr(attrs, "bench.id"),
            string_attr(attrs, "bench.site"),
        );
        let mut beats = Vec::new();
        let mut state = None;
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            match &m.data {
                Some(metric::Data::Sum(sum)) if HEARTBEATS.contains(&m.name.as_str()) => {
                    beats.extend(sum.data_points.iter().filter_map(|p| {
                        let seq = match p.value? {
                            number_data_point::Value::AsInt(v) => u64::try_from(v).ok()?,
                            number_data_point::Value::AsDouble(v) => v as u64,
                        };
                        Some(Beat {
                            sent: Some(p.time_unix_nano as f64 / 1e9),
                            ..Beat::new(Transport::Otlp, p.start_time_unix_nano.to_string(), seq)
                        })
                    }));
                }
                Some(metric::Data::Gauge(g)) if m.name == STATE => {
                    state = g
                        .data_points
                        .iter()
                        .filter(|p| {
                            matches!(p.value, Some(number_data_point::Value::AsInt(1)))
                                || matches!(p.value, Some(number_data_point::Value::AsDouble(v)) if v == 1.0)
                        })
                        .find_map(|p| string_attr(&p.attributes, "state"));
                }
                _ => {}
            }
        }
        match (bench, site) {
            (Some(bench), Some(site)) if !beats.is_empty() => {
                beats.sort_by(|a, b| {
                    a.sent
                        .partial_cmp(&b.sent)
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                if let Some(last) = beats.last_mut() {
                    last.state = state;
                }
                out.benches.push(BenchBeats { site, bench, beats });
            }
            _ => out.anonymous_points += beats.len(),
        }
    }
    out
}

pub(super) fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.clone()),
            _ => None,
        })
}

/// Hands the heartbeats to the fleet and answers with what was refused.
fn accept(shared: &Shared, extracted: Extracted, format: Format) -> Response {
    let now = shared.clock.now();
    let mut rejected = extracted.anonymous_points as i64;
    let mut reasons = Vec::new();
    if extracted.anonymous_points > 0 {
        reasons.push(format!(
            "{} heartbeat points without bench.id and bench.site resource attributes",
            extracted.anonymous_points
        ));
        shared
            .stats
            .heartbeats
            .with_label_values(&["otlp", "refused"])
            .inc_by(extracted.anonymous_points as u64);
    }
    {
        let mut fleet = shared.lock_fleet();
        for b in &extracted.benches {
            for beat in &b.beats {
                let result = match fleet.receive(&b.site, &b.bench, beat, now) {
                    Ok(r) => r.as_str(),
                    Err(refusal) => {
                        rejected += 1;
                        reasons.push(format!(
                            "bench {:?} at site {:?}: {refusal}",
                            b.bench, b.site
                        ));
                        "refused"
                    }
                };
                shared
                    .stats
                    .heartbeats
                    .with_label_values(&["otlp", result])
                    .inc();
            }
        }
    }
    reasons.dedup();
    let response = ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected,
            error_message: reasons.join("; "),
        }),
    };
    respond(&response, format)
}

#[cfg(test)]
mod tests;
