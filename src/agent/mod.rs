//! What runs on a bench: its configuration ([`config`], `agent.toml`), the
//! sources that measure it, the local `/metrics` endpoint, and the staged
//! start-up and shutdown of the pipeline.
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
