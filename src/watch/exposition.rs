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
//! the watch's own metrics). A hundred thousand benches make 600 000 lines
//! (about 48 MB) per scrape, so neither the snapshot nor the writing
//! allocates per sample (see `benches/watch_fleet.rs`).

use std::fmt::Write;

use super::bench::{Liveness, Ts};
use super::fleet::Fleet;
use crate::wire::ExecutionContext;

/// A bench's scrape-time values, copied out so the fleet lock is not held
/// while the text is written. The snapshot is taken under the lock, so a
/// row holds one allocation: the site is an index into
/// [`Snapshot::per_site`], the reported state one into [`Snapshot::states`]
/// (a fleet reports a handful of distinct states).
pub struct Row {
    site: u32,
    id: String,
    last_heard: Option<Ts>,
    liveness: Liveness,
    reported_state: Option<u32>,
    skew: Option<f64>,
    /// The job the bench reported, when it did (most benches at a time
    /// run none, and the snapshot allocates only for those that do).
    context: Option<Box<ExecutionContext>>,
}

/// What one scrape needs from the fleet.
pub struct Snapshot {
    pub rows: Vec<Row>,
    pub per_site: Vec<(String, usize)>,
    /// The distinct reported states.
    pub states: Vec<String>,
    pub ingest_up: bool,
}

pub fn snapshot(fleet: &Fleet) -> Snapshot {
    let mut snap = Snapshot {
        rows: Vec::with_capacity(fleet.len()),
        per_site: Vec::with_capacity(fleet.sites.len()),
        states: Vec::new(),
        ingest_up: !fleet.ingest.is_deaf(),
    };
    for (name, site) in &fleet.sites {
        let index = snap.per_site.len() as u32;
        snap.per_site.push((name.clone(), site.benches.len()));
        for b in site.benches.values() {
            let reported_state = b
                .reported_state
                .as_deref()
                .map(|s| intern(&mut snap.states, s));
            snap.rows.push(Row {
                site: index,
                id: b.id.clone(),
                last_heard: b.last_heard,
                liveness: b.liveness,
                reported_state,
                skew: b.skew(),
                context: (!b.context().is_empty()).then(|| Box::new(b.context().clone())),
            });
        }
    }
    snap
}

/// The index of `s` in `states`, added if new. A linear search: there are
/// few distinct states, and a hash per row would cost more.
fn intern(states: &mut Vec<String>, s: &str) -> u32 {
    match states.iter().position(|k| k == s) {
        Some(i) => i as u32,
        None => {
            states.push(s.to_string());
            (states.len() - 1) as u32
        }
    }
}

/// A sample: an optional extra label, and the value.
type Sample<'a> = (Option<(&'static str, &'a str)>, f64);

struct Family {
    name: &'static str,
    help: &'static str,
    /// The sample of one bench, or `None` to skip the bench.
    value: for<'a> fn(&'a Snapshot, &'a Row, Ts) -> Option<Sample<'a>>,
}

const FAMILIES: [Family; 6] = [
    Family {
        name: "bench_heartbeat_age_seconds",
        help: "Seconds since the watch last received a live heartbeat from the bench, by the watch's clock",
        value: |_, r, now| r.last_heard.map(|h| (None, (now - h).max(0.0))),
    },
    Family {
        name: "bench_last_heartbeat_timestamp_seconds",
        help: "When the watch last received a live heartbeat from the bench (Unix time, watch clock)",
        value: |_, r, _| r.last_heard.map(|h| (None, h)),
    },
    Family {
        name: "bench_up",
        help: "1 if the bench was heard within its grace period (online or late), else 0",
        value: |_, r, _| Some((None, f64::from(u8::from(r.liveness.is_up())))),
    },
    Family {
        name: "bench_liveness",
        help: "The watch's verdict on the bench (the current state has value 1)",
        value: |_, r, _| Some((Some(("state", r.liveness.as_str())), 1.0)),
    },
    Family {
        name: "bench_state",
        help: "The state the bench last reported (the current state has value 1)",
        value: |snap, r, _| {
            let state = snap.states.get(r.reported_state? as usize)?;
            Some((Some(("state", state.as_str())), 1.0))
        },
    },
    Family {
        name: "bench_clock_skew_seconds",
        help: "Bench clock minus watch clock, from live heartbeats",
        value: |_, r, _| r.skew.map(|s| (None, s)),
    },
];

/// Writes the per-bench families and the fleet-level self metrics.
pub fn render(snap: &Snapshot, now: Ts, out: &mut String) {
    let _ = render_chunked(snap, now, usize::MAX, out, &mut |_| Ok(()));
}

/// Writes the same text as [`render`] into `out`, handing `out` to `flush`
/// whenever it holds `chunk` bytes and once at the end; `flush` is to empty
/// it. A scrape then never holds the whole text (48 MB at a hundred
/// thousand benches); an error from `flush` (the scraper left) stops it.
pub fn render_chunked(
    snap: &Snapshot,
    now: Ts,
    chunk: usize,
    out: &mut String,
    flush: &mut dyn FnMut(&mut String) -> std::io::Result<()>,
) -> std::io::Result<()> {
    for f in &FAMILIES {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", f.name, f.help, f.name);
        for r in &snap.rows {
            if let Some((extra, v)) = (f.value)(snap, r, now) {
                sample(out, f.name, snap.site(r), r, extra, v);
                if out.len() >= chunk {
                    flush(out)?;
                }
            }
        }
    }
    execution_info(snap, chunk, out, flush)?;
    out.push_str("# HELP benchtel_watch_benches Benches known to the watch, by site\n# TYPE benchtel_watch_benches gauge\n");
    for (site, n) in &snap.per_site {
        let _ = writeln!(out, "benchtel_watch_benches{{bench_site=\"{site}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP benchtel_watch_ingest_up 1 while the watch can hear the benches (broker session and own ping up, not everyone silent)\n# TYPE benchtel_watch_ingest_up gauge\nbenchtel_watch_ingest_up {}",
        u8::from(snap.ingest_up)
    );
    flush(out)
}

/// `bench_execution_info`: the job each bench last reported, one series
/// per bench that reported one. An info metric, so alert rules can name
/// the job in annotations (`query` in a template) without the execution id
/// ever becoming a label of an alert or of the agent's metrics; a new job
/// replaces the bench's series (churn of one series per job, as
/// `kube_pod_info` has per pod).
fn execution_info(
    snap: &Snapshot,
    chunk: usize,
    out: &mut String,
    flush: &mut dyn FnMut(&mut String) -> std::io::Result<()>,
) -> std::io::Result<()> {
    out.push_str("# HELP bench_execution_info The execution context (job) the bench last reported, value 1\n# TYPE bench_execution_info gauge\n");
    for r in &snap.rows {
        let Some(c) = &r.context else {
            continue;
        };
        out.push_str("bench_execution_info{bench_id=\"");
        out.push_str(&r.id);
        out.push_str("\",bench_site=\"");
        out.push_str(snap.site(r));
        for (k, v) in [
            ("execution_id", &c.execution_id),
            ("task_id", &c.task_id),
            ("correlation_id", &c.correlation_id),
        ] {
            out.push_str("\",");
            out.push_str(k);
            out.push_str("=\"");
            escape(out, v.as_deref().unwrap_or(""));
        }
        out.push_str("\"} 1\n");
        if out.len() >= chunk {
            flush(out)?;
        }
    }
    Ok(())
}

impl Snapshot {
    fn site(&self, r: &Row) -> &str {
        self.per_site
            .get(r.site as usize)
            .map_or("", |(name, _)| name.as_str())
    }
}

/// One line, `name{bench_id="…",bench_site="…"[,k="v"]} value`, written
/// piece by piece: `write!` per line costs more than all the rest.
fn sample(out: &mut String, name: &str, site: &str, r: &Row, extra: Option<(&str, &str)>, v: f64) {
    out.push_str(name);
    out.push_str("{bench_id=\"");
    out.push_str(&r.id);
    out.push_str("\",bench_site=\"");
    out.push_str(site);
    out.push('"');
    if let Some((k, v)) = extra {
        out.push(',');
        out.push_str(k);
        out.push_str("=\"");
        escape(out, v);
        out.push('"');
    }
    out.push_str("} ");
    number(out, v);
    out.push('\n');
}

/// Bench ids and sites are label-safe by admission; reported states come
/// from the network and are escaped.
fn escape(out: &mut String, s: &str) {
    if !s.contains(['\\', '"', '\n']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn number(out: &mut String, v: f64) {
    let _ = if v.fract() == 0.0 && v.abs() < 1e15 {
        write!(out, "{}", v as i64)
    } else {
        write!(out, "{v:.3}")
    };
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
            sent: Some(1000.0 + 3600.0),
            state: Some("ready\"x".into()),
            ..Beat::new(Transport::Mqtt, "r".into(), 1)
        };
        fleet.receive("lab", "b1", &beat, 1000.0).unwrap();
        let job = Beat {
            seq: 2,
            context: Some(ExecutionContext {
                execution_id: Some("job-\"1".into()),
                task_id: None,
                correlation_id: Some("c".into()),
            }),
            ..beat.clone()
        };
        fleet.receive("lab", "b2", &beat, 1000.0).unwrap();
        fleet.receive("lab", "b2", &job, 1000.0).unwrap();
        let mut out = String::new();
        render(&snapshot(&fleet), 1012.5, &mut out);
        for want in [
            "bench_heartbeat_age_seconds{bench_id=\"b1\",bench_site=\"lab\"} 12.500",
            "bench_last_heartbeat_timestamp_seconds{bench_id=\"b1\",bench_site=\"lab\"} 1000",
            "bench_up{bench_id=\"b1\",bench_site=\"lab\"} 1",
            "bench_liveness{bench_id=\"b1\",bench_site=\"lab\",state=\"online\"} 1",
            "bench_state{bench_id=\"b1\",bench_site=\"lab\",state=\"ready\\\"x\"} 1",
            "bench_clock_skew_seconds{bench_id=\"b1\",bench_site=\"lab\"} 3600",
            "benchtel_watch_benches{bench_site=\"lab\"} 2",
            "benchtel_watch_ingest_up 1",
            "bench_execution_info{bench_id=\"b2\",bench_site=\"lab\",execution_id=\"job-\\\"1\",task_id=\"\",correlation_id=\"c\"} 1\n",
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
