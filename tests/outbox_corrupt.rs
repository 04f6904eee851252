//! The real agent, killed with records queued, restarted on its outbox
//! file damaged meanwhile: it moves the file aside and counts what was
//! queued in it as dropped, reason `corrupt`, exactly, in `/metrics`, in
//! `outbox status` and in one log line, and runs on without looping.

mod support;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use support::agent::Bench;
use support::http::wait_for;

const DROPPED: &str = "benchtel_outbox_dropped_total";
const CORRUPT: (&str, &str) = ("reason", "corrupt");
const LONG: Duration = Duration::from_secs(30);

/// `outbox.path` of the test config.
fn outbox_path(cfg: &Path) -> PathBuf {
    let text = std::fs::read_to_string(cfg).unwrap();
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("path = "))
        .expect("the test config sets outbox.path");
    PathBuf::from(path.trim_matches('"'))
}

fn queued(db: &Path) -> i64 {
    let Ok(conn) = Connection::open(db) else {
        return 0;
    };
    conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Overwrites the page holding the (empty) `rejected` table: the file fails
/// `quick_check`, while the records stay readable. Returns the records and
/// items queued in it.
fn damage(db: &Path) -> (i64, i64) {
    let conn = Connection::open(db).unwrap();
    // The WAL into the main file, as a clean stop would leave it.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let queued: (i64, i64) = conn
        .query_row("SELECT count(*), sum(items) FROM records", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let root: i64 = conn
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'rejected'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    drop(conn);
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.seek(SeekFrom::Start(((root - 1) * page) as u64)).unwrap();
    f.write_all(&vec![0x5a; page as usize]).unwrap();
    f.sync_all().unwrap();
    queued
}

#[test]
fn records_queued_in_a_file_found_corrupt_at_start_are_counted_as_dropped() {
    let bench = Bench::new("100ms", "");
    let db = outbox_path(&bench.cfg);
    // No collector answers: everything the agent produces stays queued.
    let agent = bench.start();
    wait_for("records queued in the outbox", LONG, || queued(&db) >= 20);
    agent.kill9();
    let (records, items) = damage(&db);
    assert!(records >= 20 && items >= records, "{records} / {items}");

    let agent = bench.start();
    let line = agent.wait_line(&["outbox database was corrupt", "reason corrupt"], LONG);
    assert!(
        line.contains(&format!("lost_records={records} lost_items={items}")),
        "{line}"
    );
    let counted = agent.wait_metric(DROPPED, &[CORRUPT], LONG, |v| v > 0.0);
    assert_eq!(counted, records as f64);
    let status: serde_json::Value =
        serde_json::from_str(&bench.cli(&["outbox", "status", "--json"])).unwrap();
    assert_eq!(
        status["dropped"]["corrupt"]["records"], records,
        "{status:#}"
    );
    assert_eq!(status["dropped"]["corrupt"]["items"], items, "{status:#}");
    let text = bench.cli(&["outbox", "status"]);
    assert!(
        text.contains(&format!("corrupt          {records} / {items}")),
        "{text}"
    );
    let (status, stderr) = agent.terminate();
    assert!(status.success(), "{stderr}");

    // The fresh file is healthy and keeps the count: no second quarantine.
    let agent = bench.start();
    agent.wait_line(&["started"], LONG);
    let counted = agent.wait_metric(DROPPED, &[CORRUPT], LONG, |v| v > 0.0);
    assert_eq!(counted, records as f64);
    assert!(
        !agent.output().contains("outbox database was corrupt"),
        "{}",
        agent.output()
    );
    let (status, stderr) = agent.terminate();
    assert!(status.success(), "{stderr}");
}
