//! Sorting SQLite's errors: corruption found while running (quarantine the
//! file, start fresh, count what it held as dropped) and a file system
//! that takes no writes (live mode).

use rusqlite::{Connection, ErrorCode, ffi};

use super::{Inner, KEEP_CORRUPT, LeftBehind, Outbox, OutboxError, load_totals, spec};
use crate::sqlite;

/// SQLITE_CORRUPT or SQLITE_NOTADB, on a read or a write.
pub(super) fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// The file system takes no more writes: full (ENOSPC is SQLITE_FULL),
/// over quota (EDQUOT surfaces as a failed write), remounted read-only
/// (EROFS as a failed write, or SQLITE_READONLY).
pub(crate) fn is_unwritable(e: &rusqlite::Error) -> bool {
    let rusqlite::Error::SqliteFailure(err, _) = e else {
        return false;
    };
    match err.code {
        ErrorCode::DiskFull | ErrorCode::ReadOnly => true,
        ErrorCode::SystemIoFailure => matches!(
            err.extended_code,
            ffi::SQLITE_IOERR_WRITE
                | ffi::SQLITE_IOERR_FSYNC
                | ffi::SQLITE_IOERR_DIR_FSYNC
                | ffi::SQLITE_IOERR_TRUNCATE
                | ffi::SQLITE_IOERR_SHMSIZE
                | ffi::SQLITE_IOERR_SHMMAP
        ),
        _ => false,
    }
}

impl OutboxError {
    /// True when the error means "no room to write", not a bug or a lock.
    pub fn is_unwritable(&self) -> bool {
        matches!(self, OutboxError::Sqlite { source, .. } if is_unwritable(source))
    }
}

impl Outbox {
    /// Moves the corrupt file aside and continues on a fresh one, as at
    /// start-up. The records still queued stay in the moved file; the
    /// cached totals say how many, and they are counted as dropped
    /// (`corrupt`) in the fresh one.
    pub(super) fn recover(
        &self,
        inner: &mut Inner,
        cause: &rusqlite::Error,
    ) -> Result<(), OutboxError> {
        let path = &self.opts.path;
        let left = LeftBehind::from_totals(&inner.totals);
        let placeholder = Connection::open_in_memory().map_err(|e| self.sql(e))?;
        // Closed before the rename, so no handle writes into the moved file.
        if let Err((conn, e)) = std::mem::replace(&mut inner.conn, placeholder).close() {
            tracing::warn!(error = %e, "closing the corrupt outbox failed; dropping it");
            drop(conn);
        }
        let fresh = || -> Result<_, OutboxError> {
            let moved = sqlite::quarantine(path)?;
            Ok((moved, sqlite::open_checked(path, &spec(&self.pragmas))?))
        };
        let (moved, conn) = match fresh() {
            Ok(done) => done,
            Err(e) => {
                // Not left on the empty in-memory placeholder, where every
                // later commit would fail as "no such table" and never go
                // live: back on the file, whose next error says what it is
                // (a full disk goes live; corruption tries this once more).
                if let Ok(back) = Connection::open(path) {
                    let _ = back.execute_batch(&self.pragmas);
                    inner.conn = back;
                }
                tracing::error!(path = %path.display(), error = %e, cause = %cause,
                    "outbox database found corrupt while running, and moving it aside failed");
                return Err(e);
            }
        };
        inner.totals = load_totals(&conn).map_err(|e| self.sql(e))?;
        // Ids above the old file's: a batch a lane has in flight is acked
        // (or rejected) by id, and must not hit the fresh file's records.
        if let Err(e) = conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('records', ?1)",
            [inner.high_id],
        ) {
            tracing::warn!(error = %e, above = inner.high_id,
                "cannot number the fresh outbox's records above the corrupt one's");
        }
        inner.conn = conn;
        inner.corruptions += 1;
        inner.drained = 0;
        let lost = left.total();
        inner.owe_corrupt(lost);
        tracing::error!(path = %path.display(), moved_to = %moved.display(), error = %cause,
            lost_records = lost.records, lost_items = lost.items, lost = %left,
            "outbox database found corrupt while running: moved it aside and started a fresh one; \
             the records queued in it are counted as dropped (reason corrupt)");
        for gone in sqlite::prune_quarantined(path, KEEP_CORRUPT) {
            tracing::warn!(deleted = %gone.display(), keep = KEEP_CORRUPT,
                "deleted an old quarantined outbox database");
        }
        Ok(())
    }
}
