//! Site-wide outages: when enough of a site's benches went offline
//! together, one site alert instead of a page per bench (which are still
//! raised, marked as part of the outage).

use super::super::alerts::lifecycle::{Lifecycle, Rules, Seen, Step};
use super::super::alerts::{self, Alert, Event};
use super::super::bench::{Bench, Liveness, Ts};
use super::{Fleet, Site, SiteCounts};

/// Most bench names listed in a site alert.
const MAX_LISTED: usize = 50;

/// A site-wide outage, as the registry saves it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    pub starts_at: Ts,
    pub recovering_since: Option<Ts>,
}

impl Site {
    /// The outage under way, if any.
    pub fn outage(&self) -> Option<Outage> {
        match self.outage {
            Lifecycle::Firing {
                starts_at,
                recovering_since,
                ..
            } => Some(Outage {
                starts_at,
                recovering_since,
            }),
            _ => None,
        }
    }

    /// Puts back an outage from the registry.
    pub fn restore_outage(&mut self, o: Outage) {
        self.outage = Lifecycle::Firing {
            starts_at: o.starts_at,
            site_outage: false,
            recovering_since: o.recovering_since,
        };
    }
}

impl Fleet {
    /// Declares an outage when a share of the site's benches went offline
    /// within the storm window; ends it once fewer than that share stayed
    /// offline for `resolve_after`.
    pub(super) fn judge_site(
        &mut self,
        name: &str,
        counts: SiteCounts,
        now: Ts,
        events: &mut Vec<Event>,
    ) {
        let storm = self.cfg.storm;
        let rules = Rules {
            hold: 0.0,
            resolve_after: self.cfg.liveness.resolve_after.as_secs_f64(),
        };
        let Some(site) = self.sites.get_mut(name) else {
            return;
        };
        let SiteCounts { size, down, recent } = counts;
        let threshold = ((storm.share * size as f64).ceil() as usize).max(1);
        let seen = if size >= storm.min_benches && recent >= threshold {
            Seen::Bad {
                since: now,
                site_outage: false,
            }
        } else if down < threshold {
            Seen::Good
        } else {
            Seen::Neutral
        };
        let starts_at = site.outage.since();
        match site.outage.step(now, seen, rules) {
            Step::Fired => {
                site.outage_dirty = true;
                tracing::error!(site = name, down, size, "site outage");
                events.push(Event::Fired(site_alert(name, site, now)));
            }
            Step::Resolved => {
                let mut alert = site_alert(name, site, starts_at.unwrap_or(now));
                alert.resolved_at = Some(now);
                site.outage_dirty = true;
                tracing::info!(site = name, "site outage over");
                events.push(Event::Resolved(alert));
            }
            Step::None => {}
        }
    }
}

pub(super) fn site_alert(name: &str, site: &Site, starts_at: Ts) -> Alert {
    let size = site
        .benches
        .values()
        .filter(|b| b.liveness != Liveness::Maintenance)
        .count();
    let mut down: Vec<&Bench> = site
        .benches
        .values()
        .filter(|b| b.liveness == Liveness::Offline)
        .collect();
    down.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let count = down.len();
    let shown = &down[..count.min(MAX_LISTED)];
    let mut listed = shown
        .iter()
        .map(|b| b.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if count > MAX_LISTED {
        listed.push_str(&format!(" and {} more", count - MAX_LISTED));
    }
    Alert::new(alerts::SITE_OFFLINE, starts_at)
        .label("bench_site", name)
        .annotation(
            "summary",
            format!("{count} of {size} benches at site {name} are offline"),
        )
        .annotation("offline_count", count.to_string())
        .annotation("site_size", size.to_string())
        .annotation("benches", listed)
        .annotation(
            "reasons",
            per_bench(shown, |b| Some(b.offline_reason().as_str())),
        )
        .annotation(
            "execution_ids",
            per_bench(shown, |b| b.context().execution_id.as_deref()),
        )
        .annotation(
            "task_ids",
            per_bench(shown, |b| b.context().task_id.as_deref()),
        )
        .annotation(
            "correlation_ids",
            per_bench(shown, |b| b.context().correlation_id.as_deref()),
        )
}

/// `bench=value` for each listed bench that has a value, `, `-separated.
fn per_bench(benches: &[&Bench], value: impl Fn(&Bench) -> Option<&str>) -> String {
    benches
        .iter()
        .filter_map(|b| Some(format!("{}={}", b.id, value(b)?)))
        .collect::<Vec<_>>()
        .join(", ")
}
