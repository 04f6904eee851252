//! A snapshot of the outbox, for self-telemetry and `benchtel-agent outbox
//! status` (as text or JSON).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::disk::DiskState;
use super::signal::{DropReason, Signal};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalStats {
    pub records: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCount {
    pub records: u64,
    pub items: u64,
}

/// A snapshot of the outbox for self-telemetry and `outbox status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub per_signal: BTreeMap<Signal, SignalStats>,
    pub oldest_created_ms: Option<i64>,
    pub drops: BTreeMap<DropReason, DropCount>,
    pub rejected_kept: u64,
    /// Corrupt databases moved aside since this process started.
    pub corruptions: u64,
    /// Durable or live mode, and the last full-disk episode.
    pub disk: DiskState,
}

impl Status {
    pub fn records(&self) -> u64 {
        self.per_signal.values().map(|s| s.records).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.per_signal.values().map(|s| s.bytes).sum()
    }

    /// Age of the oldest queued record at `now`; zero when empty.
    pub fn oldest_age(&self, now: SystemTime) -> Duration {
        let Some(oldest) = self.oldest_created_ms else {
            return Duration::ZERO;
        };
        let age_ms = unix_ms(now).saturating_sub(oldest).max(0);
        Duration::from_millis(u64::try_from(age_ms).unwrap_or(0))
    }

    pub fn dropped(&self, reason: DropReason) -> DropCount {
        self.drops.get(&reason).copied().unwrap_or_default()
    }
}

/// What `benchtel-agent outbox status` shows: the status of the outbox at
/// `path`, with the age of its oldest record. `Display` is the text form,
/// `Serialize` the JSON form (`--json`).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub path: PathBuf,
    pub status: Status,
    pub oldest_age: Duration,
}

impl StatusReport {
    /// The status of the outbox at `path`, its age taken at `now`.
    pub fn new(path: PathBuf, status: Status, now: SystemTime) -> StatusReport {
        let oldest_age = status.oldest_age(now);
        StatusReport {
            path,
            status,
            oldest_age,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let s = &self.status;
        let per_signal: serde_json::Map<String, serde_json::Value> = s
            .per_signal
            .iter()
            .map(|(signal, st)| {
                (
                    signal.as_str().to_string(),
                    serde_json::json!({"records": st.records, "bytes": st.bytes}),
                )
            })
            .collect();
        let drops: serde_json::Map<String, serde_json::Value> = DropReason::ALL
            .iter()
            .map(|r| {
                let d = s.dropped(*r);
                (
                    r.as_str().to_string(),
                    serde_json::json!({"records": d.records, "items": d.items}),
                )
            })
            .collect();
        serde_json::json!({
            "path": self.path,
            "records": s.records(),
            "bytes": s.bytes(),
            "oldest_age_seconds": self.oldest_age.as_secs_f64(),
            "signals": per_signal,
            "dropped": drops,
            "rejected_kept": s.rejected_kept,
            "outbox": s.disk.to_json(),
        })
    }
}

impl Serialize for StatusReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.status;
        writeln!(f, "outbox      {}", self.path.display())?;
        writeln!(
            f,
            "queued      {} records, {} bytes, oldest {}",
            s.records(),
            s.bytes(),
            humantime::format_duration(Duration::from_secs(self.oldest_age.as_secs()))
        )?;
        for (signal, st) in &s.per_signal {
            writeln!(
                f,
                "  {:<9} {} records, {} bytes",
                signal.as_str(),
                st.records,
                st.bytes
            )?;
        }
        writeln!(f, "dropped (records / items)")?;
        for reason in DropReason::ALL {
            let d = s.dropped(reason);
            writeln!(f, "  {:<16} {} / {}", reason.as_str(), d.records, d.items)?;
        }
        writeln!(
            f,
            "rejected    {} kept for inspection (table `rejected`)",
            s.rejected_kept
        )?;
        write!(f, "{}", s.disk)
    }
}

/// Milliseconds since the Unix epoch; negative before it (a clock that
/// was never set).
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        let mut status = Status::default();
        status.per_signal.insert(
            Signal::Logs,
            SignalStats {
                records: 3,
                bytes: 300,
            },
        );
        status.per_signal.insert(
            Signal::Metrics,
            SignalStats {
                records: 2,
                bytes: 2048,
            },
        );
        status.drops.insert(
            DropReason::MaxAge,
            DropCount {
                records: 4,
                items: 40,
            },
        );
        status.rejected_kept = 1;
        status.oldest_created_ms = Some(1_000);
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000 + 90_500);
        StatusReport::new("/var/lib/benchtel/outbox.db".into(), status, now)
    }

    #[test]
    fn the_text_is_what_outbox_status_prints() {
        let want = "\
outbox      /var/lib/benchtel/outbox.db
queued      5 records, 2348 bytes, oldest 1m 30s
  metrics   2 records, 2048 bytes
  logs      3 records, 300 bytes
dropped (records / items)
  max_bytes        0 / 0
  max_age          4 / 40
  rejected         0 / 0
  partial_success  0 / 0
  too_large        0 / 0
  disk_full        0 / 0
rejected    1 kept for inspection (table `rejected`)
";
        assert_eq!(report().to_string(), want);
    }

    #[test]
    fn the_json_is_what_outbox_status_json_prints() {
        let want = r#"{
  "path": "/var/lib/benchtel/outbox.db",
  "records": 5,
  "bytes": 2348,
  "oldest_age_seconds": 90.5,
  "signals": {
    "metrics": {
      "records": 2,
      "bytes": 2048
    },
    "logs": {
      "records": 3,
      "bytes": 300
    }
  },
  "dropped": {
    "max_bytes": {
      "records": 0,
      "items": 0
    },
    "max_age": {
      "records": 4,
      "items": 40
    },
    "rejected": {
      "records": 0,
      "items": 0
    },
    "partial_success": {
      "records": 0,
      "items": 0
    },
    "too_large": {
      "records": 0,
      "items": 0
    },
    "disk_full": {
      "records": 0,
      "items": 0
    }
  },
  "rejected_kept": 1,
  "outbox": {
    "mode": "durable",
    "reason": null,
    "episode": null,
    "queued_records": 0,
    "queued_bytes": 0,
    "last_episode": null
  }
}"#;
        assert_eq!(serde_json::to_string_pretty(&report()).unwrap(), want);
    }
}
