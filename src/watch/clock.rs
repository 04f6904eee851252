//! Watch time: seconds since the Unix epoch, read from the monotonic clock.
//!
//! Ages must not jump when the watch's wall clock is stepped, and tests
//! drive time with tokio's paused clock, so "now" is the wall time at
//! start plus monotonic time elapsed since. Persisted times (the registry)
//! are in the same unit and stay comparable across restarts.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Watch time, seconds since the Unix epoch.
pub type Ts = f64;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    mono0: Instant,
    wall0: f64,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            mono0: Instant::now(),
            wall0: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    pub fn now(&self) -> Ts {
        self.wall0 + self.mono0.elapsed().as_secs_f64()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
