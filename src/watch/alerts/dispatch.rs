//! Which alerts are due at each Alertmanager, and when.
//!
//! The dispatcher tracks every alert it knows: firing ones until they
//! resolve, resolved ones for `resolved_resend`. Each Alertmanager has its
//! own bookkeeping (when each alert last reached it, and a backoff while it
//! fails), so one that is down neither delays the others nor misses what
//! happened meanwhile: everything due is sent again once it answers.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Alert, Event, PostableAlert, rfc3339};
use crate::watch::clock::Ts;

/// An alert and its delivery state.
#[derive(Debug, Clone)]
struct Tracked {
    alert: Alert,
    /// When it last reached each receiver.
    sent: Vec<Option<Ts>>,
}

/// One receiver's backoff.
#[derive(Debug)]
struct Receiver {
    backoff: backon::ExponentialBackoff,
    retry_at: Ts,
}

pub struct Dispatcher {
    tracked: BTreeMap<String, Tracked>,
    receivers: Vec<Receiver>,
    resend: f64,
    resolved_resend: f64,
    generator_url: String,
    backoff_min: Duration,
    backoff_max: Duration,
}

/// What to POST to one receiver now.
#[derive(Debug)]
pub struct Batch {
    pub receiver: usize,
    pub body: Vec<u8>,
    identities: Vec<String>,
}

impl Dispatcher {
    pub fn new(
        receivers: usize,
        resend: Duration,
        resolved_resend: Duration,
        generator_url: String,
    ) -> Dispatcher {
        let backoff_min = Duration::from_secs(1);
        let backoff_max = resend.max(backoff_min);
        Dispatcher {
            tracked: BTreeMap::new(),
            receivers: (0..receivers)
                .map(|_| Receiver {
                    backoff: backoff(backoff_min, backoff_max),
                    retry_at: f64::NEG_INFINITY,
                })
                .collect(),
            resend: resend.as_secs_f64(),
            resolved_resend: resolved_resend.as_secs_f64(),
            generator_url,
            backoff_min,
            backoff_max,
        }
    }

    /// Takes one tick's news: alerts that fired or resolved, and the
    /// current firing set (so alerts firing before a restart, or whose
    /// annotations changed, are known).
    pub fn update(&mut self, events: &[Event], firing: Vec<Alert>) {
        let n = self.receivers.len();
        for event in events {
            let alert = event.alert().clone();
            self.tracked.insert(
                alert.identity(),
                Tracked {
                    alert,
                    sent: vec![None; n],
                },
            );
        }
        for alert in firing {
            match self.tracked.get_mut(&alert.identity()) {
                Some(t) if t.alert.resolved_at.is_none() => t.alert = alert,
                Some(_) => {}
                None => {
                    self.tracked.insert(
                        alert.identity(),
                        Tracked {
                            alert,
                            sent: vec![None; n],
                        },
                    );
                }
            }
        }
    }

    /// Forgets resolutions re-sent long enough.
    pub fn expire(&mut self, now: Ts) {
        let keep = self.resolved_resend;
        self.tracked
            .retain(|_, t| t.alert.resolved_at.is_none_or(|r| now - r <= keep));
    }

    /// The batches due now, one per receiver that has something due and is
    /// not backing off.
    pub fn due(&self, now: Ts) -> Vec<Batch> {
        let mut batches = Vec::new();
        for (i, r) in self.receivers.iter().enumerate() {
            if now < r.retry_at {
                continue;
            }
            let due: Vec<(&String, &Tracked)> = self
                .tracked
                .iter()
                .filter(|(_, t)| t.sent[i].is_none_or(|s| now - s >= self.resend))
                .collect();
            if due.is_empty() {
                continue;
            }
            let alerts: Vec<PostableAlert<'_>> = due
                .iter()
                .map(|(_, t)| self.postable(&t.alert, now))
                .collect();
            batches.push(Batch {
                receiver: i,
                body: serde_json::to_vec(&alerts).unwrap_or_default(),
                identities: due.iter().map(|(id, _)| (*id).clone()).collect(),
            });
        }
        batches
    }

    /// `endsAt`: the resolve time once resolved; else four resend
    /// intervals ahead, so alerts of a watch that died expire by themselves.
    fn postable<'a>(&'a self, a: &'a Alert, now: Ts) -> PostableAlert<'a> {
        PostableAlert {
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: rfc3339(a.starts_at),
            ends_at: rfc3339(a.resolved_at.unwrap_or(now + 4.0 * self.resend)),
            generator_url: &self.generator_url,
        }
    }

    /// Records the outcome of sending `batch` at `now`.
    pub fn sent(&mut self, batch: &Batch, ok: bool, now: Ts) {
        let r = &mut self.receivers[batch.receiver];
        if ok {
            r.backoff = backoff(self.backoff_min, self.backoff_max);
            r.retry_at = f64::NEG_INFINITY;
            for id in &batch.identities {
                if let Some(t) = self.tracked.get_mut(id) {
                    t.sent[batch.receiver] = Some(now);
                }
            }
        } else {
            let delay = r.backoff.next().unwrap_or(self.backoff_max);
            r.retry_at = now + delay.as_secs_f64();
        }
    }

    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }
}

fn backoff(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(bench: &str) -> Alert {
        Alert::new("BenchOffline", 100.0).label("bench_id", bench)
    }

    fn bodies(d: &Dispatcher, now: Ts) -> Vec<(usize, serde_json::Value)> {
        d.due(now)
            .iter()
            .map(|b| (b.receiver, serde_json::from_slice(&b.body).unwrap()))
            .collect()
    }

    #[test]
    fn firing_alerts_are_resent_with_ends_at_ahead_and_resolutions_for_a_while() {
        let mut d = Dispatcher::new(
            1,
            Duration::from_secs(60),
            Duration::from_secs(900),
            "http://w/".into(),
        );
        d.update(&[Event::Fired(alert("b1"))], vec![alert("b1")]);
        let due = d.due(110.0);
        let sent: serde_json::Value = serde_json::from_slice(&due[0].body).unwrap();
        assert_eq!(sent[0]["labels"]["bench_id"], "b1");
        assert_eq!(sent[0]["startsAt"], rfc3339(100.0));
        assert_eq!(sent[0]["endsAt"], rfc3339(110.0 + 240.0));
        assert_eq!(sent[0]["generatorURL"], "http://w/");
        d.sent(&due[0], true, 110.0);
        assert!(
            d.due(169.0).is_empty(),
            "not due before the resend interval"
        );
        assert_eq!(bodies(&d, 170.0).len(), 1);
        let mut resolved = alert("b1");
        resolved.resolved_at = Some(175.0);
        d.update(&[Event::Resolved(resolved)], vec![]);
        let due = d.due(175.0);
        let body: serde_json::Value = serde_json::from_slice(&due[0].body).unwrap();
        assert_eq!(body[0]["endsAt"], rfc3339(175.0));
        d.sent(&due[0], true, 175.0);
        // Re-sent every interval for 15 minutes, then forgotten.
        assert_eq!(bodies(&d, 235.0).len(), 1);
        d.expire(175.0 + 899.0);
        assert_eq!(d.tracked(), 1);
        d.expire(175.0 + 901.0);
        assert_eq!(d.tracked(), 0);
    }

    #[test]
    fn a_failing_receiver_backs_off_without_holding_up_the_other() {
        let mut d = Dispatcher::new(
            2,
            Duration::from_secs(60),
            Duration::from_secs(900),
            "u".into(),
        );
        d.update(&[Event::Fired(alert("b1"))], vec![]);
        let due = d.due(0.0);
        assert_eq!(due.len(), 2);
        d.sent(&due[0], false, 0.0);
        d.sent(&due[1], true, 0.0);
        assert!(
            d.due(0.1).is_empty(),
            "receiver 0 backs off, receiver 1 is up to date"
        );
        let later: Vec<usize> = d.due(5.0).iter().map(|b| b.receiver).collect();
        assert_eq!(later, [0], "retried after its backoff, alone");
    }

    #[test]
    fn alerts_firing_before_a_restart_are_sent_at_once() {
        let mut d = Dispatcher::new(
            1,
            Duration::from_secs(60),
            Duration::from_secs(900),
            "u".into(),
        );
        d.update(&[], vec![alert("b1"), alert("b2")]);
        let b = bodies(&d, 0.0);
        assert_eq!(b[0].1.as_array().unwrap().len(), 2);
    }
}
