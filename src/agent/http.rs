//! The local scrape endpoint: `GET /metrics` (Prometheus text format, the
//! same instruments the agent sends over OTLP) and `GET /healthz`.

use std::sync::Arc;

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
    let mut body = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e.to_string().into_bytes(),
        ),
    }
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    let totals = state.outbox.totals().unwrap_or_default();
    let (code, status, stalled) = match state.liveness.stalled() {
        None => (StatusCode::OK, "ok", None),
        Some(name) => (StatusCode::SERVICE_UNAVAILABLE, "stalled", Some(name)),
    };
    let body = serde_json::json!({
        "status": status,
        "stalled": stalled,
        "outbox_records": totals.records,
        "outbox_bytes": totals.bytes,
        // "live" while the disk takes no writes (see outbox::live).
        "outbox": state.outbox.disk_state().to_json(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}
