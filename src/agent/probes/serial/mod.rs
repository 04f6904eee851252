//! Serial-console probes over `tokio-serial`: opening a port with the
//! bench's settings, and the [`SerialError`]s a probe can end with (the
//! health checks map them to result codes).

mod console;
pub mod discover;
pub mod expect;
pub mod lines;
pub mod port;
pub mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

/// Why a serial probe could not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    /// The device could not be opened.
    #[error("{}: {message}", path.display())]
    Open { path: PathBuf, message: String },
    /// No USB adapter has the configured identity.
    #[error("{0}")]
    NoAdapter(String),
    /// Several adapters have it.
    #[error("{0}")]
    Ambiguous(String),
    /// Other probes held the port's turn until the deadline.
    #[error("the port stayed in use by other probes")]
    InUse,
    /// The port could not be opened or went away (the owner's reason).
    #[error("{0}")]
    Gone(String),
    /// The task that owns the port has stopped.
    #[error("the port owner has stopped")]
    OwnerStopped,
    /// A line matched the `fail` pattern.
    #[error("matched fail pattern {pattern}: {line:?}")]
    FailPattern { pattern: String, line: String },
    /// No line matched `expect` in time.
    #[error("no line matched {pattern} within {timeout:?}")]
    NoMatch { pattern: String, timeout: Duration },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Odd,
    Even,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    #[default]
    None,
    Software,
    Hardware,
}

/// How to open a port.
#[derive(Debug, Clone)]
pub struct PortSettings<'a> {
    pub path: &'a Path,
    pub baud: u32,
    pub parity: Parity,
    pub flow_control: FlowControl,
    /// Wait after opening, then drop what arrived: many boards print a
    /// burst (or garbage) when the adapter's DTR toggles.
    pub settle: Duration,
}

pub async fn open(s: &PortSettings<'_>) -> Result<SerialStream, SerialError> {
    let parity = match s.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    let flow = match s.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Software => tokio_serial::FlowControl::Software,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    let port = tokio_serial::new(s.path.to_string_lossy(), s.baud)
        .parity(parity)
        .flow_control(flow)
        .open_native_async()
        .map_err(|e| SerialError::Open {
            path: s.path.to_path_buf(),
            message: e.to_string(),
        })?;
    if !s.settle.is_zero() {
        tokio::time::sleep(s.settle).await;
    }
    use tokio_serial::SerialPort;
    let _ = port.clear(tokio_serial::ClearBuffer::Input);
    Ok(port)
}

fn b115200() -> u32 {
    115_200
}

/// Which port: a device path, or a USB identity looked up in sysfs at each
/// open (so a re-enumerated adapter is found under its new name).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Path(std::path::PathBuf),
    Usb(discover::UsbMatch),
}

impl PortRef {
    /// The device path now; [`SerialError::NoAdapter`] if no adapter
    /// matches, [`SerialError::Ambiguous`] if several do.
    pub fn resolve(&self) -> Result<PathBuf, SerialError> {
        match self {
            PortRef::Path(p) => Ok(p.clone()),
            PortRef::Usb(m) => {
                let found = discover::adapters(Path::new("/sys"), Path::new("/dev"));
                discover::find(m, &found).map_err(|e| {
                    if e.starts_with("no ") {
                        SerialError::NoAdapter(e)
                    } else {
                        SerialError::Ambiguous(e)
                    }
                })
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PortRef::Path(p) => p.display().to_string(),
            PortRef::Usb(m) => format!(
                "usb {}:{}{}",
                m.vid,
                m.pid,
                m.serial
                    .as_ref()
                    .map(|s| format!(" serial {s}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// A bare `/dev/ttyUSB3` changes with plug order; `/dev/serial/by-id/…` or
/// `by-path` does not.
pub fn is_unstable_path(path: &Path) -> bool {
    let name = path.to_string_lossy();
    ["/dev/ttyUSB", "/dev/ttyACM"]
        .iter()
        .any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Probe {
        port: PortRef,
    }

    #[test]
    fn ports_by_path_or_by_usb_identity() {
        let by_path: Probe = toml::from_str(r#"port = "/dev/serial/by-id/usb-x""#).unwrap();
        assert_eq!(
            by_path.port,
            PortRef::Path("/dev/serial/by-id/usb-x".into())
        );
        let by_usb: Probe =
            toml::from_str(r#"port = { vid = "0403", pid = "6001", serial = "A1" }"#).unwrap();
        assert!(matches!(by_usb.port, PortRef::Usb(ref m) if m.serial.as_deref() == Some("A1")));
        // This machine has no such adapter (checks map this to `missing`).
        let err = by_usb.port.resolve().unwrap_err();
        assert!(matches!(err, SerialError::NoAdapter(_)), "{err:?}");
        assert!(err.to_string().contains("0403:6001"), "{err}");
        assert!(is_unstable_path(Path::new("/dev/ttyUSB3")));
        assert!(!is_unstable_path(Path::new("/dev/serial/by-id/usb-x")));
    }
}
