//! The one lifecycle every alert of the watch follows: a bench's offline
//! alert, a site outage and the watch's own deafness (ingest down).
//!
//! ```text
//!           bad                  bad for `hold`
//!   quiet ────────► pending ─────────────────► firing
//!     ▲                │                       │    ▲
//!     │    not bad     │                  good │    │ bad or neutral
//!     ├────────────────┘                       ▼    │
//!     │                                      recovering
//!     │    good for `resolve_after`              │
//!     ├──────────────────────────────────────────┘  (resolved)
//!     │    cleared (maintenance)
//!     └──────────────────── from firing or recovering  (resolved)
//! ```
//!
//! Each evaluation sees the condition as [`Seen`]: `bad` (the alert's
//! condition holds), `good` (healthy: a firing alert recovers), `neutral`
//! (neither: a pending alert goes quiet, a recovering one is firing again)
//! or `cleared` (a firing alert resolves at once). A pending alert that
//! stayed bad for `hold` fires in the same evaluation that saw it; a
//! recovering one resolves once it has been good for `resolve_after`.
//! Recovering is firing with a `recovering_since`, so what is saved and
//! sent while recovering is still the firing alert.
//!
//! Per alert: the bench alert holds for `alerts.hold` and resolves after
//! `liveness.resolve_after`; a site outage fires at once (hold 0) and
//! resolves after `resolve_after`; ingest down holds for `alerts.hold` (and
//! fires on a later tick than the one that noticed the deafness, even with
//! no hold) and resolves as soon as the watch hears again (`resolve_after` 0).

use crate::watch::clock::Ts;

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Lifecycle {
    #[default]
    Quiet,
    /// The condition holds, waiting `hold` (e.g. for a site-wide verdict).
    Pending { since: Ts },
    Firing {
        starts_at: Ts,
        /// Fired while its site was in an outage (bench alerts; false for
        /// the others).
        site_outage: bool,
        /// Healthy again since then (recovering); resolves after
        /// `resolve_after`.
        recovering_since: Option<Ts>,
    },
}

/// What one evaluation saw of the alert's condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    /// The condition holds, since `since`; `site_outage` marks the alert
    /// if it fires now.
    Bad { since: Ts, site_outage: bool },
    /// Neither bad nor healthy.
    Neutral,
    /// Healthy.
    Good,
    /// Over at once, however long it fired (maintenance).
    Cleared,
}

/// How long an alert waits before it fires, and stays good before it
/// resolves, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub hold: f64,
    pub resolve_after: f64,
}

/// What an evaluation did to the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    None,
    Fired,
    Resolved,
}

impl Lifecycle {
    /// Moves the alert along on what was `seen` at `now`.
    pub fn step(&mut self, now: Ts, seen: Seen, rules: Rules) -> Step {
        use Lifecycle::*;
        let (next, step) = match (*self, seen) {
            (Quiet, Seen::Bad { since, .. }) => (Pending { since }, Step::None),
            (Quiet, _) => (Quiet, Step::None),
            (Pending { since }, Seen::Bad { .. }) => (Pending { since }, Step::None),
            (Pending { .. }, _) => (Quiet, Step::None),
            (Firing { .. }, Seen::Cleared) => (Quiet, Step::Resolved),
            (
                Firing {
                    starts_at,
                    site_outage,
                    recovering_since,
                },
                Seen::Good,
            ) => {
                let since = recovering_since.unwrap_or(now);
                if now - since >= rules.resolve_after {
                    (Quiet, Step::Resolved)
                } else {
                    let recovering_since = Some(since);
                    let firing = Firing {
                        starts_at,
                        site_outage,
                        recovering_since,
                    };
                    (firing, Step::None)
                }
            }
            (
                Firing {
                    starts_at,
                    site_outage,
                    ..
                },
                _,
            ) => {
                let firing = Firing {
                    starts_at,
                    site_outage,
                    recovering_since: None,
                };
                (firing, Step::None)
            }
        };
        *self = next;
        if let (Pending { since }, Seen::Bad { site_outage, .. }) = (*self, seen)
            && now - since >= rules.hold
        {
            *self = Firing {
                starts_at: since,
                site_outage,
                recovering_since: None,
            };
            return Step::Fired;
        }
        step
    }

    /// Since when the condition held (pending or firing).
    pub fn since(&self) -> Option<Ts> {
        match *self {
            Lifecycle::Quiet => None,
            Lifecycle::Pending { since } => Some(since),
            Lifecycle::Firing { starts_at, .. } => Some(starts_at),
        }
    }

    pub fn is_quiet(&self) -> bool {
        *self == Lifecycle::Quiet
    }

    pub fn is_firing(&self) -> bool {
        matches!(self, Lifecycle::Firing { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        hold: 10.0,
        resolve_after: 60.0,
    };

    fn bad(since: Ts) -> Seen {
        Seen::Bad {
            since,
            site_outage: false,
        }
    }

    fn firing(starts_at: Ts, recovering_since: Option<Ts>) -> Lifecycle {
        Lifecycle::Firing {
            starts_at,
            site_outage: false,
            recovering_since,
        }
    }

    #[test]
    fn bad_makes_a_quiet_alert_pending_from_when_it_began() {
        let mut a = Lifecycle::Quiet;
        assert_eq!(a.step(100.0, bad(95.0), RULES), Step::None);
        assert_eq!(a, Lifecycle::Pending { since: 95.0 });
    }

    #[test]
    fn a_pending_alert_fires_once_bad_for_the_hold_starting_when_it_began() {
        let mut a = Lifecycle::Quiet;
        a.step(100.0, bad(100.0), RULES);
        assert_eq!(a.step(109.0, bad(109.0), RULES), Step::None);
        assert_eq!(a.step(110.0, bad(110.0), RULES), Step::Fired);
        assert_eq!(a, firing(100.0, None));
        assert_eq!(a.step(111.0, bad(111.0), RULES), Step::None, "fires once");
    }

    #[test]
    fn with_no_hold_an_alert_fires_in_the_evaluation_that_saw_it() {
        let mut a = Lifecycle::Quiet;
        let now = Rules {
            hold: 0.0,
            resolve_after: 0.0,
        };
        let seen = Seen::Bad {
            since: 5.0,
            site_outage: true,
        };
        assert_eq!(a.step(5.0, seen, now), Step::Fired);
        assert!(matches!(
            a,
            Lifecycle::Firing {
                site_outage: true,
                ..
            }
        ));
        assert_eq!(a.step(6.0, Seen::Good, now), Step::Resolved);
        assert!(a.is_quiet());
    }

    #[test]
    fn a_pending_alert_that_is_not_bad_goes_quiet_without_a_word() {
        for seen in [Seen::Neutral, Seen::Good, Seen::Cleared] {
            let mut a = Lifecycle::Pending { since: 100.0 };
            assert_eq!(a.step(105.0, seen, RULES), Step::None);
            assert!(a.is_quiet(), "{seen:?}");
        }
    }

    #[test]
    fn a_firing_alert_resolves_after_staying_good_for_resolve_after() {
        let mut a = firing(100.0, None);
        assert_eq!(a.step(200.0, Seen::Good, RULES), Step::None);
        assert_eq!(a, firing(100.0, Some(200.0)), "recovering");
        assert_eq!(a.step(259.0, Seen::Good, RULES), Step::None);
        assert_eq!(a.step(260.0, Seen::Good, RULES), Step::Resolved);
        assert!(a.is_quiet());
    }

    #[test]
    fn bad_or_neutral_while_recovering_is_firing_again() {
        for seen in [bad(230.0), Seen::Neutral] {
            let mut a = firing(100.0, Some(200.0));
            assert_eq!(a.step(230.0, seen, RULES), Step::None);
            assert_eq!(a, firing(100.0, None), "{seen:?}");
        }
    }

    #[test]
    fn cleared_resolves_a_firing_alert_at_once() {
        let mut a = firing(100.0, Some(200.0));
        assert_eq!(a.step(201.0, Seen::Cleared, RULES), Step::Resolved);
        assert!(a.is_quiet());
    }

    #[test]
    fn a_quiet_alert_stays_quiet_unless_bad() {
        for seen in [Seen::Neutral, Seen::Good, Seen::Cleared] {
            let mut a = Lifecycle::Quiet;
            assert_eq!(a.step(1.0, seen, RULES), Step::None);
            assert!(a.is_quiet());
        }
    }
}
