//! Each boot a `serial_watch` follows is a trace: a root span `boot` from
//! the reset marker to the boot's verdict, a child span `milestone` per
//! milestone reached (from the reset marker to the milestone, so Tempo
//! draws the boot as a staircase), and the fatal line as a span event.
//!
//! Root span attributes: `check` (the watch's name), `boot.reason` (the
//! reset marker's line), `firmware.version` (when the watch has a `version`
//! pattern and the boot printed it), `boot.outcome`:
//! - `booted`: the last milestone was reached (or the device answered the
//!   `alive` poke mid-boot);
//! - `fatal`: a fatal line (event `fatal`, attribute `line`);
//! - `missed_milestone`: a milestone's deadline passed (`boot.missed` names
//!   it);
//! - `boot_loop`: a reset came before the verdict and made a boot loop
//!   (event `boot_loop`, attribute `resets`);
//! - `reset`: a reset came before the verdict, not (yet) a loop.
//!
//! The failures set the span's status to Error and carry the last console
//! lines (bounded as a failed check run's) as the event `console`. A console lost mid-boot
//! does not end the boot (the watch goes on with it once the port is
//! back); the agent stopping mid-boot drops the span, which the SDK ends
//! without an outcome.
//!
//! A boot the watcher joins mid-way (the agent started while the board was
//! up or booting) has no trace: with no reset marker seen there is nothing
//! to time it from, and the watch itself does not follow its milestones.
//! The first reset marker starts the first trace.
//!
//! Times come from the reset's wall-clock time plus tokio's monotonic
//! clock, so a span's length is the same duration the milestone histogram
//! records, and tests on a paused clock get exact spans.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{Span, SpanRef, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tokio::time::Instant;

use crate::agent::probes::serial::watch::{BootTracker, Event};

/// The boot under way, if any.
struct Boot {
    cx: Context,
    /// The reset marker, on the wall clock and on tokio's clock.
    wall: SystemTime,
    at: Instant,
}

/// Turns a watch's boot events into boot traces.
pub(super) struct BootTrace<T> {
    tracer: T,
    /// `check = <name>`.
    check: KeyValue,
    open: Option<Boot>,
    /// The boot the last reset interrupted: a boot loop is about it.
    last: Context,
}

impl<T> BootTrace<T>
where
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    pub(super) fn new(tracer: T, check: KeyValue) -> BootTrace<T> {
        BootTrace {
            tracer,
            check,
            open: None,
            last: Context::new(),
        }
    }

    /// The boot under way's context (for the console lines it prints), or
    /// an empty one.
    pub(super) fn context(&self) -> Context {
        self.open
            .as_ref()
            .map_or_else(Context::new, |b| b.cx.clone())
    }

    /// Follows one event of `batch` (the events one console line or timer
    /// led to); returns the context that log lines about it belong to.
    pub(super) fn event(&mut self, e: &Event, batch: &[Event], tracker: &BootTracker) -> Context {
        match e {
            Event::Reset => {
                let looping = batch.iter().find_map(|e| match e {
                    Event::BootLoop { resets } => Some(*resets),
                    _ => None,
                });
                self.last = match looping {
                    Some(resets) => self.end_with(|span| {
                        let resets = i64::try_from(resets).unwrap_or(i64::MAX);
                        span.add_event("boot_loop", vec![KeyValue::new("resets", resets)]);
                        console(span, tracker);
                        "boot_loop"
                    }),
                    None => self.end_with(|_| "reset"),
                };
                self.start(tracker.last_line(), tracker.boot_started());
                self.context()
            }
            Event::Milestone { name, after } => {
                if let Some(boot) = &self.open {
                    let mut span = self
                        .tracer
                        .span_builder("milestone")
                        .with_start_time(boot.wall)
                        .with_attributes([KeyValue::new("milestone", name.clone())])
                        .start_with_context(&self.tracer, &boot.cx);
                    span.end_with_timestamp(boot.wall + *after);
                }
                self.context()
            }
            Event::Booted | Event::Alive => self.end_with(|_| "booted"),
            Event::Fatal { line } => self.end_with(|span| {
                span.add_event("fatal", vec![KeyValue::new("line", line.clone())]);
                console(span, tracker);
                "fatal"
            }),
            Event::Missed { name, .. } => self.end_with(|span| {
                span.set_attribute(KeyValue::new("boot.missed", name.clone()));
                console(span, tracker);
                "missed_milestone"
            }),
            // Noticed at the reset just handled: about the boot it ended,
            // else the one it started.
            Event::BootLoop { .. } if self.last.has_active_span() => self.last.clone(),
            Event::BootLoop { .. } => self.context(),
            Event::Version { version } => {
                if let Some(boot) = &self.open {
                    let v = KeyValue::new("firmware.version", version.clone());
                    boot.cx.span().set_attribute(v);
                }
                self.context()
            }
            Event::NoAnswer { .. } | Event::AssumedBooted { .. } => self.context(),
        }
    }

    /// Starts a boot at `at`, the instant the tracker times its milestones
    /// from, so no milestone ends after its boot.
    fn start(&mut self, reason: Option<&str>, at: Option<Instant>) {
        let at = at.unwrap_or_else(Instant::now);
        let now = SystemTime::now();
        let wall = now.checked_sub(at.elapsed()).unwrap_or(now);
        let mut attrs = vec![self.check.clone()];
        attrs.extend(reason.map(|r| KeyValue::new("boot.reason", r.to_string())));
        let span = self
            .tracer
            .span_builder(Cow::Borrowed("boot"))
            .with_start_time(wall)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &Context::new());
        self.open = Some(Boot {
            cx: Context::new().with_span(span),
            wall,
            at,
        });
    }

    /// Ends the boot under way, if any, with the outcome `verdict` returns
    /// (after it added what it knows to the span); returns its context, or
    /// an empty one: a fatal line long after a boot belongs to no boot.
    fn end_with(&mut self, verdict: impl FnOnce(&SpanRef<'_>) -> &'static str) -> Context {
        let Some(boot) = self.open.take() else {
            return Context::new();
        };
        let span = boot.cx.span();
        let outcome = verdict(&span);
        span.set_attribute(KeyValue::new("boot.outcome", outcome));
        if matches!(outcome, "fatal" | "missed_milestone" | "boot_loop") {
            span.set_status(Status::error(outcome));
        }
        span.end_with_timestamp(boot.wall + boot.at.elapsed());
        boot.cx
    }
}

/// The last console lines, bounded as a failed run's, as the event
/// `console` of a failed boot.
fn console(span: &SpanRef<'_>, tracker: &BootTracker) {
    let lines = super::trace::bounded(&tracker.last_lines());
    span.add_event("console", vec![KeyValue::new("lines", lines)]);
}

#[cfg(test)]
mod tests;
