//! How heartbeats reach the watch: MQTT ([`mqtt`]) and OTLP/HTTP ([`otlp`],
//! with what the bench says of itself in [`otlp_logs`]).
pub mod mqtt;
pub mod otlp;
pub mod otlp_logs;
