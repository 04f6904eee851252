//! The benches' offline alerts: stepped on each tick, listed for
//! re-sending, and what they say.

use super::super::alerts::{self, Alert, Event};
use super::super::bench::{AlertState, AlertStep, Bench, Ts};
use super::{Fleet, site_alert};
use crate::wire::ExecutionContext;

impl Fleet {
    /// Steps the alerts of `ids` (the others are quiet and stay quiet).
    pub(super) fn step_alerts(
        &mut self,
        name: &str,
        ids: &[String],
        now: Ts,
        events: &mut Vec<Event>,
    ) {
        let hold = self.cfg.alerts.hold.as_secs_f64();
        let mut changed = Vec::new();
        if let Some(site) = self.sites.get_mut(name) {
            let outage = site.outage.is_firing();
            site.firing = 0;
            for id in ids {
                let Some(bench) = site.benches.get_mut(id) else {
                    continue;
                };
                let th = self.cfg.liveness_for(&bench.site, &bench.id);
                let before = bench.alert;
                match bench.step_alert(now, &th, hold, outage) {
                    AlertStep::None => {}
                    step => changed.push((bench.id.clone(), step, before)),
                }
                site.firing += usize::from(matches!(bench.alert, AlertState::Firing { .. }));
            }
        }
        for (id, step, before) in changed {
            let Some(bench) = self.get(name, &id) else {
                continue;
            };
            let mut alert = self.bench_alert(bench, now);
            if step == AlertStep::Resolved {
                if let AlertState::Firing {
                    starts_at,
                    site_outage,
                    ..
                } = before
                {
                    alert.starts_at = starts_at;
                    alert
                        .labels
                        .insert("site_outage".into(), site_outage.to_string());
                }
                alert.resolved_at = Some(now);
                events.push(Event::Resolved(alert));
            } else {
                events.push(Event::Fired(alert));
            }
        }
    }

    /// Every alert firing now, for re-sending. Counts from the last tick
    /// say which sites to read: call it after [`Fleet::tick`].
    pub fn firing(&self, now: Ts) -> Vec<Alert> {
        let mut out = Vec::new();
        if self.ingest.deaf().is_some_and(|d| d.alerted) {
            out.push(self.ingest_alert());
        }
        for (name, site) in &self.sites {
            if let Some(o) = site.outage() {
                out.push(site_alert(name, site, o.starts_at));
            }
            if site.firing == 0 {
                continue;
            }
            out.extend(
                site.benches
                    .values()
                    .filter(|b| matches!(b.alert, AlertState::Firing { .. }))
                    .map(|b| self.bench_alert(b, now)),
            );
        }
        out
    }

    pub(super) fn bench_alert(&self, b: &Bench, now: Ts) -> Alert {
        let (starts_at, site_outage) = match b.alert {
            AlertState::Firing {
                starts_at,
                site_outage,
                ..
            } => (starts_at, site_outage),
            _ => (b.offline_since.unwrap_or(now), false),
        };
        let last_seen = b
            .last_heard
            .map_or_else(|| "never".to_string(), alerts::rfc3339);
        let age = b
            .age(now)
            .map_or_else(|| "unknown".to_string(), |a| format!("{a:.0}s"));
        let cause = b.offline_reason();
        let failing = if b.failing_probes.is_empty() {
            "none".to_string()
        } else {
            b.failing_probes
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let alert = Alert::new(alerts::BENCH_OFFLINE, starts_at)
            .label("bench_id", &b.id)
            .label("bench_site", &b.site)
            .label("site_outage", site_outage.to_string())
            .annotation(
                "summary",
                format!(
                    "Bench {} at site {} is offline: {}",
                    b.id,
                    b.site,
                    cause.describe()
                ),
            )
            .annotation("reason", cause.as_str())
            .annotation("last_seen", last_seen)
            .annotation("age", age)
            .annotation(
                "last_state",
                b.reported_state.clone().unwrap_or_else(|| "unknown".into()),
            )
            .annotation("last_probe_failures", failing);
        with_context(alert, b.context())
    }
}

/// The job the bench was running, as annotations (absent when unknown):
/// lets CI file the failure as infrastructure, not as a test failure.
pub(super) fn with_context(mut alert: Alert, c: &ExecutionContext) -> Alert {
    for (k, v) in [
        ("execution_id", &c.execution_id),
        ("task_id", &c.task_id),
        ("correlation_id", &c.correlation_id),
    ] {
        if let Some(v) = v {
            alert = alert.annotation(k, v.clone());
        }
    }
    alert
}
