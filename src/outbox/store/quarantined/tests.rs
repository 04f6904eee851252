//! A real outbox file with records queued in it, made corrupt: what it
//! held must come out as `corrupt` drops, exactly, and in one log line.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::super::{NewRecord, Outbox, StoreOptions, Synchronous};
use super::*;

fn opts(dir: &Path) -> StoreOptions {
    StoreOptions {
        path: dir.join("outbox.db"),
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(3600),
        synchronous: Synchronous::Full,
        live_max_bytes: 1 << 20,
    }
}

fn rec(signal: Signal, items: u64, len: usize) -> NewRecord {
    NewRecord {
        signal,
        items,
        body: vec![0xab; len],
    }
}

/// Queues 5 metrics records of 7 items, 2 traces of 11 and `logs` logs
/// of 3 items and 4 KiB each.
fn fill(ob: &Outbox, logs: usize) {
    for _ in 0..5 {
        ob.append(rec(Signal::Metrics, 7, 100)).unwrap();
    }
    for _ in 0..2 {
        ob.append(rec(Signal::Traces, 11, 100)).unwrap();
    }
    for _ in 0..logs {
        ob.append(rec(Signal::Logs, 3, 4 << 10)).unwrap();
    }
}

fn counted(metrics: (u64, u64), logs: (u64, u64), traces: (u64, u64)) -> LeftBehind {
    let n = |(records, items)| DropCount { records, items };
    LeftBehind::Counted(BTreeMap::from([
        (Signal::Metrics, n(metrics)),
        (Signal::Logs, n(logs)),
        (Signal::Traces, n(traces)),
    ]))
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Runs `f` with its log lines captured as text.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    (value, text)
}

fn corrupt_drops(ob: &Outbox) -> DropCount {
    ob.status().unwrap().dropped(DropReason::Corrupt)
}

#[test]
fn corruption_found_while_running_counts_what_was_queued_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let (ob, _) = Outbox::open(opts(dir.path())).unwrap();
    fill(&ob, 600);
    // What left otherwise is not counted again: 10 logs delivered, one
    // metrics record rejected.
    let first = ob.fetch(Signal::Logs, 0, 10, u64::MAX).unwrap();
    ob.ack(
        Signal::Logs,
        &first.iter().map(|r| r.id).collect::<Vec<_>>(),
    )
    .unwrap();
    let one = ob.fetch(Signal::Metrics, 0, 1, u64::MAX).unwrap();
    ob.reject(Signal::Metrics, &[one[0].id], 400, "bad")
        .unwrap();
    ob.checkpoint().unwrap();
    // Garbage over the middle of the file, far more than the page cache.
    super::super::tests::damage_middle(&db);
    let (got, log) = logged(|| ob.fetch(Signal::Logs, 0, 1000, u64::MAX).unwrap());
    assert!(
        got.is_empty(),
        "read {} records from a fresh file",
        got.len()
    );
    let st = ob.status().unwrap();
    assert_eq!(st.corruptions, 1);
    assert_eq!(
        st.dropped(DropReason::Corrupt),
        DropCount {
            records: 4 + 590 + 2,
            items: 28 + 1770 + 22
        }
    );
    assert_eq!(
        log.matches("counted as dropped (reason corrupt)").count(),
        1,
        "{log}"
    );
    assert!(log.contains("lost_records=596 lost_items=1820"), "{log}");
    assert!(
        log.contains("metrics 4 / 28, logs 590 / 1770, traces 2 / 22"),
        "{log}"
    );
    // Written into the fresh file at once: a restart still shows them, and
    // the fresh file's own traffic adds nothing to them.
    ob.append(rec(Signal::Logs, 3, 10)).unwrap();
    drop(ob);
    let (ob, report) = Outbox::open(opts(dir.path())).unwrap();
    assert!(report.quarantined.is_none());
    assert_eq!(
        corrupt_drops(&ob),
        DropCount {
            records: 596,
            items: 1820
        }
    );
    assert_eq!(ob.totals().unwrap().records, 1);
}

#[test]
fn a_file_with_damaged_pages_found_at_open_has_its_records_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    {
        let (ob, _) = Outbox::open(opts(dir.path())).unwrap();
        fill(&ob, 40);
        let one = ob.fetch(Signal::Traces, 0, 1, u64::MAX).unwrap();
        ob.reject(Signal::Traces, &[one[0].id], 400, "bad").unwrap();
    }
    // Scribble over the `rejected` table's page: the file fails
    // quick_check, while its records can still be counted.
    let (root, page_size): (i64, i64) = {
        let conn = Connection::open(&db).unwrap();
        let root = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'rejected'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (
            root,
            conn.query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap(),
        )
    };
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.seek(SeekFrom::Start(((root - 1) * page_size) as u64))
            .unwrap();
        f.write_all(&vec![0x5a; page_size as usize]).unwrap();
        f.sync_all().unwrap();
    }
    let (ob, report) = Outbox::open(opts(dir.path())).unwrap();
    let (_, detail) = report.quarantined.clone().expect("quarantined");
    assert!(detail.contains("quick_check"), "{detail}");
    let want = counted((5, 35), (40, 120), (1, 11));
    assert_eq!(report.left_behind.as_ref(), Some(&want));
    assert_eq!(
        corrupt_drops(&ob),
        DropCount {
            records: 46,
            items: 166
        }
    );
    let ((), log) = logged(|| report.log(&db));
    assert_eq!(log.matches("reason corrupt").count(), 1, "{log}");
    assert!(log.contains("lost_records=46 lost_items=166"), "{log}");
    assert!(
        log.contains("metrics 5 / 35, logs 40 / 120, traces 1 / 11"),
        "{log}"
    );
    drop(ob);
    let (ob, again) = Outbox::open(opts(dir.path())).unwrap();
    assert!(again.quarantined.is_none());
    assert_eq!(corrupt_drops(&ob).records, 46, "durable");
}

#[test]
fn records_still_in_the_wal_of_a_file_refused_at_open_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = Outbox::open(opts(dir.path())).unwrap();
    fill(&ob, 3);
    // A schema this agent does not know (a newer agent's, after a
    // downgrade); the image is taken as `kill -9` leaves it, with every
    // record still in the WAL.
    ob.lock()
        .unwrap()
        .conn
        .execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    let crashed = tempfile::tempdir().unwrap();
    for name in ["outbox.db", "outbox.db-wal"] {
        std::fs::copy(dir.path().join(name), crashed.path().join(name)).unwrap();
    }
    drop(ob);
    let wal = std::fs::metadata(crashed.path().join("outbox.db-wal")).unwrap();
    assert!(wal.len() > 10 * 4096, "the records are in the WAL");

    let (ob, report) = Outbox::open(opts(crashed.path())).unwrap();
    let (moved, detail) = report.quarantined.clone().expect("quarantined");
    assert!(detail.contains("schema version"), "{detail}");
    assert!(PathBuf::from(format!("{}-wal", moved.display())).exists());
    let want = counted((5, 35), (3, 9), (2, 22));
    assert_eq!(report.left_behind, Some(want));
    assert_eq!(
        corrupt_drops(&ob),
        DropCount {
            records: 10,
            items: 66
        }
    );
}

#[test]
fn a_file_that_cannot_be_read_is_said_to_lose_an_unknown_number() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let garbage: Vec<u8> = (0..65536u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    let (ob, report) = Outbox::open(opts(dir.path())).unwrap();
    let (moved, _) = report.quarantined.clone().expect("quarantined");
    assert!(
        matches!(&report.left_behind, Some(LeftBehind::Unknown(why)) if why.contains("not a database")),
        "{:?}",
        report.left_behind
    );
    assert_eq!(std::fs::read(&moved).unwrap(), garbage, "left as it was");
    assert_eq!(corrupt_drops(&ob), DropCount::default());
    let ((), log) = logged(|| report.log(&db));
    assert_eq!(log.matches("unknown number").count(), 1, "{log}");
    assert!(log.contains("not counted"), "{log}");
    assert!(log.contains("count_error="), "{log}");
}

#[test]
fn losses_the_fresh_file_cannot_take_at_once_are_written_by_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = Outbox::open(opts(dir.path())).unwrap();
    let lost = DropCount {
        records: 5,
        items: 12,
    };
    {
        let mut inner = ob.lock().unwrap();
        // The fresh file refuses the commit (as a full disk would).
        inner.conn.execute_batch("PRAGMA query_only = 1").unwrap();
        let ((), log) = logged(|| inner.owe_corrupt(lost));
        assert!(log.contains("kept in memory"), "{log}");
        inner.conn.execute_batch("PRAGMA query_only = 0").unwrap();
    }
    assert_eq!(corrupt_drops(&ob), lost, "shown while owed");
    ob.append(rec(Signal::Logs, 1, 10)).unwrap();
    ob.append(rec(Signal::Logs, 1, 10)).unwrap();
    drop(ob);
    let (ob, _) = Outbox::open(opts(dir.path())).unwrap();
    assert_eq!(
        corrupt_drops(&ob),
        lost,
        "written once, by the first commit"
    );
}

#[test]
fn a_late_ack_of_the_corrupt_files_records_deletes_none_of_the_fresh_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let (ob, _) = Outbox::open(opts(dir.path())).unwrap();
    fill(&ob, 600);
    ob.checkpoint().unwrap();
    // A lane has the metrics in flight when the file turns out corrupt.
    let in_flight: Vec<i64> = ob
        .fetch(Signal::Metrics, 0, 10, u64::MAX)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    super::super::tests::damage_middle(&db);
    assert!(
        ob.fetch(Signal::Logs, 0, 1000, u64::MAX)
            .unwrap()
            .is_empty()
    );
    assert_eq!(ob.status().unwrap().corruptions, 1);
    for _ in 0..5 {
        ob.append(rec(Signal::Metrics, 1, 10)).unwrap();
    }
    // Its 2xx comes back: the ack finds none of those ids in the fresh file.
    ob.ack(Signal::Metrics, &in_flight).unwrap();
    let fresh = ob.fetch(Signal::Metrics, 0, 10, u64::MAX).unwrap();
    assert_eq!(
        fresh.len(),
        5,
        "ids {:?}",
        fresh.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    assert!(fresh.iter().all(|r| r.id > in_flight[4]));
    assert_eq!(ob.totals().unwrap().records, 5);
}
