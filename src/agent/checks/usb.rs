//! `type = "usb"`: a USB device (debug probe, relay board, power meter) is
//! present, found by vendor and product id in sysfs.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Code, Outcome};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Vendor id, hex as `lsusb` shows it, e.g. "0483".
    pub vid: String,
    /// Product id, hex, e.g. "374b".
    pub pid: String,
    /// Also require this serial number (`ID_SERIAL_SHORT`).
    #[serde(default)]
    pub serial: Option<String>,
    /// Where USB devices are listed (for tests).
    #[serde(default = "sysfs")]
    pub sysfs: PathBuf,
}

fn sysfs() -> PathBuf {
    PathBuf::from("/sys/bus/usb/devices")
}

fn attr(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
}

impl Config {
    pub fn run(&self) -> Outcome {
        let entries = match std::fs::read_dir(&self.sysfs) {
            Ok(e) => e,
            Err(e) => return Outcome::fail(Code::Error, format!("{}: {e}", self.sysfs.display())),
        };
        let (vid, pid) = (self.vid.to_ascii_lowercase(), self.pid.to_ascii_lowercase());
        let found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|d| attr(d, "idVendor").as_deref() == Some(&vid))
            .filter(|d| attr(d, "idProduct").as_deref() == Some(&pid))
            .filter(|d| {
                self.serial
                    .as_ref()
                    .is_none_or(|s| attr(d, "serial").as_deref() == Some(&s.to_ascii_lowercase()))
            })
            .collect();
        match found.len() {
            0 => Outcome::fail(Code::Missing, format!("no USB device {vid}:{pid}")),
            1 => Outcome::ok(format!("{vid}:{pid} at {}", found[0].display())),
            // Two identical adapters: say so rather than pick one.
            n => Outcome::fail(
                Code::Mismatch,
                format!("{n} USB devices match {vid}:{pid}; add `serial` to tell them apart"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(root: &Path, name: &str, vid: &str, pid: &str, serial: &str) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("idVendor"), format!("{vid}\n")).unwrap();
        std::fs::write(d.join("idProduct"), format!("{pid}\n")).unwrap();
        std::fs::write(d.join("serial"), format!("{serial}\n")).unwrap();
    }

    #[test]
    fn present_missing_and_ambiguous() {
        let root = tempfile::tempdir().unwrap();
        let mut c = Config {
            vid: "0483".into(),
            pid: "374B".into(),
            serial: None,
            sysfs: root.path().to_path_buf(),
        };
        assert_eq!(c.run().code, Code::Missing);
        device(root.path(), "1-1", "0483", "374b", "AAA");
        assert_eq!(c.run().code, Code::Ok);
        device(root.path(), "1-2", "0483", "374b", "BBB");
        let out = c.run();
        assert_eq!(out.code, Code::Mismatch);
        assert!(out.detail.contains("2 USB devices"), "{}", out.detail);
        c.serial = Some("bbb".into());
        assert_eq!(c.run().code, Code::Ok);
    }
}
