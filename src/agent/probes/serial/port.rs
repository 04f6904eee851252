//! One owner task per serial port. Several probes may use one console (a
//! `serial_watch` following boots and `serial_expect` probes asking
//! questions): the owner opens the port once, reads it continuously and
//! fans lines out; probes queue for their turn to write. When the adapter
//! disappears (USB re-enumeration) the owner says so and re-opens it with
//! backoff; when the last probe lets go, it closes the port.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};

use super::{FlowControl, Parity, PortSettings};

/// What the console said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortEvent {
    /// A complete line, without its line ending.
    Line(String),
    /// The unterminated tail so far (a prompt has no newline).
    Partial(String),
    /// The port could not be opened or went away.
    Gone(String),
}

/// Whether the port is usable right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState {
    Opening,
    Open,
    Gone(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settings {
    pub path: PathBuf,
    pub baud: u32,
    pub parity: Parity,
    pub flow_control: FlowControl,
    pub settle: Duration,
}

pub struct SharedPort {
    events: broadcast::Sender<PortEvent>,
    state: watch::Receiver<PortState>,
    writes: mpsc::Sender<Vec<u8>>,
    /// One writer at a time: a probe holds its turn from send to answer.
    turn: tokio::sync::Mutex<()>,
}

type Registry = Mutex<HashMap<PathBuf, Weak<SharedPort>>>;

fn registry() -> &'static Registry {
    static PORTS: OnceLock<Registry> = OnceLock::new();
    PORTS.get_or_init(Registry::default)
}

/// The shared port for `settings.path`, starting its owner if needed. The
/// first user's line settings win.
pub fn shared(settings: &Settings) -> Arc<SharedPort> {
    let Ok(mut ports) = registry().lock() else {
        return start(settings.clone());
    };
    if let Some(port) = ports.get(&settings.path).and_then(Weak::upgrade) {
        return port;
    }
    let port = start(settings.clone());
    ports.insert(settings.path.clone(), Arc::downgrade(&port));
    port
}

fn start(settings: Settings) -> Arc<SharedPort> {
    let (events, _) = broadcast::channel(1024);
    let (state_tx, state) = watch::channel(PortState::Opening);
    let (writes, write_rx) = mpsc::channel(16);
    tokio::spawn(own(settings, events.clone(), state_tx, write_rx));
    Arc::new(SharedPort {
        events,
        state,
        writes,
        turn: tokio::sync::Mutex::new(()),
    })
}

impl SharedPort {
    pub fn subscribe(&self) -> broadcast::Receiver<PortEvent> {
        self.events.subscribe()
    }

    /// Waits (up to `timeout`) until the first open attempt is decided.
    pub async fn ready(&self, timeout: Duration) -> PortState {
        let mut state = self.state.clone();
        let _ = tokio::time::timeout(timeout, state.wait_for(|s| *s != PortState::Opening)).await;
        state.borrow().clone()
    }

    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    pub async fn write(&self, bytes: Vec<u8>) -> bool {
        self.writes.send(bytes).await.is_ok()
    }
}

/// The owner: open, read and fan out, write what probes send; re-open with
/// backoff; stop when every probe has let go.
async fn own(
    settings: Settings,
    events: broadcast::Sender<PortEvent>,
    state: watch::Sender<PortState>,
    mut writes: mpsc::Receiver<Vec<u8>>,
) {
    let mut retry = Duration::from_millis(200);
    loop {
        let open = super::open(&PortSettings {
            path: &settings.path,
            baud: settings.baud,
            parity: settings.parity,
            flow_control: settings.flow_control,
            settle: settings.settle,
        })
        .await;
        let why = match open {
            Ok(mut port) => {
                retry = Duration::from_millis(200);
                let _ = state.send(PortState::Open);
                match pump(&mut port, &events, &mut writes).await {
                    Some(why) => why,
                    None => return,
                }
            }
            Err(outcome) => outcome.detail,
        };
        let _ = state.send(PortState::Gone(why.clone()));
        let _ = events.send(PortEvent::Gone(why));
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            w = writes.recv() => if w.is_none() { return },
        }
        retry = (retry * 2).min(Duration::from_secs(30));
    }
}

/// Moves bytes until the port fails (Some(reason)) or nobody is left (None).
async fn pump(
    port: &mut tokio_serial::SerialStream,
    events: &broadcast::Sender<PortEvent>,
    writes: &mut mpsc::Receiver<Vec<u8>>,
) -> Option<String> {
    let mut buf = [0u8; 4096];
    let mut partial = String::new();
    loop {
        tokio::select! {
            read = port.read(&mut buf) => match read {
                Ok(0) => return Some("the port closed".into()),
                Err(e) => return Some(format!("read failed: {e}")),
                Ok(n) => {
                    partial.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(i) = partial.find('\n') {
                        let line: String = partial.drain(..=i).collect();
                        let _ = events.send(PortEvent::Line(line.trim_end_matches(['\r', '\n']).to_string()));
                    }
                    if !partial.is_empty() {
                        let _ = events.send(PortEvent::Partial(partial.clone()));
                    }
                }
            },
            w = writes.recv() => match w {
                Some(bytes) => if let Err(e) = port.write_all(&bytes).await {
                    return Some(format!("write failed: {e}"));
                },
                None => return None,
            },
        }
    }
}
