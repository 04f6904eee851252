//! The publisher's own metrics (`benchtel_mqtt_*`), by topic kind.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};

/// What a publish is about: the `topic_kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Heartbeat,
    Status,
    Probe,
    /// The `offline`/`shutdown` status whose PUBACK a clean stop awaits.
    Shutdown,
}

impl Kind {
    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Status | Kind::Shutdown => "status",
            Kind::Probe => "probe",
        }
    }
}

pub(super) struct Metrics {
    pub(super) connected: Gauge<i64>,
    pub(super) publishes: Counter<u64>,
    pub(super) skipped: Counter<u64>,
    pub(super) commands: Counter<u64>,
    pub(super) connects: Counter<u64>,
}

impl Metrics {
    pub(super) fn new(meter: &Meter) -> Metrics {
        Metrics {
            connected: meter
                .i64_gauge("benchtel_mqtt_connected")
                .with_description("1 while the agent is connected to its MQTT broker")
                .build(),
            publishes: meter
                .u64_counter("benchtel_mqtt_publishes")
                .with_description(
                    "MQTT publishes by topic kind and result: acked, lost (connection dropped before the PUBACK), dropped (client queue full)",
                )
                .build(),
            skipped: meter
                .u64_counter("benchtel_mqtt_heartbeats_skipped")
                .with_description(
                    "Heartbeats not published over MQTT (disconnected or queue full); the outbox still has them",
                )
                .build(),
            commands: meter
                .u64_counter("benchtel_mqtt_commands")
                .with_description("Commands received on the bench's cmd topic, by result")
                .build(),
            connects: meter
                .u64_counter("benchtel_mqtt_connects")
                .with_description("MQTT connection attempts by result")
                .build(),
        }
    }

    pub(super) fn publish(&self, kind: Kind, result: &'static str, n: u64) {
        if n > 0 {
            self.publishes.add(
                n,
                &[
                    KeyValue::new("topic_kind", kind.label()),
                    KeyValue::new("result", result),
                ],
            );
        }
    }

    pub(super) fn command(&self, result: &'static str) {
        self.commands.add(1, &[KeyValue::new("result", result)]);
    }
}
