//! `benchtel-watch`: the central service that turns heartbeats into
//! liveness verdicts, `bench_heartbeat_age_seconds` and bench-offline
//! alerts.
//!
//! # Layout
//!
//! - [`alerts`]: the alerts the watch raises, their one lifecycle
//!   ([`alerts::lifecycle`]) and their delivery to Alertmanager and webhooks.
//! - [`anchor`]: telling a live heartbeat from a replayed old one without
//!   trusting the bench's clock.
//! - [`bench`]: one bench as the watch sees it, its liveness verdict and its
//!   offline alert.
//! - [`clock`]: watch time, from the monotonic clock.
//! - [`config`]: the configuration, `/etc/benchtel/watch.toml`.
//! - [`exposition`]: the per-bench series of `/metrics`, written at scrape time.
//! - [`fleet`]: every bench by site, the watch's own deafness, site outages,
//!   and the alerts that follow each tick.
//! - [`http`]: `/metrics`, `/healthz`, the bench API and the OTLP receiver.
//! - [`ingest`]: how heartbeats arrive, over MQTT and OTLP/HTTP.
//! - [`registry`]: the persisted bench registry (`watch.db`).
//! - [`run`]: start-up and staged shutdown.
//! - [`shared`]: what the watch's tasks share.
//! - [`stats`]: the watch's own metrics (`benchtel_watch_*`).
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
