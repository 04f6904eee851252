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
use tokio::sync::{mpsc, watch};

use super::lines::Lines;
use super::{FlowControl, Parity, PortRef, PortSettings, SerialError};

/// What the console said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortEvent {
    /// A complete line, without its line ending, escape sequences and
    /// noise bytes (see `lines`).
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

/// Subscribers' queues. The owner waits for room in each, so a slow
/// reader slows the reads from the port (the tty buffer, then the board's
/// flow control, absorb the rest) instead of losing lines.
type Subscribers = Arc<Mutex<Vec<mpsc::Sender<PortEvent>>>>;

pub struct SharedPort {
    subscribers: Subscribers,
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

/// Finds the port and shares it (see [`shared`]).
pub fn open_shared(
    port: &PortRef,
    baud: u32,
    parity: Parity,
    flow_control: FlowControl,
    settle: Duration,
) -> Result<Arc<SharedPort>, SerialError> {
    let path = port.resolve()?;
    Ok(shared(&Settings {
        path,
        baud,
        parity,
        flow_control,
        settle,
    }))
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
    let subscribers = Subscribers::default();
    let (state_tx, state) = watch::channel(PortState::Opening);
    let (writes, write_rx) = mpsc::channel(16);
    tokio::spawn(own(settings, subscribers.clone(), state_tx, write_rx));
    Arc::new(SharedPort {
        subscribers,
        state,
        writes,
        turn: tokio::sync::Mutex::new(()),
    })
}

impl SharedPort {
    /// A queue of everything the console says from now on; dropping it
    /// unsubscribes.
    pub fn subscribe(&self) -> mpsc::Receiver<PortEvent> {
        let (tx, rx) = mpsc::channel(1024);
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(tx);
        }
        rx
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
    events: Subscribers,
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
            Err(e) => e.to_string(),
        };
        let _ = state.send(PortState::Gone(why.clone()));
        publish(&events, PortEvent::Gone(why)).await;
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
    events: &Subscribers,
    writes: &mut mpsc::Receiver<Vec<u8>>,
) -> Option<String> {
    let mut buf = [0u8; 4096];
    let mut lines = Lines::default();
    loop {
        tokio::select! {
            read = port.read(&mut buf) => match read {
                Ok(0) => return Some("the port closed".into()),
                Err(e) => return Some(format!("read failed: {e}")),
                Ok(n) => {
                    for line in lines.feed(&buf[..n]) {
                        publish(events, PortEvent::Line(line)).await;
                    }
                    if !lines.tail().is_empty() {
                        publish(events, PortEvent::Partial(lines.tail().to_string())).await;
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

/// Hands an event to every subscriber, waiting for room; subscribers that
/// went away are dropped from the list.
async fn publish(subscribers: &Subscribers, event: PortEvent) {
    let subs: Vec<mpsc::Sender<PortEvent>> = match subscribers.lock() {
        Ok(mut s) => {
            s.retain(|tx| !tx.is_closed());
            s.clone()
        }
        Err(_) => return,
    };
    for tx in subs {
        let _ = tx.send(event.clone()).await;
    }
}
