//! SQLite storage of the outbox; see the module essay in `outbox/mod.rs`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::live::{self, Live};
use crate::sqlite;

pub use super::signal::{DropReason, Signal};
pub(crate) use super::status::unix_ms;
pub use super::status::{DropCount, SignalStats, Status};
pub use episode::Committed;
pub use maintain::not_before_ms;
pub use quarantined::{LeftBehind, OpenReport};

mod episode;
mod maintain;
mod quarantined;
mod recover;
mod report;
#[cfg(test)]
mod test_hooks;

const SCHEMA_VERSION: &str = "1";
/// Quarantined (corrupt) outbox files kept beside the live one; older ones
/// are deleted, each deletion logged.
pub const KEEP_CORRUPT: usize = 3;
/// Rejected records kept for inspection; older ones are pruned (they were
/// counted when they were rejected).
const MAX_REJECTED_ROWS: i64 = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    signal INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    items INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_signal ON records (signal, id);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    signal INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    rejected_ms INTEGER NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    items INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS drops (
    reason TEXT PRIMARY KEY,
    records INTEGER NOT NULL,
    items INTEGER NOT NULL
);
";

/// SQLite's `synchronous` setting for the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync the WAL at every commit: nothing committed is lost on power loss.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a process crash, not power loss.
    Normal,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub synchronous: Synchronous,
    /// Bound of the in-memory queue of live mode (see [`super::live`]).
    pub live_max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot create the outbox directory {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move the corrupt outbox {path} aside to {to}: {source}")]
    Quarantine {
        path: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    /// Only [`Outbox::open_read_only`] says so: the agent creates it.
    #[error(
        "no outbox at {} yet: the agent has not run here, or its state is elsewhere \
         (STATE_DIRECTORY, outbox.path)",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("outbox {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("outbox {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("a {signal} record of {bytes} bytes exceeds the outbox bound of {max_bytes} bytes")]
    TooLarge {
        signal: &'static str,
        bytes: u64,
        max_bytes: u64,
    },
    #[error("the outbox lock was poisoned by a panic in another thread")]
    Poisoned,
}

impl From<sqlite::OpenError> for OutboxError {
    fn from(e: sqlite::OpenError) -> Self {
        use sqlite::OpenError as E;
        match e {
            E::CreateDir { dir, source } => OutboxError::CreateDir { dir, source },
            E::Quarantine { path, to, source } => OutboxError::Quarantine { path, to, source },
            E::Sqlite { path, source } => OutboxError::Sqlite { path, source },
            E::Corrupt { path, detail } => OutboxError::Corrupt { path, detail },
        }
    }
}

/// A record to commit: one encoded OTLP export request.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub signal: Signal,
    pub items: u64,
    pub body: Vec<u8>,
}

/// A committed record, as read back for forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: i64,
    pub signal: Signal,
    pub created_ms: i64,
    pub items: u64,
    pub body: Vec<u8>,
}

/// The outbox. Cheap operations under one lock: SQLite serialises writers
/// anyway, and the lock keeps the cached totals consistent with the file.
pub struct Outbox {
    opts: StoreOptions,
    inner: Mutex<Inner>,
    /// The `PRAGMA`s every connection runs; a fresh file after a runtime
    /// quarantine gets the same.
    pragmas: String,
    /// Opened for inspection: never quarantines nor writes.
    read_only: bool,
    live: Live,
}

struct Inner {
    conn: Connection,
    totals: [SignalStats; 3],
    corruptions: u64,
    /// Bytes deleted since the file last gave space back.
    drained: u64,
    /// `corrupt` drops not yet written into `drops`: the fresh file took
    /// no commit yet (see [`Inner::owe_corrupt`]).
    unwritten: DropCount,
    /// The highest record id fetched: a fresh file numbers its records
    /// above it, so a lane's late ack of the old file's ids deletes none.
    high_id: i64,
}

impl Outbox {
    /// Opens (or creates) the outbox, quarantining a corrupt file.
    pub fn open(opts: StoreOptions) -> Result<(Outbox, OpenReport), OutboxError> {
        let pragmas = pragmas(opts.synchronous);
        let (conn, quarantined) = sqlite::open_or_quarantine(&opts.path, &spec(&pragmas))?;
        let report = OpenReport::new(&opts.path, quarantined);
        maintain::ensure_incremental_vacuum(&conn, &opts.path);
        let totals = load_totals(&conn).map_err(|e| sql_err(&opts.path, e))?;
        let mut inner = Inner {
            conn,
            totals,
            corruptions: u64::from(report.quarantined.is_some()),
            drained: 0,
            unwritten: DropCount::default(),
            high_id: 0,
        };
        if let Some(left) = &report.left_behind {
            inner.owe_corrupt(left.total());
        }
        let outbox = Outbox {
            inner: Mutex::new(inner),
            live: Live::new(opts.live_max_bytes),
            opts,
            pragmas,
            read_only: false,
        };
        Ok((outbox, report))
    }

    /// Opens the existing outbox at `path` for inspection only, beside a
    /// running agent: no schema changes, no quarantine, no writes (so no
    /// bounds to apply: its options are unbounded).
    pub fn open_read_only(path: &Path) -> Result<Outbox, OutboxError> {
        // SQLite would only say "unable to open database file" (thrice).
        if !path.try_exists().unwrap_or(true) {
            return Err(OutboxError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sql_err(path, e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| sql_err(path, e))?;
        Outbox::beside_agent(path, conn)
    }

    /// An outbox on a connection a command opened beside the running
    /// agent, which owns the file: no bounds to apply, no quarantine, no
    /// maintenance.
    pub(super) fn beside_agent(path: &Path, conn: Connection) -> Result<Outbox, OutboxError> {
        let totals = load_totals(&conn).map_err(|e| sql_err(path, e))?;
        Ok(Outbox {
            inner: Mutex::new(Inner {
                conn,
                totals,
                corruptions: 0,
                drained: 0,
                unwritten: DropCount::default(),
                high_id: 0,
            }),
            opts: StoreOptions {
                path: path.to_path_buf(),
                max_bytes: u64::MAX,
                max_age: Duration::MAX,
                synchronous: Synchronous::default(),
                live_max_bytes: live::DEFAULT_MAX_BYTES,
            },
            pragmas: String::new(),
            read_only: true,
            live: Live::new(live::DEFAULT_MAX_BYTES),
        })
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Commits records in one transaction, enforcing the byte bound; returns
    /// their ids. Returns only after the commit is durable.
    pub fn append_batch(&self, records: &[NewRecord]) -> Result<Vec<i64>, OutboxError> {
        let max_bytes = self.opts.max_bytes;
        if let Some(big) = records.iter().find(|r| r.body.len() as u64 > max_bytes) {
            let bytes = big.body.len() as u64;
            let signal = big.signal.as_str();
            self.count_drop(DropReason::TooLarge, 1, big.items)?;
            return Err(OutboxError::TooLarge {
                signal,
                bytes,
                max_bytes,
            });
        }
        let now = unix_ms(SystemTime::now());
        self.write(|tx, totals| {
            let rows = records.iter().map(|r| (r.signal, r.items, &r.body[..]));
            let ids = insert_records(tx, totals, rows, now)?;
            evict_for_bytes(tx, totals, max_bytes)?;
            Ok(ids)
        })
    }

    pub fn append(&self, record: NewRecord) -> Result<i64, OutboxError> {
        let ids = self.append_batch(std::slice::from_ref(&record))?;
        Ok(ids.first().copied().unwrap_or_default())
    }

    /// The oldest records of `signal` with id greater than `after`, at most
    /// `max_records` of them and, past the first, at most `max_bytes` in all.
    pub fn fetch(
        &self,
        signal: Signal,
        after: i64,
        max_records: usize,
        max_bytes: u64,
    ) -> Result<Vec<Record>, OutboxError> {
        let limit = i64::try_from(max_records).unwrap_or(i64::MAX);
        self.with_conn(|inner| {
            let mut stmt = inner.conn.prepare_cached(
                "SELECT id, created_ms, items, body FROM records
                 WHERE signal = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![signal.code(), after, limit])?;
            let mut out = Vec::new();
            let mut bytes = 0u64;
            while let Some(row) = rows.next()? {
                let body: Vec<u8> = row.get(3)?;
                if !out.is_empty() && bytes + body.len() as u64 > max_bytes {
                    break;
                }
                bytes += body.len() as u64;
                out.push(Record {
                    id: row.get(0)?,
                    signal,
                    created_ms: row.get(1)?,
                    items: to_u64(row.get(2)?),
                    body,
                });
            }
            let last = out.last().map_or(0, |r| r.id);
            inner.high_id = inner.high_id.max(last);
            Ok(out)
        })
    }

    /// Deletes delivered records. Ids that are already gone (evicted while
    /// in flight) are ignored.
    pub fn ack(&self, signal: Signal, ids: &[i64]) -> Result<(), OutboxError> {
        self.write(|tx, totals| {
            let mut del = tx.prepare_cached(
                "DELETE FROM records WHERE id = ?1 AND signal = ?2 RETURNING length(body), items",
            )?;
            for id in ids {
                let gone: Option<(i64, i64)> = del
                    .query_row(params![id, signal.code()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((len, items)) = gone {
                    forget_row(totals, signal.code(), len, items);
                }
            }
            Ok(())
        })
    }

    /// Moves permanently refused records aside and counts them.
    pub fn reject(
        &self,
        signal: Signal,
        ids: &[i64],
        status: u16,
        reason: &str,
    ) -> Result<(), OutboxError> {
        let now = unix_ms(SystemTime::now());
        self.write(|tx, totals| {
            let mut moved = DropCount::default();
            {
                let mut mv = tx.prepare_cached(
                    "INSERT INTO rejected (id, signal, created_ms, rejected_ms, status, reason, items, body)
                     SELECT id, signal, created_ms, ?2, ?3, ?4, items, body FROM records
                     WHERE id = ?1 AND signal = ?5",
                )?;
                let mut del = tx.prepare_cached(
                    "DELETE FROM records WHERE id = ?1 AND signal = ?2 RETURNING length(body), items",
                )?;
                for id in ids {
                    mv.execute(params![id, now, status, reason, signal.code()])?;
                    let gone: Option<(i64, i64)> = del
                        .query_row(params![id, signal.code()], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    if let Some((len, items)) = gone {
                        forget_row(totals, signal.code(), len, items);
                        moved.records += 1;
                        moved.items += to_u64(items);
                    }
                }
            }
            add_drop(tx, DropReason::Rejected, moved)?;
            tx.execute(
                "DELETE FROM rejected WHERE id NOT IN
                 (SELECT id FROM rejected ORDER BY id DESC LIMIT ?1)",
                params![MAX_REJECTED_ROWS],
            )?;
            Ok(())
        })
    }

    /// Counts a loss that happened outside the table (e.g. items refused in
    /// a `partial_success` answer).
    pub fn count_drop(
        &self,
        reason: DropReason,
        records: u64,
        items: u64,
    ) -> Result<(), OutboxError> {
        self.write(|tx, _| add_drop(tx, reason, DropCount { records, items }))
    }

    /// Queued records and bytes without touching the file (for gauges).
    pub fn totals(&self) -> Result<SignalStats, OutboxError> {
        let inner = self.lock()?;
        Ok(inner
            .totals
            .iter()
            .fold(SignalStats::default(), |acc, t| SignalStats {
                records: acc.records + t.records,
                bytes: acc.bytes + t.bytes,
                items: acc.items + t.items,
            }))
    }

    fn write<T>(
        &self,
        f: impl Fn(&Transaction<'_>, &mut [SignalStats; 3]) -> rusqlite::Result<T>,
    ) -> Result<T, OutboxError> {
        self.with_conn(|inner| {
            // Work on a copy so the cached totals change only if the commit does.
            let mut totals = inner.totals;
            let owed = inner.unwritten;
            let tx = inner.conn.transaction()?;
            let out = f(&tx, &mut totals)?;
            // A corrupt file's losses the fresh one could not take at once.
            add_drop(&tx, DropReason::Corrupt, owed)?;
            tx.commit()?;
            inner.unwritten = DropCount::default();
            let (before, after) = (bytes_of(&inner.totals), bytes_of(&totals));
            inner.drained += before.saturating_sub(after);
            inner.totals = totals;
            Ok(out)
        })
    }

    /// Runs `op` on the connection. A corrupt database found on the way is
    /// quarantined and replaced by a fresh one, and `op` runs once more on
    /// that: one failure, never a loop.
    fn with_conn<T>(
        &self,
        op: impl Fn(&mut Inner) -> rusqlite::Result<T>,
    ) -> Result<T, OutboxError> {
        let mut guard = self.lock()?;
        match op(&mut guard) {
            Err(e) if !self.read_only && recover::is_corrupt(&e) => {
                self.recover(&mut guard, &e)?;
                op(&mut guard).map_err(|e| self.sql(e))
            }
            r => r.map_err(|e| self.sql(e)),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, OutboxError> {
        self.inner.lock().map_err(|_| OutboxError::Poisoned)
    }

    fn sql(&self, source: rusqlite::Error) -> OutboxError {
        sql_err(&self.opts.path, source)
    }
}

fn sql_err(path: &Path, source: rusqlite::Error) -> OutboxError {
    OutboxError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// The `PRAGMA`s of the outbox's connection.
fn pragmas(synchronous: Synchronous) -> String {
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    // auto_vacuum first: it takes effect only before the first table. A
    // 128 KiB page cache (SQLite's default is 2 MiB): appends touch the
    // right edge of the table and its index, reads walk the index in order
    // and the OS page cache holds the file anyway, so a larger cache buys
    // little; on a bench the agent's RSS matters more, and a growing outbox
    // fills whatever cache it is given. journal_size_limit: after a
    // checkpoint the WAL is cut back to 4 MiB, whatever a burst made it.
    format!(
        "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = {sync}; PRAGMA cache_size = -128; PRAGMA journal_size_limit = 4194304;"
    )
}

fn spec(pragmas: &str) -> sqlite::Spec<'_> {
    sqlite::Spec {
        pragmas,
        schema: SCHEMA,
        version: SCHEMA_VERSION,
    }
}

fn bytes_of(totals: &[SignalStats; 3]) -> u64 {
    totals.iter().map(|t| t.bytes).sum()
}

/// Inserts `(signal, items, body)` rows stamped `now`; returns their ids.
fn insert_records<'a>(
    tx: &Transaction<'_>,
    totals: &mut [SignalStats; 3],
    rows: impl IntoIterator<Item = (Signal, u64, &'a [u8])>,
    now: i64,
) -> rusqlite::Result<Vec<i64>> {
    let mut ids = Vec::new();
    let mut insert = tx.prepare_cached(
        "INSERT INTO records (signal, created_ms, items, body) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (signal, items, body) in rows {
        insert.execute(params![signal.code(), now, to_i64(items), body])?;
        ids.push(tx.last_insert_rowid());
        let t = &mut totals[signal.index()];
        t.records += 1;
        t.bytes += body.len() as u64;
        t.items += items;
    }
    Ok(ids)
}

fn load_totals(conn: &Connection) -> rusqlite::Result<[SignalStats; 3]> {
    let mut totals = [SignalStats::default(); 3];
    let mut stmt = conn.prepare(
        "SELECT signal, count(*), coalesce(sum(length(body)), 0), coalesce(sum(items), 0)
         FROM records GROUP BY signal",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        if let Some(signal) = Signal::from_code(row.get(0)?) {
            totals[signal.index()] = SignalStats {
                records: to_u64(row.get(1)?),
                bytes: to_u64(row.get(2)?),
                items: to_u64(row.get(3)?),
            };
        }
    }
    Ok(totals)
}

/// Deletes the oldest records (of any signal) until the byte bound holds.
fn evict_for_bytes(
    tx: &Transaction<'_>,
    totals: &mut [SignalStats; 3],
    max_bytes: u64,
) -> rusqlite::Result<()> {
    let total: u64 = totals.iter().map(|t| t.bytes).sum();
    if total <= max_bytes {
        return Ok(());
    }
    let mut excess = total - max_bytes;
    let mut gone = DropCount::default();
    let mut last_id = None;
    {
        let mut stmt =
            tx.prepare_cached("SELECT id, signal, length(body), items FROM records ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while excess > 0 {
            let Some(row) = rows.next()? else { break };
            let len = to_u64(row.get(2)?);
            forget_row(totals, row.get(1)?, row.get(2)?, row.get(3)?);
            excess = excess.saturating_sub(len);
            gone.records += 1;
            gone.items += to_u64(row.get(3)?);
            last_id = Some(row.get::<_, i64>(0)?);
        }
    }
    if let Some(last) = last_id {
        tx.execute("DELETE FROM records WHERE id <= ?1", params![last])?;
    }
    add_drop(tx, DropReason::MaxBytes, gone)
}

fn forget_row(totals: &mut [SignalStats; 3], signal: i64, len: i64, items: i64) {
    if let Some(s) = Signal::from_code(signal) {
        let t = &mut totals[s.index()];
        t.records = t.records.saturating_sub(1);
        t.bytes = t.bytes.saturating_sub(to_u64(len));
        t.items = t.items.saturating_sub(to_u64(items));
    }
}

fn add_drop(tx: &Transaction<'_>, reason: DropReason, n: DropCount) -> rusqlite::Result<()> {
    if n.records == 0 && n.items == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO drops (reason, records, items) VALUES (?1, ?2, ?3)
         ON CONFLICT (reason) DO UPDATE SET
           records = records + excluded.records, items = items + excluded.items",
        params![reason.as_str(), to_i64(n.records), to_i64(n.items)],
    )?;
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

mod export;
mod rejected;

pub use rejected::{BodySummary, RejectedDetail, RejectedRecord};
#[cfg(test)]
mod tests;
