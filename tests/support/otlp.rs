//! OTLP metric requests shaped as the agent's SDK sends its heartbeats.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A cumulative `bench_heartbeats` sum with one point per `(count, unix
/// seconds)` of the bench clock, and a `bench_state` gauge saying `ready`.
pub fn heartbeats(
    site: &str,
    bench: &str,
    run_start: u64,
    points: &[(u64, f64)],
) -> ExportMetricsServiceRequest {
    let beats = Metric {
        name: "bench_heartbeats".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points
                .iter()
                .map(|(count, t)| NumberDataPoint {
                    start_time_unix_nano: run_start,
                    time_unix_nano: (t * 1e9) as u64,
                    value: Some(number_data_point::Value::AsInt(*count as i64)),
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let state = Metric {
        name: "bench_state".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: ["starting", "ready"]
                .iter()
                .map(|s| NumberDataPoint {
                    attributes: vec![kv("state", s)],
                    value: Some(number_data_point::Value::AsInt(i64::from(*s == "ready"))),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "benchtel-agent"),
                    kv("bench.id", bench),
                    kv("bench.site", site),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![beats, state],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
