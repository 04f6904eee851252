//! A collector that refuses: each status against the in-test receiver
//! (records kept, split or moved aside; counted by `result` and `status`;
//! the episode persisted for `outbox status`), and the `rejected replay`
//! round trip with the real binary writing beside a running lane.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::support::receiver::{Receiver, Reply};
use super::{DropReason, Rig, Signal, rig, rig_with, seqs, settled_records};

/// Polls `cond` (real time) until it holds; false after `timeout`.
async fn eventually(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn episode(rig: &Rig) -> Option<serde_json::Value> {
    let report = rig.outbox.export_report().unwrap();
    let e = report.episodes.get(&Signal::Logs)?;
    Some(serde_json::to_value(e).unwrap())
}

/// A configuration fault: the record stays queued through many refusals,
/// the episode names the status and its remedy while it lasts, and the
/// first 2xx delivers the record and clears the episode.
async fn refused_until_fixed(status: u16, problem: &str, remedy: &str) {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::Status(status); 1000]);
    let rig = rig(&receiver.endpoint(), 16);
    rig.append(1);
    let cancel = rig.start();
    let mut seen = None;
    let lasting = eventually(
        || {
            seen = episode(&rig);
            seen.as_ref()
                .is_some_and(|e| e["attempts"].as_u64() >= Some(3))
        },
        Duration::from_secs(30),
    )
    .await;
    assert!(lasting, "no lasting episode: {seen:?}");
    let e = seen.unwrap();
    assert_eq!(e["status"], status.to_string());
    assert_eq!(e["problem"], problem);
    let shown = e["remedy"].as_str().unwrap().to_string();
    assert!(shown.contains(remedy), "{shown}");
    assert_eq!(
        rig.outbox.status().unwrap().records(),
        1,
        "kept while refused"
    );
    assert_eq!(rig.outbox.status().unwrap().rejected_kept, 0);
    // Fixed: the record goes, the episode ends.
    receiver.script(vec![]);
    assert!(
        receiver
            .wait_until(|r| r.log_bodies().len() == 1, Duration::from_secs(30))
            .await
    );
    assert_eq!(settled_records(&rig.outbox).await, 0);
    assert!(eventually(|| episode(&rig).is_none(), Duration::from_secs(10)).await);
    cancel.cancel();
    assert!(rig.counted("retry", &status.to_string()) >= 3);
    assert_eq!(rig.counted("ok", "200"), 1);
    assert_eq!(rig.counted("rejected", &status.to_string()), 0);
}

#[tokio::test]
async fn a_401_keeps_the_records_and_says_to_check_the_headers() {
    refused_until_fixed(401, "credentials", "check [otlp] headers / the secret file").await;
}

#[tokio::test]
async fn a_403_keeps_the_records_and_says_to_check_the_headers() {
    refused_until_fixed(403, "credentials", "check [otlp] headers").await;
}

#[tokio::test]
async fn a_404_keeps_the_records_and_names_the_missing_pipeline() {
    // The URL is only known once the receiver runs: checked by prefix.
    refused_until_fixed(
        404,
        "no_pipeline",
        "the collector has no logs pipeline at http://127.0.0.1:",
    )
    .await;
}

#[tokio::test]
async fn a_413_splits_the_request_and_moves_aside_a_record_too_large_alone() {
    let receiver = Receiver::start().await;
    // [1..4] too large → [1,2] ok → [3,4] too large → [3] too large alone
    // (rejected) → [4] ok.
    receiver.script(vec![
        Reply::Status(413),
        Reply::Ok,
        Reply::Status(413),
        Reply::Status(413),
        Reply::Ok,
    ]);
    let rig = rig(&receiver.endpoint(), 16);
    for seq in 1..=4 {
        rig.append(seq);
    }
    let cancel = rig.start();
    assert!(
        receiver
            .wait_until(|r| r.log_bodies().len() == 3, Duration::from_secs(30))
            .await
    );
    assert_eq!(settled_records(&rig.outbox).await, 0);
    cancel.cancel();
    assert_eq!(seqs(&receiver), vec![1, 2, 4]);
    assert_eq!(receiver.request_count(), 5);
    let status = rig.outbox.status().unwrap();
    assert_eq!(status.dropped(DropReason::Rejected).records, 1);
    let rejected = rig.outbox.rejected_list().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].status, 413);
    // The episode lasted through the halves and ended with the last one.
    assert!(eventually(|| episode(&rig).is_none(), Duration::from_secs(10)).await);
    assert_eq!(rig.counted("split", "413"), 2);
    assert_eq!(rig.counted("rejected", "413"), 1);
    assert_eq!(rig.counted("ok", "200"), 2);
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after_and_is_counted_by_status() {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::RetryAfter {
        status: 429,
        seconds: 1,
    }]);
    let rig = rig(&receiver.endpoint(), 16);
    rig.append(1);
    let started = std::time::Instant::now();
    let cancel = rig.start();
    assert!(
        receiver
            .wait_until(|r| r.log_bodies().len() == 1, Duration::from_secs(30))
            .await
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1"
    );
    assert_eq!(settled_records(&rig.outbox).await, 0);
    cancel.cancel();
    assert_eq!(rig.counted("retry", "429"), 1);
    assert_eq!(rig.counted("ok", "200"), 1);
    assert_eq!(rig.outbox.status().unwrap().rejected_kept, 0);
}

#[tokio::test]
async fn a_collector_that_answers_too_slowly_is_timed_out_and_retried() {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::Delay(
        Duration::from_secs(3),
        Box::new(Reply::Ok),
    )]);
    let rig = rig_with(&receiver.endpoint(), 16, Duration::from_millis(300));
    rig.append(1);
    let cancel = rig.start();
    let mut seen = None;
    // The episode is persisted while the lane backs off after the timeout.
    assert!(
        eventually(
            || {
                seen = seen.take().or_else(|| episode(&rig));
                rig.counted("ok", "200") == 1
            },
            Duration::from_secs(30)
        )
        .await
    );
    assert_eq!(settled_records(&rig.outbox).await, 0);
    cancel.cancel();
    let e = seen.expect("the slow episode was persisted");
    assert_eq!(
        (e["status"].as_str(), e["problem"].as_str()),
        (Some("timeout"), Some("slow"))
    );
    assert_eq!(rig.counted("retry", "timeout"), 1);
    assert!(!receiver.log_bodies().is_empty());
}

fn agent(dir: &Path, args: &[&str]) -> Output {
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[outbox]\npath = {:?}\n",
            dir.join("outbox.db").to_str().unwrap()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_benchtel-agent"))
        .args(args)
        .arg("--config")
        .arg(&cfg)
        .env("STATE_DIRECTORY", dir)
        .env_remove("BENCHTEL_CONFIG")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{:?}: {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
async fn a_rejected_record_is_listed_shown_and_replayed_by_the_cli() {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::Status(400)]);
    let rig = rig(&receiver.endpoint(), 16);
    rig.append(7);
    let cancel = rig.start();
    assert!(
        eventually(
            || rig.outbox.status().unwrap().rejected_kept == 1,
            Duration::from_secs(30)
        )
        .await
    );
    let dir = rig.dir.path().to_path_buf();
    let list = ok(&agent(&dir, &["outbox", "rejected", "list", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    let row = &rows[0];
    assert_eq!(
        (row["signal"].as_str(), row["status"].as_u64()),
        (Some("logs"), Some(400))
    );
    assert_eq!(row["items"], 1);
    let id = row["id"].as_i64().unwrap().to_string();
    let text = ok(&agent(&dir, &["outbox", "rejected", "list"]));
    assert!(text.contains(&id) && text.contains("HTTP 400"), "{text}");
    let shown = ok(&agent(&dir, &["outbox", "rejected", "show", &id]));
    assert!(
        shown.contains("1 resource(s), 1 scope(s), 1 item(s)"),
        "{shown}"
    );
    assert!(shown.contains("seq-7"), "{shown}");
    // Unknown ids are a data error; no outbox at all is "no input".
    let unknown = agent(&dir, &["outbox", "rejected", "show", "99999"]);
    assert_eq!(unknown.status.code(), Some(65));
    let unknown = agent(&dir, &["outbox", "rejected", "replay", "99999"]);
    assert_eq!(unknown.status.code(), Some(65));
    let empty = tempfile::tempdir().unwrap();
    let none = agent(empty.path(), &["outbox", "rejected", "list"]);
    assert_eq!(none.status.code(), Some(66));

    // The collector is fixed (its script has run out: 200s); the replay,
    // from another process, puts the record back behind the running lane.
    ok(&agent(&dir, &["outbox", "rejected", "replay", &id]));
    assert!(
        receiver
            .wait_until(|r| r.log_bodies() == ["seq-7"], Duration::from_secs(30))
            .await
    );
    assert_eq!(
        settled_records(&rig.outbox).await,
        0,
        "totals re-read, none below zero"
    );
    cancel.cancel();
    assert_eq!(rig.outbox.rejected_list().unwrap(), vec![]);
    let status = ok(&agent(&dir, &["outbox", "status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["dropped"]["rejected"]["records"], 1,
        "the loss stays counted"
    );
    assert_eq!(status["rejected_replayed"]["records"], 1);
    assert_eq!(status["rejected_kept"], 0);
}

#[tokio::test]
async fn drop_rejected_clears_them_counted() {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::Status(400), Reply::Status(422)]);
    let rig = rig(&receiver.endpoint(), 1);
    rig.append(1);
    rig.append(2);
    let cancel = rig.start();
    assert!(
        eventually(
            || rig.outbox.status().unwrap().rejected_kept == 2,
            Duration::from_secs(30)
        )
        .await
    );
    cancel.cancel();
    let dir = rig.dir.path().to_path_buf();
    let out = ok(&agent(&dir, &["outbox", "drop", "--rejected"]));
    assert!(
        out.contains("deleted 2 rejected record(s) (2 items)"),
        "{out}"
    );
    let status = ok(&agent(&dir, &["outbox", "status"]));
    assert!(status.contains("rejected    0 kept"), "{status}");
    assert!(status.contains("0 / 0 replayed, 2 / 2 cleared"), "{status}");
    let bare = agent(&dir, &["outbox", "drop"]);
    assert_eq!(bare.status.code(), Some(2), "--rejected is required");
}
