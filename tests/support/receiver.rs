//! An in-test OTLP/HTTP receiver: decodes every request with
//! opentelemetry-proto for exact assertions, and answers from a script
//! (429 + Retry-After, 503, 400, partial success, slow answers).

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use prost::Message;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub enum Reply {
    Ok,
    Status(u16),
    RetryAfter { status: u16, seconds: u64 },
    PartialSuccess { rejected: i64, message: String },
    Delay(Duration, Box<Reply>),
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    metrics: Vec<ExportMetricsServiceRequest>,
    logs: Vec<ExportLogsServiceRequest>,
    traces: Vec<ExportTraceServiceRequest>,
    requests: usize,
    decode_errors: usize,
    headers: Vec<HeaderMap>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
    stop: Arc<Mutex<CancellationToken>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Metrics,
    Logs,
    Traces,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r = Receiver {
            inner: Arc::default(),
            addr,
            stop: Arc::new(Mutex::new(CancellationToken::new())),
        };
        r.serve(listener);
        r
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route(
                "/v1/metrics",
                post(|s, h, b| handle(s, h, b, Kind::Metrics)),
            )
            .route("/v1/logs", post(|s, h, b| handle(s, h, b, Kind::Logs)))
            .route("/v1/traces", post(|s, h, b| handle(s, h, b, Kind::Traces)))
            .with_state(self.inner.clone());
        let stop = self.stop.lock().unwrap().clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the port: senders get "connection refused".
    pub async fn stop(&self) {
        self.stop.lock().unwrap().cancel();
        // Wait until the port really refuses.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(Instant::now() < deadline, "receiver did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        *self.stop.lock().unwrap() = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot rebind {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }

    /// Replaces the scripted replies; when they run out, replies are 200.
    pub fn script(&self, replies: Vec<Reply>) {
        self.inner.lock().unwrap().script = replies.into();
    }

    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.inner.lock().unwrap().metrics.clone()
    }

    pub fn logs(&self) -> Vec<ExportLogsServiceRequest> {
        self.inner.lock().unwrap().logs.clone()
    }

    pub fn traces(&self) -> Vec<ExportTraceServiceRequest> {
        self.inner.lock().unwrap().traces.clone()
    }

    pub fn request_count(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    pub fn decode_errors(&self) -> usize {
        self.inner.lock().unwrap().decode_errors
    }

    pub fn headers(&self) -> Vec<HeaderMap> {
        self.inner.lock().unwrap().headers.clone()
    }

    pub fn log_records(&self) -> Vec<LogRecord> {
        self.logs()
            .into_iter()
            .flat_map(|r| r.resource_logs)
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
            .collect()
    }

    pub fn log_bodies(&self) -> Vec<String> {
        self.log_records()
            .into_iter()
            .filter_map(|r| match r.body?.value? {
                Value::StringValue(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// Every accepted data point of metric `name`, as f64.
    pub fn metric_points(&self, name: &str) -> Vec<f64> {
        let value = |v: Option<number_data_point::Value>| match v {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => f64::NAN,
        };
        self.metrics()
            .into_iter()
            .flat_map(|r| r.resource_metrics)
            .flat_map(|r| r.scope_metrics)
            .flat_map(|s| s.metrics)
            .filter(|m| m.name == name)
            .flat_map(|m| match m.data {
                Some(Data::Sum(s)) => s.data_points.into_iter().map(|p| value(p.value)).collect(),
                Some(Data::Gauge(g)) => g.data_points.into_iter().map(|p| value(p.value)).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Polls `cond` until it holds or `timeout` passes (real time).
    pub async fn wait_until(&self, cond: impl Fn(&Receiver) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Response {
    let reply = {
        let mut g = inner.lock().unwrap();
        g.requests += 1;
        g.headers.push(headers.clone());
        g.script.pop_front().unwrap_or(Reply::Ok)
    };
    let mut reply = reply;
    while let Reply::Delay(d, next) = reply {
        tokio::time::sleep(d).await;
        reply = *next;
    }
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let raw = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            inner.lock().unwrap().decode_errors += 1;
            return (StatusCode::BAD_REQUEST, "bad gzip").into_response();
        }
        out
    } else {
        body.to_vec()
    };
    let (status, rejected, message) = match &reply {
        Reply::Ok => (200, 0, String::new()),
        Reply::PartialSuccess { rejected, message } => (200, *rejected, message.clone()),
        Reply::Status(s) | Reply::RetryAfter { status: s, .. } => (*s, 0, String::new()),
        Reply::Delay(..) => (200, 0, String::new()),
    };
    if status != 200 {
        let mut resp = (StatusCode::from_u16(status).unwrap(), "scripted").into_response();
        if let Reply::RetryAfter { seconds, .. } = reply {
            resp.headers_mut()
                .insert("retry-after", seconds.to_string().parse().unwrap());
        }
        return resp;
    }
    let decoded = {
        let mut g = inner.lock().unwrap();
        match kind {
            Kind::Metrics => {
                ExportMetricsServiceRequest::decode(&raw[..]).map(|r| g.metrics.push(r))
            }
            Kind::Logs => ExportLogsServiceRequest::decode(&raw[..]).map(|r| g.logs.push(r)),
            Kind::Traces => ExportTraceServiceRequest::decode(&raw[..]).map(|r| g.traces.push(r)),
        }
    };
    if decoded.is_err() {
        inner.lock().unwrap().decode_errors += 1;
        return (StatusCode::BAD_REQUEST, "undecodable protobuf").into_response();
    }
    let partial = (rejected > 0 || !message.is_empty()).then_some(());
    let body = match kind {
        Kind::Metrics => ExportMetricsServiceResponse {
            partial_success: partial.map(|_| ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message: message,
            }),
        }
        .encode_to_vec(),
        Kind::Logs => ExportLogsServiceResponse {
            partial_success: partial.map(|_| ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: message,
            }),
        }
        .encode_to_vec(),
        Kind::Traces => ExportTraceServiceResponse {
            partial_success: partial.map(|_| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: message,
            }),
        }
        .encode_to_vec(),
    };
    (
        StatusCode::OK,
        [("content-type", "application/x-protobuf")],
        body,
    )
        .into_response()
}
