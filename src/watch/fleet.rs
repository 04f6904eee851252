//! The fleet: every known bench by site, the watch's own ability to hear,
//! site-wide outages, and the alerts that follow from them.
//!
//! [`Fleet::tick`] runs twice a second and, in this order: decides whether
//! the watch is deaf (its broker connection or its own ping loop is down, or
//! nobody at all has been heard for longer than the shortest heartbeat
//! interval), re-judges every bench (holding new offline verdicts while
//! deaf), declares or ends site outages, and moves each bench's alert along
//! (so a bench whose alert fires during a site outage is marked with it).
//! All three alerts follow the one [`super::alerts::lifecycle`]: the
//! watch's deafness in [`deafness`], site outages in [`sites`], the benches'
//! offline alerts in [`bench_alerts`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::alerts::Event;
use super::alerts::lifecycle::Lifecycle;
use super::bench::{AlertState, Beat, Bench, Liveness, Presence, Received, Ts};
use super::config::WatchConfig;

mod bench_alerts;
mod deafness;
mod sites;

pub use deafness::{Deafness, Ingest};
pub use sites::Outage;
use sites::site_alert;

/// Longest bench or site name accepted from the network.
const MAX_NAME: usize = 128;

/// Why a message about a bench was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "bench or site name is empty, too long, or has characters other than letters, digits, '.', '_' and '-'"
    )]
    BadName,
    #[error("the bench registry is full (benches.max)")]
    Full,
    #[error("bench id does not match benches.allow")]
    NotAllowed,
    #[error("no such bench")]
    Unknown,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadName => "bad_name",
            Refusal::Full => "registry_full",
            Refusal::NotAllowed => "not_allowed",
            Refusal::Unknown => "unknown_bench",
        }
    }
}

/// A request of the bench API that could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no bench {0:?}")]
    NotFound(String),
    #[error("bench id {id:?} exists at several sites ({sites}); say which with ?site=")]
    Ambiguous { id: String, sites: String },
}

#[derive(Debug, Default)]
pub struct Site {
    pub benches: HashMap<String, Bench>,
    /// The site-outage alert.
    outage: Lifecycle,
    pub outage_dirty: bool,
    /// Benches whose alert fired, as of the last tick: lets [`Fleet::firing`]
    /// skip the sites with none instead of reading every bench.
    firing: usize,
}

/// What one pass over a site's benches counted.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SiteCounts {
    /// Benches not in maintenance.
    size: usize,
    /// Offline benches.
    down: usize,
    /// Offline benches that went offline within the storm window.
    recent: usize,
}

/// What changed since the registry last saved.
#[derive(Debug, Default)]
pub struct Changes {
    pub benches: Vec<Bench>,
    pub outages: Vec<(String, Option<Outage>)>,
    pub removed: Vec<(String, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.benches.is_empty() && self.outages.is_empty() && self.removed.is_empty()
    }
}

pub struct Fleet {
    cfg: Arc<WatchConfig>,
    pub sites: BTreeMap<String, Site>,
    count: usize,
    removed: Vec<(String, String)>,
    /// Events from outside a tick (a retired bench's resolution).
    pending: Vec<Event>,
    pub ingest: Ingest,
    /// Silence is judged from here: the watch's start, or the end of its
    /// last deafness.
    pub hold_base: Ts,
}

impl Fleet {
    pub fn new(cfg: Arc<WatchConfig>, now: Ts) -> Fleet {
        Fleet {
            cfg,
            sites: BTreeMap::new(),
            count: 0,
            removed: Vec::new(),
            pending: Vec::new(),
            ingest: Ingest::default(),
            hold_base: now,
        }
    }

    /// Puts back a bench from the registry.
    pub fn restore(&mut self, bench: Bench) {
        let site = self.sites.entry(bench.site.clone()).or_default();
        site.firing += usize::from(matches!(bench.alert, AlertState::Firing { .. }));
        if site.benches.insert(bench.id.clone(), bench).is_none() {
            self.count += 1;
        }
    }

    pub fn restore_outage(&mut self, site: &str, outage: Outage) {
        self.sites
            .entry(site.to_string())
            .or_default()
            .restore_outage(outage);
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn get(&self, site: &str, id: &str) -> Option<&Bench> {
        self.sites.get(site)?.benches.get(id)
    }

    /// Takes a heartbeat; a bench seen for the first time is admitted by
    /// the configured policy.
    pub fn receive(
        &mut self,
        site: &str,
        id: &str,
        beat: &Beat,
        now: Ts,
    ) -> Result<Received, Refusal> {
        let th = self.cfg.liveness_for(site, id);
        if self.get(site, id).is_none() {
            self.admit(site, id)?;
            let s = self.sites.entry(site.to_string()).or_default();
            s.benches.insert(id.to_string(), Bench::new(site, id, now));
            self.count += 1;
            tracing::info!(bench = id, site, "new bench");
        }
        let bench = self
            .sites
            .get_mut(site)
            .and_then(|s| s.benches.get_mut(id))
            .ok_or(Refusal::Unknown)?;
        let got = bench.receive(beat, now, &th);
        if got == Received::Live {
            self.ingest.last_heard = Some(now);
        }
        Ok(got)
    }

    fn admit(&self, site: &str, id: &str) -> Result<(), Refusal> {
        if !label_safe(site) || !label_safe(id) {
            return Err(Refusal::BadName);
        }
        if let Some(allow) = &self.cfg.benches.allow
            && !allow.is_match(id)
        {
            return Err(Refusal::NotAllowed);
        }
        if self.count >= self.cfg.benches.max {
            return Err(Refusal::Full);
        }
        Ok(())
    }

    /// Takes what a bench says of itself outside a heartbeat (an OTLP
    /// heartbeat log record); false when it is older than what it last
    /// said. Never creates a bench.
    pub fn report(&mut self, site: &str, id: &str, beat: &Beat, now: Ts) -> Result<bool, Refusal> {
        Ok(self.bench_mut(site, id)?.take_report(beat, now))
    }

    /// Takes a status message. Statuses never create benches: a retained
    /// `offline` of a bench nobody knows any more must not page.
    pub fn status(
        &mut self,
        site: &str,
        id: &str,
        presence: Presence,
        now: Ts,
    ) -> Result<(), Refusal> {
        self.ingest.last_heard = Some(now);
        let bench = self.bench_mut(site, id)?;
        bench.status(presence, now);
        Ok(())
    }

    /// Takes a probe result published by the bench.
    pub fn probe(
        &mut self,
        site: &str,
        id: &str,
        probe: &str,
        failing: Option<String>,
    ) -> Result<(), Refusal> {
        let bench = self.bench_mut(site, id)?;
        match failing {
            Some(result) => bench.failing_probes.insert(probe.to_string(), result),
            None => bench.failing_probes.remove(probe),
        };
        Ok(())
    }

    fn bench_mut(&mut self, site: &str, id: &str) -> Result<&mut Bench, Refusal> {
        self.sites
            .get_mut(site)
            .and_then(|s| s.benches.get_mut(id))
            .ok_or(Refusal::Unknown)
    }

    /// Finds a bench by id, at `site` when given.
    pub fn find(&self, id: &str, site: Option<&str>) -> Result<(String, String), LookupError> {
        let sites: Vec<&String> = self
            .sites
            .iter()
            .filter(|(name, s)| {
                site.is_none_or(|w| w == name.as_str()) && s.benches.contains_key(id)
            })
            .map(|(name, _)| name)
            .collect();
        match sites.as_slice() {
            [one] => Ok(((*one).clone(), id.to_string())),
            [] => Err(LookupError::NotFound(id.to_string())),
            many => Err(LookupError::Ambiguous {
                id: id.to_string(),
                sites: many
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Sets or clears the maintenance of the watch's API (the bench's own
    /// is reported in its heartbeats).
    pub fn set_maintenance(
        &mut self,
        site: &str,
        id: &str,
        on: bool,
        reason: Option<String>,
        now: Ts,
    ) -> Result<(), Refusal> {
        let bench = self.bench_mut(site, id)?;
        if bench.maintenance != on || bench.maintenance_reason != reason {
            bench.set_api_maintenance(on, reason, now);
            tracing::info!(bench = id, site, on, "maintenance set through the API");
        }
        Ok(())
    }

    /// Forgets a bench for good; its firing alert is resolved (with the
    /// next tick's events).
    pub fn retire(&mut self, site: &str, id: &str, now: Ts) -> Result<(), Refusal> {
        let s = self.sites.get_mut(site).ok_or(Refusal::Unknown)?;
        let bench = s.benches.remove(id).ok_or(Refusal::Unknown)?;
        self.count -= 1;
        self.removed.push((site.to_string(), id.to_string()));
        tracing::info!(bench = id, site, "bench retired");
        if let AlertState::Firing { .. } = bench.alert {
            let mut alert = self.bench_alert(&bench, now);
            alert.resolved_at = Some(now);
            self.pending.push(Event::Resolved(alert));
        }
        Ok(())
    }

    /// One evaluation round; returns the alerts that fired or resolved.
    pub fn tick(&mut self, now: Ts) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.pending);
        self.judge_ingest(now, &mut events);
        let deaf = self.ingest.is_deaf();
        // One pass over each site's benches: at a hundred thousand benches
        // the fleet is far larger than the CPU cache, and every pass over
        // it costs more than the work done in it. The pass counts what the
        // site's outage is judged from and picks the few benches whose
        // alert can move.
        let names: Vec<String> = self.sites.keys().cloned().collect();
        for name in names {
            let (counts, stepping) = self.evaluate_site(&name, now, deaf);
            self.judge_site(&name, counts, now, &mut events);
            self.step_alerts(&name, &stepping, now, &mut events);
        }
        events
    }

    /// Re-judges every bench of a site; returns its counts and the benches
    /// whose alert must be stepped (offline, or an alert not quiet).
    fn evaluate_site(&mut self, name: &str, now: Ts, deaf: bool) -> (SiteCounts, Vec<String>) {
        let hold_base = self.hold_base;
        let window = self.cfg.storm.window.as_secs_f64();
        let mut counts = SiteCounts::default();
        let mut stepping = Vec::new();
        let Some(site) = self.sites.get_mut(name) else {
            return (counts, stepping);
        };
        for bench in site.benches.values_mut() {
            let th = self.cfg.liveness_for(&bench.site, &bench.id);
            if let Some(before) = bench.evaluate(now, &th, hold_base, deaf) {
                log_change(bench, before, now);
            }
            counts.size += usize::from(bench.liveness != Liveness::Maintenance);
            let offline = bench.liveness == Liveness::Offline;
            if offline {
                counts.down += 1;
                counts.recent +=
                    usize::from(bench.offline_since.is_some_and(|t| now - t <= window));
            }
            if offline || bench.alert != AlertState::Quiet {
                stepping.push(bench.id.clone());
            }
        }
        (counts, stepping)
    }

    /// What the registry must save; clears the dirty flags.
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = Changes {
            removed: std::mem::take(&mut self.removed),
            ..Changes::default()
        };
        for (name, site) in &mut self.sites {
            for b in site.benches.values_mut().filter(|b| b.dirty) {
                b.dirty = false;
                changes.benches.push(b.clone());
            }
            if site.outage_dirty {
                site.outage_dirty = false;
                changes.outages.push((name.clone(), site.outage()));
            }
        }
        changes
    }
}

fn log_change(b: &Bench, before: Liveness, now: Ts) {
    let silent = b.age(now).map_or(-1.0, |a| a.round());
    let (bench, site, from, to) = (
        b.id.as_str(),
        b.site.as_str(),
        before.as_str(),
        b.liveness.as_str(),
    );
    match b.liveness {
        Liveness::Offline => {
            tracing::warn!(bench, site, from, to, silent_s = silent, "bench offline")
        }
        _ => tracing::info!(
            bench,
            site,
            from,
            to,
            silent_s = silent,
            "bench liveness changed"
        ),
    }
}

/// Bench and site names become MQTT topic levels and Prometheus label
/// values: the same rule as the agent's config.
pub fn label_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests;
