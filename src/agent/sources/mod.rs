//! The agent's sources. Each is one module with its own `Config` (serde,
//! `deny_unknown_fields`, read from `[sources.<name>]`) and a
//! `run(config, …, cancel)` loop that records into OpenTelemetry instruments.

pub mod heartbeat;
pub mod host_metrics;
