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
pub mod config;
pub mod fleet;
pub mod http;
pub mod run;
