//! A lane's turn at live mode's queue (see `outbox::live`): while the disk
//! takes no writes, records waiting in memory go first.

use super::super::DropReason;
use super::super::live::Live;
use super::{Forwarder, Outcome, Record, Signal, Step};

/// A lane's step over the live queue: sends its oldest records of `signal`.
/// `None` when there is nothing live to do and the lane may drain the
/// outbox; while the disk is full the durable backlog waits (deleting from
/// it needs the very space that is missing).
pub(crate) async fn step(fw: &Forwarder, live: &Live, signal: Signal) -> Option<Step> {
    let (max_records, max_bytes) = fw.batch_bounds();
    let batch = live.peek(signal, max_records, max_bytes);
    if batch.is_empty() {
        return live.in_episode().then_some(Step::Idle);
    }
    let (answered, outcome) = fw.send(signal, &batch).await;
    fw.count(signal, answered, &outcome, batch.len());
    let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
    match outcome {
        Outcome::Delivered { rejected_items, .. } => {
            live.remove(&ids);
            if rejected_items > 0 {
                live.lose(DropReason::PartialSuccess, 0, rejected_items);
            }
            Some(Step::Progress)
        }
        Outcome::Retry { after, .. } => Some(Step::Wait(after)),
        // A live record has no place on the disk to be split or moved
        // aside from: one the collector will never take is counted lost.
        Outcome::Split { why } => Some(refused(live, signal, &batch, 413, &why)),
        Outcome::Permanent { status, why } => Some(refused(live, signal, &batch, status, &why)),
    }
}

fn refused(live: &Live, signal: Signal, batch: &[Record], status: u16, why: &str) -> Step {
    let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
    // Only what is still queued is lost here: a probe that committed the
    // rest meanwhile left them to the durable lane, which settles them.
    let gone = live.remove(&ids);
    tracing::error!(signal = signal.as_str(), status, why = %why, records = gone.records,
        "collector refused live records permanently; counted as rejected (the outbox cannot keep them)");
    live.lose(DropReason::Rejected, gone.records, gone.items);
    Step::Progress
}
