//! A snapshot of the outbox, for self-telemetry and `benchtel-agent outbox
//! status` (as text or JSON).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::disk::DiskState;
use super::signal::{DropReason, Signal};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalStats {
    pub records: u64,
    pub bytes: u64,
    /// Data points / log records / spans in those records: what a
    /// corrupt file takes with it is counted in items too.
    pub items: u64,
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
    /// Export problems and rejected-record counters (see [`ExportReport`]).
    pub export: ExportReport,
}

impl StatusReport {
    /// The status of the outbox at `path`, its age taken at `now`.
    pub fn new(path: PathBuf, status: Status, now: SystemTime) -> StatusReport {
        let oldest_age = status.oldest_age(now);
        StatusReport {
            path,
            status,
            oldest_age,
            export: ExportReport::default(),
        }
    }

    /// The same report with the export problems and rejected-record
    /// counters the agent keeps in the outbox's `meta` table.
    pub fn with_export(mut self, export: ExportReport) -> StatusReport {
        self.export = export;
        self
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
            "rejected_replayed": self.export.replayed.as_json(),
            "rejected_cleared": self.export.cleared.as_json(),
            "export": self.export.episodes_json(),
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
            "rejected    {} kept for inspection (`outbox rejected list`)",
            s.rejected_kept
        )?;
        write!(f, "{}", self.export)?;
        write!(f, "{}", s.disk)
    }
}

/// One signal's current export problem, as the forwarder persists it in
/// the outbox's `meta` table under `export.<signal>` (JSON) while it
/// lasts, so `outbox status` in another process can show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportEpisode {
    /// The `status` label: an HTTP code, `timeout`, or `none` (no
    /// connection).
    pub status: String,
    /// What kind of problem: `credentials`, `no_pipeline`, `throttled`,
    /// `too_large`, `rejected`, …
    pub problem: String,
    /// The URL the signal is posted to.
    pub url: String,
    /// When the episode started and when the last attempt was, in ms
    /// since the Unix epoch.
    pub since_ms: i64,
    pub last_ms: i64,
    /// Requests answered this way so far.
    pub attempts: u64,
    /// The collector's last answer (status line and body snippet).
    pub message: String,
    /// What to do about it.
    pub remedy: String,
}

/// Records and items counted by a `rejected replay` or `drop --rejected`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedCount {
    pub records: u64,
    pub items: u64,
}

impl MovedCount {
    fn as_json(self) -> serde_json::Value {
        serde_json::json!({"records": self.records, "items": self.items})
    }
}

/// What `outbox status` adds from the `meta` table: the current export
/// episode per signal, and how many rejected records were replayed into
/// the queue or cleared (they were counted as dropped, reason `rejected`,
/// when they were moved aside; these counters do not undo that).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub episodes: BTreeMap<Signal, ExportEpisode>,
    pub replayed: MovedCount,
    pub cleared: MovedCount,
}

impl ExportReport {
    fn episodes_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .episodes
            .iter()
            .map(|(signal, e)| {
                let v = serde_json::to_value(e).unwrap_or_default();
                (signal.as_str().to_string(), v)
            })
            .collect();
        serde_json::Value::Object(map)
    }
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, c) = (self.replayed, self.cleared);
        if r != MovedCount::default() || c != MovedCount::default() {
            writeln!(
                f,
                "            {} / {} replayed, {} / {} cleared (records / items)",
                r.records, r.items, c.records, c.items
            )?;
        }
        if self.episodes.is_empty() {
            return writeln!(f, "export      no problem reported");
        }
        writeln!(
            f,
            "export      problems the agent reported, not over at its last attempt"
        )?;
        for (signal, e) in &self.episodes {
            let since = time_at(e.since_ms);
            let last = time_at(e.last_ms);
            writeln!(
                f,
                "  {:<9} {} {} since {since}, {} attempts, last at {last}: {}",
                signal.as_str(),
                e.status,
                e.problem,
                e.attempts,
                e.message
            )?;
            writeln!(f, "            url {}", e.url)?;
            writeln!(f, "            remedy: {}", e.remedy)?;
        }
        Ok(())
    }
}

/// RFC 3339 to the second, from ms since the Unix epoch.
pub(crate) fn time_at(ms: i64) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(t).to_string()
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
                items: 3,
            },
        );
        status.per_signal.insert(
            Signal::Metrics,
            SignalStats {
                records: 2,
                bytes: 2048,
                items: 20,
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
  corrupt          0 / 0
rejected    1 kept for inspection (`outbox rejected list`)
export      no problem reported
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
    },
    "corrupt": {
      "records": 0,
      "items": 0
    }
  },
  "rejected_kept": 1,
  "rejected_replayed": {
    "records": 0,
    "items": 0
  },
  "rejected_cleared": {
    "records": 0,
    "items": 0
  },
  "export": {},
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

    #[test]
    fn export_problems_and_replays_are_shown_with_their_remedy() {
        let mut export = ExportReport::default();
        export.episodes.insert(
            Signal::Logs,
            ExportEpisode {
                status: "401".into(),
                problem: "credentials".into(),
                url: "https://c:4318/v1/logs".into(),
                since_ms: 1_700_000_000_000,
                last_ms: 1_700_000_060_000,
                attempts: 7,
                message: "HTTP 401 Unauthorized: no token".into(),
                remedy: "check [otlp] headers".into(),
            },
        );
        export.replayed = MovedCount {
            records: 2,
            items: 5,
        };
        let report = report().with_export(export);
        let text = report.to_string();
        let want = "\
rejected    1 kept for inspection (`outbox rejected list`)
            2 / 5 replayed, 0 / 0 cleared (records / items)
export      problems the agent reported, not over at its last attempt
  logs      401 credentials since 2023-11-14T22:13:20Z, 7 attempts, last at 2023-11-14T22:14:20Z: HTTP 401 Unauthorized: no token
            url https://c:4318/v1/logs
            remedy: check [otlp] headers
";
        assert!(text.ends_with(want), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["export"]["logs"]["attempts"], 7);
        assert_eq!(json["export"]["logs"]["remedy"], "check [otlp] headers");
        assert_eq!(json["rejected_replayed"]["items"], 5);
        // What the agent persists is what `outbox status` reads back.
        let persisted = serde_json::to_string(&report.export.episodes[&Signal::Logs]).unwrap();
        let back: ExportEpisode = serde_json::from_str(&persisted).unwrap();
        assert_eq!(back, report.export.episodes[&Signal::Logs]);
    }
}
