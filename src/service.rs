//! What both long-running programs share: a single-threaded runtime that
//! turns SIGTERM/SIGINT into a cancellation, stopping a stage of tasks
//! within a deadline, and blocking calls kept off that runtime
//! ([`OneAtATime`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// At most one blocking call in flight: a call stuck in the kernel (a hung
/// mount, a wedged store) strands one thread of the blocking pool, not one
/// per attempt, and the runtime thread never waits on it.
#[derive(Debug, Clone, Default)]
pub struct OneAtATime(Arc<AtomicBool>);

/// Why [`OneAtATime::run`] gave no answer.
#[derive(Debug)]
pub enum Refused {
    /// The previous call has not returned.
    Busy,
    /// The call panicked.
    Failed(tokio::task::JoinError),
}

/// Lets the next call start when this one returns, also by a panic.
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl OneAtATime {
    /// `f()` on the blocking pool, unless the previous call still runs.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refused> {
        if self.0.swap(true, Ordering::AcqRel) {
            return Err(Refused::Busy);
        }
        let done = Done(self.0.clone());
        tokio::task::spawn_blocking(move || {
            let _done = done;
            f()
        })
        .await
        .map_err(Refused::Failed)
    }

    /// Whether a call is in flight.
    pub fn busy(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[tokio::test]
    async fn a_call_while_the_previous_one_is_blocked_is_refused() {
        let calls = OneAtATime::default();
        let (release, wait) = mpsc::channel::<()>();
        let c = calls.clone();
        let first = tokio::spawn(async move { c.run(move || wait.recv().is_ok()).await });
        while !calls.busy() {
            tokio::task::yield_now().await;
        }
        assert!(matches!(calls.run(|| true).await, Err(Refused::Busy)));
        release.send(()).unwrap();
        assert!(matches!(first.await.unwrap(), Ok(true)));
        assert!(matches!(calls.run(|| true).await, Ok(true)));
        // A panicking call reopens too.
        assert!(matches!(
            calls.run(|| panic!("boom")).await,
            Err(Refused::Failed(_))
        ));
        assert!(matches!(calls.run(|| 7).await, Ok(7)));
    }
}
