//! Live mode: what the outbox does while it cannot commit (a full disk, a
//! quota, a file system remounted read-only).
//!
//! New records go into a small queue in memory, bounded by bytes and by
//! records, and the forwarder lanes send them straight to the collector
//! whenever it answers. A record pushed out of a full queue is lost and
//! counted (`disk_full`); the counts wait here until a commit succeeds and
//! writes them into `drops`. Every [`PROBE_EVERY`] one commit tries the disk
//! again, with the whole queue in front of its record, so what was not yet
//! delivered becomes durable in order the moment there is room.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

pub use super::disk::{DiskState, Episode, Lost};
use super::status::{DropCount, unix_ms};
use super::{DropReason, NewRecord, Record, Signal};

/// How often a commit in live mode tries the disk again.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// The queue's bound in records, whatever their size.
pub const MAX_RECORDS: usize = 4096;
/// The queue's default bound in bytes (`outbox.live_max_bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

/// The queue and the episode, behind one lock taken only briefly.
pub struct Live {
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    episode: Option<Episode>,
    queue: VecDeque<Record>,
    bytes: u64,
    next_seq: i64,
    /// Losses not yet written into `drops`.
    pending: BTreeMap<DropReason, DropCount>,
    last_probe: Option<Instant>,
    /// The episode this process saw end last, for `/healthz`.
    last: Option<Episode>,
}

/// What a probe takes out of the queue to commit, and gives back on failure.
pub(crate) struct Probe {
    /// With their queue ids, so a failed probe gives them back as they
    /// were: a lane may be sending them at this moment, and its answer
    /// must still find them.
    pub records: Vec<Record>,
    pub pending: BTreeMap<DropReason, DropCount>,
    pub episode: Option<Episode>,
}

impl Live {
    pub fn new(max_bytes: u64) -> Live {
        Live {
            max_bytes,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves consistent data (every update is whole).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn in_episode(&self) -> bool {
        self.lock().episode.is_some()
    }

    /// (An episode is under way, something waits here to be committed.)
    pub(crate) fn busy(&self) -> (bool, bool) {
        let s = self.lock();
        (
            s.episode.is_some(),
            !s.queue.is_empty() || !s.pending.is_empty(),
        )
    }

    /// Starts an episode (if none is under way); true if it started now.
    pub(crate) fn start(&self, cause: &str, now: Instant) -> bool {
        let mut s = self.lock();
        s.last_probe = Some(now);
        if s.episode.is_some() {
            return false;
        }
        s.episode = Some(Episode {
            since_ms: unix_ms(SystemTime::now()),
            cause: cause.to_string(),
            ..Episode::default()
        });
        true
    }

    /// True (and the probe clock restarted) if a commit should try the disk.
    pub(crate) fn probe_due(&self, now: Instant) -> bool {
        let mut s = self.lock();
        let due = s
            .last_probe
            .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_EVERY);
        if due {
            s.last_probe = Some(now);
        }
        due
    }

    /// Gives a record its queue id (its place in the live order).
    pub(crate) fn stamp(&self, r: NewRecord) -> Record {
        stamp(&mut self.lock(), r)
    }

    /// Queues a record for live delivery, dropping the oldest past the bounds.
    pub(crate) fn push(&self, r: NewRecord) {
        let mut s = self.lock();
        let r = stamp(&mut s, r);
        self.enqueue(&mut s, r);
    }

    /// Appends a stamped record. One larger than the whole bound is lost on
    /// its own rather than pushing every older record out first.
    fn enqueue(&self, s: &mut State, r: Record) {
        if r.body.len() as u64 > self.max_bytes {
            lose(s, DropReason::DiskFull, 1, r.items);
            return;
        }
        s.bytes += r.body.len() as u64;
        s.queue.push_back(r);
        while s.bytes > self.max_bytes || s.queue.len() > MAX_RECORDS {
            let Some(old) = s.queue.pop_front() else {
                break;
            };
            s.bytes -= old.body.len() as u64;
            lose(s, DropReason::DiskFull, 1, old.items);
        }
    }

    /// Counts a loss of live records (refused by the collector, say).
    pub(crate) fn lose(&self, reason: DropReason, records: u64, items: u64) {
        lose(&mut self.lock(), reason, records, items);
    }

    /// Takes the queue and the pending losses out for a commit.
    pub(crate) fn take(&self) -> Probe {
        let mut s = self.lock();
        s.bytes = 0;
        Probe {
            records: std::mem::take(&mut s.queue).into(),
            pending: std::mem::take(&mut s.pending),
            episode: s.episode.clone(),
        }
    }

    /// Gives back what a failed commit took, with the same ids, in front of
    /// what came since.
    pub(crate) fn give_back(&self, probe: Probe) {
        let mut s = self.lock();
        for (reason, n) in probe.pending {
            let p = s.pending.entry(reason).or_default();
            p.records += n.records;
            p.items += n.items;
        }
        s.bytes = 0;
        let since = std::mem::take(&mut s.queue);
        for r in probe.records.into_iter().chain(since) {
            self.enqueue(&mut s, r);
        }
    }

    /// Ends the episode after a commit that carried its counts; returns it.
    pub(crate) fn end(&self) -> Option<Episode> {
        let mut s = self.lock();
        s.last_probe = None;
        let ended = s.episode.take().map(|mut e| {
            e.ended_ms = Some(unix_ms(SystemTime::now()));
            e
        });
        if ended.is_some() {
            s.last.clone_from(&ended);
        }
        ended
    }

    /// Losses not yet in `drops`, to add to what the file says.
    pub fn pending(&self) -> BTreeMap<DropReason, DropCount> {
        self.lock().pending.clone()
    }

    pub fn state(&self) -> DiskState {
        let s = self.lock();
        DiskState {
            current: s.episode.clone(),
            queued_records: s.queue.len() as u64,
            queued_bytes: s.bytes,
            last: s.last.clone(),
        }
    }

    /// The oldest queued records of `signal`, bounded like a backlog batch.
    pub(crate) fn peek(&self, signal: Signal, max_records: usize, max_bytes: u64) -> Vec<Record> {
        let s = self.lock();
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for r in s.queue.iter().filter(|r| r.signal == signal) {
            if out.len() >= max_records
                || (!out.is_empty() && bytes + r.body.len() as u64 > max_bytes)
            {
                break;
            }
            bytes += r.body.len() as u64;
            out.push(r.clone());
        }
        out
    }

    /// Forgets delivered (or refused) records still queued; returns what
    /// it found of them (a probe may have committed them meanwhile).
    pub(crate) fn remove(&self, ids: &[i64]) -> DropCount {
        let mut s = self.lock();
        let mut gone = DropCount::default();
        let mut freed = 0u64;
        // Ids come from one peek, in queue order, so ascending.
        s.queue.retain(|r| {
            let hit = ids.binary_search(&r.id).is_ok();
            if hit {
                freed += r.body.len() as u64;
                gone.records += 1;
                gone.items += r.items;
            }
            !hit
        });
        s.bytes -= freed;
        gone
    }
}

fn stamp(s: &mut State, r: NewRecord) -> Record {
    let id = s.next_seq;
    s.next_seq += 1;
    Record {
        id,
        signal: r.signal,
        created_ms: unix_ms(SystemTime::now()),
        items: r.items,
        body: r.body,
    }
}

fn lose(s: &mut State, reason: DropReason, records: u64, items: u64) {
    let p = s.pending.entry(reason).or_default();
    p.records += records;
    p.items += items;
    if let (DropReason::DiskFull, Some(e)) = (reason, s.episode.as_mut()) {
        e.lost.records += records;
        e.lost.items += items;
    }
}

#[cfg(test)]
mod tests;
