//! `benchtel-watch`: the central service that turns heartbeats into
//! liveness verdicts, `bench_heartbeat_age_seconds` and bench-offline
//! alerts.
//!
//! # Layout
//!
//! - [`config`]: the configuration, `/etc/benchtel/watch.toml`.
//! - [`http`]: `/metrics` and `/healthz`.
//! - [`run`]: start-up and staged shutdown.
pub mod alerts;
pub mod anchor;
pub mod bench;
pub mod clock;
pub mod config;
pub mod exposition;
pub mod fleet;
pub mod http;
pub mod ingest;
pub mod registry;
pub mod run;
pub mod shared;
pub mod stats;
