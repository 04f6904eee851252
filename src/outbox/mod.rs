//! The durable outbox: every signal the agent produces is committed here
//! before anything tries to send it, and leaves only when a collector has
//! answered 2xx.
//!
//! # Invariants
//!
//! 1. **Committed means durable.** [`Outbox::append_batch`] returns only after
//!    the SQLite transaction has committed. The database runs in WAL mode with
//!    `synchronous=FULL` by default, so a committed record survives `kill -9`
//!    and power loss. Producers (the OpenTelemetry SDK exporters in
//!    [`exporter`]) report success to the SDK only after that.
//! 2. **At least once, in order.** The [`forwarder`] reads the oldest records
//!    of one signal, sends them, and deletes them only after a 2xx answer. A
//!    crash between the answer and the delete re-sends that one batch: at most
//!    one in-flight batch is ever duplicated. Records of one signal leave in
//!    id order, because Prometheus rejects out-of-order samples of a series.
//! 3. **Nothing vanishes uncounted.** A permanent rejection (a non-retryable
//!    4xx) moves the record to the `rejected` table and counts it. The byte
//!    bound drops the oldest records first, the age bound drops records older
//!    than `max_age`, a `partial_success` answer counts the items the
//!    collector refused. Every such loss is a row in `drops` (by reason,
//!    in records and in items), updated in the same transaction as the loss
//!    itself, so the counters are exact and survive restarts.
//! 4. **Corrupt state is quarantined, never crash-looped on.** If the file is
//!    not a database, fails `PRAGMA quick_check`, or carries an unknown schema,
//!    it is renamed aside (`outbox.db.corrupt-<unix seconds>`, with its `-wal`
//!    and `-shm` files) and a fresh database is started; the caller logs it
//!    and the `corruptions` counter goes up.
//! 5. **Memory stays flat.** Nothing is held in memory but running totals;
//!    the forwarder streams from disk in batches bounded by records and bytes.
//!
//! # On-disk schema (version 1)
//!
//! ```sql
//! meta     (key TEXT PRIMARY KEY, value TEXT)            -- schema_version
//! records  (id INTEGER PRIMARY KEY AUTOINCREMENT,         -- never reused: global order
//!           signal INTEGER,                               -- 1 metrics, 2 logs, 3 traces
//!           created_ms INTEGER,                           -- wall clock at commit, for max_age
//!           items INTEGER,                                -- data points / log records / spans
//!           body BLOB)                                    -- one encoded OTLP Export*ServiceRequest
//! rejected (id, signal, created_ms, rejected_ms, status, reason, items, body)
//! drops    (reason TEXT PRIMARY KEY, records INTEGER, items INTEGER)
//! ```
//!
//! `body` is the protobuf encoding of one `ExportMetricsServiceRequest`,
//! `ExportLogsServiceRequest` or `ExportTraceServiceRequest`, uncompressed.
//! The forwarder merges several of them into one request while draining a
//! backlog. The byte bound counts `length(body)`; SQLite's own page overhead
//! and the WAL come on top of it.

pub mod exporter;
pub mod forwarder;
pub mod live;
pub mod self_metrics;
mod signal;
mod status;
mod store;

pub use live::{DiskState, Episode};
pub use signal::{DropReason, Signal};
pub use status::{DropCount, SignalStats, Status, StatusReport};
pub use store::{
    Committed, KEEP_CORRUPT, NewRecord, OpenReport, Outbox, OutboxError, Record, StoreOptions,
    Synchronous, not_before_ms,
};
