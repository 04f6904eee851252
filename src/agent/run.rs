//! Start-up and staged shutdown of the agent's pipeline.
//!
//! Start, one function per stage: `start_core` opens the outbox, starts the
//! SDK and logging; [`build`] makes the checks' runtime objects;
//! `start_senders` binds `/metrics`, starts the forwarder lanes, expiry,
//! the watchdog, the control socket and the MQTT publisher; systemd hears
//! READY=1; `start_sources` starts readiness, checks and sources.
//! Stop (SIGTERM/SIGINT), each stage with its own `CancellationToken` and
//! `JoinSet` and a deadline: sources stop; the MQTT publisher says
//! `offline` and disconnects while the SDK flushes what it holds into the
//! outbox (`flush_sdk`); the senders stop and one last forward runs within
//! a deadline; the database is checkpointed and closed (`close_outbox`).

mod options;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::Meter;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::build;
use super::http::{self, HttpState};
use super::probes::serial::PortRef;
use super::readiness::{self, Input, Readiness, Verdict};
use super::sources::{heartbeat, host_metrics};
use super::state::Snapshot;
use super::{checks, control, mqtt};
use crate::agent::config::AgentConfig;
use crate::outbox::exporter::{COMMIT_DEADLINE, Sink};
use crate::outbox::forwarder::{self, Forwarder, Wakeups};
use crate::outbox::{self, Outbox, Signal};
use crate::service;
use crate::systemd::{self, Liveness};
use crate::telemetry::{self, Telemetry};
pub use options::store_options;
use options::{forwarder_options, telemetry_options};

/// How long stopped stages may take before they are abandoned.
const STAGE_DEADLINE: Duration = Duration::from_secs(5);
/// The last forward attempt at shutdown.
const FINAL_FORWARD: Duration = Duration::from_secs(5);
const EXPIRY_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error(transparent)]
    Forwarder(#[from] forwarder::ForwarderError),
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error("cannot listen on {addr} for /metrics: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs the agent until `cancel` fires, then shuts down in stages.
pub async fn run(mut cfg: AgentConfig, cancel: CancellationToken) -> Result<(), AgentError> {
    let core = start_core(&cfg).await?;
    let checks = build::checks(&mut cfg.checks, &core.meter);
    let (senders, inputs) = start_senders(&cfg, &core).await?;
    tracing::info!(
        "benchtel-agent {} started: {}",
        env!("CARGO_PKG_VERSION"),
        cfg.summary()
    );
    systemd::notify_ready(&cfg.summary());
    let sources = start_sources(&cfg, checks, &core.meter, inputs);

    cancel.cancelled().await;
    tracing::info!("shutting down: stopping sources");
    systemd::notify_stopping();
    sources.stop().await;
    // Right after the last heartbeat, so the watch hears "planned stop"
    // at once; it runs while the SDK flushes and joins with the senders.
    senders.mqtt_stop.cancel();
    flush_sdk(core.telemetry).await;
    senders.stop().await;
    close_outbox(&core.outbox).await
}

/// What every later stage builds on: the outbox, the SDK writing into it,
/// logging, and the liveness the watchdog judges.
struct Core {
    outbox: Arc<Outbox>,
    forwarder: Arc<Forwarder>,
    telemetry: Telemetry,
    meter: Meter,
    liveness: Liveness,
}

async fn start_core(cfg: &AgentConfig) -> Result<Core, AgentError> {
    let opts = store_options(cfg);
    let (outbox, report) = tokio::task::spawn_blocking(move || Outbox::open(opts)).await??;
    let outbox = Arc::new(outbox);
    let wakeups = Arc::new(Wakeups::default());
    let liveness = Liveness::default();
    let sink = Sink::new(outbox.clone(), wakeups.clone())
        .with_beacon(liveness.beacon("commit", COMMIT_DEADLINE), COMMIT_DEADLINE);
    let telemetry = Telemetry::start(&telemetry_options(cfg), sink)?;
    telemetry::init_logging(
        cfg.log.format,
        &cfg.log.level,
        &cfg.service_name,
        telemetry::BenchLabels::Fixed {
            id: cfg.bench.id.clone(),
            site: cfg.bench.site.clone(),
        },
        Some(&telemetry.logs),
    )?;
    report.log(&cfg.outbox.path);
    warn_unstable_ports(cfg);
    let meter = telemetry.meter();
    outbox::self_metrics::register(&meter, &outbox);
    let forwarder = Arc::new(Forwarder::new(
        outbox.clone(),
        wakeups,
        forwarder_options(cfg),
        &meter,
    )?);
    Ok(Core {
        outbox,
        forwarder,
        telemetry,
        meter,
        liveness,
    })
}

/// The stage that sends: `/metrics`, the forwarder lanes, outbox expiry,
/// the watchdog, the control socket and the MQTT publisher.
struct Senders {
    set: JoinSet<()>,
    cancel: CancellationToken,
    /// Stopped on its own, before the others.
    mqtt_stop: CancellationToken,
    forwarder: Arc<Forwarder>,
}

/// What the sources stage takes from the senders.
struct SourceInputs {
    /// Verdicts, commands and resets for the bench's state machine; the
    /// control socket and MQTT hold senders.
    readiness: (mpsc::Sender<Input>, mpsc::Receiver<Input>),
    /// The bench's state, published by its state machine.
    snapshot: watch::Sender<Snapshot>,
    taps: Taps,
    /// Where the heartbeat, the checks and host metrics get their beacons.
    liveness: Liveness,
}

async fn start_senders(
    cfg: &AgentConfig,
    core: &Core,
) -> Result<(Senders, SourceInputs), AgentError> {
    let mut senders = Senders {
        set: JoinSet::new(),
        cancel: CancellationToken::new(),
        mqtt_stop: CancellationToken::new(),
        forwarder: core.forwarder.clone(),
    };
    if let (true, Some(registry)) = (cfg.http.enabled, core.telemetry.registry.clone()) {
        let state = HttpState {
            registry,
            liveness: core.liveness.clone(),
            outbox: core.outbox.clone(),
            reads: http::Reads::default(),
        };
        senders.spawn_http(cfg.http.listen, state).await?;
    }
    senders.spawn_lanes(core);
    let (readiness_tx, readiness_rx) = mpsc::channel(64);
    let (snapshot, snapshot_rx) = watch::channel(Snapshot::default());
    let control = control::bind(&cfg.control_socket)?;
    let targets = control::Targets {
        readiness: readiness_tx.clone(),
        snapshot: snapshot_rx,
    };
    senders
        .set
        .spawn(control::serve(control, targets, senders.cancel.clone()));
    let (beats_tx, beats) = watch::channel(None);
    let (probes_tx, probes) = mpsc::channel(64);
    if let Some(m) = &cfg.mqtt {
        let links = mqtt::Links {
            beats,
            verdicts: probes,
            readiness: readiness_tx.clone(),
        };
        senders.set.spawn(run_mqtt(
            m.clone(),
            identity(cfg),
            links,
            core.meter.clone(),
            senders.mqtt_stop.clone(),
        ));
    }
    let taps = Taps {
        beats: beats_tx,
        verdicts: cfg
            .mqtt
            .as_ref()
            .filter(|m| m.options.publish_probes)
            .map(|_| probes_tx),
    };
    let inputs = SourceInputs {
        readiness: (readiness_tx, readiness_rx),
        snapshot,
        taps,
        liveness: core.liveness.clone(),
    };
    Ok((senders, inputs))
}

impl Senders {
    async fn spawn_http(
        &mut self,
        addr: std::net::SocketAddr,
        state: HttpState,
    ) -> Result<(), AgentError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Listen { addr, source })?;
        let stop = self.cancel.clone();
        self.set.spawn(async move {
            if let Err(e) = http::serve(listener, state, stop).await {
                tracing::error!(error = %e, "/metrics server failed");
            }
        });
        Ok(())
    }

    /// A forwarder lane per signal, outbox expiry and the watchdog.
    fn spawn_lanes(&mut self, core: &Core) {
        for signal in Signal::ALL {
            let beacon = core.liveness.beacon(signal.path(), Duration::from_secs(60));
            self.set.spawn(
                self.forwarder
                    .clone()
                    .run(signal, beacon, self.cancel.clone()),
            );
        }
        self.set.spawn(forwarder::run_expiry(
            core.outbox.clone(),
            EXPIRY_EVERY,
            core.liveness
                .beacon("outbox expiry", Duration::from_secs(60)),
            self.cancel.clone(),
        ));
        self.set.spawn(systemd::run_watchdog(
            core.liveness.clone(),
            self.cancel.clone(),
        ));
    }

    /// Stops the senders, then one last forward within its deadline.
    async fn stop(mut self) {
        self.cancel.cancel();
        service::stop_stage(std::mem::take(&mut self.set), &self.cancel, STAGE_DEADLINE).await;
        if let Err(e) = self.forwarder.flush(Instant::now() + FINAL_FORWARD).await {
            eprintln!("benchtel-agent: final forward failed: {e}");
        }
    }
}

/// The SDK flushes what it holds into the outbox, within a deadline.
async fn flush_sdk(telemetry: Telemetry) {
    let flushed = tokio::time::timeout(
        STAGE_DEADLINE,
        tokio::task::spawn_blocking(move || telemetry.shutdown()),
    )
    .await;
    if flushed.is_err() {
        eprintln!(
            "benchtel-agent: the SDK did not flush into the outbox within {STAGE_DEADLINE:?}"
        );
    }
}

/// Checkpoints the database, saying what stays for the next start.
async fn close_outbox(outbox: &Arc<Outbox>) -> Result<(), AgentError> {
    let ob = outbox.clone();
    // Live mode's leftovers go to disk if it has room again; if not,
    // settle_live says what is lost and the checkpoint has nothing to do.
    let settled = tokio::task::spawn_blocking(move || ob.settle_live()).await?;
    let status = outbox.status()?;
    if settled.is_ok() {
        let ob = outbox.clone();
        tokio::task::spawn_blocking(move || ob.checkpoint()).await??;
    }
    eprintln!(
        "benchtel-agent: stopped; {} records ({} bytes) stay in the outbox for the next start",
        status.records(),
        status.bytes()
    );
    Ok(())
}

/// Who the MQTT publisher speaks for.
fn identity(cfg: &AgentConfig) -> mqtt::Identity {
    mqtt::Identity {
        bench: cfg.bench.id.clone(),
        site: cfg.bench.site.clone(),
        interval: cfg.sources.heartbeat.interval,
        run_id: heartbeat::run_id().to_string(),
    }
}

async fn run_mqtt(
    cfg: mqtt::Config,
    identity: mqtt::Identity,
    links: mqtt::Links,
    meter: opentelemetry::metrics::Meter,
    stop: CancellationToken,
) {
    if let Err(e) = mqtt::run(cfg, identity, links, meter, stop).await {
        tracing::error!(error = %e, "MQTT publisher cannot start; heartbeats still go to the outbox");
    }
}

/// Where sources hand their results to besides telemetry (the MQTT
/// publisher, when it is on).
struct Taps {
    beats: watch::Sender<Option<heartbeat::Beat>>,
    /// A copy of every verdict change.
    verdicts: Option<mpsc::Sender<Verdict>>,
}

/// The sources stage: readiness, checks, heartbeat and host metrics.
struct Sources {
    set: JoinSet<()>,
    cancel: CancellationToken,
}

impl Sources {
    async fn stop(self) {
        service::stop_stage(self.set, &self.cancel, STAGE_DEADLINE).await;
    }
}

fn start_sources(
    cfg: &AgentConfig,
    checks: checks::Runtime,
    meter: &Meter,
    inputs: SourceInputs,
) -> Sources {
    let cancel = CancellationToken::new();
    let mut set = JoinSet::new();
    let state = inputs.snapshot.subscribe();
    let readiness = Readiness::new(readiness_options(cfg), meter, inputs.snapshot);
    let (readiness_tx, readiness_rx) = inputs.readiness;
    set.spawn(readiness.run(readiness_rx, cancel.clone()));
    let verdict_tx = match inputs.taps.verdicts {
        Some(copy) => tee_verdicts(readiness_tx, copy, &mut set),
        None => readiness_tx,
    };
    if !checks.checks.is_empty() {
        set.spawn(checks::run_all(
            checks,
            cfg.bench.max_concurrent_checks,
            verdict_tx,
            inputs.liveness.clone(),
            cancel.clone(),
        ));
    }
    let hb = &cfg.sources.heartbeat;
    if hb.enabled {
        set.spawn(heartbeat::run(
            hb.clone(),
            meter.clone(),
            state,
            inputs.taps.beats,
            inputs.liveness.beacon("heartbeat", hb.interval),
            cancel.clone(),
        ));
    }
    let hm = &cfg.sources.host_metrics;
    if hm.enabled {
        let beacon = inputs.liveness.beacon("host_metrics", hm.interval);
        set.spawn(host_metrics::run(
            hm.clone(),
            meter.clone(),
            beacon,
            cancel.clone(),
        ));
    }
    Sources { set, cancel }
}

/// How the bench's state machine starts: its readiness checks, this boot,
/// and `bench.json` in the state directory.
fn readiness_options(cfg: &AgentConfig) -> readiness::Options {
    readiness::Options {
        readiness_checks: cfg
            .checks
            .iter()
            .filter(|c| c.affects_ready)
            .map(|c| c.name.clone())
            .collect(),
        continuous_checks: cfg
            .checks
            .iter()
            .filter(|c| c.kind.is_continuous())
            .map(|c| c.name.clone())
            .collect(),
        boot_offset: heartbeat::uptime().unwrap_or_default(),
        boot_id: heartbeat::boot_id(),
        state_file: Some(cfg.state_dir.join(readiness::bench_file::FILE_NAME)),
        reset_limit: cfg.bench.dut_ready_within,
    }
}

/// What the checks send goes to readiness, and each change of a verdict
/// to `copy` (the MQTT probe topics) as well; both wait for room, so
/// neither loses a verdict. Ends when the checks do.
fn tee_verdicts(
    readiness: mpsc::Sender<Input>,
    copy: mpsc::Sender<Verdict>,
    set: &mut JoinSet<()>,
) -> mpsc::Sender<Input> {
    let (tx, mut rx) = mpsc::channel::<Input>(64);
    set.spawn(async move {
        let mut last: HashMap<String, bool> = HashMap::new();
        while let Some(input) = rx.recv().await {
            if let Input::Verdict(v) = &input
                && last.get(&v.check) != Some(&v.up)
            {
                last.insert(v.check.clone(), v.up);
                let _ = copy.send(v.clone()).await;
            }
            if readiness.send(input).await.is_err() {
                return;
            }
        }
    });
    tx
}

/// `/dev/ttyUSB3` is whichever adapter enumerated fourth: say so.
fn warn_unstable_ports(cfg: &AgentConfig) {
    for c in &cfg.checks {
        let port = match &c.kind {
            checks::Kind::SerialExpect(p) => &p.port,
            checks::Kind::SerialWatch(w) => &w.port,
            _ => continue,
        };
        if let PortRef::Path(path) = port
            && crate::agent::probes::serial::is_unstable_path(path)
        {
            tracing::warn!(check = %c.name, port = %path.display(),
                "serial port named by enumeration order; use /dev/serial/by-id/… or by-path so a replug cannot swap boards");
        }
    }
}
