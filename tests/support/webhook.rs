//! An in-test webhook receiver on an ephemeral port: records every JSON body
//! POSTed to it, and can be told to fail the next requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

#[derive(Clone, Default)]
struct Inner {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    fail_next: Arc<AtomicUsize>,
}

pub struct Webhook {
    inner: Inner,
    pub addr: SocketAddr,
    _thread: std::thread::JoinHandle<()>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let inner = Inner::default();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let state = inner.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let app = Router::new()
                    .route("/hook", post(receive))
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Webhook {
            inner,
            addr,
            _thread: thread,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.inner.bodies.lock().unwrap().clone()
    }

    /// Answers the next `n` requests with 503.
    pub fn fail_next(&self, n: usize) {
        self.inner.fail_next.store(n, Ordering::SeqCst);
    }
}

async fn receive(State(s): State<Inner>, body: axum::body::Bytes) -> StatusCode {
    if s.fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match serde_json::from_slice(&body) {
        Ok(v) => {
            s.bodies.lock().unwrap().push(v);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}
