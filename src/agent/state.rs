//! The bench's own state, as reported on every heartbeat and as
//! `bench_state{state}`.

use std::fmt;

/// Where the bench stands. The state machine that moves between these from
/// health-check results lives with the checks; without readiness checks a
/// bench is `Ready` as soon as the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
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
