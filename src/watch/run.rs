//! Start-up and staged shutdown of the watch.
//!
//! Start: open the registry and put the fleet back as it was, bind HTTP,
//! start the evaluation loop (two ticks a second: verdicts, alerts out) and
//! the registry saver, then ingest; tell systemd READY=1.
//! Stop: ingest stops first (nothing new arrives), then the loops, then the
//! registry saves one last time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::alerts::dispatch::{Batch, Dispatcher};
use super::alerts::{Event, alertmanager, webhook};
use super::clock::Clock;
use super::config::WatchConfig;
use super::fleet::Fleet;
use super::http;
use super::ingest::mqtt;
use super::registry::{Registry, RegistryError};
use super::shared::Shared;
use super::stats::{Stats, StatsError};
use crate::service;
use crate::systemd::{self, Beacon, Liveness};
use crate::telemetry;

/// How often verdicts are made: an offline verdict comes up to one tick
/// after the grace period ran out. Half a second keeps that well inside
/// the promised second; a tick over 100 000 benches costs about 16 ms of
/// CPU (`benches/watch_fleet.rs`).
const TICK: Duration = Duration::from_millis(500);
const SAVE_EVERY: Duration = Duration::from_secs(1);
const STAGE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs the watch until `cancel` fires.
pub async fn run(cfg: WatchConfig, cancel: CancellationToken) -> Result<(), WatchError> {
    telemetry::init_logging(
        cfg.log.format,
        &cfg.log.level,
        "benchtel-watch",
        telemetry::BenchLabels::WATCH,
        None,
    )?;
    let cfg = Arc::new(cfg);
    let clock = Clock::new();
    let (registry, fleet) = open_registry(&cfg, clock).await?;
    let shared = Shared::new(cfg.clone(), fleet, clock, Stats::new(cfg.mqtt.is_some())?);
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|source| WatchError::Listen {
            addr: cfg.http.listen,
            source,
        })?;
    crate::tls::install_provider();
    let client = reqwest::Client::builder()
        .timeout(cfg.alerts.timeout)
        .user_agent(concat!("benchtel-watch/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let liveness = Liveness::default();

    let core_cancel = CancellationToken::new();
    let mut core = JoinSet::new();
    core.spawn(run_ticks(
        shared.clone(),
        client,
        liveness.beacon("evaluation", Duration::from_secs(10)),
        core_cancel.clone(),
    ));
    core.spawn(run_saver(
        shared.clone(),
        registry.clone(),
        liveness.beacon("registry", Duration::from_secs(10)),
        core_cancel.clone(),
    ));
    core.spawn(systemd::run_watchdog(liveness, core_cancel.clone()));

    let ingest_cancel = CancellationToken::new();
    let mut ingest = JoinSet::new();
    ingest.spawn(http::serve(listener, shared.clone(), ingest_cancel.clone()));
    if let Some(conn) = cfg.mqtt.clone() {
        ingest.spawn(mqtt::run(shared.clone(), conn, ingest_cancel.clone()));
    }

    tracing::info!(
        "benchtel-watch {} started: {}",
        env!("CARGO_PKG_VERSION"),
        cfg.summary()
    );
    if let Some(warning) = cfg.alerts.nowhere() {
        tracing::warn!("{warning}");
    }
    systemd::notify_ready(&cfg.summary());
    cancel.cancelled().await;
    tracing::info!("shutting down: stopping ingest");
    systemd::notify_stopping();
    service::stop_stage(ingest, &ingest_cancel, STAGE_DEADLINE).await;
    service::stop_stage(core, &core_cancel, STAGE_DEADLINE).await;
    let changes = shared.lock_fleet().take_changes();
    tokio::task::spawn_blocking(move || lock(&registry).save(&changes)).await??;
    tracing::info!("stopped; the bench registry is saved");
    Ok(())
}

fn lock(registry: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens the registry and rebuilds the fleet from it. Silence is judged
/// from now on: a restart never makes a bench offline by itself.
async fn open_registry(
    cfg: &Arc<WatchConfig>,
    clock: Clock,
) -> Result<(Arc<Mutex<Registry>>, Fleet), WatchError> {
    let path = cfg.registry_path.clone();
    let now = clock.now();
    let (registry, quarantined, loaded) = tokio::task::spawn_blocking(move || {
        let (registry, quarantined) = Registry::open(&path)?;
        let loaded = registry.load(now)?;
        Ok::<_, RegistryError>((registry, quarantined, loaded))
    })
    .await??;
    if let Some((moved, detail)) = quarantined {
        tracing::error!(path = %cfg.registry_path.display(), moved_to = %moved.display(), detail = %detail,
            "the bench registry was corrupt: moved it aside and started a fresh one; benches are relearnt from their next heartbeats");
    }
    for reason in &loaded.skipped {
        tracing::warn!(reason = %reason, "skipped an unreadable registry row");
    }
    let mut fleet = Fleet::new(cfg.clone(), now);
    let (benches, outages) = (loaded.benches.len(), loaded.outages.len());
    for b in loaded.benches {
        fleet.restore(b);
    }
    for (site, o) in loaded.outages {
        fleet.restore_outage(&site, o);
    }
    tracing::info!(benches, site_outages = outages, path = %cfg.registry_path.display(), "bench registry loaded");
    Ok((Arc::new(Mutex::new(registry)), fleet))
}

/// One tick every [`TICK`]: judge the fleet, then send what is due.
async fn run_ticks(
    shared: Shared,
    client: reqwest::Client,
    beacon: Beacon,
    cancel: CancellationToken,
) {
    let cfg = shared.cfg.clone();
    let mut dispatcher = Dispatcher::new(
        cfg.alerts.alertmanagers.len(),
        cfg.alerts.resend_interval,
        cfg.alerts.resolved_resend,
        format!("{}api/v1/benches", cfg.alerts.external_url),
    );
    let mut in_flight = vec![false; cfg.alerts.alertmanagers.len()];
    let mut sending: JoinSet<(Batch, bool)> = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        beacon.busy_for(TICK * 3);
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(done) = sending.join_next() => {
                if let Ok((batch, ok)) = done {
                    in_flight[batch.receiver] = false;
                    dispatcher.sent(&batch, ok, shared.clock.now());
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        let now = shared.clock.now();
        let (events, firing) = {
            let mut fleet = shared.lock_fleet();
            let events = fleet.tick(now);
            (events, fleet.firing(now))
        };
        for event in &events {
            announce(&shared, &client, event);
        }
        dispatcher.update(&events, firing);
        dispatcher.expire(now);
        for batch in dispatcher.due(now) {
            if std::mem::replace(&mut in_flight[batch.receiver], true) {
                continue;
            }
            let (client, stats) = (client.clone(), shared.stats.clone());
            let base = cfg.alerts.alertmanagers[batch.receiver].clone();
            sending.spawn(async move {
                let result = alertmanager::post(&client, &base, batch.body.clone()).await;
                let label = base.to_string();
                match &result {
                    Ok(()) => stats.sends.with_label_values(&[label.as_str(), "ok"]).inc(),
                    Err(e) => {
                        stats.sends.with_label_values(&[label.as_str(), "failed"]).inc();
                        tracing::warn!(error = %e, "alert push to Alertmanager failed; retrying with backoff");
                    }
                }
                (batch, result.is_ok())
            });
        }
    }
}

/// Logs and counts an alert event, and hands it to the webhooks.
fn announce(shared: &Shared, client: &reqwest::Client, event: &Event) {
    let a = event.alert();
    let (name, state) = (a.name().to_string(), event.state());
    shared
        .stats
        .alerts
        .with_label_values(&[name.as_str(), state])
        .inc();
    let labels = a.identity();
    match event {
        Event::Fired(_) => tracing::warn!(alert = %name, labels = %labels, "alert firing"),
        Event::Resolved(_) => tracing::info!(alert = %name, labels = %labels, "alert resolved"),
    }
    let generator = format!("{}api/v1/benches", shared.cfg.alerts.external_url);
    for hook in &shared.cfg.alerts.webhooks {
        let body = webhook::payload(event, &generator);
        let (client, hook, stats) = (client.clone(), hook.clone(), shared.stats.clone());
        tokio::spawn(async move {
            let label = hook.url.to_string();
            match webhook::deliver(&client, &hook, body, Duration::from_secs(1)).await {
                Ok(()) => stats.sends.with_label_values(&[label.as_str(), "ok"]).inc(),
                Err(e) => {
                    stats
                        .sends
                        .with_label_values(&[label.as_str(), "lost"])
                        .inc();
                    tracing::error!(error = %e, "webhook delivery given up after retries");
                }
            }
        });
    }
}

/// Saves changed benches once a second.
async fn run_saver(
    shared: Shared,
    registry: Arc<Mutex<Registry>>,
    beacon: Beacon,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        beacon.busy_for(SAVE_EVERY * 30);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let changes = shared.lock_fleet().take_changes();
        if changes.is_empty() {
            continue;
        }
        let reg = registry.clone();
        let result = tokio::task::spawn_blocking(move || lock(&reg).save(&changes)).await;
        let ok = matches!(result, Ok(Ok(())));
        shared
            .stats
            .registry_saves
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "saving the bench registry failed"),
            Err(e) => tracing::error!(error = %e, "the registry save task failed"),
        }
    }
}
