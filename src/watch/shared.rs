//! What the watch's tasks share: the configuration, the fleet, the clock
//! and the self metrics.

use std::sync::{Arc, Mutex, MutexGuard};

use super::clock::Clock;
use super::config::WatchConfig;
use super::fleet::Fleet;
use super::stats::Stats;

#[derive(Clone)]
pub struct Shared {
    pub cfg: Arc<WatchConfig>,
    fleet: Arc<Mutex<Fleet>>,
    pub clock: Clock,
    pub stats: Stats,
}

impl Shared {
    pub fn new(cfg: Arc<WatchConfig>, fleet: Fleet, clock: Clock, stats: Stats) -> Shared {
        Shared {
            cfg,
            fleet: Arc::new(Mutex::new(fleet)),
            clock,
            stats,
        }
    }

    /// The fleet. Its state stays consistent between calls, so a panic in
    /// another holder does not make it unusable.
    pub fn lock_fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|p| p.into_inner())
    }
}
