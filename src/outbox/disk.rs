//! The outbox's mode as others see it: durable, or live during a full-disk
//! episode (see [`super::live`]), with the last episode's summary.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A full-disk episode: since when, why, and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    pub since_ms: i64,
    /// When durable mode came back; `None` while it lasts.
    pub ended_ms: Option<i64>,
    /// The error that started it.
    pub cause: String,
    /// Records (and their items) neither committed nor delivered.
    pub lost: Lost,
}

/// [`DropCount`] with serde, for the `meta` row and `/healthz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    pub records: u64,
    pub items: u64,
}

/// The outbox's mode, for `/healthz` and `outbox status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskState {
    /// The episode under way; only the running agent knows it.
    pub current: Option<Episode>,
    /// Records (and their bytes) waiting in memory for the collector.
    pub queued_records: u64,
    pub queued_bytes: u64,
    /// The last episode that ended (the `meta` row `disk_full.last`).
    pub last: Option<Episode>,
}

impl DiskState {
    pub fn mode(&self) -> &'static str {
        if self.current.is_some() {
            "live"
        } else {
            "durable"
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode(),
            "reason": self.current.as_ref().map(|_| "disk_full"),
            "episode": self.current,
            "queued_records": self.queued_records,
            "queued_bytes": self.queued_bytes,
            "last_episode": self.last,
        })
    }
}

impl fmt::Display for DiskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.current {
            writeln!(
                f,
                "mode        live since {} ({}): {} records lost so far, {} queued in memory",
                stamp(e.since_ms),
                e.cause,
                e.lost.records,
                self.queued_records
            )?;
        }
        if let Some(e) = &self.last {
            writeln!(
                f,
                "disk full   last {} to {}: {} records / {} items lost ({})",
                stamp(e.since_ms),
                e.ended_ms.map_or_else(|| "?".to_string(), stamp),
                e.lost.records,
                e.lost.items,
                e.cause
            )?;
        }
        Ok(())
    }
}

fn stamp(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}
