//! The `[log]` section both programs share, and the one log-format type:
//! read from the file, overridden by `--log-format`, used by telemetry.

use serde::Deserialize;

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// ADR-010 JSON lines.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// `[log]`: stdout logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` or `text`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,benchtel::outbox=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}
