//! What runs on a bench: its configuration ([`config`], `agent.toml`, plain
//! data), the sources that measure it, the local `/metrics` endpoint, and
//! the staged start-up and shutdown of the pipeline ([`run`]), whose
//! runtime objects are built from the plain configuration in one place
//! ([`build`]). [`probes`] is a hardware library that reports its own
//! errors; [`checks`] maps them to result codes.
pub mod build;
pub mod checks;
pub mod config;
pub mod control;
pub mod http;
pub mod mqtt;
pub mod probes;
pub mod readiness;
pub mod run;
pub mod sources;
pub mod state;
