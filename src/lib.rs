//! benchtel: telemetry for on-prem hardware test benches.
//!
//! # Layers
//!
//! Imports point down only; `tests/architecture.rs` fails on an import
//! that points up, on an import cycle between modules, on a function over
//! 80 lines and on a file over 600 lines outside its tests.
//!
//! ```text
//! src/bin/                       thin CLIs: parse arguments, call the library, print
//! agent/  watch/                 the two programs; each has its config/ and a composition
//!                                root that builds runtime objects from plain config data;
//!                                neither names the other
//! outbox/ telemetry/ mqtt/ cli   shared machinery
//! config/                        the configuration toolkit
//! wire sqlite systemd tls service   leaves, used by everyone above
//! ```
//!
//! # Layout
//!
//! - [`agent`]: `benchtel-agent`, what runs on a bench: its configuration
//!   ([`agent::config`]), the build step ([`agent::build`]), sources
//!   (heartbeat, host metrics), health checks ([`agent::checks`], one module
//!   per check kind), the hardware probes they use ([`agent::probes`]),
//!   readiness, the local `/metrics` and `/healthz` endpoint, the MQTT
//!   publisher and the staged start-up and shutdown ([`agent::run`]).
//! - [`watch`]: `benchtel-watch`, the central service: liveness verdicts,
//!   `bench_heartbeat_age_seconds`, and alerts with one lifecycle
//!   ([`watch::alerts`]).
//! - [`outbox`]: the durable SQLite queue every signal passes through (its
//!   invariants and on-disk schema open `src/outbox/mod.rs`), the
//!   OpenTelemetry SDK exporters that commit into it, and the forwarder that
//!   drains it to an OTLP/HTTP collector.
//! - [`telemetry`]: wiring of the OpenTelemetry SDK (resource, meter, logger
//!   and tracer providers) and the ADR-010 JSON log format.
//! - [`mqtt`]: broker connections (URL, credentials, TLS) for both sides,
//!   validated like the rest of the config.
//! - [`cli`]: the command line both binaries share, and the exit with
//!   `EX_CONFIG` (78) on configuration errors.
//! - [`config`]: the configuration toolkit both programs use and that
//!   knows neither: environment (`BENCHTEL_CONFIG`, the state directory),
//!   secrets from files, finding and parsing a file section by section,
//!   errors naming file, key path and value, and the one log format.
//! - [`wire`]: the MQTT topics and JSON payloads agents and the watch share.
//! - [`sqlite`]: opening SQLite files that are quarantined, never
//!   crash-looped on, when corrupt (the outbox, the watch's registry).
//! - [`systemd`]: `sd_notify` readiness and a watchdog that pings only while
//!   the pipeline makes progress.
//! - [`tls`]: the one rustls provider every client uses, and a client
//!   configuration that reads the system trust store at its first handshake.
//! - [`service`]: a runtime that turns signals into a cancellation, and
//!   stages stopped within deadlines.
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
