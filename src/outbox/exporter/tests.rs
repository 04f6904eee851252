use std::time::Instant;

use super::*;
use crate::systemd::Liveness;

#[test]
fn a_hung_commit_stops_the_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::in_dir(dir.path());
    let liveness = Liveness::default();
    let sink = Sink::new(outbox.clone(), Arc::default()).with_beacon(
        liveness.beacon("commit", Duration::ZERO),
        Duration::from_millis(100),
    );
    // A commit that ends keeps no promise pending.
    sink.commit(Signal::Logs, 1, b"first".to_vec()).unwrap();
    assert_eq!(liveness.stalled(), None);

    // Another operation wedged with the store's lock held (a hung disk):
    // the next commit cannot end.
    let wedge = outbox.wedge(Duration::from_secs(3600));
    let s = sink.clone();
    let committer = std::thread::spawn(move || s.commit(Signal::Logs, 1, b"hung".to_vec()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while liveness.stalled().is_none() {
        assert!(
            Instant::now() < deadline,
            "a hung commit never broke its promise"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(liveness.stalled(), Some("commit"));

    // Unwedged: the commit ends and the promise is relaxed.
    wedge.release();
    committer.join().unwrap().unwrap();
    assert_eq!(liveness.stalled(), None);
    assert_eq!(outbox.totals().unwrap().records, 2);
}
