//! `bench.json` in the state directory: what the bench's state machine must
//! remember across agent restarts and reboots.
//!
//! - `maintenance`: set by a command, kept until a command ends it or its
//!   end time passes, through restarts and reboots alike;
//! - `ready_boot_id`: the boot in which an agent last saw the bench become
//!   ready, so that `bench_ready_time_seconds{from="boot"}` is recorded once
//!   per boot, by the run that saw it, and not again by an agent restarted
//!   while the bench is up.
//!
//! It is written whole to a temporary file and renamed over the old one. A
//! file that cannot be read or parsed is logged and taken as empty: the
//! agent never crash-loops on its own state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agent::state::Maintenance;

pub const FILE_NAME: &str = "bench.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_boot_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchFileError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {path}: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads the file; missing is empty, unreadable is logged and empty.
pub fn load(path: &Path) -> BenchFile {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BenchFile::default(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the bench state; starting without it");
            return BenchFile::default();
        }
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::error!(path = %path.display(), error = %e, "bench state file is not valid; starting without it");
        BenchFile::default()
    })
}

/// Writes the file whole: a temporary file, synced, renamed over the old.
pub fn save(path: &Path, file: &BenchFile) -> Result<(), BenchFileError> {
    use std::io::Write;
    let write = |source| BenchFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_vec_pretty(file).map_err(|source| BenchFileError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut out = std::fs::File::create(&tmp).map_err(write)?;
    out.write_all(&text).map_err(write)?;
    out.sync_all().map_err(write)?;
    std::fs::rename(&tmp, path).map_err(write)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn a_saved_file_loads_back_and_a_broken_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(FILE_NAME);
        assert_eq!(load(&path), BenchFile::default(), "missing is empty");
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let file = BenchFile {
            maintenance: Some(Maintenance {
                reason: Some("reflashing the DUT".into()),
                since,
                until: Some(since + Duration::from_secs(3600)),
            }),
            ready_boot_id: Some("b0".into()),
        };
        save(&path, &file).unwrap();
        assert_eq!(load(&path), file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("2023-11-14T22:13:20Z"), "{text}");
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(load(&path), BenchFile::default());
    }
}
