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
//!    [`exporter`]) report success to the SDK only after that — or, while
//!    the disk takes no writes (6), once the record is queued in memory.
//!    The commit path is under the systemd watchdog (beacon `commit`): a
//!    commit that hangs past 30 s stops the pings.
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
//!    itself, so the counters are exact and survive restarts — except the
//!    losses of a full-disk episode (6), held in memory until the disk
//!    takes a commit again. The records a corrupt file takes with it
//!    (4, 7) are counted as `corrupt`. `benchtel-agent outbox rejected replay` puts a
//!    rejected record back at the end of the queue (a new id, `created_ms`
//!    = the replay time, so `max_age` counts from then); the `rejected`
//!    count is never lowered, and replays and `outbox drop --rejected` are
//!    counted apart, in `meta`. Those commands write from a second process
//!    beside the running agent (WAL allows it); a lane that finds more
//!    records than the agent's cached totals know re-reads them.
//! 4. **Corrupt state is quarantined, never crash-looped on.** If the file is
//!    not a database, fails `PRAGMA quick_check`, or carries an unknown schema,
//!    it is renamed aside (`outbox.db.corrupt-<unix seconds>`, with its `-wal`
//!    and `-shm` files) and a fresh database is started; the caller logs it
//!    and the `corruptions` counter goes up. The records still queued in
//!    the moved file are lost to the agent: it reads the moved file
//!    read-only with the query of the cached totals, and counts what it
//!    finds, per signal in the log line, as `corrupt` drops in the fresh
//!    file. A file too damaged to count (not a database at all, say) is
//!    logged as losing an unknown number, and nothing is counted. The drop
//!    counters of the moved file stay in it: the fresh file's start at
//!    zero, which Prometheus reads as a counter reset.
//! 5. **Memory stays flat.** Nothing is held in memory but running totals;
//!    the forwarder streams from disk in batches bounded by records and bytes.
//!    The one exception is live mode's queue, bounded by `live_max_bytes`
//!    and 4096 records.
//! 6. **A full disk degrades, it does not lose silently.** When a commit
//!    fails because the file system takes no writes (SQLITE_FULL for ENOSPC,
//!    a failed write for EDQUOT or EROFS, SQLITE_READONLY), the outbox goes
//!    *live* ([`live`]): records wait in memory and the lanes send them
//!    straight to the collector, before any durable backlog, which waits on
//!    disk (deleting from it would need the missing space). The SDK is told
//!    `Ok`: any loss is ours to count. A record pushed out of the full queue,
//!    or refused by the collector, is counted in memory (`disk_full`,
//!    `rejected`) and written into `drops` by the first commit that succeeds.
//!    Every 2 s one commit tries the disk with the whole queue in front of
//!    its record; when it holds, the outbox is durable again, the episode's
//!    summary goes into `meta` and the WAL is checkpointed and truncated.
//!    The WAL never outgrows 4 MiB after a checkpoint (`journal_size_limit`).
//! 7. **Corruption found while running is survived once, not looped on.**
//!    SQLITE_CORRUPT or SQLITE_NOTADB on any read or write quarantines the
//!    file as in 4 and the operation runs once more on the fresh file. What
//!    was queued in it, as the cached totals (records and items per signal)
//!    knew it, is counted as `corrupt` drops in the fresh file and logged
//!    once with the numbers; a commit of the count that fails keeps it in
//!    memory (shown by `status`) until the next commit that holds carries
//!    it. A batch a lane had in flight is counted too, even if its answer
//!    comes back 2xx: over-counted, never lost uncounted; the fresh file
//!    numbers its records above the ids fetched from the old one, so that
//!    batch's late ack deletes none of them. The newest
//!    [`KEEP_CORRUPT`] quarantined files are kept; older ones are deleted,
//!    each deletion logged.
//! 8. **Drained space goes back to the file system.** The file runs with
//!    `auto_vacuum = INCREMENTAL` (a file from before is converted by one
//!    `VACUUM` at open when it is at most 64 MiB; a larger one at a later
//!    start). At the periodic expiry pass (every minute, off the lanes'
//!    path), once the queue is empty and at least 1 MiB was deleted since
//!    the last time (or 64 MiB without draining), `incremental_vacuum` runs
//!    in 4 MiB steps for at most 10 s (the rest at the next pass) and a
//!    checkpoint cuts the file.
//! 9. **`max_age` trusts only a plausible clock.** A record stamped in the
//!    future (the clock stepped back) or before the agent's build date
//!    ([`not_before_ms`]: a board without RTC booting at 1970) is re-stamped
//!    with the time of the first expiry pass that sees it with a trusted
//!    clock, and kept its full `max_age` from then. While the clock itself
//!    reads before the build date, nothing expires.
//!
//! # On-disk schema (version 1)
//!
//! ```sql
//! -- PRAGMA auto_vacuum = INCREMENTAL, journal_mode = WAL
//! meta     (key TEXT PRIMARY KEY, value TEXT)            -- schema_version; disk_full.last
//!                                                        -- (JSON: since_ms, ended_ms, cause, lost);
//!                                                        -- export.<signal>: the current export
//!                                                        -- episode (JSON, see forwarder);
//!                                                        -- rejected.replayed, rejected.cleared
//!                                                        -- (JSON: records, items)
//! records  (id INTEGER PRIMARY KEY AUTOINCREMENT,         -- never reused: global order
//!           signal INTEGER,                               -- 1 metrics, 2 logs, 3 traces
//!           created_ms INTEGER,                           -- wall clock at commit, for max_age
//!           items INTEGER,                                -- data points / log records / spans
//!           body BLOB)                                    -- one encoded OTLP Export*ServiceRequest
//! rejected (id, signal, created_ms, rejected_ms, status, reason, items, body)
//! drops    (reason TEXT PRIMARY KEY, records INTEGER, items INTEGER)
//!                                                        -- max_bytes, max_age, rejected,
//!                                                        -- partial_success, too_large,
//!                                                        -- disk_full, corrupt
//! ```
//!
//! `auto_vacuum` is a property of the file, not of the schema: converting
//! it (8) leaves the version at 1, and an older agent reads the file as
//! before (it ignores `disk_full.last`, and a `drops` reason it does not
//! know, such as `corrupt`).
//!
//! `body` is the protobuf encoding of one `ExportMetricsServiceRequest`,
//! `ExportLogsServiceRequest` or `ExportTraceServiceRequest`, uncompressed.
//! The forwarder merges several of them into one request while draining a
//! backlog; while no collector answers at all, each retry carries one, since
//! it only finds out whether one does. The byte bound counts `length(body)`; SQLite's own page overhead
//! and the WAL come on top of it.

mod disk;
pub mod exporter;
pub mod forwarder;
pub mod live;
pub mod self_metrics;
mod signal;
mod status;
mod store;

pub use live::{DiskState, Episode};
pub use signal::{DropReason, Signal};
pub use status::{
    DropCount, ExportEpisode, ExportReport, MovedCount, SignalStats, Status, StatusReport,
};
pub use store::{
    BodySummary, Committed, KEEP_CORRUPT, LeftBehind, NewRecord, OpenReport, Outbox, OutboxError,
    Record, RejectedDetail, RejectedRecord, StoreOptions, Synchronous, not_before_ms,
};
