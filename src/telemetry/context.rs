//! The execution context the orchestrator hands the agent (which test run,
//! which task, which request chain). Once set it is stamped on every log
//! line until it is cleared.

use std::sync::RwLock;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionContext {
    pub execution_id: Option<String>,
    pub task_id: Option<String>,
    pub correlation_id: Option<String>,
}

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

impl opentelemetry_sdk::trace::SpanProcessor for Stamp {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {
        use opentelemetry::trace::Span;
        for (k, v) in Stamp::attributes() {
            span.set_attribute(opentelemetry::KeyValue::new(k, v));
        }
    }

    fn on_end(&self, _span: opentelemetry_sdk::trace::SpanData) {}

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
