//! A check or probe run as a span, held open from the run's start to its
//! end. The run's future carries the span as its OTel context, so the
//! `tracing` events the check and probe code emit meanwhile carry the
//! run's trace and span ids: in the JSON line (`json_log` reads the current
//! context) and in the OTel log record (the SDK logger stamps the current
//! span on every record it is handed).
//!
//! A run that is cancelled (the agent stopping mid-run) drops the span,
//! which the SDK then ends: it is exported with its start, its end and no
//! `code`, never left half open.

use std::borrow::Cow;
use std::future::Future;

use opentelemetry::trace::{FutureExt, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use super::record::Labels;
use super::{Code, Outcome};

/// At most this many console lines go into a failed run's `console` event.
pub const CONSOLE_LINES: usize = 20;
/// And at most this many bytes of them (the last ones).
pub const CONSOLE_BYTES: usize = 4096;

/// Runs `run` inside a span named `name` (`check <name>`), and records its
/// outcome on the span: `code`, an Error status with the detail on
/// failure, the last console lines, the firmware version a probe read.
/// Also returns the run's (ended) context, under which the caller logs
/// what the run led to (a verdict change), so that line links to it too.
pub(super) async fn traced<T>(
    tracer: &T,
    name: Cow<'static, str>,
    labels: &Labels,
    run: impl Future<Output = Outcome>,
) -> (Outcome, Context)
where
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    let span = tracer
        .span_builder(name)
        .with_attributes([labels.check[0].clone()])
        .start_with_context(tracer, &Context::new());
    let cx = Context::new().with_span(span);
    let outcome = run.with_context(cx.clone()).await;
    finish(&cx, &outcome);
    (outcome, cx)
}

/// Records `outcome` on the span of `cx` and ends it.
fn finish(cx: &Context, outcome: &Outcome) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("code", outcome.code.as_str()));
    if let Some(version) = &outcome.version {
        span.set_attribute(KeyValue::new("firmware.version", version.clone()));
    }
    if outcome.code != Code::Ok {
        if let Some(lines) = &outcome.console {
            span.add_event("console", vec![KeyValue::new("lines", bounded(lines))]);
        }
        // The detail of a serial failure carries its console too: bounded
        // like the event, so a span never grows with the console.
        span.set_status(Status::error(bounded(&outcome.detail)));
    }
    span.end();
}

/// The last [`CONSOLE_LINES`] lines of `console`, and of those at most the
/// last [`CONSOLE_BYTES`] bytes (cut at a character boundary): a span
/// event is exported whole, and a board spewing a stack trace must not
/// make every failed run's span huge.
pub fn bounded(console: &str) -> String {
    let start = console
        .rmatch_indices('\n')
        .nth(CONSOLE_LINES - 1)
        .map_or(0, |(i, _)| i + 1);
    let mut tail = &console[start..];
    if tail.len() > CONSOLE_BYTES {
        let mut cut = tail.len() - CONSOLE_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = &tail[cut..];
    }
    tail.to_string()
}

#[cfg(test)]
mod tests;
