//! Drains the outbox to an OTLP/HTTP collector, one lane per signal.
//!
//! Each lane sends the oldest records of its signal first and deletes them
//! only after a 2xx. While a backlog drains, several records go in one POST:
//! an OTLP export request has a single repeated field, and concatenated
//! protobuf encodings of a message merge their repeated fields, so the stored
//! bodies are joined byte for byte without decoding.
//!
//! # What each answer does
//!
//! The OTLP/HTTP specification (<https://opentelemetry.io/docs/specs/otlp/#failures-1>)
//! makes 429, 502, 503 and 504 retryable and every other 4xx/5xx final. We
//! follow it with two deliberate widenings: 401, 403, 404 and 407 are
//! configuration faults (credentials, a proxy, a collector with no pipeline
//! for the signal), not bad data, so the records wait for a person to fix
//! them instead of being moved aside; and 408 means the server gave up
//! waiting for our request, which says nothing about the data either.
//!
//! | answer | action | `result` label |
//! |---|---|---|
//! | 2xx | delete the records; count the items a `partial_success` refused (`partial_success` drops) | `ok` / `partial` |
//! | 429, 503 | keep, retry after `Retry-After` or our backoff, whichever is longer | `retry` |
//! | 502, 504, 408 | keep, retry with backoff (and `Retry-After` if given) | `retry` |
//! | 401, 403, 407 | keep, retry with backoff, alert: check `[otlp] headers` / the secret file | `retry` |
//! | 404 | keep, retry with backoff, alert: the collector has no pipeline for the signal | `retry` |
//! | 413 | split the request in halves and send them; a single record still too large is rejected | `split` (`rejected` for the single record) |
//! | other 4xx, 5xx | reject: a merged request is resent one record at a time, and the refused record moves to the `rejected` table, counted (`rejected` drops) | `rejected` |
//! | no answer within `otlp.timeout` | keep, retry with backoff (the collector may have taken it: at-least-once) | `retry`, status `timeout` |
//! | no connection | keep, retry with backoff | `retry`, status `none` |
//!
//! Every answer is counted in `benchtel_export_requests_total{signal,result,status}`.
//! Answers of one kind in a row are an *episode* ([`episode`]): logged once
//! when it starts, with the remedy, and once when a delivery ends it; while
//! it lasts it is kept in the outbox's `meta` table as `export.<signal>`, so
//! `benchtel-agent outbox status` shows it. "Keep" is within the outbox's
//! bounds: a long outage still ends in `max_bytes`/`max_age` drops, counted.

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
pub mod episode;
mod lane;
mod live;

use crate::systemd::Beacon;
use answer::read_capped;
pub use answer::{Answered, Outcome, classify, parse_retry_after};
use episode::Persist;
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
    /// An idle lane re-checks the database this often even without a
    /// wakeup: commits wake it, so this only finds rows another process
    /// added.
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
        let mut client = reqwest::Client::builder()
            .default_headers(header_map(&opts.headers)?)
            .timeout(opts.timeout)
            .user_agent(concat!("benchtel-agent/", env!("CARGO_PKG_VERSION")));
        if opts.endpoint.scheme() == "http" {
            // Plain HTTP verifies no certificate: don't load the system's
            // trust store at start (about 150 certificates, 200 KiB of RSS
            // for the agent's life); a redirect to https reads it on its
            // first handshake and verifies as usual. An https endpoint
            // keeps reqwest's eager path, so a machine without a store
            // stops the agent at start, naming the cause.
            client = client.tls_backend_preconfigured(crate::tls::lazy_roots_config());
        }
        let client = client.build()?;
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
    /// is unreachable or refuses. Never gives up on a record because of
    /// time. Its episodes ([`episode`]) log what is wrong.
    pub async fn run(self: Arc<Self>, signal: Signal, beacon: Beacon, cancel: CancellationToken) {
        let mut lane = Lane::new(&self.opts);
        // An episode a previous process left in `meta` would otherwise show
        // in `outbox status` for good: this lane knows nothing of it, so its
        // first delivery would not clear it. The first failure saves anew.
        let outbox = self.outbox.clone();
        let cleared =
            tokio::task::spawn_blocking(move || outbox.set_export_episode(signal, None)).await;
        if let Ok(Err(e)) = cleared {
            tracing::debug!(signal = signal.as_str(), error = %e, "cannot clear the export episode");
        }
        loop {
            beacon.busy_for(DB_STEP + self.opts.timeout);
            let step = tokio::select! {
                _ = cancel.cancelled() => return,
                step = self.step(signal, &mut lane) => step,
            };
            let wait = match step {
                Ok(Step::Progress) => {
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
        let batch = self
            .fetch(signal, lane.limit(self.opts.batch_max_records))
            .await?;
        if batch.is_empty() {
            return Ok(Step::Idle);
        }
        let (answered, outcome) = self.send(signal, &batch).await;
        self.count(signal, answered, &outcome, batch.len());
        let failed = match &outcome {
            Outcome::Delivered { .. } => None,
            Outcome::Retry { why, .. }
            | Outcome::Split { why }
            | Outcome::Permanent { why, .. } => Some(why.clone()),
        };
        let step = self.settle(signal, lane, &batch, outcome).await?;
        self.follow_episode(signal, lane, answered, failed).await;
        Ok(step)
    }

    /// The next batch. A lane that finds more records than the cached
    /// totals know of (replayed by `benchtel-agent outbox rejected replay`
    /// from another process) has the totals re-read first, so they stay
    /// exact and acks never count below zero.
    async fn fetch(&self, signal: Signal, limit: usize) -> Result<Vec<Record>, ForwarderError> {
        let outbox = self.outbox.clone();
        let max_bytes = self.opts.max_request_bytes;
        let batch = tokio::task::spawn_blocking(move || {
            let batch = outbox.fetch(signal, 0, limit, max_bytes)?;
            if outbox.queued(signal)? < batch.len() as u64 {
                outbox.reload_totals()?;
            }
            Ok::<_, OutboxError>(batch)
        })
        .await??;
        Ok(batch)
    }

    /// Acts on the outcome: delete, wait, split, isolate or move aside.
    async fn settle(
        &self,
        signal: Signal,
        lane: &mut Lane,
        batch: &[Record],
        outcome: Outcome,
    ) -> Result<Step, ForwarderError> {
        let (first_id, last_id) = match (batch.first(), batch.last()) {
            (Some(f), Some(l)) => (f.id, l.id),
            _ => return Ok(Step::Idle),
        };
        let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
        let s = signal.as_str();
        match outcome {
            Outcome::Delivered {
                rejected_items,
                message,
            } => {
                if rejected_items > 0 || !message.is_empty() {
                    tracing::warn!(signal = s, rejected_items, message = %message, "collector accepted the request only in part");
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
                tracing::debug!(signal = s, why = %why, "export will be retried");
                Ok(Step::Wait(after))
            }
            Outcome::Split { why } if ids.len() > 1 => {
                tracing::debug!(signal = s, why = %why, records = ids.len(), "request too large; sending it in halves");
                lane.narrow(ids.len() / 2, last_id);
                Ok(Step::Progress)
            }
            Outcome::Permanent { status, why } if ids.len() > 1 => {
                // One bad record must not take its neighbours down with it:
                // resend this stretch one record at a time.
                tracing::warn!(signal = s, status, why = %why, first_id, last_id, "merged request refused; retrying its records one by one");
                lane.narrow(1, last_id);
                Ok(Step::Progress)
            }
            Outcome::Split { why } => self.move_aside(signal, lane, ids, 413, why).await,
            Outcome::Permanent { status, why } => {
                self.move_aside(signal, lane, ids, status, why).await
            }
        }
    }

    /// Moves a record the collector will never take to the `rejected`
    /// table, counted.
    async fn move_aside(
        &self,
        signal: Signal,
        lane: &mut Lane,
        ids: Vec<i64>,
        status: u16,
        why: String,
    ) -> Result<Step, ForwarderError> {
        let (first, last) = (ids.first().copied(), ids.last().copied().unwrap_or(0));
        tracing::error!(signal = signal.as_str(), status, why = %why, record = first,
            "collector refused a record for good; moved aside to the outbox's rejected table \
             (`benchtel-agent outbox rejected list`)");
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || outbox.reject(signal, &ids, status, &why)).await??;
        lane.passed(last);
        Ok(Step::Progress)
    }

    /// Most records and bytes merged into one request.
    pub(crate) fn batch_bounds(&self) -> (usize, u64) {
        (self.opts.batch_max_records, self.opts.max_request_bytes)
    }

    /// Posts the records as one request; what came back, and what it means.
    pub(crate) async fn send(&self, signal: Signal, batch: &[Record]) -> (Answered, Outcome) {
        let url = self.url(signal);
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
                // A connect that times out is no connection; a timeout
                // after connecting is a collector that does not answer.
                let answered = if e.is_timeout() && !e.is_connect() {
                    Answered::Timeout
                } else {
                    Answered::Unreachable
                };
                let why = match answered {
                    Answered::Timeout => format!("no answer within {:?}", self.opts.timeout),
                    _ => format!("{url}: {}", crate::tls::error_chain(&e)),
                };
                return (answered, Outcome::Retry { after: None, why });
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
        let outcome = classify(signal, status, retry_after, is_protobuf, &body);
        (Answered::Http(status.as_u16()), outcome)
    }

    fn url(&self, signal: Signal) -> String {
        format!(
            "{}{}",
            self.opts.endpoint.as_str().trim_end_matches('/'),
            signal.path()
        )
    }

    /// `benchtel_export_requests_total{signal,result,status}`.
    pub(crate) fn count(
        &self,
        signal: Signal,
        answered: Answered,
        outcome: &Outcome,
        records: usize,
    ) {
        let result = match outcome {
            Outcome::Delivered {
                rejected_items: 0, ..
            } => "ok",
            Outcome::Delivered { .. } => "partial",
            Outcome::Retry { .. } => "retry",
            Outcome::Split { .. } if records > 1 => "split",
            Outcome::Split { .. } | Outcome::Permanent { .. } => "rejected",
        };
        self.instruments.requests.add(
            1,
            &[
                KeyValue::new("signal", signal.as_str()),
                KeyValue::new("result", result),
                KeyValue::new("status", answered.label()),
            ],
        );
    }

    /// Starts, continues or ends the lane's episode (`failed`: the answer
    /// if it was no delivery) and persists it in the outbox's `meta`
    /// table; a failure to persist is only logged: the episode is the
    /// status's business, not the records'.
    async fn follow_episode(
        &self,
        signal: Signal,
        lane: &mut Lane,
        answered: Answered,
        failed: Option<String>,
    ) {
        // A part delivered while the lane still splits or isolates records
        // does not end the 413 or rejection that made it do so.
        if failed.is_none() && lane.narrowed() {
            return;
        }
        let (delivered, message) = (failed.is_none(), failed.unwrap_or_default());
        let url = self.url(signal);
        let now = SystemTime::now();
        let persist = episode::follow(
            &mut lane.episode,
            signal,
            &url,
            answered,
            delivered,
            &message,
            now,
        );
        let value = match persist {
            Persist::Nothing => return,
            Persist::Save(e) => Some(e),
            Persist::Clear => None,
        };
        let outbox = self.outbox.clone();
        let saved =
            tokio::task::spawn_blocking(move || outbox.set_export_episode(signal, value.as_ref()))
                .await;
        if let Ok(Err(e)) = saved {
            tracing::debug!(signal = signal.as_str(), error = %e, "cannot persist the export episode");
        }
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
