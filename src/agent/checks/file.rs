//! `type = "file"`: a file exists, and optionally was written recently
//! (a DUT log that stops growing means a stuck test).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Code, Outcome};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub path: PathBuf,
    /// The file must have been modified within this long.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

impl Config {
    pub fn run(&self) -> Outcome {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Outcome::fail(Code::Missing, format!("{}: not found", self.path.display()));
            }
            Err(e) => return Outcome::fail(Code::Error, format!("{}: {e}", self.path.display())),
        };
        let Some(max_age) = self.max_age else {
            return Outcome::ok("exists");
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        if age > max_age {
            return Outcome::fail(
                Code::Mismatch,
                format!(
                    "{} last written {} ago, more than {}",
                    self.path.display(),
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                    humantime::format_duration(max_age)
                ),
            );
        }
        Outcome::ok("fresh")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_present_fresh_and_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dut.log");
        let mut c = Config {
            path: path.clone(),
            max_age: None,
        };
        assert_eq!(c.run().code, Code::Missing);
        std::fs::write(&path, "boot ok").unwrap();
        assert_eq!(c.run().code, Code::Ok);
        c.max_age = Some(Duration::from_secs(60));
        assert_eq!(c.run().code, Code::Ok);
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let out = c.run();
        assert_eq!(out.code, Code::Mismatch);
        assert!(out.detail.contains("1h"), "{}", out.detail);
    }
}
