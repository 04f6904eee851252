//! The persisted bench registry (`watch.db`, SQLite): every known bench with
//! its last receive time, thresholds learnt from it, maintenance flag,
//! verdict and alert state, and every site outage. It is what lets a
//! restarted watch neither page for every bench at once nor forget a bench
//! that died while it was down, and keep firing alerts firing.
//!
//! Writes are behind the in-memory [`Fleet`](super::fleet::Fleet): changed
//! benches are saved in one transaction every second, so a crash loses at
//! most a second of receive times (which only makes benches look a second
//! older after the restart). `synchronous=NORMAL` for the same reason.
//! A corrupt file is moved aside and a fresh one started (see
//! [`crate::sqlite`]); the watch then relearns its benches from their next
//! heartbeats.
//!
//! Schema versions: 1 (the first release) lacked the maintenance the bench
//! reports, the API's maintenance reason, the end of the last maintenance,
//! the bench's execution context and its `why`; 2 adds them as columns
//! after the others. A version-1 file is migrated in place on open (the
//! columns added, empty), never set aside.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, Row, params};

use super::anchor::Anchor;
use super::bench::{AlertState, Bench, Liveness, Presence, Ts};
use super::fleet::{Changes, Outage};
use crate::sqlite::{self, OpenError, Quarantined};

const SCHEMA_VERSION: &str = "2";
/// The columns schema 2 added to `benches`, in order.
const ADDED_IN_2: &str = "
ALTER TABLE benches ADD COLUMN maintenance_reason TEXT;
ALTER TABLE benches ADD COLUMN reported_maintenance TEXT;
ALTER TABLE benches ADD COLUMN maintenance_ended REAL;
ALTER TABLE benches ADD COLUMN context TEXT;
ALTER TABLE benches ADD COLUMN reported_why TEXT;
";
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS benches (
    site TEXT NOT NULL,
    id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_heard REAL,
    interval REAL NOT NULL,
    reported_state TEXT,
    agent_version TEXT,
    boot_id TEXT,
    clock_offset REAL,
    presence TEXT NOT NULL,
    presence_at REAL,
    maintenance INTEGER NOT NULL,
    liveness TEXT NOT NULL,
    offline_since REAL,
    alert TEXT NOT NULL,
    alert_since REAL,
    alert_site_outage INTEGER NOT NULL,
    alert_recovering_since REAL,
    failing_probes TEXT NOT NULL,
    maintenance_reason TEXT,
    reported_maintenance TEXT,
    maintenance_ended REAL,
    context TEXT,
    reported_why TEXT,
    PRIMARY KEY (site, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outages (
    site TEXT PRIMARY KEY,
    starts_at REAL NOT NULL,
    recovering_since REAL
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("bench registry: {0}")]
    Open(#[from] OpenError),
    #[error("bench registry {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

pub struct Registry {
    conn: Connection,
    path: PathBuf,
}

/// What was loaded at start-up.
pub struct Loaded {
    pub benches: Vec<Bench>,
    pub outages: Vec<(String, Outage)>,
    /// Rows that could not be read back (skipped, with the reason).
    pub skipped: Vec<String>,
}

impl Registry {
    pub fn open(path: &Path) -> Result<(Registry, Quarantined), RegistryError> {
        let spec = sqlite::Spec {
            pragmas: "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
            schema: SCHEMA,
            version: SCHEMA_VERSION,
        };
        migrate(path)?;
        let (conn, quarantined) = sqlite::open_or_quarantine(path, &spec)?;
        Ok((
            Registry {
                conn,
                path: path.to_path_buf(),
            },
            quarantined,
        ))
    }

    fn err(&self, source: rusqlite::Error) -> RegistryError {
        RegistryError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Every bench and outage; `now` restores clock anchors.
    pub fn load(&self, now: Ts) -> Result<Loaded, RegistryError> {
        let mut loaded = Loaded {
            benches: Vec::new(),
            outages: Vec::new(),
            skipped: Vec::new(),
        };
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM benches")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            match bench_from_row(row, now) {
                Ok(b) => loaded.benches.push(b),
                Err(e) => loaded.skipped.push(e.to_string()),
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT site, starts_at, recovering_since FROM outages")
            .map_err(|e| self.err(e))?;
        let outages = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Outage {
                        starts_at: r.get(1)?,
                        recovering_since: r.get(2)?,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        for o in outages {
            loaded.outages.push(o.map_err(|e| self.err(e))?);
        }
        Ok(loaded)
    }

    /// Saves what changed, in one transaction.
    pub fn save(&mut self, changes: &Changes) -> Result<(), RegistryError> {
        let path = self.path.clone();
        let err = |source| RegistryError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO benches VALUES
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                      ?20, ?21, ?22, ?23, ?24)",
                )
                .map_err(err)?;
            for b in &changes.benches {
                let (presence, presence_at) = presence_row(b.presence);
                let (alert, alert_since, site_outage, recovering) = alert_row(b.alert);
                let probes =
                    serde_json::to_string(&b.failing_probes).unwrap_or_else(|_| "{}".into());
                upsert
                    .execute(params![
                        b.site,
                        b.id,
                        b.first_seen,
                        b.last_heard,
                        b.interval,
                        b.reported_state,
                        b.agent_version,
                        b.boot_id,
                        b.anchor.offset(),
                        presence,
                        presence_at,
                        b.maintenance,
                        b.liveness.as_str(),
                        b.offline_since,
                        alert,
                        alert_since,
                        site_outage,
                        recovering,
                        probes,
                        b.maintenance_reason,
                        json(&b.reported_maintenance),
                        b.maintenance_ended,
                        json(b.context()),
                        b.reported_why,
                    ])
                    .map_err(err)?;
            }
            let mut delete = tx
                .prepare_cached("DELETE FROM benches WHERE site = ?1 AND id = ?2")
                .map_err(err)?;
            for (site, id) in &changes.removed {
                delete.execute(params![site, id]).map_err(err)?;
            }
            for (site, outage) in &changes.outages {
                match outage {
                    Some(o) => tx.execute(
                        "INSERT OR REPLACE INTO outages VALUES (?1, ?2, ?3)",
                        params![site, o.starts_at, o.recovering_since],
                    ),
                    None => tx.execute("DELETE FROM outages WHERE site = ?1", params![site]),
                }
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

/// A value stored as JSON (`NULL` for none).
fn json<T: serde::Serialize>(v: &T) -> Option<String> {
    serde_json::to_string(v).ok().filter(|s| s != "null")
}

/// Brings a file of an older schema up to [`SCHEMA_VERSION`] in place.
/// A file that is missing, new, or not readable is left to
/// [`sqlite::open_or_quarantine`], which creates it or sets it aside.
fn migrate(path: &Path) -> Result<(), RegistryError> {
    if !path.exists() {
        return Ok(());
    }
    let err = |source| RegistryError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let Ok(mut conn) = Connection::open(path) else {
        return Ok(());
    };
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .ok();
    if version.as_deref() != Some("1") {
        return Ok(());
    }
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let tx = conn.transaction().map_err(err)?;
    tx.execute_batch(ADDED_IN_2).map_err(err)?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
        params![SCHEMA_VERSION],
    )
    .map_err(err)?;
    tx.commit().map_err(err)?;
    tracing::info!(path = %path.display(), from = "1", to = SCHEMA_VERSION, "bench registry migrated");
    Ok(())
}

fn presence_row(p: Presence) -> (&'static str, Option<Ts>) {
    match p {
        Presence::Unknown => ("unknown", None),
        Presence::Online => ("online", None),
        Presence::Lost { at } => ("lost", Some(at)),
        Presence::Stopped { at } => ("stopped", Some(at)),
    }
}

fn alert_row(a: AlertState) -> (&'static str, Option<Ts>, bool, Option<Ts>) {
    match a {
        AlertState::Quiet => ("quiet", None, false, None),
        AlertState::Pending { since } => ("pending", Some(since), false, None),
        AlertState::Firing {
            starts_at,
            site_outage,
            recovering_since,
        } => ("firing", Some(starts_at), site_outage, recovering_since),
    }
}

/// A row that does not read back is skipped, not fatal: the bench is
/// relearnt from its next heartbeat.
#[derive(Debug, thiserror::Error)]
enum RowError {
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("bench {site}/{id}: unknown {column} {value:?}")]
    Value {
        site: String,
        id: String,
        column: &'static str,
        value: String,
    },
}

fn bench_from_row(r: &Row<'_>, now: Ts) -> Result<Bench, RowError> {
    let site: String = r.get("site")?;
    let id: String = r.get("id")?;
    let bad = |column, value: String| RowError::Value {
        site: site.clone(),
        id: id.clone(),
        column,
        value,
    };
    let mut b = Bench::new(&site, &id, r.get("first_seen")?);
    b.last_heard = r.get("last_heard")?;
    b.interval = r.get("interval")?;
    b.reported_state = r.get("reported_state")?;
    b.agent_version = r.get("agent_version")?;
    b.boot_id = r.get("boot_id")?;
    b.anchor = Anchor::restored(r.get("clock_offset")?, now);
    let presence: String = r.get("presence")?;
    let presence_at: Option<Ts> = r.get("presence_at")?;
    b.presence = match (presence.as_str(), presence_at) {
        ("unknown", _) => Presence::Unknown,
        ("online", _) => Presence::Online,
        ("lost", Some(at)) => Presence::Lost { at },
        ("stopped", Some(at)) => Presence::Stopped { at },
        _ => return Err(bad("presence", presence)),
    };
    b.maintenance = r.get("maintenance")?;
    let liveness: String = r.get("liveness")?;
    b.liveness = Liveness::ALL
        .into_iter()
        .find(|l| l.as_str() == liveness)
        .ok_or_else(|| bad("liveness", liveness.clone()))?;
    b.offline_since = r.get("offline_since")?;
    let alert: String = r.get("alert")?;
    let since: Option<Ts> = r.get("alert_since")?;
    b.alert = match (alert.as_str(), since) {
        ("quiet", _) => AlertState::Quiet,
        ("pending", Some(since)) => AlertState::Pending { since },
        ("firing", Some(starts_at)) => AlertState::Firing {
            starts_at,
            site_outage: r.get("alert_site_outage")?,
            recovering_since: r.get("alert_recovering_since")?,
        },
        _ => return Err(bad("alert", alert)),
    };
    let probes: String = r.get("failing_probes")?;
    b.failing_probes =
        serde_json::from_str::<BTreeMap<String, String>>(&probes).unwrap_or_default();
    b.maintenance_reason = r.get("maintenance_reason")?;
    b.reported_maintenance = from_json(r.get("reported_maintenance")?);
    b.maintenance_ended = r.get("maintenance_ended")?;
    b.set_context(from_json(r.get("context")?).unwrap_or_default());
    b.reported_why = r.get("reported_why")?;
    b.dirty = false;
    Ok(b)
}

fn from_json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    serde_json::from_str(&text?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::bench::{Beat, Transport};
    use crate::watch::config::Thresholds;

    fn th() -> Thresholds {
        crate::watch::config::load(None, &crate::config::Env::default())
            .unwrap()
            .liveness
    }

    #[test]
    fn benches_and_outages_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watch.db");
        let (mut reg, q) = Registry::open(&path).unwrap();
        assert!(q.is_none());
        let mut b = Bench::new("lab", "b1", 10.0);
        let beat = Beat {
            sent: Some(3600.0 + 20.0),
            state: Some("degraded".into()),
            interval: Some(5.0),
            boot_id: Some("boot".into()),
            agent_version: Some("9.9".into()),
            ..Beat::new(Transport::Mqtt, "r".into(), 1)
        };
        b.receive(&beat, 20.0, &th());
        b.status(Presence::Lost { at: 0.0 }, 25.0);
        b.maintenance = true;
        b.liveness = Liveness::Offline;
        b.offline_since = Some(30.0);
        b.alert = AlertState::Firing {
            starts_at: 30.0,
            site_outage: true,
            recovering_since: Some(40.0),
        };
        b.failing_probes.insert("uart".into(), "timeout".into());
        let mut gone = Bench::new("lab", "old", 1.0);
        gone.dirty = true;
        let changes = Changes {
            benches: vec![b.clone(), gone],
            outages: vec![(
                "lab".into(),
                Some(Outage {
                    starts_at: 30.0,
                    recovering_since: None,
                }),
            )],
            removed: vec![],
        };
        reg.save(&changes).unwrap();
        reg.save(&Changes {
            removed: vec![("lab".into(), "old".into())],
            ..Changes::default()
        })
        .unwrap();
        drop(reg);
        let (reg, _) = Registry::open(&path).unwrap();
        let loaded = reg.load(100.0).unwrap();
        assert!(loaded.skipped.is_empty());
        assert_eq!(loaded.benches.len(), 1, "the removed bench is gone");
        let r = &loaded.benches[0];
        assert_eq!(r.last_heard, Some(20.0));
        assert_eq!(r.interval, 5.0);
        assert_eq!(r.reported_state.as_deref(), Some("degraded"));
        assert_eq!(r.presence, Presence::Lost { at: 25.0 });
        assert_eq!(r.alert, b.alert);
        assert_eq!(r.skew(), Some(3600.0));
        assert_eq!(r.failing_probes, b.failing_probes);
        assert!(r.maintenance && r.liveness == Liveness::Offline);
        assert_eq!(loaded.outages.len(), 1);
    }

    /// The schema of the first release, verbatim (`git show` of it).
    const V1_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS benches (
    site TEXT NOT NULL,
    id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_heard REAL,
    interval REAL NOT NULL,
    reported_state TEXT,
    agent_version TEXT,
    boot_id TEXT,
    clock_offset REAL,
    presence TEXT NOT NULL,
    presence_at REAL,
    maintenance INTEGER NOT NULL,
    liveness TEXT NOT NULL,
    offline_since REAL,
    alert TEXT NOT NULL,
    alert_since REAL,
    alert_site_outage INTEGER NOT NULL,
    alert_recovering_since REAL,
    failing_probes TEXT NOT NULL,
    PRIMARY KEY (site, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outages (
    site TEXT PRIMARY KEY,
    starts_at REAL NOT NULL,
    recovering_since REAL
) WITHOUT ROWID;
";

    #[test]
    fn a_registry_written_by_the_first_release_is_migrated_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watch.db");
        {
            // What the first release wrote: its schema, its version, its
            // 19-column rows.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(V1_SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', '1')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT OR REPLACE INTO benches VALUES
                 ('lab', 'b1', 10.0, 20.0, 5.0, 'ready', '0.1.0', 'boot', NULL,
                  'lost', 25.0, 1, 'offline', 30.0, 'firing', 30.0, 0, NULL, '{}')",
                [],
            )
            .unwrap();
            conn.execute("INSERT INTO outages VALUES ('lab', 30.0, NULL)", [])
                .unwrap();
        }
        let (mut reg, q) = Registry::open(&path).unwrap();
        assert!(q.is_none(), "migrated, not set aside: {q:?}");
        let loaded = reg.load(100.0).unwrap();
        assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
        assert_eq!(loaded.outages.len(), 1);
        let mut b = loaded.benches[0].clone();
        assert_eq!((b.site.as_str(), b.id.as_str()), ("lab", "b1"));
        assert!(b.maintenance && b.liveness == Liveness::Offline);
        assert_eq!(b.presence, Presence::Lost { at: 25.0 });
        assert!(matches!(
            b.alert,
            AlertState::Firing {
                starts_at: 30.0,
                ..
            }
        ));
        assert_eq!(b.reported_maintenance, None);
        assert!(b.context().is_empty());
        // The new columns are written and read back.
        b.reported_maintenance = Some(Box::new(crate::watch::bench::Reported {
            reason: Some("flash".into()),
            since: Some(1.0),
            until: Some(500.0),
        }));
        b.set_context(crate::wire::ExecutionContext {
            execution_id: Some("job-42".into()),
            ..Default::default()
        });
        b.maintenance_ended = Some(50.0);
        b.reported_why = Some("reset_not_ready: x".into());
        reg.save(&Changes {
            benches: vec![b.clone()],
            ..Changes::default()
        })
        .unwrap();
        drop(reg);
        let (reg, q) = Registry::open(&path).unwrap();
        assert!(q.is_none());
        let r = &reg.load(100.0).unwrap().benches[0];
        assert_eq!(r.reported_maintenance, b.reported_maintenance);
        assert_eq!(r.context().execution_id.as_deref(), Some("job-42"));
        assert_eq!(r.maintenance_ended, Some(50.0));
        assert_eq!(r.reported_why, b.reported_why);
    }

    #[test]
    fn a_corrupt_registry_is_set_aside_and_a_fresh_one_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watch.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let (reg, q) = Registry::open(&path).unwrap();
        let (moved, _) = q.expect("quarantined");
        assert!(moved.exists());
        assert!(reg.load(0.0).unwrap().benches.is_empty());
    }
}
