//! The local scrape endpoint: `GET /metrics` (Prometheus text format, the
//! same instruments the agent sends over OTLP) and `GET /healthz`.
//!
//! Both read the outbox, whose lock a write hung on a dead disk can hold
//! for good. They read it on the blocking pool, one read per endpoint at a
//! time, so a scrape then stalls neither the runtime (and its heartbeats)
//! nor piles up threads; `/healthz` answers anyway, from the watchdog's
//! view, with the outbox's counts `null`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;
use crate::systemd::Liveness;

#[derive(Clone)]
pub struct HttpState {
    pub registry: prometheus::Registry,
    pub liveness: Liveness,
    pub outbox: Arc<Outbox>,
    pub reads: Reads,
}

/// How long `/healthz` waits for the outbox's counts.
const TOTALS_WAIT: Duration = Duration::from_secs(2);

/// The endpoints' reads in flight: one each at most.
#[derive(Clone, Default)]
pub struct Reads {
    metrics: OneAtATime,
    totals: OneAtATime,
}

#[derive(Clone, Default)]
struct OneAtATime(Arc<AtomicBool>);

/// Lets the next read start when this one returns, also by a panic.
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl OneAtATime {
    /// `f()` on the blocking pool; `None` while the previous call is still
    /// blocked (or if it panicked).
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        if self.0.swap(true, Ordering::AcqRel) {
            return None;
        }
        let done = Done(self.0.clone());
        tokio::task::spawn_blocking(move || {
            let _done = done;
            f()
        })
        .await
        .ok()
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled. Takes a bound listener so tests
/// (and socket activation) can pick the port.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    // Gathering runs the outbox's gauges, which take its lock.
    let registry = state.registry.clone();
    let encoded = state
        .reads
        .metrics
        .run(move || {
            let mut body = Vec::new();
            TextEncoder::new()
                .encode(&registry.gather(), &mut body)
                .map(|()| body)
                .map_err(|e| e.to_string())
        })
        .await;
    match encoded {
        Some(Ok(body)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        ),
        Some(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e.into_bytes(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            b"the previous scrape is still waiting for the outbox (a hung disk?); see /healthz\n"
                .to_vec(),
        ),
    }
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    let outbox = state.outbox.clone();
    let totals = tokio::time::timeout(TOTALS_WAIT, state.reads.totals.run(move || outbox.totals()))
        .await
        .ok()
        .flatten()
        .and_then(Result::ok);
    let (code, status, stalled) = match state.liveness.stalled() {
        None => (StatusCode::OK, "ok", None),
        Some(name) => (StatusCode::SERVICE_UNAVAILABLE, "stalled", Some(name)),
    };
    let body = serde_json::json!({
        "status": status,
        "stalled": stalled,
        "outbox_records": totals.map(|t| t.records),
        "outbox_bytes": totals.map(|t| t.bytes),
        // "live" while the disk takes no writes (see outbox::live).
        "outbox": state.outbox.disk_state().to_json(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    use super::*;
    use crate::outbox::{StoreOptions, Synchronous};

    async fn answer(response: impl IntoResponse) -> (StatusCode, String) {
        let response = response.into_response();
        let code = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_wedged_outbox_stalls_neither_the_runtime_nor_healthz() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(StoreOptions {
            path: dir.path().join("outbox.db"),
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
            synchronous: Synchronous::Full,
            live_max_bytes: 1 << 20,
        })
        .unwrap();
        let outbox = Arc::new(outbox);
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .unwrap();
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        crate::outbox::self_metrics::register(&provider.meter("t"), &outbox);
        let state = HttpState {
            registry,
            liveness: Liveness::default(),
            outbox: outbox.clone(),
            reads: Reads::default(),
        };

        // A write hung on a dead disk holds the store's lock (released
        // after 10 s, so that code reading it on the runtime thread fails
        // the timing below instead of hanging the test).
        let (release, wait) = mpsc::channel::<()>();
        let (held_tx, held) = mpsc::channel();
        let ob = outbox.clone();
        let holder = std::thread::spawn(move || {
            ob.hold_lock_while(|| {
                held_tx.send(()).unwrap();
                let _ = wait.recv_timeout(Duration::from_secs(10));
            })
        });
        held.recv().unwrap();

        let started = Instant::now();
        let (code, body) = answer(healthz(State(state.clone())).await).await;
        assert!(started.elapsed() < TOTALS_WAIT + Duration::from_secs(3));
        assert_eq!(code, StatusCode::OK, "{body}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(health["outbox_records"].is_null(), "{body}");

        // The first scrape waits for the lock, off the runtime thread; a
        // second one is told so at once.
        let first = tokio::spawn(async move { answer(metrics(State(state)).await).await });
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!first.is_finished());
        release.send(()).unwrap();
        holder.join().unwrap();
        let (code, body) = first.await.unwrap();
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body.contains("benchtel_outbox_records"), "{body}");
    }

    #[tokio::test]
    async fn a_scrape_while_the_previous_one_waits_is_told_so() {
        let reads = OneAtATime::default();
        let (release, wait) = mpsc::channel::<()>();
        let r = reads.clone();
        let first = tokio::spawn(async move { r.run(move || wait.recv().is_ok()).await });
        while !reads.0.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        assert_eq!(reads.run(|| true).await, None);
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Some(true));
        assert_eq!(reads.run(|| true).await, Some(true));
    }
}
