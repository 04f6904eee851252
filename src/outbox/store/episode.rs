//! The commit path with live mode: a commit the file system refuses starts
//! a full-disk episode instead of failing the producer (see
//! [`super::super::live`]).

use std::time::{Instant, SystemTime};

use rusqlite::params;

use super::super::live::{Episode, Probe};
use super::report::LAST_EPISODE_KEY;
use super::{
    DropCount, DropReason, NewRecord, Outbox, OutboxError, Record, add_drop, evict_for_bytes,
    insert_records, unix_ms,
};

/// Where a committed record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Into the file: durable.
    Durable,
    /// Into live mode's queue in memory: the file system takes no writes.
    Live,
}

impl Outbox {
    /// The in-memory side of the outbox while the disk takes no writes.
    pub fn live(&self) -> &super::super::live::Live {
        &self.live
    }

    /// Commits one record, or queues it for live delivery when the file
    /// system takes no writes. Errors only for what no disk space cures (a
    /// record over the byte bound, counted; a broken database).
    pub fn commit(&self, record: NewRecord) -> Result<Committed, OutboxError> {
        self.commit_at(record, Instant::now())
    }

    pub(crate) fn commit_at(
        &self,
        record: NewRecord,
        now: Instant,
    ) -> Result<Committed, OutboxError> {
        match self.live.busy() {
            (true, _) if !self.live.probe_due(now) => {
                self.live.push(record);
                return Ok(Committed::Live);
            }
            (true, _) => return self.probe(record, now),
            // Left over from an episode (a record that came in while it
            // ended, a loss counted since): committed with this record.
            (false, true) => return self.probe(record, now),
            (false, false) => {}
        }
        match self.append_batch(std::slice::from_ref(&record)) {
            Ok(_) => Ok(Committed::Durable),
            Err(e) if e.is_unwritable() => {
                self.go_live(&e, now);
                self.live.push(record);
                Ok(Committed::Live)
            }
            Err(e) => Err(e),
        }
    }

    /// Starts an episode (if none is under way), logging its start once.
    fn go_live(&self, e: &OutboxError, now: Instant) {
        if self.live.start(&e.to_string(), now) {
            tracing::error!(path = %self.opts.path.display(), error = %e,
                "outbox cannot commit (disk full or read-only): live mode, telemetry goes straight \
                 to the collector from memory; what cannot go is counted as dropped (disk_full)");
        }
    }

    /// Tries the disk with the queue and `record`; ends the episode if the
    /// commit holds.
    fn probe(&self, record: NewRecord, now: Instant) -> Result<Committed, OutboxError> {
        let mut probe = self.live.take();
        probe.records.push(self.live.stamp(record));
        match self.commit_probe(&probe) {
            Ok(()) => {}
            Err(e) if e.is_unwritable() => {
                self.go_live(&e, now);
                self.live.give_back(probe);
                return Ok(Committed::Live);
            }
            Err(e) => {
                self.live.give_back(probe);
                return Err(e);
            }
        }
        if let Some(e) = self.live.end() {
            tracing::warn!(path = %self.opts.path.display(), lost_records = e.lost.records,
                lost_items = e.lost.items, since_ms = e.since_ms,
                "outbox commits again: durable mode; the full-disk episode is over");
        }
        // What came in while the probe committed, then the WAL back to size.
        let rest = self.live.take();
        let leftover = !rest.records.is_empty() || !rest.pending.is_empty();
        if let Err(e) = leftover.then(|| self.commit_probe(&rest)).transpose() {
            tracing::warn!(error = %e, "committing the last live records failed; they stay in memory");
            self.live.give_back(rest);
        }
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "WAL checkpoint after the full-disk episode failed");
        }
        Ok(Committed::Durable)
    }

    /// One transaction: the records, the losses counted in memory, and the
    /// episode's summary for `outbox status`.
    fn commit_probe(&self, probe: &Probe) -> Result<(), OutboxError> {
        let max_bytes = self.opts.max_bytes;
        let (fit, big): (Vec<&Record>, Vec<&Record>) = probe
            .records
            .iter()
            .partition(|r| r.body.len() as u64 <= max_bytes);
        let too_large = DropCount {
            records: big.len() as u64,
            items: big.iter().map(|r| r.items).sum(),
        };
        let now = unix_ms(SystemTime::now());
        let summary = probe.episode.as_ref().map(|e| Episode {
            ended_ms: Some(now),
            ..e.clone()
        });
        let summary = summary.and_then(|e| serde_json::to_string(&e).ok());
        self.write(|tx, totals| {
            insert_records(
                tx,
                totals,
                fit.iter().map(|r| (r.signal, r.items, &r.body[..])),
                now,
            )?;
            for (reason, n) in &probe.pending {
                add_drop(tx, *reason, *n)?;
            }
            add_drop(tx, DropReason::TooLarge, too_large)?;
            if let Some(json) = &summary {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![LAST_EPISODE_KEY, json],
                )?;
            }
            evict_for_bytes(tx, totals, max_bytes)
        })
    }

    /// At shutdown: commits what live mode still holds, or says what is
    /// lost with it (the counts cannot be written then).
    pub fn settle_live(&self) -> Result<(), OutboxError> {
        let probe = self.live.take();
        if probe.records.is_empty() && probe.pending.is_empty() {
            return Ok(());
        }
        let lost: u64 = probe.records.len() as u64
            + probe
                .pending
                .get(&DropReason::DiskFull)
                .map_or(0, |d| d.records);
        self.commit_probe(&probe).inspect_err(|_| {
            eprintln!(
                "benchtel-agent: the outbox still cannot commit; {lost} records of this full-disk \
                 episode are lost uncounted on disk"
            );
        })
    }
}
