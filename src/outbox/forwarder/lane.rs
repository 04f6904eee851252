//! A lane's own state: its backoff, how many records it may merge into one
//! request for now (one by one after a rejection, halves after a 413), and
//! its current export episode.

use std::time::Duration;

use backon::BackoffBuilder;

use super::ForwarderOptions;
use super::episode::{Episode, Problem};

/// A `Retry-After` longer than this is treated as this: a misbehaving proxy
/// must not park the queue for a day.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A lane's own state: its backoff, its request size for now, its episode.
pub struct Lane {
    backoff: backon::ExponentialBackoff,
    /// Until the lane has passed record `narrow_through`, a request merges
    /// at most `narrow_to` records.
    narrow_to: usize,
    narrow_through: i64,
    sent_through: i64,
    pub(super) episode: Option<Episode>,
}

impl Lane {
    pub fn new(opts: &ForwarderOptions) -> Lane {
        Lane {
            backoff: backoff(opts),
            narrow_to: usize::MAX,
            narrow_through: 0,
            sent_through: 0,
            episode: None,
        }
    }

    /// Whether requests are split or isolated for now (an episode of 413s
    /// or rejections is not over while they are).
    pub(super) fn narrowed(&self) -> bool {
        self.sent_through < self.narrow_through
    }

    /// How many records the next request may merge. While nothing answers
    /// at all, each retry only finds out whether something does, so it
    /// carries one record: reading, merging and compressing a full batch
    /// (up to `otlp.max_request_bytes`) for every retry of a long outage
    /// cost CPU, and its buffers stayed in the heap between retries.
    pub(super) fn limit(&self, full: usize) -> usize {
        if self.episode.as_ref().map(|e| e.problem) == Some(Problem::Unreachable) {
            return 1;
        }
        if self.narrowed() {
            self.narrow_to.min(full).max(1)
        } else {
            full
        }
    }

    /// Sends the records up to `id` at most `to` at a time (and never more
    /// than a narrowing already in force).
    pub(super) fn narrow(&mut self, to: usize, id: i64) {
        if self.sent_through >= self.narrow_through {
            self.narrow_to = usize::MAX;
        }
        self.narrow_to = self.narrow_to.min(to.max(1));
        self.narrow_through = self.narrow_through.max(id);
    }

    pub(super) fn passed(&mut self, id: i64) {
        self.sent_through = id;
    }

    pub(super) fn reset_backoff(&mut self, opts: &ForwarderOptions) {
        self.backoff = backoff(opts);
    }

    /// The next backoff delay, but never shorter than the server asked.
    pub(super) fn next_delay(&mut self, at_least: Option<Duration>) -> Duration {
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
