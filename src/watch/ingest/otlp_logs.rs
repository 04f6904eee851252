//! What a bench says about itself over OTLP/HTTP logs: `POST /v1/logs`.
//!
//! Over OTLP the heartbeat counter proves that a bench lives, and the
//! `bench_state` gauge says that it is in maintenance, but metric labels
//! carry neither the maintenance's reason and end nor the execution
//! context (they are unbounded text). The agent's heartbeat is also a log
//! record, body `heartbeat`, whose attributes are `state`,
//! `maintenance` (bool), `maintenance_reason`, `maintenance_until`
//! (RFC 3339, bench clock) and the stamped `execution_id`, `task_id`,
//! `correlation_id`. A collector that routes the agents' logs here (best
//! filtered to those records) gives the watch what MQTT heartbeats carry.
//!
//! Every other record is ignored, and so are records of benches the watch
//! does not know yet (the heartbeat counter admits benches). A record is
//! never proof of life, and one older than what the bench last said is
//! history (an outbox replay) and changes nothing. Authorization, size
//! limits and rejections are those of `/v1/metrics`.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::otlp::{in_scope, read, reject, respond, string_attr};
use crate::watch::bench::{Beat, Reported, Transport};
use crate::watch::shared::Shared;
use crate::wire::ExecutionContext;

/// The body of the agent's heartbeat log record.
const HEARTBEAT: &str = "heartbeat";

/// One heartbeat record, as a [`Beat`] that proves nothing but what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub site: String,
    pub bench: String,
    pub beat: Beat,
}

/// `POST /v1/logs`.
pub async fn handle(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let (scope, format, request) =
            read::<ExportLogsServiceRequest>(&shared, &headers, body).await?;
        let reports = extract(&request);
        in_scope(scope.as_deref(), reports.iter().map(|r| r.site.as_str()))?;
        Ok((format, reports))
    }
    .await;
    match result {
        Ok((format, reports)) => {
            let now = shared.clock.now();
            let mut fleet = shared.lock_fleet();
            for r in &reports {
                let result = match fleet.report(&r.site, &r.bench, &r.beat, now) {
                    Ok(true) => "accepted",
                    Ok(false) => "stale",
                    Err(_) => "unknown_bench",
                };
                shared.stats.reports.with_label_values(&[result]).inc();
            }
            drop(fleet);
            respond(&ExportLogsServiceResponse::default(), format)
        }
        Err(rejection) => reject(&shared, rejection),
    }
}

/// The heartbeat records of a request that name their bench, oldest first.
pub fn extract(req: &ExportLogsServiceRequest) -> Vec<Report> {
    let mut out = Vec::new();
    for rl in &req.resource_logs {
        let attrs = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let (Some(bench), Some(site)) = (
            string_attr(attrs, "bench.id"),
            string_attr(attrs, "bench.site"),
        ) else {
            continue;
        };
        for record in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
            if let Some(beat) = heartbeat(record) {
                out.push(Report {
                    site: site.clone(),
                    bench: bench.clone(),
                    beat,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        a.beat
            .sent
            .partial_cmp(&b.beat.sent)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    out
}

/// What a heartbeat record says; `None` for any other record.
fn heartbeat(r: &LogRecord) -> Option<Beat> {
    let body = r.body.as_ref().and_then(|b| match &b.value {
        Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    });
    if body != Some(HEARTBEAT) {
        return None;
    }
    let a = &r.attributes[..];
    let nanos = if r.time_unix_nano > 0 {
        r.time_unix_nano
    } else {
        r.observed_time_unix_nano
    };
    let maintenance = bool_attr(a, "maintenance")
        .unwrap_or(false)
        .then(|| Reported {
            reason: string_attr(a, "maintenance_reason"),
            since: None,
            until: string_attr(a, "maintenance_until")
                .and_then(|u| humantime::parse_rfc3339_weak(&u).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
        });
    Some(Beat {
        transport: Transport::Otlp,
        run_id: string_attr(a, "run_id").unwrap_or_default(),
        seq: 0,
        sent: (nanos > 0).then(|| nanos as f64 / 1e9),
        state: string_attr(a, "state"),
        why: None,
        interval: None,
        boot_id: None,
        agent_version: None,
        maintenance,
        context: Some(ExecutionContext {
            execution_id: string_attr(a, "execution_id"),
            task_id: string_attr(a, "task_id"),
            correlation_id: string_attr(a, "correlation_id"),
        }),
    })
}

fn bool_attr(attrs: &[KeyValue], key: &str) -> Option<bool> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::BoolValue(b)),
            }) => Some(*b),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(records: serde_json::Value) -> ExportLogsServiceRequest {
        let attr = |k: &str, v: &str| serde_json::json!({"key": k, "value": {"stringValue": v}});
        serde_json::from_value(serde_json::json!({"resourceLogs": [{
            "resource": {"attributes": [attr("bench.id", "b1"), attr("bench.site", "lab")]},
            "scopeLogs": [{"logRecords": records}],
        }]}))
        .unwrap()
    }

    #[test]
    fn heartbeat_records_give_maintenance_and_context_and_others_are_ignored() {
        let s = |k: &str, v: &str| serde_json::json!({"key": k, "value": {"stringValue": v}});
        let req = request(serde_json::json!([
            {"timeUnixNano": "2000000000", "body": {"stringValue": "MQTT session up"}},
            {"timeUnixNano": "1000000000", "body": {"stringValue": "heartbeat"}, "attributes": [
                s("state", "maintenance"),
                {"key": "maintenance", "value": {"boolValue": true}},
                s("maintenance_reason", "reflash"),
                s("maintenance_until", "1970-01-01T00:01:40Z"),
                s("execution_id", "job-1"),
            ]},
        ]));
        let got = extract(&req);
        assert_eq!(got.len(), 1);
        let b = &got[0].beat;
        assert_eq!((got[0].site.as_str(), got[0].bench.as_str()), ("lab", "b1"));
        assert_eq!(b.sent, Some(1.0));
        assert_eq!(b.state.as_deref(), Some("maintenance"));
        let m = b.maintenance.as_ref().unwrap();
        assert_eq!(
            (m.reason.as_deref(), m.until),
            (Some("reflash"), Some(100.0))
        );
        let c = b.context.as_ref().unwrap();
        assert_eq!(c.execution_id.as_deref(), Some("job-1"));
        assert_eq!(c.task_id, None);
    }
}
