//! The fleet: every known bench by site, the watch's own ability to hear,
//! site-wide outages, and the alerts that follow from them.
//!
//! [`Fleet::tick`] runs twice a second and, in this order: decides whether
//! the watch is deaf (its broker connection or its own ping loop is down, or
//! nobody at all has been heard for longer than the shortest heartbeat
//! interval), re-judges every bench (holding new offline verdicts while
//! deaf), declares or ends site outages, and moves each bench's alert along
//! (so a bench whose alert fires during a site outage is marked with it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::alerts::{self, Alert, Event};
use super::bench::{AlertState, AlertStep, Beat, Bench, Liveness, Presence, Received, Ts};
use super::config::WatchConfig;

/// Longest bench or site name accepted from the network.
const MAX_NAME: usize = 128;
/// Most bench names listed in a site alert.
const MAX_LISTED: usize = 50;

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

/// A site-wide outage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    pub starts_at: Ts,
    pub recovering_since: Option<Ts>,
}

#[derive(Debug, Default)]
pub struct Site {
    pub benches: HashMap<String, Bench>,
    pub outage: Option<Outage>,
    pub outage_dirty: bool,
    /// Benches whose alert fired, as of the last tick: lets [`Fleet::firing`]
    /// skip the sites with none instead of reading every bench.
    firing: usize,
}

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
    pub deaf: Option<Deafness>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deafness {
    pub since: Ts,
    pub reason: String,
    pub alerted: bool,
}

/// What one pass over a site's benches counted.
#[derive(Debug, Default, Clone, Copy)]
struct SiteCounts {
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
        self.sites.entry(site.to_string()).or_default().outage = Some(outage);
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

    pub fn set_maintenance(&mut self, site: &str, id: &str, on: bool) -> Result<(), Refusal> {
        let bench = self.bench_mut(site, id)?;
        if bench.maintenance != on {
            bench.maintenance = on;
            bench.dirty = true;
            tracing::info!(bench = id, site, on, "maintenance");
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
        let deaf = self.ingest.deaf.is_some();
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
            counts.size += usize::from(!bench.maintenance);
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

    fn judge_ingest(&mut self, now: Ts, events: &mut Vec<Event>) {
        let reason = self.deaf_reason(now);
        let hold = self.cfg.alerts.hold.as_secs_f64();
        match (&mut self.ingest.deaf, reason) {
            (None, Some(reason)) => {
                tracing::error!(reason = %reason, "the watch cannot hear the benches: holding offline verdicts");
                self.ingest.deaf = Some(Deafness {
                    since: now,
                    reason,
                    alerted: false,
                });
            }
            (Some(d), Some(reason)) => {
                d.reason = reason;
                if !d.alerted && now - d.since >= hold {
                    d.alerted = true;
                    events.push(Event::Fired(self.ingest_alert()));
                }
            }
            (Some(_), None) => {
                let alert = self.ingest_alert();
                if let Some(d) = self.ingest.deaf.take() {
                    tracing::info!(
                        deaf_for_s = now - d.since,
                        "the watch hears the benches again"
                    );
                    if d.alerted {
                        let mut alert = alert;
                        alert.resolved_at = Some(now);
                        events.push(Event::Resolved(alert));
                    }
                }
                // Every bench gets a full grace period from now.
                self.hold_base = now;
            }
            (None, None) => {}
        }
    }

    fn deaf_reason(&self, now: Ts) -> Option<String> {
        let i = &self.ingest;
        if i.mqtt_connected == Some(false) {
            return Some("the MQTT broker connection is down".into());
        }
        if i.mqtt_connected == Some(true) {
            let since = i
                .ping_returned
                .unwrap_or(self.hold_base)
                .max(self.hold_base);
            if now - since > i.ping_deadline {
                return Some(format!(
                    "the watch's own MQTT ping has not come back for {:.0} s",
                    now - since
                ));
            }
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
            format!(
                "no heartbeat from any of {expected} benches for {:.0} s",
                now - heard
            )
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

    fn judge_site(&mut self, name: &str, counts: SiteCounts, now: Ts, events: &mut Vec<Event>) {
        let storm = self.cfg.storm;
        let resolve_after = self.cfg.liveness.resolve_after.as_secs_f64();
        let Some(site) = self.sites.get_mut(name) else {
            return;
        };
        let SiteCounts { size, down, recent } = counts;
        let threshold = ((storm.share * size as f64).ceil() as usize).max(1);
        match &mut site.outage {
            None if size >= storm.min_benches && recent >= threshold => {
                site.outage = Some(Outage {
                    starts_at: now,
                    recovering_since: None,
                });
                site.outage_dirty = true;
                tracing::error!(site = name, down, size, "site outage");
                events.push(Event::Fired(site_alert(name, site, now)));
            }
            Some(o) if down < threshold => {
                let since = *o.recovering_since.get_or_insert(now);
                let starts_at = o.starts_at;
                if now - since >= resolve_after {
                    let mut alert = site_alert(name, site, starts_at);
                    alert.resolved_at = Some(now);
                    site.outage = None;
                    site.outage_dirty = true;
                    tracing::info!(site = name, "site outage over");
                    events.push(Event::Resolved(alert));
                }
            }
            Some(o) => o.recovering_since = None,
            None => {}
        }
    }

    /// Steps the alerts of `ids` (the others are quiet and stay quiet).
    fn step_alerts(&mut self, name: &str, ids: &[String], now: Ts, events: &mut Vec<Event>) {
        let hold = self.cfg.alerts.hold.as_secs_f64();
        let mut changed = Vec::new();
        if let Some(site) = self.sites.get_mut(name) {
            let outage = site.outage.is_some();
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
        if self.ingest.deaf.as_ref().is_some_and(|d| d.alerted) {
            out.push(self.ingest_alert());
        }
        for (name, site) in &self.sites {
            if let Some(o) = site.outage {
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

    fn bench_alert(&self, b: &Bench, now: Ts) -> Alert {
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
        let reason = match b.presence {
            Presence::Lost { .. } => "its broker connection was lost (MQTT Last Will)",
            Presence::Stopped { .. } => "it was stopped and did not come back",
            _ => "its heartbeats stopped",
        };
        let failing = if b.failing_probes.is_empty() {
            "none".to_string()
        } else {
            b.failing_probes
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        Alert::new(alerts::BENCH_OFFLINE, starts_at)
            .label("bench_id", &b.id)
            .label("bench_site", &b.site)
            .label("site_outage", site_outage.to_string())
            .annotation(
                "summary",
                format!("Bench {} at site {} is offline: {reason}", b.id, b.site),
            )
            .annotation("last_seen", last_seen)
            .annotation("age", age)
            .annotation(
                "last_state",
                b.reported_state.clone().unwrap_or_else(|| "unknown".into()),
            )
            .annotation("last_probe_failures", failing)
    }

    fn ingest_alert(&self) -> Alert {
        let (since, reason) = self
            .ingest
            .deaf
            .as_ref()
            .map_or((self.hold_base, String::new()), |d| {
                (d.since, d.reason.clone())
            });
        Alert::new(alerts::INGEST_DOWN, since)
            .label("watch", &self.cfg.replica)
            .annotation(
                "summary",
                format!(
                    "benchtel-watch {} cannot hear the benches; per-bench offline alerts are held",
                    self.cfg.replica
                ),
            )
            .annotation("reason", reason)
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
                changes.outages.push((name.clone(), site.outage));
            }
        }
        changes
    }
}

fn site_alert(name: &str, site: &Site, starts_at: Ts) -> Alert {
    let size = site.benches.values().filter(|b| !b.maintenance).count();
    let mut down: Vec<&str> = site
        .benches
        .values()
        .filter(|b| b.liveness == Liveness::Offline)
        .map(|b| b.id.as_str())
        .collect();
    down.sort_unstable();
    let count = down.len();
    let mut listed = down
        .iter()
        .take(MAX_LISTED)
        .copied()
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
