//! The local scrape endpoint: `GET /metrics` (Prometheus text format, the
//! same instruments the agent sends over OTLP) and `GET /healthz`.
//!
//! Both read the outbox, whose lock a write hung on a dead disk can hold
//! for good. They read it on the blocking pool, one read per endpoint at a
//! time, so a scrape then stalls neither the runtime (and its heartbeats)
//! nor piles up threads; `/healthz` answers anyway, from the watchdog's
//! view, with the outbox's counts `null`.

use std::sync::Arc;
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
use crate::service::{OneAtATime, Refused};
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
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        ),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e.into_bytes(),
        ),
        Err(Refused::Failed(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("gathering the metrics failed: {e}").into_bytes(),
        ),
        Err(Refused::Busy) => (
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
        .and_then(|read| read.ok())
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
    use std::time::Instant;

    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    use super::*;

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
        let outbox = Outbox::in_dir(dir.path());
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
        let wedge = outbox.wedge(Duration::from_secs(10));

        let started = Instant::now();
        let (code, body) = answer(healthz(State(state.clone())).await).await;
        assert!(started.elapsed() < TOTALS_WAIT + Duration::from_secs(3));
        assert_eq!(code, StatusCode::OK, "{body}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(health["outbox_records"].is_null(), "{body}");

        // The first scrape waits for the lock, off the runtime thread; a
        // second one is told so at once.
        let s = state.clone();
        let first = tokio::spawn(async move { answer(metrics(State(s)).await).await });
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!first.is_finished());
        let (code, body) = answer(metrics(State(state)).await).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        wedge.release();
        let (code, body) = first.await.unwrap();
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body.contains("benchtel_outbox_records"), "{body}");
    }
}
