//! Finding serial adapters the way udev describes them, from sysfs alone:
//! vendor and product id and serial number (`ID_SERIAL_SHORT`) of the USB
//! device behind each `/sys/class/tty/*`, and the stable
//! `/dev/serial/by-id` names. Two adapters that match one description are
//! an error, never a guess: identical cables without serial numbers are a
//! known trap on benches.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A serial adapter as found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    /// `/dev/ttyUSB0`
    pub dev: PathBuf,
    pub vid: String,
    pub pid: String,
    pub serial: Option<String>,
    pub product: Option<String>,
    /// Links in `/dev/serial/by-id` and `by-path` pointing at `dev`.
    pub stable: Vec<PathBuf>,
}

/// Selects an adapter by USB identity instead of a device path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbMatch {
    /// Vendor id, hex (`0403`).
    pub vid: String,
    /// Product id, hex (`6001`).
    pub pid: String,
    /// `ID_SERIAL_SHORT`; required when two identical adapters are plugged.
    #[serde(default)]
    pub serial: Option<String>,
}

/// Lists USB serial adapters. `sys` and `dev` are `/sys` and `/dev` (tests
/// pass their own trees).
pub fn adapters(sys: &Path, dev: &Path) -> Vec<Adapter> {
    let Ok(ttys) = std::fs::read_dir(sys.join("class/tty")) else {
        return Vec::new();
    };
    let stable = stable_links(dev);
    let mut out: Vec<Adapter> = ttys
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let usb = usb_device(&e.path().join("device"))?;
            let read = |f: &str| {
                std::fs::read_to_string(usb.join(f))
                    .ok()
                    .map(|s| s.trim().to_string())
            };
            let dev_path = dev.join(&name);
            Some(Adapter {
                vid: read("idVendor")?.to_ascii_lowercase(),
                pid: read("idProduct")?.to_ascii_lowercase(),
                serial: read("serial"),
                product: read("product"),
                stable: stable
                    .iter()
                    .filter(|(_, target)| *target == dev_path)
                    .map(|(link, _)| link.clone())
                    .collect(),
                dev: dev_path,
            })
        })
        .collect();
    out.sort_by(|a, b| a.dev.cmp(&b.dev));
    out
}

/// Walks up from a tty's `device` to the USB device that has `idVendor`.
fn usb_device(device: &Path) -> Option<PathBuf> {
    let mut dir = std::fs::canonicalize(device).ok()?;
    for _ in 0..4 {
        if dir.join("idVendor").is_file() {
            return Some(dir);
        }
        dir = dir.parent()?.to_path_buf();
    }
    None
}

fn stable_links(dev: &Path) -> Vec<(PathBuf, PathBuf)> {
    ["serial/by-id", "serial/by-path"]
        .iter()
        .filter_map(|d| std::fs::read_dir(dev.join(d)).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let target = std::fs::canonicalize(e.path()).ok()?;
            let name = target.file_name()?.to_owned();
            Some((e.path(), dev.join(name)))
        })
        .collect()
}

/// The one adapter matching `m`, or why there is none.
pub fn find(m: &UsbMatch, adapters: &[Adapter]) -> Result<PathBuf, String> {
    let (vid, pid) = (m.vid.to_ascii_lowercase(), m.pid.to_ascii_lowercase());
    let hits: Vec<&Adapter> = adapters
        .iter()
        .filter(|a| a.vid == vid && a.pid == pid)
        .filter(|a| m.serial.is_none() || a.serial == m.serial)
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.dev.clone()),
        [] => Err(format!(
            "no serial adapter {vid}:{pid}{}",
            m.serial
                .as_ref()
                .map(|s| format!(" serial {s}"))
                .unwrap_or_default()
        )),
        many => Err(format!(
            "{} serial adapters match {vid}:{pid} ({}); add `serial` to say which",
            many.len(),
            many.iter()
                .map(|a| a.dev.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake /sys and /dev with two FTDI cables and one CP210x.
    pub(crate) fn tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let dev = root.path().join("dev");
        std::fs::create_dir_all(dev.join("serial/by-id")).unwrap();
        for (tty, usb, vid, pid, serial) in [
            ("ttyUSB0", "1-1", "0403", "6001", "A10K1234"),
            ("ttyUSB1", "1-2", "0403", "6001", "A10K9999"),
            ("ttyUSB2", "1-3", "10c4", "ea60", "0001"),
        ] {
            let usbdir = sys.join("devices/usb1").join(usb);
            let intf = usbdir.join(format!("{usb}:1.0"));
            std::fs::create_dir_all(&intf).unwrap();
            std::fs::write(usbdir.join("idVendor"), format!("{vid}\n")).unwrap();
            std::fs::write(usbdir.join("idProduct"), format!("{pid}\n")).unwrap();
            std::fs::write(usbdir.join("serial"), format!("{serial}\n")).unwrap();
            let class = sys.join("class/tty").join(tty);
            std::fs::create_dir_all(&class).unwrap();
            std::os::unix::fs::symlink(&intf, class.join("device")).unwrap();
            std::fs::write(dev.join(tty), b"").unwrap();
            std::os::unix::fs::symlink(
                dev.join(tty),
                dev.join("serial/by-id")
                    .join(format!("usb-{vid}_{serial}-if00")),
            )
            .unwrap();
        }
        root
    }

    #[test]
    fn adapters_are_found_with_their_identity_and_stable_names() {
        let root = tree();
        let found = adapters(&root.path().join("sys"), &root.path().join("dev"));
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].vid, "0403");
        assert_eq!(found[0].serial.as_deref(), Some("A10K1234"));
        assert!(found[0].stable[0].ends_with("usb-0403_A10K1234-if00"));
    }

    #[test]
    fn two_matching_adapters_are_an_error_not_a_guess() {
        let root = tree();
        let found = adapters(&root.path().join("sys"), &root.path().join("dev"));
        let ftdi = UsbMatch {
            vid: "0403".into(),
            pid: "6001".into(),
            serial: None,
        };
        let err = find(&ftdi, &found).unwrap_err();
        assert!(
            err.contains("2 serial adapters") && err.contains("ttyUSB1"),
            "{err}"
        );
        let one = UsbMatch {
            serial: Some("A10K9999".into()),
            ..ftdi
        };
        assert!(find(&one, &found).unwrap().ends_with("ttyUSB1"));
        let cp = UsbMatch {
            vid: "10C4".into(),
            pid: "EA60".into(),
            serial: None,
        };
        assert!(find(&cp, &found).unwrap().ends_with("ttyUSB2"));
        let none = UsbMatch {
            vid: "dead".into(),
            pid: "beef".into(),
            serial: None,
        };
        assert!(
            find(&none, &found)
                .unwrap_err()
                .contains("no serial adapter")
        );
    }
}
