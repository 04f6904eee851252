//! Telling a live heartbeat from a late-delivered old one without trusting
//! the bench's clock.
//!
//! Each heartbeat carries the bench's wall-clock send time. Its *offset* is
//! `received − sent` (watch time minus bench time): the bench's clock error
//! plus the transport delay. Live heartbeats share the smallest offsets; a
//! heartbeat replayed from an outbox or a collector's queue arrives with an
//! offset larger by however long it waited. The anchor is the smallest
//! offset seen recently, and a heartbeat counts as proof of life now only if
//! its offset is within `tolerance` of the anchor.
//!
//! Clocks are not perfect, so the anchor follows them:
//! - a bench clock running slow makes offsets creep up; the anchor may rise
//!   by [`DRIFT`] seconds per second (1000 ppm, twenty times a bad crystal);
//! - a bench clock stepped forward (NTP fixing a slow clock) lowers the
//!   offset: the anchor drops at once;
//! - a bench clock stepped back makes live heartbeats look old. Replays
//!   arrive in bursts, a stepped clock keeps beating on schedule: after
//!   [`STEP_CONFIRM`] consecutive "old" heartbeats whose offsets agree to
//!   within a quarter interval and that arrived at least half an interval
//!   apart, the anchor moves to them.
//!
//! The anchor's negation is the bench's clock skew (`bench_clock_skew_seconds`).

/// How fast the anchor may rise: seconds per second of watch time.
pub const DRIFT: f64 = 1e-3;
/// Consistent, on-schedule "old" heartbeats that prove a clock step.
pub const STEP_CONFIRM: usize = 3;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Anchor {
    offset: Option<f64>,
    /// Watch time the offset was last confirmed.
    set_at: f64,
    /// Recent heartbeats that looked old: (received, offset).
    suspects: Vec<(f64, f64)>,
}

/// What one heartbeat proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Sent recently: the bench is alive now.
    Live,
    /// Sent long before it arrived: history, not proof of life.
    Old,
}

impl Anchor {
    /// An anchor restored from a persisted offset.
    pub fn restored(offset: Option<f64>, now: f64) -> Anchor {
        Anchor {
            offset,
            set_at: now,
            suspects: Vec::new(),
        }
    }

    /// The current offset (watch − bench), if any heartbeat was seen.
    pub fn offset(&self) -> Option<f64> {
        self.offset
    }

    /// Judges a heartbeat sent at bench time `sent` and received at watch
    /// time `received`. `interval` is the bench's heartbeat interval.
    pub fn judge(&mut self, received: f64, sent: f64, tolerance: f64, interval: f64) -> Judgement {
        let offset = received - sent;
        let Some(anchor) = self.offset else {
            self.set(offset, received);
            return Judgement::Live;
        };
        let allowed = anchor + DRIFT * (received - self.set_at).max(0.0);
        if offset <= allowed + tolerance {
            self.set(offset.min(allowed), received);
            return Judgement::Live;
        }
        self.suspects.push((received, offset));
        if self.suspects.len() > STEP_CONFIRM {
            self.suspects.remove(0);
        }
        if self.step_confirmed(tolerance, interval) {
            let lowest = self
                .suspects
                .iter()
                .map(|(_, o)| *o)
                .fold(f64::INFINITY, f64::min);
            self.set(lowest, received);
            return Judgement::Live;
        }
        Judgement::Old
    }

    fn set(&mut self, offset: f64, at: f64) {
        self.offset = Some(offset);
        self.set_at = at;
        self.suspects.clear();
    }

    fn step_confirmed(&self, tolerance: f64, interval: f64) -> bool {
        if self.suspects.len() < STEP_CONFIRM {
            return false;
        }
        let (lo, hi) = self
            .suspects
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, o)| {
                (lo.min(*o), hi.max(*o))
            });
        let on_schedule = self
            .suspects
            .windows(2)
            .all(|w| w[1].0 - w[0].0 >= interval / 2.0);
        // A stepped clock keeps its new offset to within jitter; a slow
        // replay's offsets shrink by the replay's lag per beat.
        hi - lo <= tolerance.min(interval / 4.0) && on_schedule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f64 = 30.0;
    const IV: f64 = 10.0;

    /// A bench whose clock is `skew` seconds ahead, beating every 10 s
    /// from watch time `start`, with `delay` seconds of transport.
    fn beats(anchor: &mut Anchor, start: f64, n: usize, skew: f64, delay: f64) -> Vec<Judgement> {
        (0..n)
            .map(|i| {
                let t = start + i as f64 * IV;
                anchor.judge(t + delay, t + skew, TOL, IV)
            })
            .collect()
    }

    #[test]
    fn a_bench_an_hour_ahead_or_behind_is_live() {
        for skew in [3600.0, -3600.0, 0.0] {
            let mut a = Anchor::default();
            assert!(
                beats(&mut a, 1000.0, 20, skew, 0.05)
                    .iter()
                    .all(|j| *j == Judgement::Live)
            );
            let offset = a.offset().unwrap();
            assert!(
                (offset + skew - 0.05).abs() < 1e-6,
                "skew {skew}: offset {offset}"
            );
        }
    }

    #[test]
    fn a_replayed_backlog_is_old_and_does_not_move_the_anchor() {
        let mut a = Anchor::default();
        beats(&mut a, 0.0, 10, 0.0, 0.01);
        // Two hours of beats sent from t=100 on, delivered at t=7300 in a
        // burst (the newest ones, sent within the tolerance, are live).
        for i in 0..700 {
            let sent = 100.0 + i as f64 * IV;
            assert_eq!(
                a.judge(7300.0 + i as f64 * 0.001, sent, TOL, IV),
                Judgement::Old,
                "beat {i}"
            );
        }
        assert!(a.offset().unwrap() < 1.0);
        // The live beat after the backlog is live again.
        assert_eq!(a.judge(7301.0, 7301.0, TOL, IV), Judgement::Live);
    }

    #[test]
    fn slow_delivery_within_tolerance_is_live() {
        let mut a = Anchor::default();
        beats(&mut a, 0.0, 5, 0.0, 0.0);
        assert_eq!(
            a.judge(75.0, 50.0, TOL, IV),
            Judgement::Live,
            "25 s late, tolerance 30 s"
        );
        assert_eq!(a.judge(100.0, 60.0, TOL, IV), Judgement::Old, "40 s late");
    }

    #[test]
    fn a_slow_clock_is_followed() {
        // 500 ppm slow: over a day the offset grows by 43 s, beyond the tolerance.
        let mut a = Anchor::default();
        let mut t = 0.0;
        while t < 86_400.0 {
            assert_eq!(
                a.judge(t, t * (1.0 - 500e-6), TOL, IV),
                Judgement::Live,
                "at {t}"
            );
            t += IV;
        }
    }

    #[test]
    fn a_clock_stepped_back_is_confirmed_after_a_few_beats_on_schedule() {
        let mut a = Anchor::default();
        beats(&mut a, 0.0, 10, 0.0, 0.0);
        let after = beats(&mut a, 100.0, 5, -3600.0, 0.0);
        assert_eq!(
            after,
            [
                Judgement::Old,
                Judgement::Old,
                Judgement::Live,
                Judgement::Live,
                Judgement::Live
            ]
        );
        assert!((a.offset().unwrap() - 3600.0).abs() < 1e-6);
    }

    #[test]
    fn a_slow_trickle_of_old_beats_is_not_a_clock_step() {
        let mut a = Anchor::default();
        beats(&mut a, 0.0, 10, 0.0, 0.0);
        // A queue replaying one beat every 6 s: on schedule, but each beat
        // is 4 s less old than the one before.
        for i in 0..20 {
            let received = 7200.0 + i as f64 * 6.0;
            let sent = 100.0 + i as f64 * IV;
            assert_eq!(a.judge(received, sent, TOL, IV), Judgement::Old, "beat {i}");
        }
    }

    #[test]
    fn a_clock_stepped_forward_is_followed_at_once() {
        let mut a = Anchor::default();
        beats(&mut a, 0.0, 10, 0.0, 0.0);
        assert!(
            beats(&mut a, 100.0, 3, 3600.0, 0.0)
                .iter()
                .all(|j| *j == Judgement::Live)
        );
        // And then an old beat from before the step is recognised as old.
        assert_eq!(a.judge(140.0, 50.0, TOL, IV), Judgement::Old);
    }
}
