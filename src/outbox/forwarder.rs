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

use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{DropReason, Outbox, OutboxError, Record, Signal};

mod answer;
mod lane;
mod live;

use crate::systemd::Beacon;
use answer::read_capped;
pub use answer::{Outcome, classify, parse_retry_after};
pub use lane::Lane;

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
        if let Some(step) = live::step(self, self.outbox.live(), signal).await {
            return Ok(step);
        }
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

    /// Most records and bytes merged into one request.
    pub(crate) fn batch_bounds(&self) -> (usize, u64) {
        (self.opts.batch_max_records, self.opts.max_request_bytes)
    }

    pub(crate) async fn send(&self, signal: Signal, batch: &[Record]) -> Outcome {
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

    pub(crate) fn count(&self, signal: Signal, outcome: &Outcome) {
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
mod tests;
