use std::time::Duration;

use super::*;
use crate::config::Env;
use crate::watch::alerts::{self, Alert};
use crate::watch::bench::Transport;

fn config(edit: impl FnOnce(&mut WatchConfig)) -> Arc<WatchConfig> {
    let mut cfg = crate::watch::config::load(None, &Env::default()).unwrap();
    cfg.replica = "w1".into();
    edit(&mut cfg);
    Arc::new(cfg)
}

fn beat(seq: u64, sent: f64) -> Beat {
    Beat {
        sent: Some(sent),
        state: Some("ready".into()),
        interval: Some(10.0),
        ..Beat::new(Transport::Mqtt, "r".into(), seq)
    }
}

/// A fleet clocked by hand: `step` advances one second at a time, beating
/// every 10 s for the benches in `alive`, and collects the events.
struct Sim {
    fleet: Fleet,
    now: f64,
    seq: u64,
    events: Vec<Event>,
}

impl Sim {
    fn new(cfg: Arc<WatchConfig>) -> Sim {
        Sim {
            fleet: Fleet::new(cfg, 0.0),
            now: 0.0,
            seq: 0,
            events: Vec::new(),
        }
    }

    fn run(&mut self, secs: u32, alive: &[(&str, &str)]) {
        for _ in 0..secs {
            self.now += 1.0;
            if (self.now as u64).is_multiple_of(10) {
                self.seq += 1;
                for (site, id) in alive {
                    let got = self
                        .fleet
                        .receive(site, id, &beat(self.seq, self.now), self.now);
                    assert_eq!(got, Ok(Received::Live));
                }
            }
            let events = self.fleet.tick(self.now);
            self.events.extend(events);
        }
    }

    fn fired(&self, name: &str) -> Vec<&Alert> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Fired(a) if a.name() == name => Some(a),
                _ => None,
            })
            .collect()
    }

    fn resolved(&self, name: &str) -> Vec<&Alert> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Resolved(a) if a.name() == name => Some(a),
                _ => None,
            })
            .collect()
    }
}

fn site(name: &'static str, n: usize) -> Vec<(&'static str, &'static str)> {
    (0..n)
        .map(|i| {
            (
                name,
                &*Box::leak(format!("{name}-b{i:02}").into_boxed_str()),
            )
        })
        .collect()
}

#[test]
fn a_dead_bench_among_live_ones_pages_once_after_grace_and_hold() {
    let mut sim = Sim::new(config(|_| {}));
    let mut benches = site("lab", 3);
    sim.run(30, &benches);
    benches.pop(); // lab-b02 dies after its beat at 30 s
    sim.run(70, &benches);
    assert!(
        sim.fired(alerts::BENCH_OFFLINE).is_empty(),
        "grace 60 s + hold 10 s not over"
    );
    sim.run(2, &benches);
    let fired = sim.fired(alerts::BENCH_OFFLINE);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].labels["bench_id"], "lab-b02");
    assert_eq!(fired[0].labels["site_outage"], "false");
    assert_eq!(fired[0].starts_at, 91.0, "starts when it went offline");
    assert_eq!(sim.fleet.firing(sim.now).len(), 1);
    // It comes back (first beat at 110 s) and stays: resolved after
    // resolve_after (60 s).
    benches.push(("lab", "lab-b02"));
    sim.run(67, &benches);
    assert!(sim.resolved(alerts::BENCH_OFFLINE).is_empty());
    sim.run(1, &benches);
    assert_eq!(sim.resolved(alerts::BENCH_OFFLINE).len(), 1);
    assert!(sim.fleet.firing(sim.now).is_empty());
}

#[test]
fn a_deaf_watch_raises_one_ingest_alert_and_no_bench_alerts() {
    let mut sim = Sim::new(config(|_| {}));
    let benches = [site("a", 5), site("b", 5)].concat();
    sim.fleet.ingest.mqtt_connected = Some(true);
    sim.fleet.ingest.ping_deadline = 1e9;
    sim.run(30, &benches);
    // The broker goes away for five minutes; the benches are fine but
    // nothing reaches the watch.
    sim.fleet.ingest.mqtt_connected = Some(false);
    sim.run(300, &[]);
    assert_eq!(sim.fired(alerts::INGEST_DOWN).len(), 1);
    assert!(sim.fired(alerts::BENCH_OFFLINE).is_empty());
    assert!(sim.fired(alerts::SITE_OFFLINE).is_empty());
    sim.fleet.ingest.mqtt_connected = Some(true);
    sim.run(120, &benches);
    assert_eq!(sim.resolved(alerts::INGEST_DOWN).len(), 1);
    assert!(
        sim.fired(alerts::BENCH_OFFLINE).is_empty(),
        "every bench got a new grace period"
    );
}

#[test]
fn silence_from_everyone_is_deafness_not_a_fleet_outage() {
    let mut sim = Sim::new(config(|_| {}));
    let benches = site("a", 4);
    sim.run(30, &benches);
    sim.run(200, &[]);
    assert_eq!(sim.fired(alerts::INGEST_DOWN).len(), 1);
    let down = &sim.fired(alerts::INGEST_DOWN)[0];
    assert!(
        down.annotations["reason"].contains("no heartbeat from any of 4 benches"),
        "{down:?}"
    );
    assert!(sim.fired(alerts::BENCH_OFFLINE).is_empty());
}

#[test]
fn one_silent_bench_alone_is_an_outage_not_deafness() {
    let mut sim = Sim::new(config(|_| {}));
    sim.run(30, &[("a", "only")]);
    sim.run(100, &[]);
    assert!(sim.fired(alerts::INGEST_DOWN).is_empty());
    assert_eq!(sim.fired(alerts::BENCH_OFFLINE).len(), 1);
}

#[test]
fn a_site_cut_at_once_is_one_site_alert_and_marked_bench_alerts() {
    let mut sim = Sim::new(config(|_| {}));
    let cut = site("lab1", 20);
    let others = site("lab2", 5);
    sim.run(30, &[cut.clone(), others.clone()].concat());
    sim.run(120, &others);
    let site_alerts = sim.fired(alerts::SITE_OFFLINE);
    assert_eq!(site_alerts.len(), 1);
    assert_eq!(site_alerts[0].labels["bench_site"], "lab1");
    assert_eq!(site_alerts[0].annotations["offline_count"], "20");
    let benches = sim.fired(alerts::BENCH_OFFLINE);
    assert_eq!(benches.len(), 20);
    assert!(benches.iter().all(|a| a.labels["site_outage"] == "true"));
    assert!(sim.fired(alerts::INGEST_DOWN).is_empty());
    // The site comes back: everything resolves.
    sim.run(200, &[cut, others].concat());
    assert_eq!(sim.resolved(alerts::SITE_OFFLINE).len(), 1);
    assert_eq!(sim.resolved(alerts::BENCH_OFFLINE).len(), 20);
    let r = &sim.resolved(alerts::BENCH_OFFLINE)[0];
    assert_eq!(
        r.labels["site_outage"], "true",
        "resolved with the identity it fired with"
    );
}

#[test]
fn a_restart_pages_neither_for_everyone_nor_forgets_the_dead() {
    let cfg = config(|_| {});
    let mut sim = Sim::new(cfg.clone());
    let benches = site("a", 4);
    sim.run(30, &benches);
    // The watch restarts at 1000 s with the registry of before: three
    // benches are alive, one died while the watch was down.
    let saved = sim.fleet.take_changes();
    let mut fleet = Fleet::new(cfg, 1000.0);
    for b in saved.benches {
        fleet.restore(b);
    }
    let mut sim2 = Sim {
        fleet,
        now: 1000.0,
        seq: 100,
        events: Vec::new(),
    };
    let alive = &benches[..3];
    sim2.run(69, alive);
    assert!(sim2.fired(alerts::BENCH_OFFLINE).is_empty());
    sim2.run(3, alive);
    let fired = sim2.fired(alerts::BENCH_OFFLINE);
    assert_eq!(
        fired.len(),
        1,
        "the dead one, one grace period + hold after the restart"
    );
    assert_eq!(fired[0].labels["bench_id"], "a-b03");
    assert!(sim2.fired(alerts::INGEST_DOWN).is_empty());
}

#[test]
fn a_last_will_pages_after_the_debounce_not_the_grace_period() {
    let mut sim = Sim::new(config(|_| {}));
    let mut benches = site("a", 2);
    sim.run(30, &benches);
    benches.pop();
    sim.fleet
        .status("a", "a-b01", Presence::Lost { at: 0.0 }, sim.now)
        .unwrap();
    sim.run(14, &benches);
    assert!(sim.fired(alerts::BENCH_OFFLINE).is_empty());
    sim.run(2, &benches);
    assert_eq!(
        sim.fired(alerts::BENCH_OFFLINE).len(),
        1,
        "5 s debounce + 10 s hold"
    );
}

#[test]
fn a_clean_stop_pages_only_after_the_stop_window() {
    let mut sim = Sim::new(config(|c| {
        c.liveness.stop_window = Duration::from_secs(120)
    }));
    let mut benches = site("a", 2);
    sim.run(30, &benches);
    benches.pop();
    sim.fleet
        .status("a", "a-b01", Presence::Stopped { at: 0.0 }, sim.now)
        .unwrap();
    sim.run(125, &benches);
    assert!(sim.fired(alerts::BENCH_OFFLINE).is_empty());
    assert_eq!(
        sim.fleet.get("a", "a-b01").unwrap().liveness,
        Liveness::Offline
    );
    sim.run(10, &benches);
    let fired = sim.fired(alerts::BENCH_OFFLINE);
    assert_eq!(fired.len(), 1);
    assert!(fired[0].annotations["summary"].contains("stopped and did not come back"));
}

#[test]
fn maintenance_benches_do_not_page() {
    let mut sim = Sim::new(config(|_| {}));
    let mut benches = site("a", 2);
    sim.run(30, &benches);
    sim.fleet
        .set_maintenance("a", "a-b01", true, None, 0.0)
        .unwrap();
    benches.pop();
    sim.run(300, &benches);
    assert!(sim.fired(alerts::BENCH_OFFLINE).is_empty());
    assert_eq!(
        sim.fleet.get("a", "a-b01").unwrap().liveness,
        Liveness::Maintenance
    );
}

#[test]
fn unknown_benches_are_admitted_by_policy() {
    let cfg = config(|c| {
        c.benches.max = 2;
        c.benches.allow = Some(regex::Regex::new("^ok-").unwrap());
    });
    let mut fleet = Fleet::new(cfg, 0.0);
    assert_eq!(
        fleet.receive("s", "ok-1", &beat(1, 0.0), 0.0),
        Ok(Received::Live)
    );
    assert_eq!(
        fleet.receive("s", "nope", &beat(1, 0.0), 0.0),
        Err(Refusal::NotAllowed)
    );
    assert_eq!(
        fleet.receive("s", "ok-2", &beat(1, 0.0), 0.0),
        Ok(Received::Live)
    );
    assert_eq!(
        fleet.receive("s", "ok-3", &beat(1, 0.0), 0.0),
        Err(Refusal::Full)
    );
    assert_eq!(
        fleet.receive("s", "ok 4", &beat(1, 0.0), 0.0),
        Err(Refusal::BadName)
    );
    assert_eq!(
        fleet.receive("s", "ok-1", &beat(2, 1.0), 1.0),
        Ok(Received::Live),
        "known benches still count"
    );
    assert_eq!(
        fleet.status("s", "ghost", Presence::Online, 1.0),
        Err(Refusal::Unknown)
    );
    assert_eq!(fleet.len(), 2);
    fleet.retire("s", "ok-1", 2.0).unwrap();
    assert_eq!(
        fleet.receive("s", "ok-3", &beat(1, 0.0), 3.0),
        Ok(Received::Live)
    );
}

#[test]
fn find_disambiguates_by_site() {
    let mut fleet = Fleet::new(config(|_| {}), 0.0);
    fleet.receive("s1", "b", &beat(1, 0.0), 0.0).unwrap();
    fleet.receive("s2", "b", &beat(1, 0.0), 0.0).unwrap();
    fleet.receive("s2", "c", &beat(1, 0.0), 0.0).unwrap();
    assert!(matches!(
        fleet.find("b", None),
        Err(LookupError::Ambiguous { .. })
    ));
    assert_eq!(
        fleet.find("b", Some("s1")).unwrap(),
        ("s1".into(), "b".into())
    );
    assert_eq!(fleet.find("c", None).unwrap(), ("s2".into(), "c".into()));
    assert!(matches!(
        fleet.find("x", None),
        Err(LookupError::NotFound(_))
    ));
}

#[test]
fn with_mqtt_and_a_ping_that_comes_back_everyone_silent_is_a_dark_site_not_deafness() {
    let mut sim = Sim::new(config(|_| {}));
    let benches = site("lab", 6);
    sim.fleet.ingest.mqtt_connected = Some(true);
    sim.fleet.ingest.ping_deadline = 1e9;
    sim.run(30, &benches);
    sim.run(200, &[]);
    assert!(sim.fired(alerts::INGEST_DOWN).is_empty());
    assert_eq!(sim.fired(alerts::SITE_OFFLINE).len(), 1);
    let pages = sim.fired(alerts::BENCH_OFFLINE);
    assert_eq!(pages.len(), 6);
    assert!(pages.iter().all(|a| a.labels["site_outage"] == "true"));
}

#[test]
fn over_otlp_alone_total_silence_says_which_two_cases_it_cannot_tell_apart() {
    let mut sim = Sim::new(config(|_| {}));
    sim.run(30, &site("a", 4));
    sim.run(200, &[]);
    let down = &sim.fired(alerts::INGEST_DOWN)[0];
    assert!(
        down.annotations["cannot_tell_apart"].contains("every bench went dark"),
        "{down:?}"
    );
    assert!(down.annotations["summary"].contains("cannot tell which"));
}

#[test]
fn a_ping_that_stops_coming_back_is_deafness_even_with_the_session_up() {
    let mut sim = Sim::new(config(|_| {}));
    let benches = site("lab", 6);
    sim.fleet.ingest.mqtt_connected = Some(true);
    sim.fleet.ingest.ping_deadline = 15.0;
    sim.fleet.ingest.ping_returned = Some(0.0);
    sim.run(10, &benches);
    sim.fleet.ingest.ping_returned = Some(sim.now);
    // The subscription broke: no ping and no heartbeat come back.
    sim.run(300, &[]);
    let down = sim.fired(alerts::INGEST_DOWN);
    assert_eq!(down.len(), 1);
    assert!(down[0].annotations["reason"].contains("ping"), "{down:?}");
    assert!(!down[0].annotations.contains_key("cannot_tell_apart"));
    assert!(sim.fired(alerts::BENCH_OFFLINE).is_empty());
    assert!(sim.fired(alerts::SITE_OFFLINE).is_empty());
}
