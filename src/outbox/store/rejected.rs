//! The records a collector refused for good (the `rejected` table), for
//! `benchtel-agent outbox rejected list|show|replay` and `outbox drop
//! --rejected`, run beside the agent from another process (WAL lets both
//! write; `busy_timeout` waits out the agent's short transactions).
//!
//! A replayed record goes back into `records` with a new id, so it queues
//! behind everything already there, and with the replay's time as its
//! commit time, so `max_age` counts from the replay. The running agent's
//! lanes poll the table and find it; a lane that finds more records than its
//! cached totals re-reads them ([`Outbox::reload_totals`]). The `rejected`
//! drop count is not lowered: those records were lost once, and a replay
//! is counted on its own (`rejected.replayed` in `meta`), as is a clearing
//! (`rejected.cleared`).

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use super::export::{CLEARED_KEY, REPLAYED_KEY, add_moved};
use super::{Outbox, OutboxError, Signal, sql_err, to_u64, unix_ms};
use crate::outbox::status::{MovedCount, time_at};

/// One row of the `rejected` table, without its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedRecord {
    pub id: i64,
    pub signal: &'static str,
    /// The HTTP status the collector refused it with.
    pub status: u16,
    /// The collector's answer (status line and body snippet).
    pub reason: String,
    pub items: u64,
    pub bytes: u64,
    pub created: String,
    pub rejected: String,
}

/// What a rejected body holds, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BodySummary {
    pub resources: usize,
    pub scopes: usize,
    /// Data points, log records or spans.
    pub items: usize,
    /// `service.name` of the first resource.
    pub service: Option<String>,
    /// The first few metric names, log bodies or span names.
    pub first: Vec<String>,
    /// Why the body could not be decoded, if it could not.
    pub undecodable: Option<String>,
}

/// `outbox rejected show`: a row and its decoded body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedDetail {
    #[serde(flatten)]
    pub record: RejectedRecord,
    pub body: BodySummary,
}

const SHOWN_NAMES: usize = 5;

impl Outbox {
    /// Opens the agent's outbox for the `rejected` commands: writable, but
    /// never created, migrated or quarantined (the agent owns that).
    pub fn open_beside_agent(path: &Path) -> Result<Outbox, OutboxError> {
        if !path.try_exists().unwrap_or(true) {
            return Err(OutboxError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| sql_err(path, e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| sql_err(path, e))?;
        Outbox::beside_agent(path, conn)
    }

    /// Every kept rejected record, oldest first.
    pub fn rejected_list(&self) -> Result<Vec<RejectedRecord>, OutboxError> {
        let inner = self.lock()?;
        let mut stmt = inner
            .conn
            .prepare(
                "SELECT id, signal, status, reason, items, length(body), created_ms, rejected_ms
                 FROM rejected ORDER BY id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], row_to_record).map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// One rejected record with its decoded body; `None` if no such id.
    pub fn rejected_show(&self, id: i64) -> Result<Option<RejectedDetail>, OutboxError> {
        let inner = self.lock()?;
        let found = inner
            .conn
            .query_row(
                "SELECT id, signal, status, reason, items, length(body), created_ms, rejected_ms, body
                 FROM rejected WHERE id = ?1",
                params![id],
                |r| Ok((row_to_record(r)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(8)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(found.map(|(record, code, body)| RejectedDetail {
            body: summarize(Signal::from_code(code), &body),
            record,
        }))
    }

    /// Moves rejected records back into the queue (all of them, or the
    /// given ids), at its end, with new ids; returns how many went back.
    pub fn replay_rejected(&self, ids: Option<&[i64]>) -> Result<MovedCount, OutboxError> {
        let now = unix_ms(SystemTime::now());
        let wanted: Vec<i64> = match ids {
            Some(ids) => ids.to_vec(),
            None => self.rejected_list()?.iter().map(|r| r.id).collect(),
        };
        self.write(|tx, totals| {
            let mut moved = MovedCount::default();
            {
                let mut take = tx.prepare_cached(
                    "DELETE FROM rejected WHERE id = ?1 RETURNING signal, items, body",
                )?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO records (signal, created_ms, items, body) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for id in &wanted {
                    let row: Option<(i64, i64, Vec<u8>)> = take
                        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()?;
                    let Some((signal, items, body)) = row else {
                        continue;
                    };
                    insert.execute(params![signal, now, items, body])?;
                    if let Some(s) = Signal::from_code(signal) {
                        let t = &mut totals[s.index()];
                        t.records += 1;
                        t.bytes += body.len() as u64;
                        t.items += to_u64(items);
                    }
                    moved.records += 1;
                    moved.items += to_u64(items);
                }
            }
            add_moved(tx, REPLAYED_KEY, moved)?;
            Ok(moved)
        })
    }

    /// Deletes every kept rejected record; returns how many went. They
    /// were counted as dropped (`rejected`) when they were moved aside;
    /// this is counted apart, as `rejected.cleared`.
    pub fn drop_rejected(&self) -> Result<MovedCount, OutboxError> {
        self.write(|tx, _| {
            let (records, items): (i64, i64) = tx.query_row(
                "SELECT count(*), coalesce(sum(items), 0) FROM rejected",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.execute("DELETE FROM rejected", [])?;
            let n = MovedCount {
                records: to_u64(records),
                items: to_u64(items),
            };
            add_moved(tx, CLEARED_KEY, n)?;
            Ok(n)
        })
    }
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RejectedRecord> {
    let signal: i64 = r.get(1)?;
    Ok(RejectedRecord {
        id: r.get(0)?,
        signal: Signal::from_code(signal).map_or("unknown", Signal::as_str),
        status: u16::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        reason: r.get(3)?,
        items: to_u64(r.get(4)?),
        bytes: to_u64(r.get(5)?),
        created: time_at(r.get(6)?),
        rejected: time_at(r.get(7)?),
    })
}

/// Decodes a stored export request far enough to say what it holds.
pub fn summarize(signal: Option<Signal>, body: &[u8]) -> BodySummary {
    let mut s = BodySummary::default();
    let result = match signal {
        Some(Signal::Metrics) => ExportMetricsServiceRequest::decode(body).map(|req| {
            for rm in req.resource_metrics {
                s.note_resource(rm.resource.as_ref().map(|r| &r.attributes[..]));
                for sm in rm.scope_metrics {
                    s.scopes += 1;
                    for m in sm.metrics {
                        s.items += points(&m);
                        s.name(m.name);
                    }
                }
            }
        }),
        Some(Signal::Logs) => ExportLogsServiceRequest::decode(body).map(|req| {
            for rl in req.resource_logs {
                s.note_resource(rl.resource.as_ref().map(|r| &r.attributes[..]));
                for sl in rl.scope_logs {
                    s.scopes += 1;
                    for l in sl.log_records {
                        s.items += 1;
                        let text = l.body.as_ref().map(text_of).unwrap_or_default();
                        s.name(if text.is_empty() { l.event_name } else { text });
                    }
                }
            }
        }),
        Some(Signal::Traces) => ExportTraceServiceRequest::decode(body).map(|req| {
            for rs in req.resource_spans {
                s.note_resource(rs.resource.as_ref().map(|r| &r.attributes[..]));
                for ss in rs.scope_spans {
                    s.scopes += 1;
                    for span in ss.spans {
                        s.items += 1;
                        s.name(span.name);
                    }
                }
            }
        }),
        None => {
            s.undecodable = Some("unknown signal code".into());
            return s;
        }
    };
    if let Err(e) = result {
        s.undecodable = Some(e.to_string());
    }
    s
}

impl BodySummary {
    fn note_resource(&mut self, attributes: Option<&[KeyValue]>) {
        self.resources += 1;
        if self.service.is_none() {
            self.service = attributes
                .unwrap_or_default()
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(text_of);
        }
    }

    fn name(&mut self, name: String) {
        if self.first.len() < SHOWN_NAMES && !self.first.contains(&name) {
            self.first.push(name.chars().take(120).collect());
        }
    }
}

fn points(m: &opentelemetry_proto::tonic::metrics::v1::Metric) -> usize {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

fn text_of(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}").chars().take(120).collect(),
        None => String::new(),
    }
}

impl fmt::Display for RejectedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason: String = self.reason.chars().take(60).collect();
        write!(
            f,
            "{:>8}  {:<7}  {:>6}  {:>6}  {}  {}",
            self.id, self.signal, self.status, self.items, self.rejected, reason
        )
    }
}

impl fmt::Display for RejectedDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, b) = (&self.record, &self.body);
        writeln!(f, "id          {}", r.id)?;
        writeln!(f, "signal      {}", r.signal)?;
        writeln!(f, "status      {}", r.status)?;
        writeln!(f, "reason      {}", r.reason)?;
        writeln!(f, "items       {} ({} bytes)", r.items, r.bytes)?;
        writeln!(f, "created     {}", r.created)?;
        writeln!(f, "rejected    {}", r.rejected)?;
        if let Some(e) = &b.undecodable {
            return writeln!(f, "body        cannot be decoded: {e}");
        }
        writeln!(
            f,
            "body        {} resource(s), {} scope(s), {} item(s){}",
            b.resources,
            b.scopes,
            b.items,
            b.service
                .as_ref()
                .map(|s| format!(", service.name {s}"))
                .unwrap_or_default()
        )?;
        for name in &b.first {
            writeln!(f, "  {name}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::outbox::{DropReason, NewRecord, StoreOptions, Synchronous};

    fn outbox(dir: &Path) -> Outbox {
        Outbox::open(StoreOptions {
            path: dir.join("outbox.db"),
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
            synchronous: Synchronous::Normal,
            live_max_bytes: 1 << 20,
        })
        .unwrap()
        .0
    }

    fn metrics_body() -> Vec<u8> {
        let gauge = |name: &str, points: usize| Metric {
            name: name.into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint::default(); points],
            })),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("benchtel-agent".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![gauge("bench_disk_used", 3), gauge("bench_state", 2)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn bodies_are_summarised_by_signal() {
        let m = summarize(Some(Signal::Metrics), &metrics_body());
        assert_eq!((m.resources, m.scopes, m.items), (1, 1, 5));
        assert_eq!(m.service.as_deref(), Some("benchtel-agent"));
        assert_eq!(m.first, vec!["bench_disk_used", "bench_state"]);
        let spans = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        Span {
                            name: "boot".into(),
                            ..Default::default()
                        };
                        2
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let t = summarize(Some(Signal::Traces), &spans);
        assert_eq!((t.items, t.first.clone()), (2, vec!["boot".to_string()]));
        let bad = summarize(Some(Signal::Logs), b"\xff\xff\xff");
        assert!(bad.undecodable.is_some(), "{bad:?}");
    }

    #[test]
    fn replay_requeues_at_the_end_and_drop_clears_both_counted_apart() {
        let dir = tempfile::tempdir().unwrap();
        let ob = outbox(dir.path());
        let rec = |items| NewRecord {
            signal: Signal::Metrics,
            items,
            body: metrics_body(),
        };
        let ids = ob.append_batch(&[rec(5), rec(5), rec(5)]).unwrap();
        ob.reject(Signal::Metrics, &ids[..2], 400, "HTTP 400: bad")
            .unwrap();
        // Another process replays one and clears the other.
        let cli = Outbox::open_beside_agent(&dir.path().join("outbox.db")).unwrap();
        let listed = cli.rejected_list().unwrap();
        assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..2]);
        assert_eq!(listed[0].signal, "metrics");
        let moved = cli.replay_rejected(Some(&[ids[0], 424_242])).unwrap();
        assert_eq!((moved.records, moved.items), (1, 5));
        let gone = cli.drop_rejected().unwrap();
        assert_eq!((gone.records, gone.items), (1, 5));
        // The agent's lane finds the replayed record behind the third, with
        // a new id; its totals catch up when re-read.
        let queued = ob.fetch(Signal::Metrics, 0, 10, u64::MAX).unwrap();
        assert_eq!(queued.len(), 2);
        assert_eq!(queued[0].id, ids[2]);
        assert!(queued[1].id > ids[2]);
        assert_eq!(ob.queued(Signal::Metrics).unwrap(), 1);
        ob.reload_totals().unwrap();
        assert_eq!(ob.queued(Signal::Metrics).unwrap(), 2);
        let status = ob.status().unwrap();
        assert_eq!(
            status.dropped(DropReason::Rejected).records,
            2,
            "never lowered"
        );
        assert_eq!(status.rejected_kept, 0);
        let report = ob.export_report().unwrap();
        assert_eq!((report.replayed.records, report.cleared.records), (1, 1));
        assert!(ob.rejected_show(ids[0]).unwrap().is_none());
    }
}
