//! Ways for tests elsewhere in the crate to put a real outbox in the
//! states they need: a full file, a wedged operation.

use super::Outbox;

impl Outbox {
    /// Caps the file at its current size, as a full disk would (SQLite
    /// then answers SQLITE_FULL); `None` lifts the cap.
    pub(crate) fn cap_pages(&self, cap: Option<u64>) {
        let n = cap.unwrap_or(u32::MAX as u64);
        let inner = self.lock().unwrap();
        let _: i64 = inner
            .conn
            .query_row(&format!("PRAGMA max_page_count = {n}"), [], |r| r.get(0))
            .unwrap();
    }

    /// Holds the store's lock while `f` runs, as a wedged operation would.
    pub(crate) fn hold_lock_while(&self, f: impl FnOnce()) {
        let _inner = self.lock().unwrap();
        f();
    }
}
