//! The forwarder against a real HTTP receiver (in-test, decoding with
//! opentelemetry-proto): ordering, outages, Retry-After, permanent
//! rejections and partial success, and a collector that refuses (401, 403,
//! 404, 413, 429, a slow answer), counted by `signal`, `result` and
//! `status`. The refusing-collector tests and the `rejected replay` round
//! trip (the real binary beside a running lane) are in
//! `forwarder/refusing.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use benchtel::outbox::forwarder::{Forwarder, ForwarderOptions, Wakeups};
use benchtel::outbox::{DropReason, NewRecord, Outbox, Signal, StoreOptions, Synchronous};
use opentelemetry::metrics::MeterProvider;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use prost::Message;
use support::receiver::{Receiver, Reply};
use tokio_util::sync::CancellationToken;

#[path = "forwarder/refusing.rs"]
mod refusing;

fn log_request(seq: u64) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("seq-{seq}"))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

struct Rig {
    dir: tempfile::TempDir,
    outbox: Arc<Outbox>,
    wakeups: Arc<Wakeups>,
    forwarder: Arc<Forwarder>,
    meters: SdkMeterProvider,
    exported: InMemoryMetricExporter,
}

fn rig(endpoint: &str, batch_max_records: usize) -> Rig {
    rig_with(endpoint, batch_max_records, Duration::from_secs(2))
}

fn rig_with(endpoint: &str, batch_max_records: usize, timeout: Duration) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(StoreOptions {
        path: dir.path().join("outbox.db"),
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(86_400),
        synchronous: Synchronous::Full,
        live_max_bytes: 1 << 20,
    })
    .unwrap();
    let outbox = Arc::new(outbox);
    let wakeups = Arc::new(Wakeups::default());
    let exported = InMemoryMetricExporter::default();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exported.clone()).build())
        .build();
    let forwarder = Arc::new(
        Forwarder::new(
            outbox.clone(),
            wakeups.clone(),
            ForwarderOptions {
                endpoint: endpoint.parse().unwrap(),
                headers: vec![("authorization".into(), "Bearer t0ken".into())],
                timeout,
                gzip: true,
                max_request_bytes: 1 << 20,
                batch_max_records,
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_secs(1),
                idle_poll: Duration::from_millis(50),
            },
            &meters.meter("test"),
        )
        .unwrap(),
    );
    Rig {
        dir,
        outbox,
        wakeups,
        forwarder,
        meters,
        exported,
    }
}

impl Rig {
    fn append(&self, seq: u64) {
        self.outbox
            .append(NewRecord {
                signal: Signal::Logs,
                items: 1,
                body: log_request(seq),
            })
            .unwrap();
        self.wakeups.wake(Signal::Logs);
    }

    /// `benchtel_export_requests_total` by `signal,result,status`.
    fn requests(&self) -> Vec<(String, u64)> {
        self.meters.force_flush().unwrap();
        let Some(rm) = self.exported.get_finished_metrics().unwrap().pop() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            if m.name() != "benchtel_export_requests" {
                continue;
            }
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                for p in sum.data_points() {
                    let mut kv: Vec<String> = p
                        .attributes()
                        .map(|kv| format!("{}={}", kv.key, kv.value))
                        .collect();
                    kv.sort();
                    out.push((kv.join(","), p.value()));
                }
            }
        }
        out.sort();
        out
    }

    /// How many requests were counted with these labels.
    fn counted(&self, result: &str, status: &str) -> u64 {
        let want = format!("result={result},signal=logs,status={status}");
        self.requests()
            .into_iter()
            .filter(|(labels, _)| *labels == want)
            .map(|(_, n)| n)
            .sum()
    }

    fn start(&self) -> CancellationToken {
        let cancel = CancellationToken::new();
        let beacon = benchtel::systemd::Liveness::default().beacon("t", Duration::from_secs(60));
        tokio::spawn(
            self.forwarder
                .clone()
                .run(Signal::Logs, beacon, cancel.clone()),
        );
        cancel
    }
}

/// The outbox's records once the lane has deleted what the receiver got:
/// the receiver keeps a body before it answers, the lane deletes only after
/// the answer, so "received" runs a moment ahead of "deleted".
async fn settled_records(outbox: &Outbox) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = outbox.status().unwrap().records();
        if n == 0 || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn seqs(receiver: &Receiver) -> Vec<u64> {
    receiver
        .log_bodies()
        .iter()
        .map(|b| b.trim_start_matches("seq-").parse().unwrap())
        .collect()
}

#[tokio::test]
async fn an_outage_of_minutes_loses_nothing_and_keeps_order() {
    let receiver = Receiver::start().await;
    let rig = rig(&receiver.endpoint(), 16);
    receiver.stop().await;
    // Minutes of outage on the paused clock: the lane backs off (its sleeps
    // complete at once), records keep arriving every second.
    tokio::time::pause();
    let cancel = rig.start();
    for seq in 0..300 {
        rig.append(seq);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(rig.outbox.status().unwrap().records(), 300);
    tokio::time::resume();
    receiver.restart().await;
    let done = receiver
        .wait_until(|r| r.log_bodies().len() >= 300, Duration::from_secs(60))
        .await;
    assert!(done, "only {} records arrived", receiver.log_bodies().len());
    let left = settled_records(&rig.outbox).await;
    cancel.cancel();
    let got = seqs(&receiver);
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(unique, (0..300).collect::<Vec<_>>(), "in order, none lost");
    assert!(
        got.len() - unique.len() <= 16,
        "at most one batch duplicated"
    );
    assert_eq!(left, 0);
}

#[tokio::test]
async fn retryable_answers_are_retried_and_retry_after_is_honoured() {
    let receiver = Receiver::start().await;
    receiver.script(vec![
        Reply::Status(503),
        Reply::RetryAfter {
            status: 429,
            seconds: 1,
        },
        Reply::Status(502),
    ]);
    let rig = rig(&receiver.endpoint(), 16);
    rig.append(1);
    let started = std::time::Instant::now();
    let cancel = rig.start();
    assert!(
        receiver
            .wait_until(|r| r.log_bodies().len() == 1, Duration::from_secs(30))
            .await
    );
    let left = settled_records(&rig.outbox).await;
    cancel.cancel();
    // The 429 asked for 1 s; our own backoff starts at 20 ms.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(receiver.request_count(), 4);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_bad_record_is_moved_aside_without_taking_its_neighbours() {
    let receiver = Receiver::start().await;
    // The merged request of three is refused; then one by one: the middle
    // record is the bad one.
    receiver.script(vec![Reply::Status(400), Reply::Ok, Reply::Status(400)]);
    let rig = rig(&receiver.endpoint(), 16);
    for seq in 1..=3 {
        rig.append(seq);
    }
    let cancel = rig.start();
    assert!(
        receiver
            .wait_until(|r| r.log_bodies().len() == 2, Duration::from_secs(30))
            .await
    );
    let left = settled_records(&rig.outbox).await;
    let status = rig.outbox.status().unwrap();
    cancel.cancel();
    assert_eq!(seqs(&receiver), vec![1, 3]);
    assert_eq!(status.dropped(DropReason::Rejected).records, 1);
    assert_eq!(status.rejected_kept, 1);
    assert_eq!(left, 0, "the queue is not wedged");
}

#[tokio::test]
async fn partial_success_is_counted() {
    let receiver = Receiver::start().await;
    receiver.script(vec![Reply::PartialSuccess {
        rejected: 1,
        message: "timestamp too old".into(),
    }]);
    let rig = rig(&receiver.endpoint(), 16);
    rig.append(1);
    let cancel = rig.start();
    assert!(
        receiver
            .wait_until(|r| r.request_count() == 1, Duration::from_secs(30))
            .await
    );
    // The ack and the count are each a step after the answer.
    let mut status = rig.outbox.status().unwrap();
    for _ in 0..200 {
        if status.records() == 0 && status.dropped(DropReason::PartialSuccess).items == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = rig.outbox.status().unwrap();
    }
    cancel.cancel();
    assert_eq!(status.records(), 0);
    assert_eq!(status.dropped(DropReason::PartialSuccess).items, 1);
}

#[tokio::test]
async fn shutdown_flush_sends_what_it_can_within_the_deadline() {
    let receiver = Receiver::start().await;
    let rig = rig(&receiver.endpoint(), 4);
    for seq in 0..10 {
        rig.append(seq);
    }
    rig.forwarder
        .flush(tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(seqs(&receiver), (0..10).collect::<Vec<_>>());
    assert!(
        receiver.request_count() >= 3,
        "merged in batches of at most 4"
    );
    // With the collector gone, flush gives up at its deadline and keeps all.
    receiver.stop().await;
    rig.append(10);
    rig.forwarder
        .flush(tokio::time::Instant::now() + Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(rig.outbox.status().unwrap().records(), 1);
}
