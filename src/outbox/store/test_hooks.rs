//! Ways for tests elsewhere in the crate to put a real outbox in the
//! states they need: a full file, a wedged operation.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Outbox, StoreOptions, Synchronous};

/// The store's lock held by another thread, as by a write hung on a dead
/// disk, until [`Wedge::release`] or its time is up.
pub(crate) struct Wedge {
    release: mpsc::Sender<()>,
    holder: JoinHandle<()>,
}

impl Wedge {
    pub(crate) fn release(self) {
        let _ = self.release.send(());
        self.holder.join().unwrap();
    }
}

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

    /// A 1 MiB outbox in `dir`, `synchronous = FULL`.
    pub(crate) fn in_dir(dir: &Path) -> Arc<Outbox> {
        let (outbox, _) = Outbox::open(StoreOptions {
            path: dir.join("outbox.db"),
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
            synchronous: Synchronous::Full,
            live_max_bytes: 1 << 20,
        })
        .unwrap();
        Arc::new(outbox)
    }

    /// Wedges the store: returns once another thread holds its lock, which
    /// it keeps for `at_most` unless released.
    pub(crate) fn wedge(self: &Arc<Self>, at_most: Duration) -> Wedge {
        let (release, wait) = mpsc::channel::<()>();
        let (held_tx, held) = mpsc::channel();
        let outbox = self.clone();
        let holder = std::thread::spawn(move || {
            let _inner = outbox.lock().unwrap();
            held_tx.send(()).unwrap();
            let _ = wait.recv_timeout(at_most);
        });
        held.recv().unwrap();
        Wedge { release, holder }
    }
}
