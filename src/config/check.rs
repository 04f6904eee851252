//! Semantic checks of configuration values: each records a
//! [`ConfigError`] and returns a usable fallback, so checking goes on.

use std::net::{SocketAddr, ToSocketAddrs};
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

    /// `ip:port`, or `host:port` with the host name resolved here, while
    /// the configuration loads (at start, and in `validate`, which so
    /// rejects a name that does not resolve): the resolved configuration
    /// stays plain data holding a [`SocketAddr`], and nothing later
    /// resolves names. Of a name's addresses the first IPv4 one is taken,
    /// else the first: `localhost` then means 127.0.0.1, the default, what
    /// scrape configs point at, and an address that works on hosts without
    /// IPv6.
    pub fn socket_addr(&mut self, key: &str, v: &str) -> SocketAddr {
        if let Ok(addr) = v.parse() {
            return addr;
        }
        resolve(v).unwrap_or_else(|message| {
            self.error(key, &format!("{v:?}"), message);
            SocketAddr::from(([127, 0, 0, 1], 9464))
        })
    }

    pub fn log_level(&mut self, key: &str, v: &str) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(v) {
            self.error(key, &format!("{v:?}"), format!("not a log filter: {e}"));
        }
    }
}

/// A `host:port` resolved to one address (see [`Checker::socket_addr`]).
fn resolve(v: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = v
        .to_socket_addrs()
        .map_err(|e| format!("not an address:port or host:port: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| "the host name resolves to no address".to_string())
}

#[cfg(test)]
mod tests {
    use super::Checker;

    fn check(v: &str) -> (std::net::SocketAddr, Vec<String>) {
        let mut errors = Vec::new();
        let addr = Checker {
            file: "f.toml",
            errors: &mut errors,
        }
        .socket_addr("http.listen", v);
        (addr, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn listen_takes_an_address_or_a_host_name() {
        assert_eq!(check("[::1]:80").0.to_string(), "[::1]:80");
        let (addr, errors) = check("localhost:9464");
        assert_eq!(addr.to_string(), "127.0.0.1:9464", "{errors:?}");
        for bad in ["localhost", "no-such-host.invalid:9464", "127.0.0.1:http"] {
            let (_, errors) = check(bad);
            assert_eq!(errors.len(), 1, "{bad}");
            assert!(
                errors[0].starts_with(&format!("f.toml: http.listen = {bad:?}: ")),
                "{errors:?}"
            );
        }
    }
}
