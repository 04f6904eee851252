//! The bench's own state, as reported on every heartbeat and as
//! `bench_state{state}`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

/// Where the bench stands. The state machine that moves between these from
/// health-check results lives with the checks; without readiness checks a
/// bench is `Ready` as soon as the agent runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum BenchState {
    #[default]
    Starting,
    Ready,
    Degraded,
    Maintenance,
}

impl BenchState {
    pub const ALL: [BenchState; 4] = [
        BenchState::Starting,
        BenchState::Ready,
        BenchState::Degraded,
        BenchState::Maintenance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BenchState::Starting => "starting",
            BenchState::Ready => "ready",
            BenchState::Degraded => "degraded",
            BenchState::Maintenance => "maintenance",
        }
    }
}

impl fmt::Display for BenchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Maintenance, as a command set it; kept in the state directory, so it
/// survives agent restarts and reboots.
pub use crate::wire::Maintenance;

/// The last verdict of one check, and since when it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckStatus {
    pub up: bool,
    #[serde(with = "humantime_serde")]
    pub since: SystemTime,
    pub affects_ready: bool,
}

/// The bench's state, why and since when: what heartbeats, `/metrics` and
/// `benchtel-agent status` show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub state: BenchState,
    pub why: String,
    #[serde(with = "humantime_serde")]
    pub since: SystemTime,
    pub maintenance: Option<Maintenance>,
    pub checks: BTreeMap<String, CheckStatus>,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            state: BenchState::Starting,
            why: "the agent started".into(),
            since: SystemTime::now(),
            maintenance: None,
            checks: BTreeMap::new(),
        }
    }
}

/// The text of `benchtel-agent status`.
impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        writeln!(f, "state        {} since {}", self.state, at(self.since))?;
        writeln!(f, "why          {}", self.why)?;
        if let Some(m) = &self.maintenance {
            let until = m
                .until
                .map_or("ended by command".into(), |t| format!("until {}", at(t)));
            let reason = m.reason.as_deref().unwrap_or("no reason given");
            writeln!(f, "maintenance  {reason}; since {}, {until}", at(m.since))?;
        }
        if self.checks.is_empty() {
            return writeln!(f, "checks       none has reported yet");
        }
        writeln!(f, "checks")?;
        for (name, c) in &self.checks {
            writeln!(
                f,
                "  {name:<24} {:<4} since {}{}",
                if c.up { "up" } else { "down" },
                at(c.since),
                if c.affects_ready {
                    ""
                } else {
                    "  (not for readiness)"
                }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn status_text_names_state_why_since_maintenance_and_checks() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut s = Snapshot {
            state: BenchState::Maintenance,
            why: "maintenance: reflashing".into(),
            since: t0,
            maintenance: Some(Maintenance {
                reason: Some("reflashing".into()),
                since: t0,
                until: Some(t0 + Duration::from_secs(3600)),
            }),
            checks: BTreeMap::new(),
        };
        s.checks.insert(
            "psu".into(),
            CheckStatus {
                up: true,
                since: t0,
                affects_ready: true,
            },
        );
        s.checks.insert(
            "camera".into(),
            CheckStatus {
                up: false,
                since: t0,
                affects_ready: false,
            },
        );
        let text = s.to_string();
        assert_eq!(
            text,
            "state        maintenance since 2027-01-15T08:00:00Z\n\
             why          maintenance: reflashing\n\
             maintenance  reflashing; since 2027-01-15T08:00:00Z, until 2027-01-15T09:00:00Z\n\
             checks\n  \
             camera                   down since 2027-01-15T08:00:00Z  (not for readiness)\n  \
             psu                      up   since 2027-01-15T08:00:00Z\n"
        );
        let back: Snapshot = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s, "the CLI reads back what the agent sends");
    }
}
