//! Serial-console probes over `tokio-serial`: opening a port with the
//! bench's settings, and turning open failures into result codes (a port
//! held by another program is `busy`, a vanished USB adapter is `missing`).

pub mod discover;
pub mod expect;
pub mod port;
pub mod watch;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use crate::agent::checks::{Code, Outcome};

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

pub async fn open(s: &PortSettings<'_>) -> Result<SerialStream, Outcome> {
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
        .map_err(|e| open_error(s.path, &e))?;
    if !s.settle.is_zero() {
        tokio::time::sleep(s.settle).await;
    }
    use tokio_serial::SerialPort;
    let _ = port.clear(tokio_serial::ClearBuffer::Input);
    Ok(port)
}

fn open_error(path: &Path, e: &tokio_serial::Error) -> Outcome {
    let detail = format!("{}: {e}", path.display());
    let code = match e.kind() {
        tokio_serial::ErrorKind::NoDevice => Code::Missing,
        tokio_serial::ErrorKind::Io(std::io::ErrorKind::NotFound) => Code::Missing,
        tokio_serial::ErrorKind::Io(std::io::ErrorKind::ResourceBusy) => Code::Busy,
        _ if e.description.contains("busy") => Code::Busy,
        _ if !path.exists() => Code::Missing,
        _ => Code::Error,
    };
    Outcome::fail(code, detail)
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
    /// The device path now; `missing` if no adapter matches, `error` if
    /// several do.
    pub fn resolve(&self) -> Result<std::path::PathBuf, Outcome> {
        match self {
            PortRef::Path(p) => Ok(p.clone()),
            PortRef::Usb(m) => {
                let found = discover::adapters(Path::new("/sys"), Path::new("/dev"));
                discover::find(m, &found).map_err(|e| {
                    let code = if e.starts_with("no ") {
                        Code::Missing
                    } else {
                        Code::Error
                    };
                    Outcome::fail(code, e)
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
        // This machine has no such adapter: missing, with the identity named.
        let err = by_usb.port.resolve().unwrap_err();
        assert_eq!(err.code, Code::Missing);
        assert!(err.detail.contains("0403:6001"), "{}", err.detail);
        assert!(is_unstable_path(Path::new("/dev/ttyUSB3")));
        assert!(!is_unstable_path(Path::new("/dev/serial/by-id/usb-x")));
    }
}
