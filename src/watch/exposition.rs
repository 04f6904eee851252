//! The per-bench series of `/metrics`, written at scrape time.
//!
//! Ages are computed now, from the watch's own clock, never stored where
//! they could go stale; every known bench is written until it is retired,
//! so Prometheus' staleness never hides a dead one. State metrics carry
//! only the current state (value 1): with a hundred thousand benches the
//! all-states form would multiply the series for no extra information
//! (Prometheus marks the previous state's series stale at the next scrape).
//!
//! Written by hand rather than through the `prometheus` crate's collectors:
//! at fleet scale that would allocate a protobuf message per series, and
//! the text format of plain gauges is a few lines (the crate still encodes
//! the watch's own metrics).

use std::fmt::Write;

use super::bench::{Bench, Liveness, Ts};
use super::fleet::Fleet;

/// A bench's scrape-time values, copied out so the fleet lock is not held
/// while the text is written.
pub struct Row {
    site: String,
    id: String,
    last_heard: Option<Ts>,
    liveness: Liveness,
    reported_state: Option<String>,
    skew: Option<f64>,
}

impl Row {
    fn of(b: &Bench) -> Row {
        Row {
            site: b.site.clone(),
            id: b.id.clone(),
            last_heard: b.last_heard,
            liveness: b.liveness,
            reported_state: b.reported_state.clone(),
            skew: b.skew(),
        }
    }
}

/// What one scrape needs from the fleet.
pub struct Snapshot {
    pub rows: Vec<Row>,
    pub per_site: Vec<(String, usize)>,
    pub ingest_up: bool,
}

pub fn snapshot(fleet: &Fleet) -> Snapshot {
    Snapshot {
        rows: fleet
            .sites
            .values()
            .flat_map(|s| s.benches.values())
            .map(Row::of)
            .collect(),
        per_site: fleet
            .sites
            .iter()
            .map(|(name, s)| (name.clone(), s.benches.len()))
            .collect(),
        ingest_up: fleet.ingest.deaf.is_none(),
    }
}

/// A sample: an optional extra label, and the value.
type Sample = (Option<(&'static str, String)>, f64);

struct Family {
    name: &'static str,
    help: &'static str,
    /// The sample of one bench, or `None` to skip the bench.
    value: fn(&Row, Ts) -> Option<Sample>,
}

const FAMILIES: [Family; 6] = [
    Family {
        name: "bench_heartbeat_age_seconds",
        help: "Seconds since the watch last received a live heartbeat from the bench, by the watch's clock",
        value: |r, now| r.last_heard.map(|h| (None, (now - h).max(0.0))),
    },
    Family {
        name: "bench_last_heartbeat_timestamp_seconds",
        help: "When the watch last received a live heartbeat from the bench (Unix time, watch clock)",
        value: |r, _| r.last_heard.map(|h| (None, h)),
    },
    Family {
        name: "bench_up",
        help: "1 if the bench was heard within its grace period (online or late), else 0",
        value: |r, _| Some((None, f64::from(u8::from(r.liveness.is_up())))),
    },
    Family {
        name: "bench_liveness",
        help: "The watch's verdict on the bench (the current state has value 1)",
        value: |r, _| Some((Some(("state", r.liveness.as_str().to_string())), 1.0)),
    },
    Family {
        name: "bench_state",
        help: "The state the bench last reported (the current state has value 1)",
        value: |r, _| r.reported_state.clone().map(|s| (Some(("state", s)), 1.0)),
    },
    Family {
        name: "bench_clock_skew_seconds",
        help: "Bench clock minus watch clock, from live heartbeats",
        value: |r, _| r.skew.map(|s| (None, s)),
    },
];

/// Writes the per-bench families and the fleet-level self metrics.
pub fn render(snap: &Snapshot, now: Ts, out: &mut String) {
    for f in &FAMILIES {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", f.name, f.help, f.name);
        for r in &snap.rows {
            if let Some((extra, v)) = (f.value)(r, now) {
                out.push_str(f.name);
                let _ = write!(out, "{{bench_id=\"{}\",bench_site=\"{}\"", r.id, r.site);
                if let Some((k, v)) = extra {
                    let _ = write!(out, ",{k}=\"{}\"", escape(&v));
                }
                let _ = writeln!(out, "}} {}", number(v));
            }
        }
    }
    out.push_str("# HELP benchtel_watch_benches Benches known to the watch, by site\n# TYPE benchtel_watch_benches gauge\n");
    for (site, n) in &snap.per_site {
        let _ = writeln!(out, "benchtel_watch_benches{{bench_site=\"{site}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP benchtel_watch_ingest_up 1 while the watch can hear the benches (broker session and own ping up, not everyone silent)\n# TYPE benchtel_watch_ingest_up gauge\nbenchtel_watch_ingest_up {}",
        u8::from(snap.ingest_up)
    );
}

/// Bench ids and sites are label-safe by admission; reported states come
/// from the network and are escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Env;
    use crate::watch::bench::{Beat, Transport};

    #[test]
    fn every_known_bench_is_written_with_scrape_time_ages() {
        let cfg = Arc::new(crate::watch::config::load(None, &Env::default()).unwrap());
        let mut fleet = Fleet::new(cfg, 1000.0);
        let beat = Beat {
            transport: Transport::Mqtt,
            run_id: "r".into(),
            seq: 1,
            sent: Some(1000.0 + 3600.0),
            state: Some("ready\"x".into()),
            interval: None,
            boot_id: None,
            agent_version: None,
        };
        fleet.receive("lab", "b1", &beat, 1000.0).unwrap();
        let mut out = String::new();
        render(&snapshot(&fleet), 1012.5, &mut out);
        for want in [
            "bench_heartbeat_age_seconds{bench_id=\"b1\",bench_site=\"lab\"} 12.500",
            "bench_last_heartbeat_timestamp_seconds{bench_id=\"b1\",bench_site=\"lab\"} 1000",
            "bench_up{bench_id=\"b1\",bench_site=\"lab\"} 1",
            "bench_liveness{bench_id=\"b1\",bench_site=\"lab\",state=\"online\"} 1",
            "bench_state{bench_id=\"b1\",bench_site=\"lab\",state=\"ready\\\"x\"} 1",
            "bench_clock_skew_seconds{bench_id=\"b1\",bench_site=\"lab\"} 3600",
            "benchtel_watch_benches{bench_site=\"lab\"} 1",
            "benchtel_watch_ingest_up 1",
        ] {
            assert!(out.contains(want), "{want} not in\n{out}");
        }
        let mut later = String::new();
        render(&snapshot(&fleet), 1100.0, &mut later);
        assert!(
            later.contains("bench_heartbeat_age_seconds{bench_id=\"b1\",bench_site=\"lab\"} 100\n")
        );
    }
}
