//! Semantic checks of configuration values: each records a
//! [`ConfigError`] and returns a usable fallback, so checking goes on.

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use super::error::ConfigError;

/// Semantic checks; each records an error and returns a usable fallback.
pub struct Checker<'a> {
    pub file: &'a str,
    pub errors: &'a mut Vec<ConfigError>,
}

impl Checker<'_> {
    pub fn error(&mut self, key: &str, value: &str, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(self.file, key, value, message));
    }

    pub fn positive(&mut self, key: &str, d: Duration) -> Duration {
        if d.is_zero() {
            self.error(key, "\"0s\"", "must be greater than zero");
            return Duration::from_secs(1);
        }
        d
    }

    pub fn at_least(&mut self, key: &str, v: u64, min: u64) -> u64 {
        if v < min {
            self.error(key, &v.to_string(), format!("must be at least {min}"));
            return min;
        }
        v
    }

    /// Ids become MQTT topic levels and Prometheus label values.
    pub fn name(&mut self, key: &str, v: &str) {
        let ok = !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            self.error(
                key,
                &format!("{v:?}"),
                "must be non-empty and use only letters, digits, '.', '_' and '-'",
            );
        }
    }

    pub fn endpoint(&mut self, key: &str, v: &str) -> Option<Url> {
        match Url::parse(v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                self.error(
                    key,
                    &format!("{v:?}"),
                    "must be an http:// or https:// URL with a host",
                );
                None
            }
            Err(e) => {
                self.error(key, &format!("{v:?}"), format!("not a URL: {e}"));
                None
            }
        }
    }

    pub fn socket_addr(&mut self, key: &str, v: &str) -> SocketAddr {
        v.parse().unwrap_or_else(|e| {
            self.error(key, &format!("{v:?}"), format!("not an address:port: {e}"));
            SocketAddr::from(([127, 0, 0, 1], 9464))
        })
    }

    pub fn log_level(&mut self, key: &str, v: &str) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(v) {
            self.error(key, &format!("{v:?}"), format!("not a log filter: {e}"));
        }
    }
}
