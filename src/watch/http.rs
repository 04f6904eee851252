//! The watch's HTTP side: `/metrics` for Prometheus, `/healthz`, the bench
//! API (`GET /api/v1/benches`, `POST /api/v1/benches/{id}/maintenance`,
//! `POST /api/v1/benches/{id}/retire`) and the OTLP receiver
//! (`POST /v1/metrics`, `POST /v1/logs`).
//!
//! The two POSTs of the bench API change what pages people, so they need
//! the admin bearer token when one is configured, and otherwise answer only
//! to clients on the loopback interface.

use std::io::Write;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus::{Encoder, TextEncoder};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::io::{ReaderStream, SyncIoBridge};
use tokio_util::sync::CancellationToken;

use super::alerts::rfc3339;
use super::bench::{AlertState, Bench, Liveness, Ts};
use super::exposition;
use super::fleet::{LookupError, Refusal};
use super::ingest::{otlp, otlp_logs};
use super::shared::Shared;

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/v1/benches", get(benches))
        .route("/api/v1/benches/{id}/maintenance", post(maintenance))
        .route("/api/v1/benches/{id}/retire", post(retire))
        .route("/v1/metrics", post(otlp::handle))
        .route("/v1/logs", post(otlp_logs::handle))
        .with_state(shared)
}

/// Serves until `shutdown` is cancelled. Takes a bound listener so tests
/// can pick the port.
pub async fn serve(listener: TcpListener, shared: Shared, shutdown: CancellationToken) {
    let app = router(shared).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// Text handed to the pipe (or the gzip encoder) at a time.
const METRICS_CHUNK: usize = 64 * 1024;

/// `GET /metrics`, streamed: the text is written (and gzipped) off the async
/// threads into a bounded pipe that the response body reads, so a scrape
/// of a large fleet holds a few chunks in memory, not the whole text, and
/// its bytes leave while the rest is written.
async fn metrics(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let snap = exposition::snapshot(&shared.lock_fleet());
    let now = shared.clock.now();
    let registry = shared.stats.registry.clone();
    let gzip = accepts_gzip(&headers);
    let (reader, writer) = tokio::io::duplex(4 * METRICS_CHUNK);
    let writer = SyncIoBridge::new(writer);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = write_metrics(&snap, now, &registry, gzip, writer) {
            tracing::debug!(error = %e, "a /metrics scrape ended early");
        }
    });
    let body = Body::from_stream(ReaderStream::with_capacity(reader, METRICS_CHUNK));
    let mut resp = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response();
    if gzip {
        resp.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    resp
}

/// Writes the whole exposition to `out`, gzipped when asked. Dropping `out`
/// at the end is what ends the response body.
fn write_metrics(
    snap: &exposition::Snapshot,
    now: Ts,
    registry: &prometheus::Registry,
    gzip: bool,
    out: impl Write,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        write_text(snap, now, registry, &mut enc)?;
        enc.finish()?.flush()?;
    } else {
        let mut out = out;
        write_text(snap, now, registry, &mut out)?;
        out.flush()?;
    }
    Ok(())
}

fn write_text(
    snap: &exposition::Snapshot,
    now: Ts,
    registry: &prometheus::Registry,
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut text = String::with_capacity(METRICS_CHUNK + 1024);
    exposition::render_chunked(snap, now, METRICS_CHUNK, &mut text, &mut |t| {
        out.write_all(t.as_bytes())?;
        t.clear();
        Ok(())
    })?;
    let mut own = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut own)?;
    out.write_all(&own)?;
    Ok(())
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
}

async fn healthz(State(shared): State<Shared>) -> Response {
    let fleet = shared.lock_fleet();
    let body = serde_json::json!({
        "status": "ok",
        "benches": fleet.len(),
        "ingest": match &fleet.ingest.deaf() {
            None => serde_json::json!({"up": true}),
            Some(d) => serde_json::json!({"up": false, "since": rfc3339(d.since), "reason": d.reason}),
        },
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// One bench in `GET /api/v1/benches`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct BenchView {
    pub bench_id: String,
    pub bench_site: String,
    pub liveness: String,
    pub reported_state: Option<String>,
    pub age_seconds: Option<f64>,
    pub last_heartbeat: Option<String>,
    pub clock_skew_seconds: Option<f64>,
    pub heartbeat_interval_seconds: f64,
    /// In maintenance now, by either side.
    pub maintenance: bool,
    /// Which side set it: `bench` (its heartbeats), `api`, or `both`.
    pub maintenance_source: Option<String>,
    pub maintenance_reason: Option<String>,
    /// The end the bench gave its maintenance (watch time).
    pub maintenance_until: Option<String>,
    /// The execution context the bench last reported.
    pub execution_id: Option<String>,
    pub task_id: Option<String>,
    pub correlation_id: Option<String>,
    /// Why the bench is offline or stopped (as the alert says it).
    pub offline_reason: Option<String>,
    /// `quiet`, `pending` or `firing`.
    pub alert: String,
    pub failing_probes: std::collections::BTreeMap<String, String>,
    pub agent_version: Option<String>,
    pub first_seen: String,
}

impl BenchView {
    fn of(b: &Bench, now: Ts) -> BenchView {
        BenchView {
            bench_id: b.id.clone(),
            bench_site: b.site.clone(),
            liveness: b.liveness.as_str().to_string(),
            reported_state: b.reported_state.clone(),
            age_seconds: b.age(now).map(|a| (a * 1000.0).round() / 1000.0),
            last_heartbeat: b.last_heard.map(rfc3339),
            clock_skew_seconds: b.skew().map(|s| (s * 1000.0).round() / 1000.0),
            heartbeat_interval_seconds: b.interval,
            maintenance: b.in_maintenance(now),
            maintenance_source: b.maintenance_source(now).map(|s| s.as_str().to_string()),
            maintenance_reason: b.maintenance_reason_now(now).map(str::to_string),
            maintenance_until: b
                .reported_maintenance
                .as_ref()
                .and_then(|m| m.until)
                .filter(|_| b.in_maintenance(now))
                .map(rfc3339),
            execution_id: b.context().execution_id.clone(),
            task_id: b.context().task_id.clone(),
            correlation_id: b.context().correlation_id.clone(),
            offline_reason: matches!(b.liveness, Liveness::Offline | Liveness::Stopped)
                .then(|| b.offline_reason().as_str().to_string()),
            alert: match b.alert {
                AlertState::Quiet => "quiet",
                AlertState::Pending { .. } => "pending",
                AlertState::Firing { .. } => "firing",
            }
            .to_string(),
            failing_probes: b.failing_probes.clone(),
            agent_version: b.agent_version.clone(),
            first_seen: rfc3339(b.first_seen),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    site: Option<String>,
}

async fn benches(State(shared): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    let now = shared.clock.now();
    let fleet = shared.lock_fleet();
    let mut list: Vec<BenchView> = fleet
        .sites
        .iter()
        .filter(|(name, _)| q.site.as_ref().is_none_or(|s| s == *name))
        .flat_map(|(_, s)| s.benches.values())
        .map(|b| BenchView::of(b, now))
        .collect();
    drop(fleet);
    list.sort_by(|a, b| (&a.bench_site, &a.bench_id).cmp(&(&b.bench_site, &b.bench_id)));
    axum::Json(list).into_response()
}

#[derive(Debug, Deserialize)]
struct BenchQuery {
    site: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MaintenanceBody {
    #[serde(default = "yes")]
    on: bool,
    /// Shown in the bench list; never a label.
    #[serde(default)]
    reason: Option<String>,
}

fn yes() -> bool {
    true
}

/// Why a bench API request failed.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("admin bearer token required")]
    Unauthorized,
    #[error("no http.admin_token_file configured: only loopback clients may change benches")]
    NotLoopback,
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotLoopback => StatusCode::FORBIDDEN,
            ApiError::Lookup(LookupError::Ambiguous { .. }) => StatusCode::CONFLICT,
            ApiError::Lookup(LookupError::NotFound(_)) | ApiError::Refused(_) => {
                StatusCode::NOT_FOUND
            }
        };
        (status, format!("{self}\n")).into_response()
    }
}

async fn maintenance(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<BenchQuery>,
    body: Option<axum::Json<MaintenanceBody>>,
) -> Result<Response, ApiError> {
    admin(&shared, peer, &headers)?;
    let (on, reason) = body.map_or((true, None), |b| (b.on, b.0.reason));
    let now = shared.clock.now();
    let mut fleet = shared.lock_fleet();
    let (site, id) = fleet.find(&id, q.site.as_deref())?;
    fleet.set_maintenance(&site, &id, on, reason, now)?;
    Ok(
        axum::Json(serde_json::json!({"bench_id": id, "bench_site": site, "maintenance": on}))
            .into_response(),
    )
}

async fn retire(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<BenchQuery>,
) -> Result<Response, ApiError> {
    admin(&shared, peer, &headers)?;
    let now = shared.clock.now();
    let mut fleet = shared.lock_fleet();
    let (site, id) = fleet.find(&id, q.site.as_deref())?;
    fleet.retire(&site, &id, now)?;
    Ok(
        axum::Json(serde_json::json!({"bench_id": id, "bench_site": site, "retired": true}))
            .into_response(),
    )
}

fn admin(shared: &Shared, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    match &shared.cfg.http.admin_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given.is_some_and(|g| {
                otlp::constant_time_eq(g.trim().as_bytes(), token.expose().as_bytes())
            }) {
                Ok(())
            } else {
                Err(ApiError::Unauthorized)
            }
        }
        None if peer.ip().is_loopback() => Ok(()),
        None => Err(ApiError::NotLoopback),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use super::*;
    use crate::config::Env;
    use crate::watch::bench::{Beat, Transport};
    use crate::watch::clock::Clock;
    use crate::watch::fleet::Fleet;
    use crate::watch::stats::Stats;

    async fn get(addr: SocketAddr, gzip: bool) -> (Option<String>, Vec<u8>) {
        crate::tls::install_provider();
        let mut req = reqwest::Client::new().get(format!("http://{addr}/metrics"));
        if gzip {
            req = req.header(header::ACCEPT_ENCODING, "gzip");
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let encoding = resp
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap().to_string());
        (encoding, resp.bytes().await.unwrap().to_vec())
    }

    /// The lines of a scrape, without the ages (they move between scrapes).
    fn lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with("bench_heartbeat_age_seconds{"))
            .collect()
    }

    #[tokio::test]
    async fn metrics_stream_whole_across_many_chunks_plain_and_gzipped() {
        let cfg = Arc::new(crate::watch::config::load(None, &Env::default()).unwrap());
        let mut fleet = Fleet::new(cfg.clone(), 1000.0);
        let beat = Beat {
            sent: Some(1000.0),
            state: Some("ready".into()),
            interval: Some(10.0),
            ..Beat::new(Transport::Mqtt, "r".into(), 1)
        };
        // About 1 MB of text: many 64 KiB chunks through the pipe.
        for i in 0..3000 {
            fleet
                .receive("lab", &format!("bench-{i:04}"), &beat, 1000.0)
                .unwrap();
        }
        let shared = Shared::new(cfg, fleet, Clock::new(), Stats::new(true).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, shared, stop.clone()));

        let (encoding, plain) = get(addr, false).await;
        assert_eq!(encoding, None);
        let plain = String::from_utf8(plain).unwrap();
        assert!(plain.len() > 16 * METRICS_CHUNK, "{} bytes", plain.len());
        let up = plain.lines().filter(|l| l.starts_with("bench_up{")).count();
        assert_eq!(up, 3000);
        assert!(plain.contains("\nbench_up{bench_id=\"bench-2999\",bench_site=\"lab\"} 1\n"));
        assert!(plain.contains("benchtel_watch_ingest_up 1\n"));
        assert!(
            plain.contains("\nbenchtel_watch_mqtt_connected 0\n"),
            "the own metrics"
        );

        let (encoding, gzipped) = get(addr, true).await;
        assert_eq!(encoding.as_deref(), Some("gzip"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gzipped[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(lines(&text), lines(&plain));
        stop.cancel();
    }
}
