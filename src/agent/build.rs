//! The agent's composition root: the configuration is plain data, and the
//! runtime objects the components share are built here, once, from it:
//! the checks' compiled patterns (identical ones shared), their HTTP
//! clients and their instruments.

use std::sync::Arc;

use opentelemetry::metrics::Meter;

use super::checks::{self, CheckConfig, Instruments, Kind, http};

/// Shares the checks' identical patterns in place (so the configuration
/// the agent keeps holds the shared copies too) and builds what running
/// them needs.
pub fn checks(configs: &mut [CheckConfig], meter: &Meter) -> checks::Runtime {
    checks::share_patterns(configs);
    let clients = http::Clients::for_checks(configs.iter().filter_map(|c| match &c.kind {
        Kind::Http(h) => Some(h),
        _ => None,
    }));
    checks::Runtime {
        checks: configs.to_vec(),
        clients,
        instruments: Arc::new(Instruments::new(meter)),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider;

    use super::*;

    #[test]
    fn the_runtime_is_built_from_every_check() {
        #[derive(serde::Deserialize)]
        struct File {
            checks: Vec<CheckConfig>,
        }
        let probe = |name: &str| {
            format!(
                "[[checks]]\nname = \"{name}\"\ntype = \"serial_expect\"\nport = \"/dev/null\"\nexpect = 'Zephyr version (?P<major>\\d+)'\n"
            )
        };
        let text = format!("{}{}", probe("a"), probe("b"));
        let mut file: File = toml::from_str(&text).unwrap();
        let meter = opentelemetry_sdk::metrics::SdkMeterProvider::default().meter("t");
        let runtime = checks(&mut file.checks, &meter);
        let pattern = |c: &CheckConfig| match &c.kind {
            Kind::SerialExpect(e) => e.expect.clone(),
            _ => unreachable!(),
        };
        // The configuration the agent keeps holds the shared copies too
        // (sharing itself: `checks::tests`).
        for list in [&file.checks, &runtime.checks] {
            assert_eq!(pattern(&list[0]).as_str(), pattern(&list[1]).as_str());
        }
        assert_eq!(runtime.checks.len(), 2);
    }
}
