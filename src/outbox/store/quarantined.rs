//! What a corrupt outbox file takes with it when it is moved aside (rules 4
//! and 7 of the module essay), and what [`Outbox::open`](super::Outbox::open)
//! reports of it. The records still queued in the moved file are never
//! delivered from there, so they are counted as dropped, reason `corrupt`,
//! in the fresh file's `drops`, and logged once with their numbers.
//!
//! While running, the cached totals say exactly what was queued. At open
//! nothing is cached yet: the moved file is read, read-only, with the
//! query the totals use; a file too damaged for that loses an unknown
//! number of records, which the log line says.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{
    DropCount, DropReason, Inner, KEEP_CORRUPT, Signal, SignalStats, add_drop, load_totals,
};
use crate::sqlite;

/// What [`Outbox::open`](super::Outbox::open) found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Where a corrupt database was moved, with what was wrong with it.
    pub quarantined: Option<(PathBuf, String)>,
    /// What the moved file still held (counted as dropped, `corrupt`).
    pub left_behind: Option<LeftBehind>,
    /// Older quarantined files deleted to keep [`KEEP_CORRUPT`].
    pub pruned: Vec<PathBuf>,
}

/// The records still queued in a quarantined file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftBehind {
    /// Counted, per signal; counted as dropped, reason `corrupt`.
    Counted(BTreeMap<Signal, DropCount>),
    /// The file could not be read to count them (SQLite's error): an
    /// unknown number, none counted.
    Unknown(String),
}

impl LeftBehind {
    /// What the cached totals (or the same query on the moved file) say.
    pub(super) fn from_totals(totals: &[SignalStats; 3]) -> LeftBehind {
        LeftBehind::Counted(
            Signal::ALL
                .into_iter()
                .map(|s| {
                    let t = totals[s.index()];
                    let n = DropCount {
                        records: t.records,
                        items: t.items,
                    };
                    (s, n)
                })
                .collect(),
        )
    }

    /// Reads what the quarantined file at `moved` still holds. Read-only:
    /// the file stays as it was found (a read-only connection never
    /// checkpoints its WAL into it). No time bound beyond SQLite's own:
    /// `quick_check` has just read every page of the file anyway.
    pub(super) fn count(moved: &Path) -> LeftBehind {
        let counted = Connection::open_with_flags(moved, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|conn| load_totals(&conn));
        match counted {
            Ok(totals) => LeftBehind::from_totals(&totals),
            Err(e) => LeftBehind::Unknown(e.to_string()),
        }
    }

    /// All signals together; nothing when unknown.
    pub fn total(&self) -> DropCount {
        match self {
            LeftBehind::Counted(per_signal) => {
                per_signal
                    .values()
                    .fold(DropCount::default(), |acc, n| DropCount {
                        records: acc.records + n.records,
                        items: acc.items + n.items,
                    })
            }
            LeftBehind::Unknown(_) => DropCount::default(),
        }
    }
}

/// `12 records / 340 items (metrics 10 / 300, logs 2 / 40, traces 0 / 0)`,
/// or `unknown (<why>)`.
impl fmt::Display for LeftBehind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeftBehind::Counted(per_signal) => {
                let all = self.total();
                write!(f, "{} records / {} items (", all.records, all.items)?;
                for (i, (signal, n)) in per_signal.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{} {} / {}", signal.as_str(), n.records, n.items)?;
                }
                write!(f, ")")
            }
            LeftBehind::Unknown(why) => write!(f, "unknown (cannot read the file: {why})"),
        }
    }
}

impl Inner {
    /// Owes `lost` as `corrupt` drops and writes them into the (fresh)
    /// file at once. If that commit fails they stay owed, and the next
    /// commit that holds writes them (see `Outbox::write`).
    pub(super) fn owe_corrupt(&mut self, lost: DropCount) {
        self.unwritten.records += lost.records;
        self.unwritten.items += lost.items;
        if self.unwritten == DropCount::default() {
            return;
        }
        let owed = self.unwritten;
        let written = self.conn.transaction().and_then(|tx| {
            add_drop(&tx, DropReason::Corrupt, owed)?;
            tx.commit()
        });
        match written {
            Ok(()) => self.unwritten = DropCount::default(),
            Err(e) => tracing::warn!(error = %e, records = owed.records, items = owed.items,
                "cannot write the corrupt outbox's losses into the fresh one yet; \
                 they are kept in memory and written by the next commit that holds"),
        }
    }
}

impl OpenReport {
    /// What opening the outbox at `path` found, once `quarantined` (if
    /// anything) was moved aside: what it held, and the older quarantined
    /// files pruned.
    pub(super) fn new(path: &Path, quarantined: Option<(PathBuf, String)>) -> OpenReport {
        // Counted before pruning: with a clock stepped back, the file just
        // moved may be the oldest.
        let left_behind = quarantined
            .as_ref()
            .map(|(moved, _)| LeftBehind::count(moved));
        let pruned = match quarantined {
            Some(_) => sqlite::prune_quarantined(path, KEEP_CORRUPT),
            None => Vec::new(),
        };
        OpenReport {
            quarantined,
            left_behind,
            pruned,
        }
    }

    /// Logs what the open found: a quarantined file (with what it took
    /// with it) and older quarantined files deleted. The caller logs it,
    /// once its logging is set up; `path` is the outbox's.
    pub fn log(&self, path: &Path) {
        if let Some((moved, detail)) = &self.quarantined {
            let path = path.display();
            let moved = moved.display();
            match &self.left_behind {
                Some(left @ LeftBehind::Counted(_)) => {
                    let n = left.total();
                    tracing::error!(path = %path, moved_to = %moved,
                        lost_records = n.records, lost_items = n.items, lost = %left,
                        detail = %detail,
                        "outbox database was corrupt: moved it aside and started a fresh one; \
                         the records queued in it are counted as dropped (reason corrupt)");
                }
                Some(LeftBehind::Unknown(why)) => {
                    tracing::error!(path = %path, moved_to = %moved,
                        count_error = %why, detail = %detail,
                        "outbox database was corrupt: moved it aside and started a fresh one; \
                         it could not be read, so an unknown number of records queued in it \
                         are lost and not counted");
                }
                None => {
                    tracing::error!(path = %path, moved_to = %moved, detail = %detail,
                        "outbox database was corrupt: moved it aside and started a fresh one");
                }
            }
        }
        for gone in &self.pruned {
            tracing::warn!(deleted = %gone.display(), keep = KEEP_CORRUPT,
                "deleted an old quarantined outbox database");
        }
    }
}

#[cfg(test)]
mod tests;
