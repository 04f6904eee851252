//! The local control socket: how the orchestrator (or an engineer) tells a
//! running agent the current execution context, or puts the bench into
//! maintenance. One JSON request per connection, one JSON answer; the socket
//! is mode 0600, so only the agent's user (and root) can use it. Requests
//! are the commands of the wire protocol ([`Command`]), the same as on
//! MQTT's `…/cmd`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::agent::readiness::{Input, ResetSource};
use crate::agent::state::{Maintenance, Snapshot};
use crate::telemetry::context;
use crate::wire::Command;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The bench's state, for `{"cmd":"status"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// Where a command came from: a reset marked over MQTT is counted apart
/// from one marked on the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Socket,
    Mqtt,
}

/// What commands act on: the bench's state machine, and its state.
#[derive(Debug, Clone)]
pub struct Targets {
    pub readiness: mpsc::Sender<Input>,
    pub snapshot: watch::Receiver<Snapshot>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach the agent at {path}: {source} (is benchtel-agent running?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {detail}")]
    Protocol { path: PathBuf, detail: String },
}

/// Binds the socket (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Serves requests until cancelled.
pub async fn serve(listener: UnixListener, targets: Targets, cancel: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    continue;
                }
            },
        };
        let targets = targets.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &targets).await {
                tracing::warn!(error = %e, "control request failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, targets: &Targets) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // A request is small: a client that sends megabytes without a newline
    // is cut off.
    BufReader::new(read.take(64 * 1024))
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Command>(&line) {
        Ok(Command::Status) => Answer {
            ok: true,
            error: None,
            status: serde_json::to_value(&*targets.snapshot.borrow()).ok(),
        },
        Ok(req) => {
            apply(&req, &targets.readiness, Origin::Socket).await;
            Answer {
                ok: true,
                error: None,
                status: None,
            }
        }
        Err(e) => {
            // Rejected with a reason, logged, counted in the log.
            tracing::warn!(error = %e, "control request rejected");
            Answer {
                ok: false,
                error: Some(format!("bad request: {e}")),
                status: None,
            }
        }
    };
    let mut out = serde_json::to_string(&reply).unwrap_or_default();
    out.push('\n');
    write.write_all(out.as_bytes()).await
}

/// Applies one request; also used for commands arriving over MQTT.
pub(crate) async fn apply(req: &Command, readiness: &mpsc::Sender<Input>, origin: Origin) {
    let input = match req {
        Command::ContextSet(ctx) => {
            context::set(ctx.clone());
            tracing::info!(execution_id = ?ctx.execution_id, task_id = ?ctx.task_id, correlation_id = ?ctx.correlation_id, "execution context set");
            return;
        }
        Command::ContextClear => {
            tracing::info!("execution context cleared");
            context::clear();
            return;
        }
        Command::Maintenance { on, reason, until } => Input::Maintenance(on.then(|| Maintenance {
            reason: reason.clone(),
            since: SystemTime::now(),
            until: *until,
        })),
        Command::DutReset { reason } => Input::DutReset {
            source: match origin {
                Origin::Socket => ResetSource::Mark,
                Origin::Mqtt => ResetSource::Mqtt,
            },
            reason: reason.clone(),
            seen_by: None,
        },
        Command::Status => {
            tracing::info!("status asked for over MQTT: it answers on the control socket only");
            return;
        }
    };
    // Waits for room: a command is never dropped.
    let _ = readiness.send(input).await;
}

/// Sends one request to a running agent (the CLI side); returns the
/// answer's `status`, if any.
pub async fn send(path: &Path, req: &Command) -> Result<Option<serde_json::Value>, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    line.push('\n');
    let io = |e: std::io::Error| ControlError::Protocol {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    write.write_all(line.as_bytes()).await.map_err(io)?;
    let mut answer = String::new();
    BufReader::new(read)
        .read_line(&mut answer)
        .await
        .map_err(io)?;
    let answer: Answer = serde_json::from_str(&answer).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        detail: format!("bad answer {answer:?}: {e}"),
    })?;
    match answer.error {
        None if answer.ok => Ok(answer.status),
        detail => Err(ControlError::Protocol {
            path: path.to_path_buf(),
            detail: detail.unwrap_or_else(|| "refused".into()),
        }),
    }
}
