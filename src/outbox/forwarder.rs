//! Drains the outbox to an OTLP/HTTP collector, one lane per signal.
//!
//! Each lane sends the oldest records of its signal first and deletes them
//! only after a 2xx. While a backlog drains, several records go in one POST:
//! an OTLP export request has a single repeated field, and concatenated
//! protobuf encodings of a message merge their repeated fields, so the stored
//! bodies are joined byte for byte without decoding.
//!
//! Answers are sorted the way the OTLP/HTTP specification asks, with one
//! deliberate widening: 401, 403, 404 and 407 mean the receiver or our
//! credentials are misconfigured, not that the data is bad, so they are
//! retried (and logged as errors) instead of moving every record aside.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{DropReason, Outbox, OutboxError, Record, Signal};
use crate::systemd::Beacon;

/// A `Retry-After` longer than this is treated as this: a misbehaving proxy
/// must not park the queue for a day.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Response bodies are read up to this size (OTLP responses are tiny).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long one database step may take before the watchdog may complain.
const DB_STEP: Duration = Duration::from_secs(30);

/// Wakes a lane when its signal gets a new record, so an idle lane sleeps
/// instead of polling the database.
#[derive(Debug, Default)]
pub struct Wakeups {
    lanes: [Notify; 3],
}

impl Wakeups {
    pub fn wake(&self, signal: Signal) {
        self.lane(signal).notify_one();
    }

    fn lane(&self, signal: Signal) -> &Notify {
        let i = Signal::ALL.iter().position(|s| *s == signal).unwrap_or(0);
        &self.lanes[i]
    }
}

#[derive(Debug, Clone)]
pub struct ForwarderOptions {
    /// Base URL; `/v1/<signal>` is appended.
    pub endpoint: Url,
    /// Extra request headers (authentication), already read from secrets.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub gzip: bool,
    /// Merged requests stop growing past this many (uncompressed) bytes.
    pub max_request_bytes: u64,
    pub batch_max_records: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// An idle lane re-checks the database this often even without a wakeup.
    pub idle_poll: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error("OTLP header {name:?} is not a valid HTTP header name")]
    HeaderName { name: String },
    #[error("the value of OTLP header {name:?} is not a valid HTTP header value")]
    HeaderValue { name: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("outbox task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

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
    /// The receiver will never take these records.
    Permanent { status: u16, why: String },
}

/// What one step of a lane did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing queued for this signal.
    Idle,
    /// Records left the outbox (delivered or moved aside).
    Progress,
    /// Nothing could be sent; wait at least this long.
    Wait(Option<Duration>),
}

struct Instruments {
    requests: Counter<u64>,
}

pub struct Forwarder {
    outbox: Arc<Outbox>,
    wakeups: Arc<Wakeups>,
    client: reqwest::Client,
    opts: ForwarderOptions,
    instruments: Instruments,
}

impl Forwarder {
    pub fn new(
        outbox: Arc<Outbox>,
        wakeups: Arc<Wakeups>,
        opts: ForwarderOptions,
        meter: &Meter,
    ) -> Result<Forwarder, ForwarderError> {
        // reqwest is built without a default TLS backend; ring builds fast
        // and small. An error means a provider is already installed: fine.
        crate::tls::install_provider();
        let client = reqwest::Client::builder()
            .default_headers(header_map(&opts.headers)?)
            .timeout(opts.timeout)
            .user_agent(concat!("benchtel-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let requests = meter
            .u64_counter("benchtel_export_requests")
            .with_description("OTLP export requests by signal and result")
            .build();
        Ok(Forwarder {
            outbox,
            wakeups,
            client,
            opts,
            instruments: Instruments { requests },
        })
    }

    /// Forwards `signal` until cancelled, backing off while the collector
    /// is unreachable. Never gives up on a record because of time.
    pub async fn run(self: Arc<Self>, signal: Signal, beacon: Beacon, cancel: CancellationToken) {
        let mut lane = Lane::new(&self.opts);
        let mut failing = false;
        loop {
            beacon.busy_for(DB_STEP + self.opts.timeout);
            let step = tokio::select! {
                _ = cancel.cancelled() => return,
                step = self.step(signal, &mut lane) => step,
            };
            let wait = match step {
                Ok(Step::Progress) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!(
                            signal = signal.as_str(),
                            "collector reachable again; forwarding"
                        );
                    }
                    lane.reset_backoff(&self.opts);
                    continue;
                }
                Ok(Step::Idle) => {
                    beacon.busy_for(self.opts.idle_poll);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = self.wakeups.lane(signal).notified() => {}
                        _ = tokio::time::sleep(self.opts.idle_poll) => {}
                    }
                    continue;
                }
                Ok(Step::Wait(after)) => lane.next_delay(after),
                Err(e) => {
                    tracing::error!(signal = signal.as_str(), error = %e, "outbox read failed");
                    lane.next_delay(None)
                }
            };
            if !std::mem::replace(&mut failing, true) {
                tracing::warn!(signal = signal.as_str(), retry_in = ?wait, "forwarding paused; records stay in the outbox");
            }
            beacon.busy_for(wait);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One last attempt at shutdown: forward what can go before `deadline`,
    /// without waiting out backoffs. What is left stays in the outbox.
    pub async fn flush(&self, deadline: Instant) -> Result<(), ForwarderError> {
        for signal in Signal::ALL {
            let mut lane = Lane::new(&self.opts);
            loop {
                let step = tokio::time::timeout_at(deadline, self.step(signal, &mut lane)).await;
                match step {
                    Ok(Ok(Step::Progress)) => continue,
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(()),
                }
            }
        }
        Ok(())
    }

    /// Reads the next batch of `signal`, sends it and settles the outcome.
    pub async fn step(&self, signal: Signal, lane: &mut Lane) -> Result<Step, ForwarderError> {
        let limit = if lane.isolating() {
            1
        } else {
            self.opts.batch_max_records
        };
        let outbox = self.outbox.clone();
        let max_bytes = self.opts.max_request_bytes;
        let batch = tokio::task::spawn_blocking(move || outbox.fetch(signal, 0, limit, max_bytes))
            .await??;
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(Step::Idle);
        };
        let (first_id, last_id) = (first.id, last.id);
        let outcome = self.send(signal, &batch).await;
        let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
        self.count(signal, &outcome);
        match outcome {
            Outcome::Delivered {
                rejected_items,
                message,
            } => {
                if rejected_items > 0 || !message.is_empty() {
                    tracing::warn!(signal = signal.as_str(), rejected_items, message = %message, "collector accepted the request only in part");
                }
                let outbox = self.outbox.clone();
                tokio::task::spawn_blocking(move || {
                    outbox.ack(signal, &ids)?;
                    if rejected_items > 0 {
                        outbox.count_drop(DropReason::PartialSuccess, 0, rejected_items)?;
                    }
                    Ok::<_, OutboxError>(())
                })
                .await??;
                lane.passed(last_id);
                Ok(Step::Progress)
            }
            Outcome::Retry { after, why } => {
                tracing::debug!(signal = signal.as_str(), why = %why, "export will be retried");
                Ok(Step::Wait(after))
            }
            Outcome::Permanent { status, why } if ids.len() > 1 => {
                // One bad record must not take its neighbours down with it:
                // resend this stretch one record at a time.
                tracing::warn!(signal = signal.as_str(), status, why = %why, first_id, last_id, "merged request refused; retrying its records one by one");
                lane.isolate_through(last_id);
                Ok(Step::Progress)
            }
            Outcome::Permanent { status, why } => {
                tracing::error!(signal = signal.as_str(), status, why = %why, record = first_id, "collector refused a record permanently; moved aside to the outbox's rejected table");
                let outbox = self.outbox.clone();
                tokio::task::spawn_blocking(move || outbox.reject(signal, &ids, status, &why))
                    .await??;
                lane.passed(last_id);
                Ok(Step::Progress)
            }
        }
    }

    async fn send(&self, signal: Signal, batch: &[Record]) -> Outcome {
        let url = format!(
            "{}{}",
            self.opts.endpoint.as_str().trim_end_matches('/'),
            signal.path()
        );
        let mut body = Vec::with_capacity(batch.iter().map(|r| r.body.len()).sum());
        for r in batch {
            body.extend_from_slice(&r.body);
        }
        let mut request = self
            .client
            .post(&url)
            .header(CONTENT_TYPE, "application/x-protobuf");
        if self.opts.gzip {
            match gzip(&body) {
                Ok(zipped) => {
                    body = zipped;
                    request = request.header(CONTENT_ENCODING, "gzip");
                }
                Err(e) => tracing::warn!(error = %e, "gzip failed; sending uncompressed"),
            }
        }
        let response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    why: format!("{url}: {}", error_chain(&e)),
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let is_protobuf = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-protobuf"));
        let body = read_capped(response).await;
        classify(signal, status, retry_after, is_protobuf, &body)
    }

    fn count(&self, signal: Signal, outcome: &Outcome) {
        let result = match outcome {
            Outcome::Delivered {
                rejected_items: 0, ..
            } => "ok",
            Outcome::Delivered { .. } => "partial",
            Outcome::Retry { .. } => "retry",
            Outcome::Permanent { .. } => "rejected",
        };
        self.instruments.requests.add(
            1,
            &[
                KeyValue::new("signal", signal.as_str()),
                KeyValue::new("result", result),
            ],
        );
    }
}

/// A lane's own state: its backoff and which records it sends one by one.
pub struct Lane {
    backoff: backon::ExponentialBackoff,
    isolate_through: i64,
    sent_through: i64,
}

impl Lane {
    pub fn new(opts: &ForwarderOptions) -> Lane {
        Lane {
            backoff: backoff(opts),
            isolate_through: 0,
            sent_through: 0,
        }
    }

    fn isolating(&self) -> bool {
        self.sent_through < self.isolate_through
    }

    fn isolate_through(&mut self, id: i64) {
        self.isolate_through = id;
    }

    fn passed(&mut self, id: i64) {
        self.sent_through = id;
    }

    fn reset_backoff(&mut self, opts: &ForwarderOptions) {
        self.backoff = backoff(opts);
    }

    /// The next backoff delay, but never shorter than the server asked.
    fn next_delay(&mut self, at_least: Option<Duration>) -> Duration {
        let ours = self.backoff.next().unwrap_or(Duration::from_secs(60));
        at_least.map_or(ours, |theirs| theirs.min(MAX_RETRY_AFTER).max(ours))
    }
}

fn backoff(opts: &ForwarderOptions) -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::new()
        .with_min_delay(opts.backoff_min)
        .with_max_delay(opts.backoff_max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sorts an HTTP answer into an [`Outcome`].
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
        429 | 502 | 503 | 504 | 408 => Outcome::Retry {
            after: retry_after,
            why,
        },
        401 | 403 | 404 | 407 => {
            tracing::error!(signal = signal.as_str(), status = status.as_u16(), why = %why, "collector refuses us: check otlp.endpoint and otlp headers; records stay queued");
            Outcome::Retry { after: None, why }
        }
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

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, ForwarderError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let key = HeaderName::try_from(name.as_str())
            .map_err(|_| ForwarderError::HeaderName { name: name.clone() })?;
        let mut val = HeaderValue::try_from(value.as_str())
            .map_err(|_| ForwarderError::HeaderValue { name: name.clone() })?;
        val.set_sensitive(true);
        map.insert(key, val);
    }
    Ok(map)
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    enc.write_all(body)?;
    enc.finish()
}

async fn read_capped(mut response: reqwest::Response) -> Vec<u8> {
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Applies the age bound every `every` until cancelled.
pub async fn run_expiry(
    outbox: Arc<Outbox>,
    every: Duration,
    beacon: Beacon,
    cancel: CancellationToken,
) {
    loop {
        beacon.busy_for(every + DB_STEP);
        let ob = outbox.clone();
        match tokio::task::spawn_blocking(move || ob.expire(SystemTime::now())).await {
            Ok(Ok(gone)) if gone.records > 0 => tracing::warn!(
                records = gone.records,
                items = gone.items,
                "dropped outbox records older than outbox.max_age"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "outbox age check failed"),
            Err(e) => tracing::error!(error = %e, "outbox age check panicked"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn classification_follows_otlp_http() {
        let c = |code: u16| {
            classify(
                Signal::Logs,
                StatusCode::from_u16(code).unwrap(),
                None,
                false,
                b"",
            )
        };
        assert!(matches!(
            c(200),
            Outcome::Delivered {
                rejected_items: 0,
                ..
            }
        ));
        for code in [429, 502, 503, 504, 401, 403, 404] {
            assert!(matches!(c(code), Outcome::Retry { .. }), "{code}");
        }
        for code in [400, 413, 500] {
            assert!(matches!(c(code), Outcome::Permanent { .. }), "{code}");
        }
    }

    #[test]
    fn partial_success_is_read_from_protobuf_answers() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;
        let body = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            classify(Signal::Logs, StatusCode::OK, None, true, &body),
            Outcome::Delivered {
                rejected_items: 3,
                message: "too old".into()
            }
        );
    }

    #[test]
    fn server_delay_wins_over_a_shorter_backoff() {
        let opts = ForwarderOptions {
            endpoint: Url::parse("http://127.0.0.1:1").unwrap(),
            headers: vec![],
            timeout: Duration::from_secs(1),
            gzip: true,
            max_request_bytes: 1 << 20,
            batch_max_records: 8,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            idle_poll: Duration::from_secs(1),
        };
        let mut lane = Lane::new(&opts);
        assert_eq!(
            lane.next_delay(Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        let capped = lane.next_delay(Some(Duration::from_secs(86_400)));
        assert_eq!(capped, MAX_RETRY_AFTER);
        for _ in 0..50 {
            assert!(lane.next_delay(None) <= Duration::from_secs(4));
        }
    }
}
