//! What both long-running programs share: a single-threaded runtime that
//! turns SIGTERM/SIGINT into a cancellation, and stopping a stage of tasks
//! within a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError<E: std::error::Error + 'static> {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot handle {signal}: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(E),
}

/// Runs `main` on a single-threaded runtime until it returns; SIGTERM or
/// SIGINT cancel the token it is given. One thread is plenty for either
/// program and keeps RSS small; blocking work goes to the blocking pool.
pub fn run_until_signalled<F, Fut, E>(main: F) -> Result<(), ServiceError<E>>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed before anything else, so a stop during start-up is
        // still a clean stop.
        let handler = |kind, name| {
            signal(kind).map_err(|source| ServiceError::Signal {
                signal: name,
                source,
            })
        };
        let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
        let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
        });
        main(cancel).await.map_err(ServiceError::Run)
    })
}

/// Cancels a stage and waits for its tasks, abandoning them at `deadline`.
pub async fn stop_stage(mut set: JoinSet<()>, cancel: &CancellationToken, deadline: Duration) {
    cancel.cancel();
    let drained =
        tokio::time::timeout(deadline, async { while set.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            left = set.len(),
            "stage did not stop within its deadline; aborting it"
        );
        set.abort_all();
    }
}
