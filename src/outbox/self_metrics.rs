//! The outbox's own telemetry: depth, bytes, oldest age and drops by
//! reason, read from the store at each collection so the figures are exact.

use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use super::{DropReason, Outbox};

/// Registers the observable instruments; they live as long as the meter
/// provider.
pub fn register(meter: &Meter, outbox: &Arc<Outbox>) {
    let ob = outbox.clone();
    meter
        .u64_observable_gauge("benchtel_outbox_records")
        .with_description("Records waiting in the outbox")
        .with_callback(move |o| {
            if let Ok(t) = ob.totals() {
                o.observe(t.records, &[]);
            }
        })
        .build();
    let ob = outbox.clone();
    meter
        .u64_observable_gauge("benchtel_outbox_bytes")
        .with_description("Bytes of encoded telemetry waiting in the outbox")
        .with_callback(move |o| {
            if let Ok(t) = ob.totals() {
                o.observe(t.bytes, &[]);
            }
        })
        .build();
    let ob = outbox.clone();
    meter
        .f64_observable_gauge("benchtel_outbox_oldest_age_seconds")
        .with_description("Age of the oldest record waiting in the outbox")
        .with_callback(move |o| {
            if let Ok(s) = ob.status() {
                o.observe(s.oldest_age(SystemTime::now()).as_secs_f64(), &[]);
            }
        })
        .build();
    let ob = outbox.clone();
    meter
        .u64_observable_counter("benchtel_outbox_dropped")
        .with_description("Outbox records dropped without delivery, by reason")
        .with_callback(move |o| {
            if let Ok(s) = ob.status() {
                for reason in DropReason::ALL {
                    let attrs = [KeyValue::new("reason", reason.as_str())];
                    o.observe(s.dropped(reason).records, &attrs);
                }
            }
        })
        .build();
    let ob = outbox.clone();
    meter
        .u64_observable_counter("benchtel_outbox_corruptions")
        .with_description("Corrupt outbox databases moved aside and replaced")
        .with_callback(move |o| {
            if let Ok(s) = ob.status() {
                o.observe(s.corruptions, &[]);
            }
        })
        .build();
}
