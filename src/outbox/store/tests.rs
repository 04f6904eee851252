use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

fn opts(dir: &Path, max_bytes: u64) -> StoreOptions {
    StoreOptions {
        path: dir.join("outbox.db"),
        max_bytes,
        max_age: Duration::from_secs(3600),
        synchronous: Synchronous::Full,
        live_max_bytes: 1 << 20,
    }
}

fn rec(signal: Signal, tag: u32, len: usize) -> NewRecord {
    let mut body = tag.to_be_bytes().to_vec();
    body.resize(len.max(4), 0xab);
    NewRecord {
        signal,
        items: 1,
        body,
    }
}

fn tag(r: &Record) -> u32 {
    u32::from_be_bytes([r.body[0], r.body[1], r.body[2], r.body[3]])
}

#[test]
fn records_survive_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ob, _) = Outbox::open(opts(dir.path(), 1 << 20)).unwrap();
        for i in 0..5 {
            ob.append(rec(Signal::Logs, i, 10)).unwrap();
        }
        ob.append(rec(Signal::Metrics, 99, 10)).unwrap();
    }
    let (ob, report) = Outbox::open(opts(dir.path(), 1 << 20)).unwrap();
    assert!(report.quarantined.is_none());
    let logs = ob.fetch(Signal::Logs, 0, 100, u64::MAX).unwrap();
    assert_eq!(
        logs.iter().map(tag).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let st = ob.status().unwrap();
    assert_eq!(st.records(), 6);
    assert_eq!(st.per_signal[&Signal::Logs].records, 5);
    assert_eq!(st.bytes(), 60);
}

#[test]
fn byte_bound_drops_oldest_and_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = Outbox::open(opts(dir.path(), 1000)).unwrap();
    for i in 0..25 {
        ob.append(rec(Signal::Metrics, i, 100)).unwrap();
    }
    let left = ob.fetch(Signal::Metrics, 0, 100, u64::MAX).unwrap();
    assert_eq!(
        left.iter().map(tag).collect::<Vec<_>>(),
        (15..25).collect::<Vec<_>>()
    );
    let st = ob.status().unwrap();
    assert_eq!(st.dropped(DropReason::MaxBytes).records, 15);
    assert_eq!(st.bytes(), 1000);
}

#[test]
fn oversize_record_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = Outbox::open(opts(dir.path(), 100)).unwrap();
    let err = ob.append(rec(Signal::Traces, 1, 101)).unwrap_err();
    assert!(err.to_string().contains("101 bytes"), "{err}");
    assert_eq!(
        ob.status().unwrap().dropped(DropReason::TooLarge).records,
        1
    );
}

#[test]
fn reject_moves_aside_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = Outbox::open(opts(dir.path(), 1 << 20)).unwrap();
    let a = ob.append(rec(Signal::Logs, 1, 10)).unwrap();
    ob.append(rec(Signal::Logs, 2, 10)).unwrap();
    ob.reject(Signal::Logs, &[a], 400, "bad request").unwrap();
    let st = ob.status().unwrap();
    assert_eq!(st.dropped(DropReason::Rejected).records, 1);
    assert_eq!(st.rejected_kept, 1);
    let left = ob.fetch(Signal::Logs, 0, 10, u64::MAX).unwrap();
    assert_eq!(left.iter().map(tag).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn expire_drops_only_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = Outbox::open(opts(dir.path(), 1 << 20)).unwrap();
    ob.append(rec(Signal::Logs, 1, 10)).unwrap();
    let now = SystemTime::now();
    assert_eq!(ob.expire(now).unwrap().records, 0);
    let later = now + Duration::from_secs(3601);
    assert_eq!(ob.expire(later).unwrap().records, 1);
    let st = ob.status().unwrap();
    assert_eq!(st.dropped(DropReason::MaxAge).records, 1);
    assert_eq!(st.records(), 0);
    assert_eq!(st.oldest_age(later), Duration::ZERO);
}

#[test]
fn fetch_respects_byte_budget_but_returns_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = Outbox::open(opts(dir.path(), 1 << 20)).unwrap();
    for i in 0..4 {
        ob.append(rec(Signal::Metrics, i, 100)).unwrap();
    }
    assert_eq!(ob.fetch(Signal::Metrics, 0, 10, 250).unwrap().len(), 2);
    assert_eq!(ob.fetch(Signal::Metrics, 0, 10, 1).unwrap().len(), 1);
    let first = ob.fetch(Signal::Metrics, 0, 1, u64::MAX).unwrap();
    let after = ob
        .fetch(Signal::Metrics, first[0].id, 10, u64::MAX)
        .unwrap();
    assert_eq!(after.iter().map(tag).collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[test]
fn garbage_file_is_quarantined_and_a_fresh_outbox_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let garbage: Vec<u8> = (0..65536u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let (ob, report) = Outbox::open(opts(dir.path(), 1 << 20)).unwrap();
    let (moved, detail) = report.quarantined.expect("corrupt file must be reported");
    assert_eq!(
        std::fs::read(&moved).unwrap(),
        garbage,
        "bad file kept aside intact"
    );
    assert!(!detail.is_empty());
    ob.append(rec(Signal::Logs, 1, 10)).unwrap();
    assert_eq!(ob.status().unwrap().corruptions, 1);
    drop(ob);
    let (_, again) = Outbox::open(opts(dir.path(), 1 << 20)).unwrap();
    assert!(
        again.quarantined.is_none(),
        "the fresh outbox must be healthy"
    );
}

#[test]
fn damaged_pages_are_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    {
        let (ob, _) = Outbox::open(opts(dir.path(), 1 << 30)).unwrap();
        for i in 0..2000 {
            ob.append(rec(Signal::Logs, i, 300)).unwrap();
        }
        ob.checkpoint().unwrap();
    }
    // Keep the header valid but scribble over b-tree pages.
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().skip(4096).step_by(7) {
        *b = 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let (_, report) = Outbox::open(opts(dir.path(), 1 << 30)).unwrap();
    assert!(report.quarantined.is_some());
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(u8, u16)>),
    Deliver(u8, u8),
    Reject(u8, u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0u8..3, 1u16..400), 1..6).prop_map(Op::Append),
        3 => (0u8..3, 1u8..5).prop_map(|(s, n)| Op::Deliver(s, n)),
        1 => (0u8..3, 1u8..3).prop_map(|(s, n)| Op::Reject(s, n)),
        1 => Just(Op::Reopen),
    ]
}

/// The reference: one FIFO of (signal, tag, len), evicting from the front.
#[derive(Default)]
struct Model {
    queue: VecDeque<(Signal, u32, u64)>,
    max_bytes: u64,
    evicted: u64,
    rejected: u64,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.queue.iter().map(|r| r.2).sum()
    }
    fn append(&mut self, signal: Signal, tag: u32, len: u64) {
        self.queue.push_back((signal, tag, len));
        while self.bytes() > self.max_bytes {
            self.queue.pop_front();
            self.evicted += 1;
        }
    }
    fn take(&mut self, signal: Signal, n: usize) -> Vec<u32> {
        let tags: Vec<u32> = self.of(signal).into_iter().take(n).collect();
        self.queue
            .retain(|r| !(r.0 == signal && tags.contains(&r.1)));
        tags
    }
    fn of(&self, signal: Signal) -> Vec<u32> {
        self.queue
            .iter()
            .filter(|r| r.0 == signal)
            .map(|r| r.1)
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn outbox_behaves_like_a_bounded_fifo_per_signal(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let max_bytes = 2000;
        let mut ob = Outbox::open(opts(dir.path(), max_bytes)).unwrap().0;
        let mut model = Model { max_bytes, ..Model::default() };
        let mut next_tag = 0u32;
        for op in ops {
            match op {
                Op::Append(batch) => {
                    let recs: Vec<NewRecord> = batch.iter().map(|&(s, len)| {
                        next_tag += 1;
                        rec(Signal::ALL[s as usize], next_tag, len as usize)
                    }).collect();
                    ob.append_batch(&recs).unwrap();
                    for r in &recs {
                        model.append(r.signal, tag(&Record { id: 0, signal: r.signal, created_ms: 0, items: 1, body: r.body.clone() }), r.body.len() as u64);
                    }
                }
                Op::Deliver(s, n) => {
                    let signal = Signal::ALL[s as usize];
                    let got = ob.fetch(signal, 0, n as usize, u64::MAX).unwrap();
                    let ids: Vec<i64> = got.iter().map(|r| r.id).collect();
                    ob.ack(signal, &ids).unwrap();
                    prop_assert_eq!(got.iter().map(tag).collect::<Vec<_>>(), model.take(signal, n as usize));
                }
                Op::Reject(s, n) => {
                    let signal = Signal::ALL[s as usize];
                    let got = ob.fetch(signal, 0, n as usize, u64::MAX).unwrap();
                    let ids: Vec<i64> = got.iter().map(|r| r.id).collect();
                    ob.reject(signal, &ids, 400, "test").unwrap();
                    model.rejected += model.take(signal, n as usize).len() as u64;
                }
                Op::Reopen => {
                    drop(ob);
                    ob = Outbox::open(opts(dir.path(), max_bytes)).unwrap().0;
                }
            }
            let st = ob.status().unwrap();
            prop_assert_eq!(st.bytes(), model.bytes());
            prop_assert_eq!(st.records(), model.queue.len() as u64);
            prop_assert_eq!(st.dropped(DropReason::MaxBytes).records, model.evicted);
            prop_assert_eq!(st.dropped(DropReason::Rejected).records, model.rejected);
            for signal in Signal::ALL {
                let all = ob.fetch(signal, 0, usize::MAX, u64::MAX).unwrap();
                prop_assert_eq!(all.iter().map(tag).collect::<Vec<_>>(), model.of(signal));
            }
        }
    }
}

/// Garbage over the middle of the file at `db`, far more than the page
/// cache holds.
pub(super) fn damage_middle(db: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.seek(SeekFrom::Start(20 * 4096)).unwrap();
    f.write_all(&vec![0x5a; 400 * 4096]).unwrap();
    f.sync_all().unwrap();
}

fn big(tag: u32) -> NewRecord {
    rec(Signal::Logs, tag, 4 << 10)
}

#[test]
fn corruption_found_while_running_is_quarantined_counted_and_survived() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    // Three older quarantined files: the new one pushes the oldest out.
    for stamp in [100, 200, 300] {
        std::fs::write(dir.path().join(format!("outbox.db.corrupt-{stamp}")), b"x").unwrap();
    }
    let (ob, _) = Outbox::open(opts(dir.path(), 64 << 20)).unwrap();
    for i in 0..600 {
        ob.append(big(i)).unwrap();
    }
    ob.checkpoint().unwrap();
    // Garbage over the middle of the file, far more than the page cache.
    damage_middle(&db);
    // The read that finds it gets the fresh (empty) database, not an error.
    let got = ob.fetch(Signal::Logs, 0, 1000, u64::MAX).unwrap();
    assert!(
        got.is_empty(),
        "read {} records from a fresh file",
        got.len()
    );
    let st = ob.status().unwrap();
    assert_eq!(st.corruptions, 1);
    assert_eq!(st.records(), 0);
    // It keeps working, on a file that passes quick_check.
    ob.append(rec(Signal::Logs, 7, 10)).unwrap();
    let got = ob.fetch(Signal::Logs, 0, 10, u64::MAX).unwrap();
    assert_eq!(got.iter().map(tag).collect::<Vec<_>>(), vec![7]);
    drop(ob);
    let (_, report) = Outbox::open(opts(dir.path(), 64 << 20)).unwrap();
    assert!(report.quarantined.is_none());
    // At most KEEP_CORRUPT quarantined files: the oldest went.
    let mut aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("outbox.db.corrupt-") && !n.ends_with("-wal") && !n.ends_with("-shm")
        })
        .collect();
    aside.sort();
    assert_eq!(aside.len(), KEEP_CORRUPT, "{aside:?}");
    assert!(!aside.contains(&"outbox.db.corrupt-100".to_string()));
    assert!(aside.contains(&"outbox.db.corrupt-300".to_string()));
}

#[test]
fn the_file_shrinks_after_a_backlog_drains() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = Outbox::open(opts(dir.path(), 64 << 20)).unwrap();
    for i in 0..2000 {
        ob.append(big(i)).unwrap();
    }
    ob.checkpoint().unwrap();
    let full = ob.file_bytes();
    assert!(full > 8 << 20, "backlog file is {full} bytes");
    loop {
        let batch = ob.fetch(Signal::Logs, 0, 64, u64::MAX).unwrap();
        if batch.is_empty() {
            break;
        }
        ob.ack(
            Signal::Logs,
            &batch.iter().map(|r| r.id).collect::<Vec<_>>(),
        )
        .unwrap();
    }
    // Nothing expires; the periodic pass gives the space back.
    assert_eq!(ob.expire(SystemTime::now()).unwrap().records, 0);
    let drained = ob.file_bytes();
    assert!(
        drained < full / 10,
        "after the drain the files hold {drained} bytes (were {full})"
    );
}

#[test]
fn an_old_file_is_switched_to_incremental_vacuum_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .unwrap();
        let mode: i64 = conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 0);
    }
    let _ = Outbox::open(opts(dir.path(), 1 << 20)).unwrap();
    let conn = Connection::open(&path).unwrap();
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 2, "auto_vacuum = INCREMENTAL");
}

#[test]
fn max_age_does_not_expire_records_stamped_by_an_untrusted_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = Outbox::open(opts(dir.path(), 1 << 20)).unwrap();
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    ob.append(rec(Signal::Logs, 1, 10)).unwrap();
    // Clock stepped back two hours: the record is "from the future". Its
    // age counts from this pass, so it stays its full max_age from here.
    let back = now - 2 * hour;
    assert_eq!(ob.expire(back).unwrap().records, 0);
    assert_eq!(
        ob.expire(back + hour - Duration::from_secs(60))
            .unwrap()
            .records,
        0
    );
    assert_eq!(ob.totals().unwrap().records, 1);
    assert_eq!(
        ob.expire(back + hour + Duration::from_secs(60))
            .unwrap()
            .records,
        1
    );

    // Committed while the clock said 1970 (a board without RTC).
    ob.append(rec(Signal::Logs, 2, 10)).unwrap();
    let other = Connection::open(dir.path().join("outbox.db")).unwrap();
    other
        .execute("UPDATE records SET created_ms = 5000", [])
        .unwrap();
    // While the clock is still unset nothing expires at all.
    let epoch = SystemTime::UNIX_EPOCH;
    assert_eq!(ob.expire(epoch + 2 * hour).unwrap().records, 0);
    // Once set, the record's age starts then, not in 1970.
    assert_eq!(ob.expire(now).unwrap().records, 0);
    assert_eq!(
        ob.expire(now + hour - Duration::from_secs(60))
            .unwrap()
            .records,
        0
    );
    assert_eq!(ob.totals().unwrap().records, 1);
    assert_eq!(
        ob.expire(now + hour + Duration::from_secs(60))
            .unwrap()
            .records,
        1
    );
    // A record with a trustworthy stamp still expires on its own age.
    ob.append(rec(Signal::Logs, 3, 10)).unwrap();
    assert_eq!(ob.expire(now + 2 * hour).unwrap().records, 1);
    assert!(not_before_ms() > 1_700_000_000_000);
}

#[test]
fn full_quota_and_read_only_errors_mean_live_mode_others_do_not() {
    use rusqlite::ffi;
    let err = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
    for code in [
        ffi::SQLITE_FULL,             // ENOSPC
        ffi::SQLITE_IOERR_WRITE,      // EDQUOT, EROFS on a remount
        ffi::SQLITE_IOERR_FSYNC,      // a full thin-provisioned device
        ffi::SQLITE_IOERR_SHMSIZE,    // the -shm file cannot grow
        ffi::SQLITE_READONLY,         // opened read-only under us
        ffi::SQLITE_READONLY_DBMOVED, // and its extended codes
    ] {
        assert!(recover::is_unwritable(&err(code)), "{code}");
    }
    for code in [
        ffi::SQLITE_BUSY,
        ffi::SQLITE_CORRUPT,
        ffi::SQLITE_IOERR_READ,
        ffi::SQLITE_CONSTRAINT,
    ] {
        assert!(!recover::is_unwritable(&err(code)), "{code}");
    }
    assert!(recover::is_corrupt(&err(ffi::SQLITE_NOTADB)));
}
