//! Opening a SQLite file that must never crash-loop its service: a file that
//! is not a database, fails `quick_check`, or has an unknown schema version
//! is moved aside (with its WAL and SHM files) and a fresh one started. The
//! agent's outbox and the watch's registry both open their files here.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

/// How to prepare one kind of database file.
pub struct Spec<'a> {
    /// `PRAGMA …;` statements run on every open.
    pub pragmas: &'a str,
    /// `CREATE … IF NOT EXISTS` statements; must create a
    /// `meta (key TEXT PRIMARY KEY, value TEXT)` table.
    pub schema: &'a str,
    pub version: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the directory {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move the corrupt database {path} aside to {to}: {source}")]
    Quarantine {
        path: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// A corrupt file that was moved aside: where to, and what was wrong.
pub type Quarantined = Option<(PathBuf, String)>;

/// Opens (or creates) the file, quarantining it when corrupt.
pub fn open_or_quarantine(
    path: &Path,
    spec: &Spec<'_>,
) -> Result<(Connection, Quarantined), OpenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    match open_checked(path, spec) {
        Ok(conn) => Ok((conn, None)),
        Err(OpenError::Corrupt { detail, .. }) => {
            let moved = quarantine(path)?;
            Ok((open_checked(path, spec)?, Some((moved, detail))))
        }
        Err(other) => Err(other),
    }
}

pub fn sql_err(path: &Path, source: rusqlite::Error) -> OpenError {
    OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens the database and proves it usable; any sign of corruption comes
/// back as [`OpenError::Corrupt`] so the caller can quarantine the file.
pub fn open_checked(path: &Path, spec: &Spec<'_>) -> Result<Connection, OpenError> {
    let corrupt = |detail: String| OpenError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let classify = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => corrupt(e.to_string()),
        _ => sql_err(path, e),
    };
    let conn = Connection::open(path).map_err(classify)?;
    conn.execute_batch(spec.pragmas).map_err(classify)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(classify)?;
    if check != "ok" {
        // One line: SQLite puts several findings into one row.
        let check = check.lines().collect::<Vec<_>>().join("; ");
        return Err(corrupt(format!("quick_check: {check}")));
    }
    conn.execute_batch(spec.schema).map_err(classify)?;
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(classify)?;
    match version.as_deref() {
        None => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                params![spec.version],
            )
            .map_err(classify)?;
        }
        Some(v) if v == spec.version => {}
        Some(other) => return Err(corrupt(format!("unknown schema version {other:?}"))),
    }
    Ok(conn)
}

/// Renames the database and its WAL/SHM files aside; returns the new path.
pub fn quarantine(path: &Path) -> Result<PathBuf, OpenError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut to = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    let mut n = 1;
    while to.exists() {
        to = PathBuf::from(format!("{}.corrupt-{stamp}-{n}", path.display()));
        n += 1;
    }
    let moved = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|source| OpenError::Quarantine {
            path: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        })
    };
    moved(path, &to)?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        if side.exists() {
            moved(&side, &PathBuf::from(format!("{}{suffix}", to.display())))?;
        }
    }
    Ok(to)
}

/// Deletes the oldest files [`quarantine`] moved aside beside `path` (with
/// their WAL and SHM files) so that at most `keep` remain; returns the
/// deleted ones. A file that cannot be deleted is left (and not returned).
pub fn prune_quarantined(path: &Path, keep: usize) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.corrupt-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<((u64, u64), PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let rest = file.strip_prefix(&prefix)?;
            let mut parts = rest.split('-');
            let secs = parts.next()?.parse().ok()?;
            let n = match parts.next() {
                None => 0,
                Some(n) => n.parse().ok()?,
            };
            parts.next().is_none().then(|| ((secs, n), e.path()))
        })
        .collect();
    found.sort();
    let excess = found.len().saturating_sub(keep);
    found
        .into_iter()
        .take(excess)
        .filter_map(|(_, p)| {
            std::fs::remove_file(&p).ok()?;
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
            }
            Some(p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_quarantined_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("outbox.db");
        let names = [
            "outbox.db.corrupt-900",
            "outbox.db.corrupt-900-wal",
            "outbox.db.corrupt-1000",
            "outbox.db.corrupt-1000-1",
            "outbox.db.corrupt-1000-1-shm",
            "outbox.db.corrupt-1200",
            "outbox.db",
            "other.db.corrupt-100",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let gone = prune_quarantined(&db, 2);
        assert_eq!(
            gone,
            vec![
                dir.path().join("outbox.db.corrupt-900"),
                dir.path().join("outbox.db.corrupt-1000")
            ]
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "other.db.corrupt-100",
                "outbox.db",
                "outbox.db.corrupt-1000-1",
                "outbox.db.corrupt-1000-1-shm",
                "outbox.db.corrupt-1200",
            ]
        );
    }
}
