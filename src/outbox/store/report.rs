//! The outbox's status: what the file holds, with what only this process
//! knows (losses of a full-disk episode or of a corrupt file not yet
//! written, the episode).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};

use super::super::live::{DiskState, Episode};
use super::{DropCount, DropReason, Outbox, OutboxError, Signal, Status, to_u64};

/// The `meta` key of the last full-disk episode (JSON of [`Episode`]).
pub(super) const LAST_EPISODE_KEY: &str = "disk_full.last";

impl Outbox {
    pub fn status(&self) -> Result<Status, OutboxError> {
        // The live lock is never taken under the store lock.
        let (pending, mut disk) = (self.live.pending(), self.live.state());
        let mut status = self.with_conn(|inner| {
            let (oldest, mut drops, rejected_kept, last) = read(&inner.conn)?;
            if inner.unwritten != DropCount::default() {
                let d = drops.entry(DropReason::Corrupt).or_default();
                d.records += inner.unwritten.records;
                d.items += inner.unwritten.items;
            }
            Ok(Status {
                per_signal: Signal::ALL
                    .into_iter()
                    .map(|s| (s, inner.totals[s.index()]))
                    .collect(),
                oldest_created_ms: oldest,
                drops,
                rejected_kept,
                corruptions: inner.corruptions,
                disk: DiskState {
                    last,
                    ..DiskState::default()
                },
            })
        })?;
        for (reason, n) in pending {
            let d = status.drops.entry(reason).or_default();
            d.records += n.records;
            d.items += n.items;
        }
        disk.last = status.disk.last.take();
        status.disk = disk;
        Ok(status)
    }

    /// This process's view of live mode, without touching the file.
    pub fn disk_state(&self) -> DiskState {
        self.live.state()
    }
}

type Read = (
    Option<i64>,
    BTreeMap<DropReason, DropCount>,
    u64,
    Option<Episode>,
);

fn read(conn: &Connection) -> rusqlite::Result<Read> {
    let oldest: Option<i64> = conn
        .query_row(
            "SELECT created_ms FROM records ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let mut drops = BTreeMap::new();
    {
        let mut stmt = conn.prepare_cached("SELECT reason, records, items FROM drops")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let reason: String = row.get(0)?;
            if let Some(r) = DropReason::ALL.into_iter().find(|r| r.as_str() == reason) {
                drops.insert(
                    r,
                    DropCount {
                        records: to_u64(row.get(1)?),
                        items: to_u64(row.get(2)?),
                    },
                );
            }
        }
    }
    let rejected_kept: i64 = conn.query_row("SELECT count(*) FROM rejected", [], |r| r.get(0))?;
    let last: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [LAST_EPISODE_KEY],
            |r| r.get(0),
        )
        .optional()?;
    let last = last.and_then(|v| serde_json::from_str(&v).ok());
    Ok((oldest, drops, to_u64(rejected_kept), last))
}
