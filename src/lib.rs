//! benchtel: telemetry for on-prem hardware test benches.
//!
//! # Layout
//!
//! - [`config`]: the configuration toolkit both programs use and that
//!   knows neither: environment (`BENCHTEL_CONFIG`, the state directory),
//!   secrets from files, finding and parsing a file section by section,
//!   errors naming file, key path and value, collected before exiting with
//!   `EX_CONFIG` (78), and the one log format. The agent's configuration is
//!   [`agent::config`], the watch's [`watch::config`].
//! - [`cli`]: the command-line options both binaries share.
//! - [`outbox`]: the durable SQLite queue every signal passes through, the
//!   OpenTelemetry SDK exporters that commit into it, and the forwarder that
//!   drains it to an OTLP/HTTP collector.
//! - [`telemetry`]: wiring of the OpenTelemetry SDK (resource, meter, logger
//!   and tracer providers) and the ADR-010 JSON log format.
//! - [`agent`]: what runs on a bench: its configuration, sources (heartbeat, host metrics), the
//!   local `/metrics` and `/healthz` endpoint, the MQTT publisher (live
//!   heartbeats, status with a Last Will, commands), and the staged start-up
//!   and shutdown of the whole pipeline.
//! - [`systemd`]: `sd_notify` readiness and a watchdog that pings only while
//!   the pipeline makes progress.
//! - [`service`]: what both programs share: exit 78 on configuration
//!   errors, signals to cancellation, stages stopped within deadlines.
//! - [`sqlite`]: opening SQLite files that are quarantined, never
//!   crash-looped on, when corrupt (the outbox, the watch's registry).
//! - [`tls`]: the one rustls provider every client uses.
//! - [`wire`]: the MQTT topics and JSON payloads agents and the watch share.
//! - [`mqtt`]: broker connections (URL, credentials, TLS) for both sides,
//!   validated like the rest of the config.
//! - [`watch`]: `benchtel-watch`, the central service: liveness verdicts,
//!   `bench_heartbeat_age_seconds`, bench-offline alerts.
//!
//! The binaries in `src/bin/` are thin: they parse the command line and call
//! into this library.
#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod mqtt;
pub mod outbox;
pub mod service;
pub mod sqlite;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod wire;
