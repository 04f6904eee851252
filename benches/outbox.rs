//! Outbox benchmarks (figures go in BENCHMARKS.md):
//!
//! - ingest: records/s and MiB/s committed by `Outbox::append_batch`, beside
//!   a raw rusqlite batched insert into a bare table, same pragmas, same run;
//! - drain: a backlog equal to 24 h of a default-configured bench forwarded
//!   to a loopback OTLP receiver, with the process's RSS sampled throughout;
//! - vacuum: the time `Outbox::shrink` takes to give a drained backlog's
//!   pages back to the file system (incremental vacuum + WAL checkpoint).
//!
//! `cargo bench --bench outbox` runs the full sizes; `cargo test` runs this
//! file with tiny sizes as a smoke test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benchtel::outbox::forwarder::{Forwarder, ForwarderOptions, Wakeups};
use benchtel::outbox::{NewRecord, Outbox, Signal, StoreOptions, Synchronous};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

const BATCH: usize = 500;
const RECORD: usize = 1024;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, records, day_fraction) = if full {
        (7, 20_000, 1.0)
    } else {
        (1, 1_000, 0.005)
    };
    ingest(rounds, records);
    drain(day_fraction);
    let sizes: &[u64] = if full { &[16, 64, 256] } else { &[2] };
    for mib in sizes {
        vacuum(*mib, if full { 3 } else { 1 });
    }
}

/// Fills an outbox with `mib` MiB, deletes it all behind its back (so the
/// drain's own shrink does not run), reopens it and times `shrink`.
fn vacuum(mib: u64, rounds: usize) {
    let mut times = Vec::new();
    let mut sizes = (0, 0);
    for _ in 0..rounds {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = store(dir.path(), "outbox.db");
        let path = opts.path.clone();
        {
            let (outbox, _) = Outbox::open(opts.clone()).expect("outbox");
            let batch: Vec<NewRecord> = (0..256)
                .map(|i| NewRecord {
                    signal: Signal::ALL[i % 3],
                    items: 1,
                    body: vec![0x5a; 4096],
                })
                .collect();
            for _ in 0..mib {
                outbox.append_batch(&batch).expect("append");
            }
            outbox.checkpoint().expect("checkpoint");
        }
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch("DELETE FROM records; PRAGMA wal_checkpoint(TRUNCATE);")
            .expect("delete");
        drop(conn);
        let (outbox, _) = Outbox::open(opts).expect("reopen");
        let before = outbox.file_bytes();
        let t = Instant::now();
        outbox.shrink().expect("shrink");
        times.push(t.elapsed().as_secs_f64());
        sizes = (before, outbox.file_bytes());
    }
    let t = median(times);
    println!(
        "vacuum: {mib} MiB drained, files {:.1} MiB -> {:.2} MiB in {:.3} s ({:.0} MiB/s), median of {rounds}",
        sizes.0 as f64 / (1 << 20) as f64,
        sizes.1 as f64 / (1 << 20) as f64,
        t,
        mib as f64 / t
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn store(dir: &std::path::Path, name: &str) -> StoreOptions {
    StoreOptions {
        path: dir.join(name),
        max_bytes: 1 << 34,
        max_age: Duration::from_secs(7 * 86_400),
        synchronous: Synchronous::Full,
        live_max_bytes: 1 << 20,
    }
}

fn ingest(rounds: usize, records: usize) {
    let body = vec![0x5au8; RECORD];
    let mut raw_rates = Vec::new();
    let mut outbox_rates = Vec::new();
    for round in 0..rounds {
        let dir = tempfile::tempdir().expect("tempdir");
        // Raw: a bare table, WAL + synchronous=FULL, batches of BATCH rows.
        let mut conn = rusqlite::Connection::open(dir.path().join("raw.db")).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        )
        .expect("schema");
        let t = Instant::now();
        for _ in 0..records / BATCH {
            let tx = conn.transaction().expect("tx");
            {
                let mut st = tx
                    .prepare_cached("INSERT INTO t (body) VALUES (?1)")
                    .expect("prep");
                for _ in 0..BATCH {
                    st.execute([&body]).expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
        raw_rates.push(records as f64 / t.elapsed().as_secs_f64());

        let (outbox, _) = Outbox::open(store(dir.path(), "outbox.db")).expect("outbox");
        let batch: Vec<NewRecord> = (0..BATCH)
            .map(|i| NewRecord {
                signal: Signal::ALL[i % 3],
                items: 1,
                body: body.clone(),
            })
            .collect();
        let t = Instant::now();
        for _ in 0..records / BATCH {
            outbox.append_batch(&batch).expect("append");
        }
        outbox_rates.push(records as f64 / t.elapsed().as_secs_f64());
        eprintln!(
            "ingest round {round}: raw {:.0} rec/s, outbox {:.0} rec/s",
            raw_rates[round], outbox_rates[round]
        );
    }
    let (raw, ob) = (median(raw_rates), median(outbox_rates));
    let mib = |r: f64| r * RECORD as f64 / (1 << 20) as f64;
    println!(
        "ingest (1 KiB records, batches of {BATCH}, synchronous=FULL, median of {rounds}): \
         raw sqlite {raw:.0} rec/s ({:.1} MiB/s); outbox {ob:.0} rec/s ({:.1} MiB/s); ratio {:.2}",
        mib(raw),
        mib(ob),
        ob / raw
    );
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", "benchtel-agent"),
            kv("service.version", "0.1.0"),
            kv("host.name", "lab1-bench07"),
            kv("bench.id", "lab1-bench07"),
            kv("bench.site", "lab1"),
        ],
        ..Default::default()
    })
}

/// One metric collection of a default bench: heartbeats, state, cpu,
/// memory, a few disks and interfaces, and the agent's own gauges.
fn metrics_record(t: u64) -> Vec<u8> {
    let names = [
        ("bench_heartbeats", 1),
        ("bench_state", 4),
        ("bench_cpu_utilization", 1),
        ("bench_memory_used", 1),
        ("bench_memory_total", 1),
        ("bench_disk_used", 3),
        ("bench_network_io", 4),
        ("benchtel_outbox_records", 1),
        ("benchtel_outbox_bytes", 1),
        ("benchtel_outbox_oldest_age_seconds", 1),
        ("benchtel_outbox_dropped", 5),
        ("benchtel_export_requests", 3),
    ];
    let metrics = names
        .iter()
        .map(|(name, n)| Metric {
            name: (*name).into(),
            description: format!("{name} description"),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: (0..*n)
                    .map(|i| NumberDataPoint {
                        attributes: vec![kv("label", &format!("value{i}"))],
                        time_unix_nano: t,
                        start_time_unix_nano: t - 10_000_000_000,
                        value: Some(number_data_point::Value::AsDouble(i as f64 * 1.5)),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn log_record(t: u64, seq: u64) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: t,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("heartbeat".into())),
                    }),
                    attributes: vec![
                        kv("seq", &seq.to_string()),
                        kv("boot_id", "3f1c9a0e-8d7b-4c55-9e61-0b2a4d7e9f10"),
                        kv("state", "ready"),
                        kv("agent_version", "0.1.0"),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn span_record(t: u64) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![9; 8],
                    name: "host_metrics.collect".into(),
                    start_time_unix_nano: t,
                    end_time_unix_nano: t + 2_000_000,
                    attributes: vec![kv("series", "14")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A receiver that answers 200 to everything, on its own runtime thread.
fn spawn_receiver() -> (String, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
                let count = count.clone();
                async move {
                    count.fetch_add(body.len() as u64, Ordering::Relaxed);
                    ""
                }
            });
            axum::serve(listener, app).await.expect("serve");
        });
    });
    let addr = rx.recv().expect("receiver address");
    (format!("http://{addr}"), received)
}

fn drain(day_fraction: f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (outbox, _) = Outbox::open(store(dir.path(), "outbox.db")).expect("outbox");
    let outbox = Arc::new(outbox);
    // Default bench: metrics committed every 10 s, a heartbeat log every
    // 10 s (batched each second: one per record), a host-metrics span every
    // 15 s (batched every 5 s: one per record).
    let day = 86_400.0 * day_fraction;
    let (n_metrics, n_logs, n_spans) = (
        (day / 10.0) as u64,
        (day / 10.0) as u64,
        (day / 15.0) as u64,
    );
    let t0 = 1_700_000_000_000_000_000u64;
    let mut batch = Vec::new();
    let push = |r: NewRecord, batch: &mut Vec<NewRecord>| {
        batch.push(r);
        if batch.len() == BATCH {
            outbox.append_batch(batch).expect("append");
            batch.clear();
        }
    };
    for i in 0..n_metrics {
        push(
            NewRecord {
                signal: Signal::Metrics,
                items: 26,
                body: metrics_record(t0 + i * 10_000_000_000),
            },
            &mut batch,
        );
        push(
            NewRecord {
                signal: Signal::Logs,
                items: 1,
                body: log_record(t0 + i * 10_000_000_000, i),
            },
            &mut batch,
        );
    }
    for i in 0..n_spans {
        push(
            NewRecord {
                signal: Signal::Traces,
                items: 1,
                body: span_record(t0 + i * 15_000_000_000),
            },
            &mut batch,
        );
    }
    outbox.append_batch(&batch).expect("append");
    let before = outbox.status().expect("status");
    let (endpoint, received) = spawn_receiver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let forwarder = Forwarder::new(
        outbox.clone(),
        Arc::new(Wakeups::default()),
        ForwarderOptions {
            endpoint: endpoint.parse().expect("url"),
            headers: vec![],
            timeout: Duration::from_secs(10),
            gzip: true,
            max_request_bytes: 4 << 20,
            batch_max_records: 64,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            idle_poll: Duration::from_secs(1),
        },
        &opentelemetry::global::meter("bench"),
    )
    .expect("forwarder");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let base = rss_kib();
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t = Instant::now();
    rt.block_on(forwarder.flush(tokio::time::Instant::now() + Duration::from_secs(600)))
        .expect("flush");
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let after = outbox.status().expect("status");
    assert_eq!(after.records(), 0, "backlog not fully drained");
    println!(
        "drain ({:.0} h of a default bench: {} records, {:.1} MiB; {} metrics, {} logs, {} spans): \
         {:.2} s, {:.1} MiB/s on the wire after gzip ({:.1} MiB), peak RSS growth {} KiB (base {} KiB)",
        day / 3600.0,
        before.records(),
        before.bytes() as f64 / (1 << 20) as f64,
        n_metrics,
        n_logs,
        n_spans,
        took.as_secs_f64(),
        received.load(Ordering::Relaxed) as f64 / (1 << 20) as f64 / took.as_secs_f64(),
        received.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        peak.load(Ordering::Relaxed).saturating_sub(base),
        base
    );
}
