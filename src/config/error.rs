//! Configuration errors: each names where (file or environment variable),
//! which key, and the offending value.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key} = {value}: {message}")]
pub struct ConfigError {
    /// The file, or `env NAME` for an environment variable.
    pub file: String,
    /// TOML key path, e.g. `sources.heartbeat.interval`.
    pub key: String,
    /// The offending value as written (never a secret).
    pub value: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &str, key: &str, value: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            message: message.into(),
        }
    }
}

/// Every error found in one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
