//! A lane's own state: its backoff, and which records it sends one by one.

use std::time::Duration;

use backon::BackoffBuilder;

use super::ForwarderOptions;

/// A `Retry-After` longer than this is treated as this: a misbehaving proxy
/// must not park the queue for a day.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

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

    pub(super) fn isolating(&self) -> bool {
        self.sent_through < self.isolate_through
    }

    pub(super) fn isolate_through(&mut self, id: i64) {
        self.isolate_through = id;
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
