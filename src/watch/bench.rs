//! One bench as the watch sees it: what it last heard, the liveness verdict
//! drawn from that, and the bench's offline alert.
//!
//! Times are watch time ([`Ts`], seconds since the epoch from the watch's
//! monotonic clock, see [`super::clock`]); the bench's own clock is used only
//! through its [`Anchor`], to tell live heartbeats from old ones.
//!
//! Verdicts, judged from the silence since the last live heartbeat:
//! `online` (≤ late threshold) → `late` (≤ grace period) → `offline`. A Last
//! Will makes a bench offline after a short debounce instead of the grace
//! period; a clean shutdown makes it `stopped`, which becomes `offline` only
//! if it stays down past the stop window. The watch judges silence only from
//! the moment it could hear (`hold_base`: its start, or the end of its own
//! deafness), so a restart or an ingest outage never makes benches offline
//! by themselves.

use std::collections::BTreeMap;

use super::alerts::lifecycle::{Rules, Seen};
use super::anchor::{Anchor, Judgement};
use super::config::Thresholds;
use crate::wire::ExecutionContext;

pub use super::clock::Ts;
pub use maintenance::{MaintenanceSource, Reported};

mod maintenance;

/// The heartbeat interval assumed until a bench says its own.
pub const DEFAULT_INTERVAL: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Liveness {
    Online,
    Late,
    Offline,
    Stopped,
    Maintenance,
}

impl Liveness {
    pub const ALL: [Liveness; 5] = [
        Liveness::Online,
        Liveness::Late,
        Liveness::Offline,
        Liveness::Stopped,
        Liveness::Maintenance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Online => "online",
            Liveness::Late => "late",
            Liveness::Offline => "offline",
            Liveness::Stopped => "stopped",
            Liveness::Maintenance => "maintenance",
        }
    }

    /// Heard within the grace period (`bench_up`).
    pub fn is_up(self) -> bool {
        matches!(self, Liveness::Online | Liveness::Late)
    }
}

/// Why a bench is offline (or stopped), as alerts and the API say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The broker published its Last Will: the agent's connection dropped.
    LastWill,
    HeartbeatsStopped,
    /// A clean stop, and it did not come back within the stop window.
    StoppedNotBack,
    /// Its last word was that a DUT reset never became ready.
    DutResetNotReady,
}

impl Cause {
    /// The `reason` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::LastWill => "last_will",
            Cause::HeartbeatsStopped => "heartbeats_stopped",
            Cause::StoppedNotBack => "stopped_not_back",
            Cause::DutResetNotReady => "dut_reset_not_ready",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Cause::LastWill => "its broker connection was lost (MQTT Last Will)",
            Cause::HeartbeatsStopped => "its heartbeats stopped",
            Cause::StoppedNotBack => "it was stopped and did not come back",
            Cause::DutResetNotReady => "it went silent after a DUT reset that never became ready",
        }
    }
}

/// The agent's `why` of a DUT reset that never became ready.
const RESET_NOT_READY: &str = "reset_not_ready";

/// The last presence message (MQTT status topic).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Presence {
    Unknown,
    Online,
    /// The broker published the bench's Last Will.
    Lost {
        at: Ts,
    },
    /// The agent said it is stopping.
    Stopped {
        at: Ts,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Mqtt,
    Otlp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Otlp => "otlp",
        }
    }

    fn index(self) -> usize {
        match self {
            Transport::Mqtt => 0,
            Transport::Otlp => 1,
        }
    }
}

/// A heartbeat, whichever way it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub transport: Transport,
    /// One run of the agent; `seq` restarts with it.
    pub run_id: String,
    pub seq: u64,
    /// Bench wall-clock send time, seconds since the epoch.
    pub sent: Option<f64>,
    pub state: Option<String>,
    /// Why the bench is in that state, as it says.
    pub why: Option<String>,
    pub interval: Option<f64>,
    pub boot_id: Option<String>,
    pub agent_version: Option<String>,
    /// Maintenance the bench reports (MQTT: with reason and end, times on
    /// the bench clock). A beat that reports a state but no maintenance
    /// says the bench is not in maintenance.
    pub maintenance: Option<Reported>,
    /// The execution context the bench reports; `None`: not told (OTLP).
    pub context: Option<ExecutionContext>,
}

impl Beat {
    /// A beat that says nothing but who sent it: the fields an ingest path
    /// knows are filled in with struct update syntax.
    pub fn new(transport: Transport, run_id: String, seq: u64) -> Beat {
        Beat {
            transport,
            run_id,
            seq,
            sent: None,
            state: None,
            why: None,
            interval: None,
            boot_id: None,
            agent_version: None,
            maintenance: None,
            context: None,
        }
    }
}

/// What a heartbeat did to the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Proof of life now.
    Live,
    /// Sent long before it arrived (a replay): history only.
    Stale,
    /// Seen before (same run, sequence not newer).
    Duplicate,
}

impl Received {
    pub fn as_str(self) -> &'static str {
        match self {
            Received::Live => "accepted",
            Received::Stale => "stale",
            Received::Duplicate => "duplicate",
        }
    }
}

/// The bench's offline alert: the watch's one alert lifecycle.
pub use super::alerts::lifecycle::Lifecycle as AlertState;
/// What the alert did on one evaluation.
pub use super::alerts::lifecycle::Step as AlertStep;

#[derive(Debug, Clone, PartialEq)]
pub struct Bench {
    pub site: String,
    pub id: String,
    pub first_seen: Ts,
    /// Receive time of the newest live heartbeat.
    pub last_heard: Option<Ts>,
    pub interval: f64,
    pub reported_state: Option<String>,
    /// Why the bench said it is in that state.
    pub reported_why: Option<String>,
    pub agent_version: Option<String>,
    pub boot_id: Option<String>,
    pub anchor: Anchor,
    /// Newest (run, seq) per transport.
    runs: [Option<(String, u64, Option<f64>)>; 2],
    pub presence: Presence,
    /// Maintenance set through the watch's API.
    pub maintenance: bool,
    /// The reason given with the API's maintenance.
    pub maintenance_reason: Option<String>,
    /// Maintenance the bench reported in its heartbeats, with its end in
    /// watch time (boxed, as rare).
    pub reported_maintenance: Option<Box<Reported>>,
    /// When the last maintenance (either side) was switched off: silence
    /// is judged only from then on.
    pub maintenance_ended: Option<Ts>,
    /// The execution context the bench last reported (boxed: most benches
    /// at a time report none, and a hundred thousand of them are held).
    job: Option<Box<ExecutionContext>>,
    /// Bench-clock time of the newest report of maintenance and context
    /// (an MQTT heartbeat or an OTLP heartbeat record): older ones are
    /// history.
    reported_at: Option<f64>,
    pub liveness: Liveness,
    pub offline_since: Option<Ts>,
    pub alert: AlertState,
    /// Probes reported failing on `…/probe/<name>`, with their result.
    pub failing_probes: BTreeMap<String, String>,
    /// Changed since the registry last saved it.
    pub dirty: bool,
}

impl Bench {
    pub fn new(site: &str, id: &str, now: Ts) -> Bench {
        Bench {
            site: site.to_string(),
            id: id.to_string(),
            first_seen: now,
            last_heard: None,
            interval: DEFAULT_INTERVAL,
            reported_state: None,
            reported_why: None,
            agent_version: None,
            boot_id: None,
            anchor: Anchor::default(),
            runs: [None, None],
            presence: Presence::Unknown,
            maintenance: false,
            maintenance_reason: None,
            reported_maintenance: None,
            maintenance_ended: None,
            job: None,
            reported_at: None,
            liveness: Liveness::Online,
            offline_since: None,
            alert: AlertState::Quiet,
            failing_probes: BTreeMap::new(),
            dirty: true,
        }
    }

    /// Takes a heartbeat received at watch time `now`.
    pub fn receive(&mut self, beat: &Beat, now: Ts, th: &Thresholds) -> Received {
        let slot = &mut self.runs[beat.transport.index()];
        if let Some((run, seq, _)) = slot
            && *run == beat.run_id
            && beat.seq <= *seq
        {
            return Received::Duplicate;
        }
        let previous = match slot {
            // The same run as last time (nearly always): no new copy of its id.
            Some((run, seq, sent)) if *run == beat.run_id => Some(Previous {
                same_run: true,
                seq: std::mem::replace(seq, beat.seq),
                sent: std::mem::replace(sent, beat.sent),
            }),
            _ => slot
                .replace((beat.run_id.clone(), beat.seq, beat.sent))
                .map(|(_, seq, sent)| Previous {
                    same_run: false,
                    seq,
                    sent,
                }),
        };
        let tolerance = self.late_after(th);
        let judged = match beat.sent {
            Some(sent) => self.anchor.judge(now, sent, tolerance, self.interval),
            None => Judgement::Live,
        };
        self.dirty = true;
        if judged == Judgement::Old {
            return Received::Stale;
        }
        self.last_heard = Some(now);
        self.learn(beat, previous);
        self.take_report(beat, now);
        if !matches!(self.presence, Presence::Unknown) {
            self.presence = Presence::Online;
        }
        Received::Live
    }

    /// Takes what a live heartbeat says about the bench.
    fn learn(&mut self, beat: &Beat, previous: Option<Previous>) {
        keep(&mut self.reported_state, &beat.state);
        keep(&mut self.reported_why, &beat.why);
        keep(&mut self.agent_version, &beat.agent_version);
        keep(&mut self.boot_id, &beat.boot_id);
        let interval = match beat.interval {
            Some(stated) => Some(stated),
            // Heard over MQTT too: the interval it states is the shorter
            // cadence, and an OTLP cadence would fight it beat by beat.
            None if self.runs[Transport::Mqtt.index()].is_some() => None,
            None => otlp_cadence(beat, previous),
        };
        if let Some(i) = interval.filter(|i| i.is_finite()) {
            self.interval = i.clamp(1.0, 3600.0);
        }
    }

    /// Takes a status message received at `now`.
    pub fn status(&mut self, presence: Presence, now: Ts) {
        let same_kind = std::mem::discriminant(&presence) == std::mem::discriminant(&self.presence);
        // A retained status re-delivered after a reconnect keeps its
        // original time.
        if same_kind {
            return;
        }
        self.presence = match presence {
            Presence::Lost { .. } => Presence::Lost { at: now },
            Presence::Stopped { .. } => Presence::Stopped { at: now },
            other => other,
        };
        self.dirty = true;
    }

    pub fn late_after(&self, th: &Thresholds) -> f64 {
        th.late_after
            .map_or(3.0 * self.interval, |d| d.as_secs_f64())
    }

    /// The grace period, never shorter than two of the bench's own
    /// intervals: a bench that beats every 5 minutes is not offline after 60 s.
    pub fn offline_after(&self, th: &Thresholds) -> f64 {
        th.offline_after.as_secs_f64().max(2.0 * self.interval)
    }

    /// The verdict at `now`, judging silence only since `hold_base` (the
    /// moment the watch could hear again). A bench already offline stays
    /// offline until it is heard: a watch that restarts or recovers from
    /// deafness does not revive it.
    ///
    /// A bench in maintenance (either side) is never judged; once its
    /// maintenance ends, silence is judged only from the end, and a Last
    /// Will heard during the maintenance counts as silence (a grace
    /// period), not as a crash.
    pub fn verdict(&self, now: Ts, th: &Thresholds, hold_base: Ts) -> Liveness {
        if self.in_maintenance(now) {
            return Liveness::Maintenance;
        }
        let ended = self.maintenance_end(now).unwrap_or(f64::NEG_INFINITY);
        let hold = if self.liveness == Liveness::Offline {
            f64::NEG_INFINITY
        } else {
            hold_base.max(ended)
        };
        let heard = self.last_heard.unwrap_or(f64::NEG_INFINITY);
        match self.presence {
            Presence::Stopped { at } if at >= heard => {
                return if now - at.max(hold) >= th.stop_window.as_secs_f64() {
                    Liveness::Offline
                } else {
                    Liveness::Stopped
                };
            }
            Presence::Lost { at }
                if at >= heard
                    && at >= ended
                    && now - at.max(hold) >= th.will_debounce.as_secs_f64() =>
            {
                return Liveness::Offline;
            }
            _ => {}
        }
        let silence = now - heard.max(hold);
        if silence > self.offline_after(th) {
            Liveness::Offline
        } else if silence > self.late_after(th) {
            Liveness::Late
        } else {
            Liveness::Online
        }
    }

    /// Re-judges the bench. While the watch is `deaf` no bench newly
    /// becomes offline: it shows as late until the watch hears again.
    /// Returns the previous verdict when it changed.
    pub fn evaluate(
        &mut self,
        now: Ts,
        th: &Thresholds,
        hold_base: Ts,
        deaf: bool,
    ) -> Option<Liveness> {
        let mut next = self.verdict(now, th, hold_base);
        if deaf && next == Liveness::Offline && self.liveness != Liveness::Offline {
            next = Liveness::Late;
        }
        if next == self.liveness {
            return None;
        }
        let before = self.liveness;
        self.liveness = next;
        self.offline_since = (next == Liveness::Offline).then_some(now);
        self.dirty = true;
        Some(before)
    }

    /// Moves the offline alert along: pending while `hold` runs, firing
    /// (marked as part of a site outage when `site_outage`), and resolved
    /// once the bench stayed up for `resolve_after`, or at once when it goes
    /// into maintenance.
    pub fn step_alert(
        &mut self,
        now: Ts,
        th: &Thresholds,
        hold: f64,
        site_outage: bool,
    ) -> AlertStep {
        let seen = match self.liveness {
            Liveness::Offline => Seen::Bad {
                since: self.offline_since.unwrap_or(now),
                site_outage,
            },
            Liveness::Maintenance => Seen::Cleared,
            Liveness::Online | Liveness::Late => Seen::Good,
            Liveness::Stopped => Seen::Neutral,
        };
        let rules = Rules {
            hold,
            resolve_after: th.resolve_after.as_secs_f64(),
        };
        let step = self.alert.step(now, seen, rules);
        if step != AlertStep::None {
            self.dirty = true;
        }
        step
    }

    /// Why the bench is offline: a DUT reset it last said never became
    /// ready is named first (it is what the job hit), then how it went.
    pub fn offline_reason(&self) -> Cause {
        let heard = self.last_heard.unwrap_or(f64::NEG_INFINITY);
        if self.reported_state.as_deref() == Some("degraded")
            && self
                .reported_why
                .as_deref()
                .is_some_and(|w| w.starts_with(RESET_NOT_READY))
        {
            return Cause::DutResetNotReady;
        }
        match self.presence {
            Presence::Lost { at } if at >= heard => Cause::LastWill,
            Presence::Stopped { at } if at >= heard => Cause::StoppedNotBack,
            _ => Cause::HeartbeatsStopped,
        }
    }

    /// The silence since the last live heartbeat.
    pub fn age(&self, now: Ts) -> Option<f64> {
        self.last_heard.map(|h| (now - h).max(0.0))
    }

    /// Bench clock minus watch clock, from the anchor.
    pub fn skew(&self) -> Option<f64> {
        self.anchor.offset().map(|o| -o)
    }
}

/// The newest heartbeat of a transport before this one.
struct Previous {
    same_run: bool,
    seq: u64,
    sent: Option<f64>,
}

/// How often a bench is heard over OTLP, which states no interval: the
/// time between two points of one run whose count grew. A point is one
/// export of the agent's cumulative heartbeat counter, not one heartbeat:
/// with a beat every second and an export every 10 s each point carries ten
/// beats and the next one comes 10 s later, so the silence to expect is the
/// export interval, not the time per beat. (A point a collector lost makes
/// it look twice as long until the next one: lenient, and brief.)
fn otlp_cadence(beat: &Beat, previous: Option<Previous>) -> Option<f64> {
    let p = previous?;
    let (sent, prev_sent) = (beat.sent?, p.sent?);
    (p.same_run && beat.seq > p.seq).then_some(sent - prev_sent)
}

/// Takes a reported value, copying it only when it changed: heartbeats
/// repeat the same values, ten thousand a second at fleet scale.
fn keep(field: &mut Option<String>, reported: &Option<String>) {
    if let Some(v) = reported
        && field.as_deref() != Some(v.as_str())
    {
        *field = Some(v.clone());
    }
}

#[cfg(test)]
mod tests;
