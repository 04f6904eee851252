//! Keeping the file in shape: the age bound (with its clock rule), WAL
//! checkpoints, and giving freed pages back to the file system.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, params};

use super::{DropCount, DropReason, Outbox, OutboxError, add_drop, forget_row, to_u64, unix_ms};

/// A file at most this large is converted to `auto_vacuum = INCREMENTAL`
/// (one full `VACUUM`) when opened; a larger one waits for a start at
/// which it has drained, so a start is never held up for long.
const CONVERT_MAX_BYTES: u64 = 64 << 20;
/// Once the queue is empty, give the space back when at least this much
/// was deleted since the last time…
const SHRINK_AFTER_DRAIN: u64 = 1 << 20;
/// …and even without draining, when this much was.
const SHRINK_ALWAYS: u64 = 64 << 20;
/// Pages freed per `incremental_vacuum` step; the lock is released between
/// steps so commits are not held up by a long vacuum (4 MiB at 4 KiB pages).
const VACUUM_STEP_PAGES: i64 = 1024;
/// The periodic shrink stops after this long and goes on at the next pass,
/// so the expiry loop keeps its watchdog promise on a slow SD card.
const SHRINK_BUDGET: Duration = Duration::from_secs(10);

/// Wall-clock times before this are not trusted: the agent cannot have
/// been built before it, so a clock showing an earlier time was never set
/// (a board without RTC boots at 1970). `SOURCE_DATE_EPOCH` at build time
/// (seconds), else the date this rule was written.
pub fn not_before_ms() -> i64 {
    const FALLBACK_S: i64 = 1_793_491_200; // 2026-11-01T00:00:00Z
    option_env!("SOURCE_DATE_EPOCH")
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(FALLBACK_S)
        .saturating_mul(1000)
}

/// Converts an outbox created before incremental vacuum, if small enough.
pub(super) fn ensure_incremental_vacuum(conn: &Connection, path: &Path) {
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap_or(2);
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX);
    if mode == 2 || size > CONVERT_MAX_BYTES {
        return;
    }
    // Needs free space of about the file's size; without it the file stays
    // as it was and the next start tries again.
    if let Err(e) = conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;") {
        tracing::warn!(path = %path.display(), error = %e,
            "cannot switch the outbox to incremental vacuum now; it will not shrink until it can");
    }
}

impl Outbox {
    /// Drops records older than `max_age` at `now`; returns how many went.
    ///
    /// The clock rule: a record stamped in the future (the clock was
    /// stepped back since) or before [`not_before_ms`] (it was committed
    /// while the clock was unset) has no trustworthy age. It is re-stamped
    /// `now`, so its age counts from the first expiry pass that saw it with
    /// a trusted clock, and it is kept its full `max_age` from then. While
    /// `now` itself is before [`not_before_ms`], nothing expires at all.
    pub fn expire(&self, now: SystemTime) -> Result<DropCount, OutboxError> {
        let now_ms = unix_ms(now);
        let not_before = not_before_ms();
        if now_ms < not_before {
            return Ok(DropCount::default());
        }
        let cutoff = now_ms - i64::try_from(self.opts.max_age.as_millis()).unwrap_or(i64::MAX);
        let gone = self.write(|tx, totals| {
            tx.prepare_cached(
                "UPDATE records SET created_ms = ?1 WHERE created_ms > ?1 OR created_ms < ?2",
            )?
            .execute(params![now_ms, not_before])?;
            let mut gone = DropCount::default();
            {
                let mut del = tx.prepare_cached(
                    "DELETE FROM records WHERE created_ms < ?1 RETURNING signal, length(body), items",
                )?;
                let mut rows = del.query(params![cutoff])?;
                while let Some(row) = rows.next()? {
                    forget_row(totals, row.get(0)?, row.get(1)?, row.get(2)?);
                    gone.records += 1;
                    gone.items += to_u64(row.get(2)?);
                }
            }
            add_drop(tx, DropReason::MaxAge, gone)?;
            Ok(gone)
        })?;
        self.shrink_if_drained();
        Ok(gone)
    }

    /// Checkpoints the WAL into the main file and truncates it.
    pub fn checkpoint(&self) -> Result<(), OutboxError> {
        self.with_conn(|inner| inner.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))
    }

    /// Gives the free pages back to the file system; returns the bytes the
    /// files (database and WAL) shrank by.
    pub fn shrink(&self) -> Result<u64, OutboxError> {
        self.shrink_within(Duration::MAX)
    }

    /// [`Outbox::shrink`], stopping between steps once `budget` is spent;
    /// what is left is given back at a later call.
    pub fn shrink_within(&self, budget: Duration) -> Result<u64, OutboxError> {
        let started = Instant::now();
        let before = self.file_bytes();
        let free_pages = || -> Result<i64, OutboxError> {
            self.with_conn(|inner| {
                inner
                    .conn
                    .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            })
        };
        let mut free = free_pages()?;
        let vacuumed = free > 0;
        // Each step frees up to VACUUM_STEP_PAGES; stop when one frees none.
        while free > 0 {
            self.with_conn(|inner| {
                inner
                    .conn
                    .execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_STEP_PAGES});"))
            })?;
            let left = free_pages()?;
            if left >= free || started.elapsed() >= budget {
                free = left;
                break;
            }
            free = left;
        }
        // In WAL mode the file is cut at the checkpoint.
        if vacuumed {
            self.checkpoint()?;
        }
        if free == 0 {
            self.lock()?.drained = 0;
        }
        Ok(before.saturating_sub(self.file_bytes()))
    }

    /// Shrinks the file when enough was deleted; a failure is only logged
    /// (the space comes back at a later pass). Called by the periodic expiry
    /// pass, off the lanes' path, so a drain is not slowed by it.
    pub(super) fn shrink_if_drained(&self) {
        let due = match self.lock() {
            Ok(inner) => {
                let empty = inner.totals.iter().all(|t| t.records == 0);
                (empty && inner.drained >= SHRINK_AFTER_DRAIN) || inner.drained >= SHRINK_ALWAYS
            }
            Err(_) => false,
        };
        if !due || self.read_only {
            return;
        }
        let started = std::time::Instant::now();
        match self.shrink_within(SHRINK_BUDGET) {
            Ok(bytes) => {
                tracing::info!(bytes, took = ?started.elapsed(), "outbox gave drained space back to the file system")
            }
            Err(e) => tracing::warn!(error = %e, "outbox could not give drained space back"),
        }
    }

    /// The database and WAL file sizes.
    pub fn file_bytes(&self) -> u64 {
        let path = &self.opts.path;
        let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
        [path.as_path(), wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}
