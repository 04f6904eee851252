//! Start-up and staged shutdown of the watch.

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::WatchConfig;
use super::http;
use crate::systemd::{self, Liveness};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the watch until `cancel` fires.
pub async fn run(cfg: WatchConfig, cancel: CancellationToken) -> Result<(), WatchError> {
    let format = match cfg.log.format {
        crate::config::LogFormat::Json => LogFormat::Json,
        crate::config::LogFormat::Text => LogFormat::Text,
    };
    telemetry::init_logging(format, &cfg.log.level, "benchtel-watch", None)?;
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|source| WatchError::Listen {
            addr: cfg.http.listen,
            source,
        })?;
    let liveness = Liveness::default();
    let mut tasks = JoinSet::new();
    let stop = CancellationToken::new();
    let state = http::HttpState::new();
    tasks.spawn(http::serve(listener, state, stop.clone()));
    tasks.spawn(systemd::run_watchdog(liveness, stop.clone()));
    tracing::info!(
        "benchtel-watch {} started: {}",
        env!("CARGO_PKG_VERSION"),
        cfg.summary()
    );
    systemd::notify_ready(&cfg.summary());
    cancel.cancelled().await;
    systemd::notify_stopping();
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}
