//! Maintenance from both sides: set on the bench (`benchtel-agent
//! maintenance on`, reported in every heartbeat) or through the watch's API.
//! Either side is enough; a bench in maintenance is never judged, however
//! it went silent, and its end (switched off, or its end time passed)
//! starts one grace period before the bench is judged again.

use serde::{Deserialize, Serialize};

use super::{Beat, Bench, Ts};
use crate::wire::ExecutionContext;

/// Maintenance as a bench reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    /// Why, as given on the bench (never a label: unbounded text).
    pub reason: Option<String>,
    /// Since when, bench clock (seconds since the epoch).
    pub since: Option<f64>,
    /// Until when: bench clock in a [`Beat`], watch time once taken by a
    /// [`Bench`] (the bench's remaining time added to the receive time, so
    /// a skewed bench clock does not move it).
    pub until: Option<f64>,
}

/// Which side put a bench in maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceSource {
    /// Reported by the bench in its heartbeats.
    Bench,
    /// Set through the watch's API.
    Api,
    Both,
}

impl MaintenanceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceSource::Bench => "bench",
            MaintenanceSource::Api => "api",
            MaintenanceSource::Both => "both",
        }
    }
}

/// What a bench that reported no job reports.
const NO_JOB: &ExecutionContext = &ExecutionContext {
    execution_id: None,
    task_id: None,
    correlation_id: None,
};

impl Bench {
    /// The execution context (job) the bench last reported.
    pub fn context(&self) -> &ExecutionContext {
        self.job.as_deref().unwrap_or(NO_JOB)
    }

    pub fn set_context(&mut self, c: ExecutionContext) {
        self.job = (!c.is_empty()).then(|| Box::new(c));
    }

    /// Takes what the bench says of its maintenance and context, unless an
    /// older report than the last (a replay); returns whether it was taken.
    /// Only reports that carry the context (MQTT heartbeats, OTLP
    /// heartbeat records) set the time: an OTLP metric point exported
    /// before a log record must not make the record look old.
    pub fn take_report(&mut self, beat: &Beat, now: Ts) -> bool {
        if let (Some(sent), Some(last)) = (beat.sent, self.reported_at)
            && beat.context.is_some()
            && sent < last
        {
            return false;
        }
        if beat.context.is_some() && beat.sent.is_some() {
            self.reported_at = beat.sent;
        }
        self.learn_maintenance(beat, now);
        true
    }

    /// Takes the maintenance a live heartbeat reports. A beat that names no
    /// state (an OTLP point without the state gauge) says nothing about it.
    pub(super) fn learn_maintenance(&mut self, beat: &Beat, now: Ts) {
        if let Some(context) = &beat.context
            && context != self.context()
        {
            self.set_context(context.clone());
        }
        let reported = match (&beat.maintenance, beat.state.as_deref()) {
            (Some(m), _) => Some(Reported {
                until: m.until.map(|u| self.watch_time(u, beat, now)),
                ..m.clone()
            }),
            // The state alone (OTLP metrics) keeps what a record said.
            (None, Some("maintenance")) => Some(
                self.reported_maintenance
                    .as_deref()
                    .cloned()
                    .unwrap_or_default(),
            ),
            (None, Some(_)) => None,
            (None, None) => return,
        };
        if same(reported.as_ref(), self.reported_maintenance.as_deref()) {
            return;
        }
        if reported.is_none() && !self.maintenance {
            self.maintenance_ended = Some(now);
        }
        tracing::info!(bench = %self.id, site = %self.site, on = reported.is_some(),
            reason = reported.as_ref().and_then(|m| m.reason.as_deref()), "maintenance reported by the bench");
        self.reported_maintenance = reported.map(Box::new);
        self.dirty = true;
    }

    /// A bench-clock time as watch time: the time left at the beat's send
    /// time, from its receive time, for a live beat; through the clock
    /// anchor for a log record (which may have waited in an outbox).
    fn watch_time(&self, bench_time: f64, beat: &Beat, now: Ts) -> Ts {
        match (beat.transport, self.skew()) {
            (super::Transport::Otlp, Some(skew)) => bench_time - skew,
            _ => now + (bench_time - beat.sent.unwrap_or(bench_time)),
        }
    }

    /// Sets or clears the API's maintenance at `now`.
    pub fn set_api_maintenance(&mut self, on: bool, reason: Option<String>, now: Ts) {
        if !on && self.maintenance && !self.in_reported_maintenance(now) {
            self.maintenance_ended = Some(now);
        }
        self.maintenance = on;
        self.maintenance_reason = if on { reason } else { None };
        self.dirty = true;
    }

    fn in_reported_maintenance(&self, now: Ts) -> bool {
        self.reported_maintenance
            .as_ref()
            .is_some_and(|m| m.until.is_none_or(|u| now < u))
    }

    /// In maintenance at `now`, by either side.
    pub fn in_maintenance(&self, now: Ts) -> bool {
        self.maintenance || self.in_reported_maintenance(now)
    }

    /// Which side holds the bench in maintenance at `now`.
    pub fn maintenance_source(&self, now: Ts) -> Option<MaintenanceSource> {
        match (self.maintenance, self.in_reported_maintenance(now)) {
            (true, true) => Some(MaintenanceSource::Both),
            (true, false) => Some(MaintenanceSource::Api),
            (false, true) => Some(MaintenanceSource::Bench),
            (false, false) => None,
        }
    }

    /// The reason of the maintenance under way (the API's first).
    pub fn maintenance_reason_now(&self, now: Ts) -> Option<&str> {
        let api = self
            .maintenance
            .then_some(self.maintenance_reason.as_deref());
        let bench = self
            .in_reported_maintenance(now)
            .then(|| self.reported_maintenance.as_ref()?.reason.as_deref());
        api.flatten().or(bench.flatten())
    }

    /// When the last maintenance ended: switched off, or its end time
    /// passed (`None`: never, or still under way).
    pub fn maintenance_end(&self, now: Ts) -> Option<Ts> {
        let expired = self
            .reported_maintenance
            .as_ref()
            .and_then(|m| m.until)
            .filter(|u| *u <= now);
        match (self.maintenance_ended, expired) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The same maintenance: an end computed from each beat's receive time
/// moves by the network's jitter, which is no change.
fn same(a: Option<&Reported>, b: Option<&Reported>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.reason == b.reason
                && a.since == b.since
                && match (a.until, b.until) {
                    (Some(x), Some(y)) => (x - y).abs() < 2.0,
                    (x, y) => x == y,
                }
        }
        _ => false,
    }
}
