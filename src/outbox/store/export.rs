//! What the forwarder keeps in the outbox besides records: each signal's
//! current export episode (`meta` key `export.<signal>`, JSON), and the
//! cached totals re-read when another process changed the queue.

use rusqlite::{OptionalExtension, params};

use super::{Outbox, OutboxError, Signal, load_totals};
use crate::outbox::status::{ExportEpisode, ExportReport, MovedCount};

/// `meta` keys of the counters of `rejected replay` and `drop --rejected`.
pub(super) const REPLAYED_KEY: &str = "rejected.replayed";
pub(super) const CLEARED_KEY: &str = "rejected.cleared";

fn episode_key(signal: Signal) -> String {
    format!("export.{}", signal.as_str())
}

impl Outbox {
    /// Records of `signal` the cached totals count.
    pub fn queued(&self, signal: Signal) -> Result<u64, OutboxError> {
        Ok(self.lock()?.totals[signal.index()].records)
    }

    /// Re-reads the totals from the file: another process (`benchtel-agent
    /// outbox rejected replay`) may have added records.
    pub fn reload_totals(&self) -> Result<(), OutboxError> {
        let mut inner = self.lock()?;
        let totals = load_totals(&inner.conn).map_err(|e| self.sql(e))?;
        inner.totals = totals;
        Ok(())
    }

    /// Persists `signal`'s current export episode, or clears it.
    pub fn set_export_episode(
        &self,
        signal: Signal,
        episode: Option<&ExportEpisode>,
    ) -> Result<(), OutboxError> {
        let key = episode_key(signal);
        let value = episode.map(|e| serde_json::to_string(e).unwrap_or_default());
        self.write(|tx, _| {
            match &value {
                Some(v) => tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, v],
                )?,
                None => tx.execute("DELETE FROM meta WHERE key = ?1", params![key])?,
            };
            Ok(())
        })
    }

    /// The episodes and rejected-record counters kept in `meta`, for
    /// `outbox status`. Values that do not parse are left out.
    pub fn export_report(&self) -> Result<ExportReport, OutboxError> {
        let mut report = ExportReport::default();
        for signal in Signal::ALL {
            if let Some(text) = self.meta(&episode_key(signal))?
                && let Ok(e) = serde_json::from_str::<ExportEpisode>(&text)
            {
                report.episodes.insert(signal, e);
            }
        }
        report.replayed = self.moved_count(REPLAYED_KEY)?;
        report.cleared = self.moved_count(CLEARED_KEY)?;
        Ok(report)
    }

    pub(super) fn moved_count(&self, key: &str) -> Result<MovedCount, OutboxError> {
        Ok(self
            .meta(key)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    fn meta(&self, key: &str) -> Result<Option<String>, OutboxError> {
        let inner = self.lock()?;
        inner
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql(e))
    }
}

/// Adds `n` to the counter under `key`, inside the caller's transaction.
pub(super) fn add_moved(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    n: MovedCount,
) -> rusqlite::Result<()> {
    let old: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
            r.get(0)
        })
        .optional()?;
    let old: MovedCount = old
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let new = MovedCount {
        records: old.records + n.records,
        items: old.items + n.items,
    };
    let text = serde_json::to_string(&new).unwrap_or_default();
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, text],
    )?;
    Ok(())
}
