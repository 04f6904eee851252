//! The execution context the orchestrator hands the agent (which test run,
//! which task, which request chain). Once set it is stamped on every log
//! line until it is cleared.

use std::sync::RwLock;

pub use crate::wire::ExecutionContext;

static CURRENT: RwLock<Option<ExecutionContext>> = RwLock::new(None);

/// Makes `ctx` the context stamped on all telemetry from now on.
pub fn set(ctx: ExecutionContext) {
    if let Ok(mut cur) = CURRENT.write() {
        *cur = Some(ctx);
    }
}

pub fn clear() {
    if let Ok(mut cur) = CURRENT.write() {
        *cur = None;
    }
}

pub fn current() -> ExecutionContext {
    CURRENT
        .read()
        .ok()
        .and_then(|c| c.clone())
        .unwrap_or_default()
}

/// Stamps the current execution context on every OTel log record and span,
/// as attributes `execution_id`, `task_id`, `correlation_id`. Registered
/// before the batch processors, which then export the stamped data.
#[derive(Debug, Default)]
pub struct Stamp;

impl Stamp {
    fn attributes() -> Vec<(&'static str, String)> {
        let ctx = current();
        [
            ("execution_id", ctx.execution_id),
            ("task_id", ctx.task_id),
            ("correlation_id", ctx.correlation_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

impl opentelemetry_sdk::logs::LogProcessor for Stamp {
    fn emit(
        &self,
        record: &mut opentelemetry_sdk::logs::SdkLogRecord,
        _scope: &opentelemetry::InstrumentationScope,
    ) {
        use opentelemetry::logs::LogRecord;
        for (k, v) in Stamp::attributes() {
            record.add_attribute(k, v);
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(
        &self,
        _timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// Stamps the execution context on spans, then hands them to `P` (the
/// batch processor). One processor rather than two side by side: the SDK
/// clones every ended span for each processor but the last.
#[derive(Debug)]
pub struct Stamped<P>(pub P);

impl<P: opentelemetry_sdk::trace::SpanProcessor> opentelemetry_sdk::trace::SpanProcessor
    for Stamped<P>
{
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        use opentelemetry::trace::Span;
        for (k, v) in Stamp::attributes() {
            span.set_attribute(opentelemetry::KeyValue::new(k, v));
        }
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// The context is process-wide: tests that set it take turns.
#[cfg(test)]
pub(crate) static TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SimpleSpanProcessor};

    use super::*;

    #[test]
    fn spans_are_stamped_while_a_context_is_set_and_handed_on() {
        let _turn = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Stamped(SimpleSpanProcessor::new(spans.clone())))
            .build();
        let tracer = provider.tracer("test");
        set(ExecutionContext {
            execution_id: Some("ex-1".into()),
            task_id: Some("t-2".into()),
            correlation_id: None,
        });
        tracer.in_span("during", |_| {});
        clear();
        tracer.in_span("after", |_| {});
        let got = spans.get_finished_spans().unwrap();
        let attrs = |name: &str| -> Vec<(String, String)> {
            got.iter()
                .find(|s| s.name == name)
                .unwrap()
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect()
        };
        assert_eq!(got.len(), 2);
        assert_eq!(
            attrs("during"),
            [
                ("execution_id".into(), "ex-1".into()),
                ("task_id".into(), "t-2".into())
            ]
        );
        assert_eq!(attrs("after"), []);
    }
}
