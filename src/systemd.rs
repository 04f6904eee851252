//! systemd integration: `READY=1` once the agent can accept telemetry, and a
//! watchdog that pings only while the pipeline makes progress.
//!
//! A watchdog that pings from a timer proves only that the runtime is alive.
//! Here every long-running loop holds a [`Beacon`] and, before each step,
//! promises when it will next check in (`busy_for`). The watchdog pings while
//! every promise is kept; a loop wedged in a blocking call breaks its promise,
//! the pings stop, and systemd restarts the service. A loop that waits for
//! nothing in particular (between runs, or stopped) is `idle` and promises
//! nothing.
//!
//! The agent's loops: `heartbeat`, `checks` (each interval check while it
//! runs), `host_metrics` (its schedule; a hung collection is counted, not a
//! stall: a restart would not unhang a mount), the forwarder lanes
//! (`/v1/metrics`, `/v1/logs`, `/v1/traces`) and `outbox expiry`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Slack added to every promise, so scheduling jitter is not a stall.
const SLACK: Duration = Duration::from_secs(5);

/// A loop's name and the deadline (ms since the epoch) it promised.
type Promise = (&'static str, Arc<AtomicU64>);

/// The set of loops the watchdog watches.
#[derive(Clone)]
pub struct Liveness {
    epoch: Instant,
    slack: Duration,
    beacons: Arc<Mutex<Vec<Promise>>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::with_slack(SLACK)
    }
}

/// One loop's promise to check in again before a deadline.
#[derive(Clone)]
pub struct Beacon {
    epoch: Instant,
    slack: Duration,
    deadline_ms: Arc<AtomicU64>,
}

impl Beacon {
    /// Promises that the loop checks in again within `d`.
    pub fn busy_for(&self, d: Duration) {
        let deadline = self
            .epoch
            .elapsed()
            .saturating_add(d)
            .saturating_add(self.slack);
        let ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        self.deadline_ms.store(ms, Ordering::Relaxed);
    }

    /// Promises nothing: the loop waits for work that may never come, or
    /// has stopped.
    pub fn idle(&self) {
        self.deadline_ms.store(u64::MAX, Ordering::Relaxed);
    }
}

impl Liveness {
    /// Promises get `slack` on top (tests use a short one).
    pub fn with_slack(slack: Duration) -> Liveness {
        Liveness {
            epoch: Instant::now(),
            slack,
            beacons: Arc::default(),
        }
    }

    pub fn beacon(&self, name: &'static str, first: Duration) -> Beacon {
        let beacon = Beacon {
            epoch: self.epoch,
            slack: self.slack,
            deadline_ms: Arc::new(AtomicU64::new(0)),
        };
        beacon.busy_for(first);
        if let Ok(mut all) = self.beacons.lock() {
            all.push((name, beacon.deadline_ms.clone()));
        }
        beacon
    }

    /// The first loop that broke its promise, if any.
    pub fn stalled(&self) -> Option<&'static str> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let all = self.beacons.lock().ok()?;
        all.iter()
            .find(|(_, d)| d.load(Ordering::Relaxed) < now)
            .map(|(name, _)| *name)
    }
}

/// Tells systemd the service is ready (a no-op outside systemd).
pub fn notify_ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]) {
        tracing::warn!(error = %e, "sd_notify READY=1 failed");
    }
}

/// Tells systemd the service is stopping (a no-op outside systemd).
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Pings the systemd watchdog at half its period while nothing is stalled.
/// Returns at once when the unit has no `WatchdogSec=`.
pub async fn run_watchdog(liveness: Liveness, cancel: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    run_pings(liveness, period / 2, cancel, |ok| {
        if ok {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    })
    .await;
}

/// The watchdog loop, apart from the socket, so it can be tested.
pub async fn run_pings(
    liveness: Liveness,
    every: Duration,
    cancel: CancellationToken,
    mut ping: impl FnMut(bool),
) {
    let mut tick = tokio::time::interval(every);
    let mut was_stalled = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stalled = liveness.stalled();
        if stalled != was_stalled {
            match stalled {
                Some(name) => tracing::error!(
                    stalled = name,
                    "pipeline stalled: withholding the systemd watchdog ping"
                ),
                None => tracing::info!("pipeline progressing again"),
            }
            was_stalled = stalled;
        }
        ping(stalled.is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pings_stop_when_a_loop_breaks_its_promise() {
        let liveness = Liveness::default();
        let beacon = liveness.beacon("forwarder", Duration::from_secs(10));
        let cancel = CancellationToken::new();
        let pings = Arc::new(Mutex::new(Vec::new()));
        let p = pings.clone();
        let task = tokio::spawn(run_pings(
            liveness.clone(),
            Duration::from_secs(1),
            cancel.clone(),
            move |ok| p.lock().unwrap().push(ok),
        ));
        // A loop that keeps its promises keeps the pings coming.
        for _ in 0..30 {
            beacon.busy_for(Duration::from_secs(2));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(pings.lock().unwrap().iter().all(|ok| *ok));
        // Wedged: no more promises; after deadline + slack the pings stop.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(liveness.stalled(), Some("forwarder"));
        assert_eq!(pings.lock().unwrap().last(), Some(&false));
        // A loop with nothing to do promises nothing, and stalls nothing.
        beacon.idle();
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(liveness.stalled(), None);
        cancel.cancel();
        task.await.unwrap();
    }
}
