//! JSON log lines in the ADR-010 format, one object per line on stdout:
//! `timestamp, level, message, component, execution_id, task_id,
//! correlation_id, trace_id, span_id, context`, plus `bench_id` and
//! `bench_site`, so a log shipper can label a bench's lines without
//! guessing its hostname. Event fields other than the message go into
//! `context`, so Loki can parse every line the same way.

use std::io::Write;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use super::context;

/// Where a line's `bench_id` and `bench_site` come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenchLabels {
    /// The agent's own bench, from its configuration, on every line: the
    /// subscriber is installed only once the configuration is loaded, so
    /// there is no line without it.
    Fixed { id: String, site: String },
    /// The watch hears many benches: a line about one bench carries it
    /// from the event's fields of these names (also kept in `context`);
    /// any other line carries `null`.
    FromFields {
        id: &'static str,
        site: &'static str,
    },
}

impl BenchLabels {
    /// The watch's: its events name a bench in `bench` and its site in
    /// `site`.
    pub const WATCH: BenchLabels = BenchLabels::FromFields {
        id: "bench",
        site: "site",
    };

    fn values(&self, fields: &Map<String, Value>) -> (Value, Value) {
        match self {
            BenchLabels::Fixed { id, site } => {
                (Value::String(id.clone()), Value::String(site.clone()))
            }
            BenchLabels::FromFields { id, site } => {
                // A number or bool is no bench name: only strings count.
                let pick = |key: &str| match fields.get(key) {
                    Some(v @ Value::String(_)) => v.clone(),
                    _ => Value::Null,
                };
                (pick(id), pick(site))
            }
        }
    }
}

/// Writes ADR-010 JSON lines to a writer (stdout in production).
pub struct JsonLayer<W> {
    component: String,
    bench: BenchLabels,
    make_writer: W,
}

impl<W> JsonLayer<W>
where
    W: Fn() -> Box<dyn Write> + Send + Sync + 'static,
{
    pub fn new(component: impl Into<String>, bench: BenchLabels, make_writer: W) -> Self {
        JsonLayer {
            component: component.into(),
            bench,
            make_writer,
        }
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    context: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.context.insert(field.name().to_string(), value);
        }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// Builds the line for one event (apart from writing it, for tests).
pub fn render(component: &str, bench: &BenchLabels, event: &Event<'_>) -> Value {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let (bench_id, bench_site) = bench.values(&fields.context);
    let mut ctx = fields.context;
    ctx.insert(
        "target".into(),
        Value::String(event.metadata().target().to_string()),
    );
    let exec = context::current();
    let otel = opentelemetry::Context::current();
    let span = otel.span();
    let sc = span.span_context();
    let (trace_id, span_id) = if sc.is_valid() {
        (
            Value::String(sc.trace_id().to_string()),
            Value::String(sc.span_id().to_string()),
        )
    } else {
        (Value::Null, Value::Null)
    };
    let opt = |v: Option<String>| v.map_or(Value::Null, Value::String);
    let mut line = Map::new();
    line.insert(
        "timestamp".into(),
        Value::String(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
    );
    line.insert(
        "level".into(),
        Value::String(level_name(event.metadata().level()).into()),
    );
    line.insert(
        "message".into(),
        Value::String(fields.message.unwrap_or_default()),
    );
    line.insert("component".into(), Value::String(component.to_string()));
    line.insert("bench_id".into(), bench_id);
    line.insert("bench_site".into(), bench_site);
    line.insert("execution_id".into(), opt(exec.execution_id));
    line.insert("task_id".into(), opt(exec.task_id));
    line.insert("correlation_id".into(), opt(exec.correlation_id));
    line.insert("trace_id".into(), trace_id);
    line.insert("span_id".into(), span_id);
    line.insert("context".into(), Value::Object(ctx));
    Value::Object(line)
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber,
    W: Fn() -> Box<dyn Write> + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = render(&self.component, &self.bench, event).to_string();
        line.push('\n');
        // One write per line so concurrent lines never interleave.
        let _ = (self.make_writer)().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{Tracer, TracerProvider};
    use tracing_subscriber::prelude::*;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(buf: &Buf) -> Vec<Value> {
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn layer(
        component: &str,
        bench: BenchLabels,
        buf: &Buf,
    ) -> JsonLayer<impl Fn() -> Box<dyn Write> + Send + Sync + 'static> {
        let b = buf.clone();
        JsonLayer::new(component, bench, move || {
            Box::new(b.clone()) as Box<dyn Write>
        })
    }

    fn agent_bench() -> BenchLabels {
        BenchLabels::Fixed {
            id: "lab1-bench07".into(),
            site: "lab1".into(),
        }
    }

    #[test]
    fn lines_carry_every_adr_field_and_the_context() {
        let _turn = context::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let buf = Buf::default();
        let layer = layer("benchtel-agent", agent_bench(), &buf);
        let subscriber = tracing_subscriber::registry().with(layer);
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(seq = 7u64, state = "ready", "heartbeat");
            context::set(context::ExecutionContext {
                execution_id: Some("ex-1".into()),
                task_id: Some("t-9".into()),
                correlation_id: Some("c-3".into()),
            });
            tracer.in_span("collect", |_| tracing::info!("inside"));
            context::clear();
        });
        let got = lines(&buf);
        assert_eq!(got.len(), 2);
        for key in [
            "timestamp",
            "level",
            "message",
            "component",
            "bench_id",
            "bench_site",
            "execution_id",
            "task_id",
            "correlation_id",
            "trace_id",
            "span_id",
            "context",
        ] {
            assert!(got[0].get(key).is_some(), "missing {key}");
        }
        assert_eq!(got[0]["level"], "WARN");
        assert_eq!(got[0]["message"], "heartbeat");
        assert_eq!(got[0]["component"], "benchtel-agent");
        assert_eq!(got[0]["context"]["seq"], 7);
        assert_eq!(got[0]["context"]["state"], "ready");
        assert!(got[0]["execution_id"].is_null());
        assert!(got[0]["trace_id"].is_null());
        assert_eq!(got[1]["execution_id"], "ex-1");
        assert_eq!(got[1]["task_id"], "t-9");
        assert_eq!(got[1]["correlation_id"], "c-3");
        assert_eq!(got[1]["trace_id"].as_str().unwrap().len(), 32);
        assert_eq!(got[1]["span_id"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn the_agent_stamps_its_bench_on_every_line_and_fields_cannot_override_it() {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::registry().with(layer("a", agent_bench(), &buf));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("plain");
            tracing::error!(bench = "other", site = "elsewhere", "names another");
        });
        let got = lines(&buf);
        assert_eq!(got.len(), 2);
        for line in &got {
            assert_eq!(line["bench_id"], "lab1-bench07", "{line}");
            assert_eq!(line["bench_site"], "lab1", "{line}");
        }
        assert_eq!(got[1]["context"]["bench"], "other");
    }

    #[test]
    fn the_watch_names_a_bench_only_on_lines_about_one() {
        let buf = Buf::default();
        let subscriber =
            tracing_subscriber::registry().with(layer("benchtel-watch", BenchLabels::WATCH, &buf));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(bench = "b1", site = "lab2", "bench offline");
            tracing::error!(site = "lab2", down = 3u64, "site outage");
            tracing::info!(bench = 7u64, "a number is not a bench name");
            tracing::info!("bench registry loaded");
        });
        let got = lines(&buf);
        let labels: Vec<(Value, Value)> = got
            .iter()
            .map(|l| (l["bench_id"].clone(), l["bench_site"].clone()))
            .collect();
        assert_eq!(
            labels,
            [
                (Value::from("b1"), Value::from("lab2")),
                (Value::Null, Value::from("lab2")),
                (Value::Null, Value::Null),
                (Value::Null, Value::Null),
            ]
        );
        // The keys are there even when null: one shape for every line.
        assert!(got[3].as_object().unwrap().contains_key("bench_id"));
        assert_eq!(got[0]["context"]["bench"], "b1");
    }
}
