//! What the outbox holds apart: the three OTLP signals, and the reasons
//! records leave it undelivered.

/// The three OTLP signals, each forwarded in its own order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    Metrics,
    Logs,
    Traces,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Logs, Signal::Traces];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }

    /// The OTLP/HTTP path this signal is posted to.
    pub fn path(self) -> &'static str {
        match self {
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
            Signal::Traces => "/v1/traces",
        }
    }

    pub(crate) fn code(self) -> i64 {
        match self {
            Signal::Metrics => 1,
            Signal::Logs => 2,
            Signal::Traces => 3,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Signal::Metrics => 0,
            Signal::Logs => 1,
            Signal::Traces => 2,
        }
    }

    pub(crate) fn from_code(code: i64) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// Why records left the outbox without being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The byte bound was hit; the oldest records went first.
    MaxBytes,
    /// Older than `max_age`.
    MaxAge,
    /// The collector refused the record permanently (non-retryable 4xx).
    Rejected,
    /// The collector accepted the request but refused some of its items.
    PartialSuccess,
    /// One record alone was larger than the byte bound.
    TooLarge,
    /// The outbox could not commit (full disk, read-only file system) and
    /// the record was not delivered live either.
    DiskFull,
    /// Still queued in an outbox file found corrupt, which was moved aside
    /// (rules 4 and 7 of the module essay): never delivered from there.
    Corrupt,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::MaxBytes,
        DropReason::MaxAge,
        DropReason::Rejected,
        DropReason::PartialSuccess,
        DropReason::TooLarge,
        DropReason::DiskFull,
        DropReason::Corrupt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MaxBytes => "max_bytes",
            DropReason::MaxAge => "max_age",
            DropReason::Rejected => "rejected",
            DropReason::PartialSuccess => "partial_success",
            DropReason::TooLarge => "too_large",
            DropReason::DiskFull => "disk_full",
            DropReason::Corrupt => "corrupt",
        }
    }
}
