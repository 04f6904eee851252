use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{Status, TracerProvider};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::Value;
use tracing_subscriber::prelude::*;

use super::*;
use crate::agent::checks::CheckConfig;
use crate::telemetry::json_log::{BenchLabels, JsonLayer};

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

/// An SDK with in-memory exporters, and the agent's JSON lines in a buffer.
struct Sdk {
    spans: InMemorySpanExporter,
    traces: SdkTracerProvider,
    logs: InMemoryLogExporter,
    loggers: SdkLoggerProvider,
    json: Buf,
}

impl Sdk {
    fn new() -> Sdk {
        let spans = InMemorySpanExporter::default();
        let logs = InMemoryLogExporter::default();
        Sdk {
            traces: SdkTracerProvider::builder()
                .with_simple_exporter(spans.clone())
                .build(),
            loggers: SdkLoggerProvider::builder()
                .with_simple_exporter(logs.clone())
                .build(),
            spans,
            logs,
            json: Buf::default(),
        }
    }

    /// Runs `f` on a runtime of this thread, with the agent's log layers.
    fn run<F: Future>(&self, f: impl FnOnce() -> F) -> F::Output {
        let b = self.json.clone();
        let bench = BenchLabels::Fixed {
            id: "bench-7".into(),
            site: "lab".into(),
        };
        let json = JsonLayer::new("benchtel-agent", bench, move || {
            Box::new(b.clone()) as Box<dyn Write>
        });
        let subscriber = tracing_subscriber::registry()
            .with(json)
            .with(OpenTelemetryTracingBridge::new(&self.loggers));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || rt.block_on(f()))
    }

    fn spans(&self) -> Vec<SpanData> {
        self.spans.get_finished_spans().unwrap()
    }

    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.json.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn labels(name: &str) -> Labels {
    let c: CheckConfig = toml::from_str(&format!(
        "name = \"{name}\"\ntype = \"file\"\npath = \"/x\""
    ))
    .unwrap();
    Labels::new(&c.name, &c.kind)
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[test]
fn log_lines_during_a_run_carry_its_trace_and_span_ids() {
    let sdk = Sdk::new();
    let tracer = sdk.traces.tracer("t");
    let (outcome, _) = sdk.run(|| async {
        tracing::info!("before");
        let run = async {
            tracing::warn!(port = "/dev/ttyUSB0", "the probe logs mid-run");
            tokio::time::sleep(Duration::from_millis(1)).await;
            tracing::warn!("and after an await");
            Outcome::ok("fine")
        };
        let out = traced(&tracer, "check psu".into(), &labels("psu"), run).await;
        tracing::info!("after");
        out
    });
    assert_eq!(outcome.code, Code::Ok);
    let spans = sdk.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    assert_eq!(span.name, "check psu");
    assert_eq!(attr(span, "check").as_deref(), Some("psu"));
    assert_eq!(attr(span, "code").as_deref(), Some("ok"));
    assert_eq!(span.status, Status::Unset);
    assert!(span.events.is_empty());
    let (trace_id, span_id) = (span.span_context.trace_id(), span.span_context.span_id());

    let lines = sdk.lines();
    let msgs: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        [
            "before",
            "the probe logs mid-run",
            "and after an await",
            "after"
        ]
    );
    for during in &lines[1..3] {
        assert_eq!(during["trace_id"], trace_id.to_string(), "{during}");
        assert_eq!(during["span_id"], span_id.to_string(), "{during}");
    }
    for outside in [&lines[0], &lines[3]] {
        assert!(outside["trace_id"].is_null(), "{outside}");
    }

    // The OTel log records link to the same span.
    let records = sdk.logs.get_emitted_logs().unwrap();
    assert_eq!(records.len(), 4);
    let linked: Vec<_> = records
        .iter()
        .map(|r| r.record.trace_context().map(|t| (t.trace_id, t.span_id)))
        .collect();
    assert_eq!(
        linked,
        [
            None,
            Some((trace_id, span_id)),
            Some((trace_id, span_id)),
            None
        ]
    );
}

#[test]
fn a_failure_sets_the_code_the_status_the_version_and_the_last_console_lines() {
    let sdk = Sdk::new();
    let tracer = sdk.traces.tracer("t");
    let console: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    let console = console.trim_end().to_string();
    let fail = Outcome {
        console: Some(console),
        version: Some("3.5.0".into()),
        ..Outcome::fail(Code::Fatal, "matched fail pattern")
    };
    let dut = labels("dut");
    sdk.run(|| traced(&tracer, "check dut".into(), &dut, async { fail }));
    let spans = sdk.spans();
    let span = &spans[0];
    assert_eq!(attr(span, "code").as_deref(), Some("fatal"));
    assert_eq!(attr(span, "firmware.version").as_deref(), Some("3.5.0"));
    assert_eq!(span.status, Status::error("matched fail pattern"));
    assert_eq!(span.events.len(), 1);
    let event = &span.events[0];
    assert_eq!(event.name, "console");
    let lines = event.attributes[0].value.to_string();
    let expected: Vec<String> = (11..=30).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected.join("\n"), "the last twenty lines");
}

#[test]
fn a_cancelled_run_still_ends_its_span() {
    let sdk = Sdk::new();
    let tracer = sdk.traces.tracer("t");
    let hang = labels("hang");
    let timed_out = sdk.run(|| async {
        let run = traced(&tracer, "check hang".into(), &hang, std::future::pending());
        tokio::time::timeout(Duration::from_millis(5), run).await
    });
    assert!(timed_out.is_err());
    let spans = sdk.spans();
    assert_eq!(spans.len(), 1, "ended when dropped: {spans:?}");
    assert_eq!(spans[0].name, "check hang");
    assert_eq!(attr(&spans[0], "code"), None, "no result to tell");
}

#[test]
fn console_lines_are_bounded_by_count_and_bytes_at_a_character() {
    assert_eq!(bounded("a\nb"), "a\nb");
    let many: Vec<String> = (0..25).map(|i| i.to_string()).collect();
    assert_eq!(bounded(&many.join("\n")), many[5..].join("\n"));
    let wide = "é".repeat(3000);
    let cut = bounded(&wide);
    assert!(cut.len() <= CONSOLE_BYTES && cut.len() >= CONSOLE_BYTES - 1);
    assert!(cut.chars().all(|c| c == 'é'));
}
