//! How heartbeats reach the watch: MQTT ([`mqtt`]) and OTLP/HTTP ([`otlp`]).
pub mod mqtt;
pub mod otlp;
