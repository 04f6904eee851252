use std::path::Path;
use std::time::Duration;

use super::*;
use crate::outbox::{Committed, Outbox, StoreOptions, Synchronous};

fn open(dir: &Path, live_max_bytes: u64) -> Outbox {
    Outbox::open(StoreOptions {
        path: dir.join("outbox.db"),
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(3600),
        synchronous: Synchronous::Full,
        live_max_bytes,
    })
    .unwrap()
    .0
}

/// Larger than a page, so every record needs new pages of the file.
fn rec(tag: u8) -> NewRecord {
    NewRecord {
        signal: Signal::Logs,
        items: 2,
        body: vec![tag; 8 << 10],
    }
}

fn file_tags(ob: &Outbox) -> Vec<u8> {
    ob.fetch(Signal::Logs, 0, 1000, u64::MAX)
        .unwrap()
        .iter()
        .map(|r| r.body[0])
        .collect()
}

#[test]
fn a_full_disk_goes_live_counts_what_overflows_and_comes_back_durable() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open(dir.path(), 20 << 10);
    let t0 = Instant::now();
    assert_eq!(ob.commit_at(rec(1), t0).unwrap(), Committed::Durable);
    ob.cap_pages(Some(1));

    // The first refused commit starts the episode; the record waits in memory.
    assert_eq!(ob.commit_at(rec(2), t0).unwrap(), Committed::Live);
    let st = ob.status().unwrap();
    assert_eq!(st.disk.mode(), "live");
    assert!(st.disk.current.as_ref().unwrap().cause.contains("full"));
    // Four more: 5 × 8 KiB in a 20 KiB queue, so the oldest three go, counted.
    for tag in 3..=6 {
        assert_eq!(ob.commit_at(rec(tag), t0).unwrap(), Committed::Live);
    }
    let st = ob.status().unwrap();
    assert_eq!(st.disk.queued_records, 2);
    assert_eq!(
        st.dropped(DropReason::DiskFull),
        DropCount {
            records: 3,
            items: 6
        }
    );
    assert_eq!(st.disk.current.as_ref().unwrap().lost.records, 3);
    // A probe while still full changes nothing and loses nothing more.
    let later = t0 + PROBE_EVERY;
    assert_eq!(ob.commit_at(rec(7), later).unwrap(), Committed::Live);
    assert_eq!(ob.live().state().queued_records, 2);
    assert_eq!(ob.live().state().queued_bytes, 2 * 8192);
    assert_eq!(
        ob.status().unwrap().dropped(DropReason::DiskFull).records,
        4
    );
    // Within the probe interval the disk is not tried at all, room or not.
    ob.cap_pages(None);
    assert_eq!(ob.commit_at(rec(8), later).unwrap(), Committed::Live);
    assert_eq!(
        ob.status().unwrap().dropped(DropReason::DiskFull).records,
        5
    );
    // The next probe commits the queue in front of its record, and the counts.
    assert_eq!(
        ob.commit_at(rec(9), later + PROBE_EVERY).unwrap(),
        Committed::Durable
    );
    assert_eq!(file_tags(&ob), vec![1, 7, 8, 9]);
    let st = ob.status().unwrap();
    assert_eq!(st.disk.mode(), "durable");
    assert_eq!(st.disk.queued_records, 0);
    drop(ob);

    // Written into the file: another process's `outbox status` sees it.
    let ro = Outbox::open_read_only(&dir.path().join("outbox.db")).unwrap();
    let st = ro.status().unwrap();
    assert_eq!(
        st.dropped(DropReason::DiskFull),
        DropCount {
            records: 5,
            items: 10
        }
    );
    let last = st.disk.last.expect("the episode is kept in meta");
    assert_eq!(last.lost.records, 5);
    assert!(last.ended_ms.unwrap() >= last.since_ms);
    assert!(st.disk.current.is_none());
}

#[test]
fn live_records_leave_the_queue_only_once_delivered() {
    let live = Live::new(1 << 20);
    for tag in 0..5u8 {
        live.push(NewRecord {
            signal: if tag % 2 == 0 {
                Signal::Logs
            } else {
                Signal::Metrics
            },
            items: 1,
            body: vec![tag; 10],
        });
    }
    let batch = live.peek(Signal::Logs, 2, u64::MAX);
    assert_eq!(
        batch.iter().map(|r| r.body[0]).collect::<Vec<_>>(),
        vec![0, 2]
    );
    // A retry leaves them; a delivery removes exactly those.
    assert_eq!(live.peek(Signal::Logs, 2, u64::MAX), batch);
    live.remove(&batch.iter().map(|r| r.id).collect::<Vec<_>>());
    let left = live.peek(Signal::Logs, 10, u64::MAX);
    assert_eq!(left.iter().map(|r| r.body[0]).collect::<Vec<_>>(), vec![4]);
    assert_eq!(live.state().queued_records, 3);
    assert_eq!(live.state().queued_bytes, 30);
    // Beyond the record bound the oldest go, counted.
    for _ in 0..MAX_RECORDS {
        live.push(NewRecord {
            signal: Signal::Traces,
            items: 3,
            body: vec![9],
        });
    }
    assert_eq!(live.state().queued_records, MAX_RECORDS as u64);
    assert_eq!(live.pending()[&DropReason::DiskFull].records, 3);
}

#[test]
fn records_a_failed_probe_gives_back_keep_their_ids_so_a_lanes_answer_finds_them() {
    let live = Live::new(1 << 20);
    live.push(rec(1));
    live.push(rec(2));
    let sending: Vec<i64> = live
        .peek(Signal::Logs, 16, 1 << 20)
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(sending.len(), 2);
    // A probe takes the queue while the lane's request is in flight, and
    // the disk is still full.
    let probe = live.take();
    live.give_back(probe);
    let gone = live.remove(&sending);
    assert_eq!(gone.records, 2, "the delivered records were not found");
    assert_eq!(
        live.state().queued_records,
        0,
        "delivered records stayed queued"
    );
}

#[test]
fn a_record_larger_than_the_queue_is_lost_alone() {
    let live = Live::new(16 << 10);
    live.push(rec(1));
    live.push(NewRecord {
        signal: Signal::Logs,
        items: 1,
        body: vec![0; (16 << 10) + 1],
    });
    assert_eq!(
        live.state().queued_records,
        1,
        "the older record was pushed out"
    );
    assert_eq!(live.pending()[&DropReason::DiskFull].records, 1);
}
