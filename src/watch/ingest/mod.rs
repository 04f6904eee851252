//! How heartbeats reach the watch: OTLP/HTTP ([`otlp`]) and MQTT.
pub mod otlp;
