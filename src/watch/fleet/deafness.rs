//! The watch's own ability to hear: whether it is deaf, and the ingest-down
//! alert that follows from it.
//!
//! The watch is deaf only on evidence about its own path:
//!
//! | broker session | own ping   | every bench silent | transport | verdict |
//! |----------------|------------|--------------------|-----------|---------|
//! | down           | any        | any                | MQTT      | deaf: ingest down, offline verdicts held |
//! | up             | not back   | any                | MQTT      | deaf: ingest down, offline verdicts held |
//! | up             | comes back | yes                | MQTT      | dark: benches offline, site outages by the storm rule |
//! | (none)         | (none)     | yes                | OTLP only | deaf, and the alert says it cannot tell that from every bench going dark |
//!
//! With MQTT the ping is the proof: a ping that comes back while every
//! bench is silent means the benches went dark (a lab's power or uplink),
//! not the watch. Over OTLP alone nothing proves the path, so total silence
//! is taken as deafness (one page instead of one per bench) and says so.

use super::super::alerts::lifecycle::{Lifecycle, Rules, Seen, Step};
use super::super::alerts::{self, Alert, Event};
use super::super::bench::Ts;
use super::Fleet;

/// How the watch hears, and whether it can.
#[derive(Debug, Clone, Default)]
pub struct Ingest {
    /// `None` without MQTT; else whether the broker session is up.
    pub mqtt_connected: Option<bool>,
    /// The watch's own MQTT ping came back at this time.
    pub ping_returned: Option<Ts>,
    /// How long a ping may take to come back.
    pub ping_deadline: f64,
    /// The newest live heartbeat or status message from anyone: proof
    /// that the path from the benches to the watch works.
    pub last_heard: Option<Ts>,
    /// The ingest-down alert: pending or firing while the watch is deaf.
    deafness: Lifecycle,
    /// Why it is deaf, as of the last tick.
    reason: String,
    /// The deafness is total silence over OTLP alone: it may as well be
    /// every bench gone dark.
    ambiguous: bool,
}

/// The watch's deafness, while it lasts.
#[derive(Debug, Clone, PartialEq)]
pub struct Deafness {
    pub since: Ts,
    pub reason: String,
    /// The ingest-down alert fired.
    pub alerted: bool,
}

impl Ingest {
    /// Whether the watch is deaf now, since when and why.
    pub fn deaf(&self) -> Option<Deafness> {
        Some(Deafness {
            since: self.deafness.since()?,
            reason: self.reason.clone(),
            alerted: self.deafness.is_firing(),
        })
    }

    pub fn is_deaf(&self) -> bool {
        !self.deafness.is_quiet()
    }
}

impl Fleet {
    pub(super) fn judge_ingest(&mut self, now: Ts, events: &mut Vec<Event>) {
        let (reason, ambiguous) = match self.deaf_reason(now) {
            Some((r, a)) => (Some(r), a),
            None => (None, false),
        };
        let before = self.ingest.deafness;
        let rules = Rules {
            // Deafness is noticed on one tick and may page from the next.
            hold: if before.is_quiet() {
                f64::INFINITY
            } else {
                self.cfg.alerts.hold.as_secs_f64()
            },
            // The watch hears again or it does not: no flapping to wait out.
            resolve_after: 0.0,
        };
        let seen = match &reason {
            Some(_) => Seen::Bad {
                since: now,
                site_outage: false,
            },
            None => Seen::Good,
        };
        // The alert that resolves says why the watch was deaf.
        let resolving = self.ingest_alert();
        if let Some(reason) = reason {
            if before.is_quiet() {
                tracing::error!(reason = %reason, "the watch cannot hear the benches: holding offline verdicts");
            }
            self.ingest.reason = reason;
            self.ingest.ambiguous = ambiguous;
        }
        match self.ingest.deafness.step(now, seen, rules) {
            Step::Fired => events.push(Event::Fired(self.ingest_alert())),
            Step::Resolved => {
                let mut alert = resolving;
                alert.resolved_at = Some(now);
                events.push(Event::Resolved(alert));
            }
            Step::None => {}
        }
        if let (Some(since), true) = (before.since(), self.ingest.deafness.is_quiet()) {
            tracing::info!(
                deaf_for_s = now - since,
                "the watch hears the benches again"
            );
            self.ingest.reason.clear();
            // Every bench gets a full grace period from now.
            self.hold_base = now;
        }
    }

    /// Why the watch is deaf now, if it is, and whether that is total
    /// silence over OTLP alone (which may as well be every bench dark).
    fn deaf_reason(&self, now: Ts) -> Option<(String, bool)> {
        let i = &self.ingest;
        match i.mqtt_connected {
            Some(false) => return Some(("the MQTT broker connection is down".into(), false)),
            Some(true) => {
                let since = i
                    .ping_returned
                    .unwrap_or(self.hold_base)
                    .max(self.hold_base);
                if now - since > i.ping_deadline {
                    let why = format!(
                        "the watch's own MQTT ping has not come back for {:.0} s",
                        now - since
                    );
                    return Some((why, false));
                }
                // The ping comes back: the path works, and silence is the
                // benches' own (a dark lab), judged bench by bench.
                return None;
            }
            None => {}
        }
        let (expected, shortest) = self.expected_senders();
        if expected < self.cfg.ingest.min_benches.max(1) {
            return None;
        }
        let silence = self
            .cfg
            .ingest
            .silence
            .map_or(2.0 * shortest, |d| d.as_secs_f64());
        let heard = i.last_heard.unwrap_or(self.hold_base).max(self.hold_base);
        (now - heard > silence).then(|| {
            let why = format!(
                "no heartbeat from any of {expected} benches for {:.0} s over OTLP, where no ping proves the watch's own path",
                now - heard
            );
            (why, true)
        })
    }

    /// Benches that should be sending (online or late), and the shortest
    /// heartbeat interval among them.
    fn expected_senders(&self) -> (usize, f64) {
        self.sites
            .values()
            .flat_map(|s| s.benches.values())
            .filter(|b| b.liveness.is_up())
            .fold((0, f64::INFINITY), |(n, shortest), b| {
                (n + 1, shortest.min(b.interval))
            })
    }

    pub(super) fn ingest_alert(&self) -> Alert {
        let since = self.ingest.deafness.since().unwrap_or(self.hold_base);
        let reason = self.ingest.reason.clone();
        let alert = Alert::new(alerts::INGEST_DOWN, since)
            .label("watch", &self.cfg.replica)
            .annotation("reason", reason);
        if self.ingest.ambiguous {
            return alert
                .annotation(
                    "summary",
                    format!(
                        "benchtel-watch {} hears nothing over OTLP: either its ingest path (collector, network, proxy) is down, or every bench went dark at once (power, uplink); it cannot tell which, and holds per-bench offline alerts",
                        self.cfg.replica
                    ),
                )
                .annotation(
                    "cannot_tell_apart",
                    "the watch's ingest path is down | every bench went dark",
                );
        }
        alert.annotation(
            "summary",
            format!(
                "benchtel-watch {} cannot hear the benches; per-bench offline alerts are held",
                self.cfg.replica
            ),
        )
    }
}
