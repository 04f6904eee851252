//! The environment variables the configurations honour, read once so tests
//! can pass their own, and the places derived from it.

use std::path::{Path, PathBuf};

/// A snapshot of the environment the configuration depends on.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub benchtel_config: Option<String>,
    /// `benchtel-watch`'s configuration file.
    pub benchtel_watch_config: Option<String>,
    pub otel_exporter_otlp_endpoint: Option<String>,
    pub otel_exporter_otlp_headers: Option<String>,
    pub otel_resource_attributes: Option<String>,
    pub otel_service_name: Option<String>,
    /// systemd's `StateDirectory=` (a colon-separated list).
    pub state_directory: Option<String>,
    /// systemd's `RuntimeDirectory=` (a colon-separated list).
    pub runtime_directory: Option<String>,
    /// systemd's `LoadCredential=` directory.
    pub credentials_directory: Option<String>,
    pub home: Option<String>,
    pub xdg_state_home: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Env {
            benchtel_config: var("BENCHTEL_CONFIG"),
            benchtel_watch_config: var("BENCHTEL_WATCH_CONFIG"),
            otel_exporter_otlp_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otel_exporter_otlp_headers: var("OTEL_EXPORTER_OTLP_HEADERS"),
            otel_resource_attributes: var("OTEL_RESOURCE_ATTRIBUTES"),
            otel_service_name: var("OTEL_SERVICE_NAME"),
            state_directory: var("STATE_DIRECTORY"),
            runtime_directory: var("RUNTIME_DIRECTORY"),
            credentials_directory: var("CREDENTIALS_DIRECTORY"),
            home: var("HOME"),
            xdg_state_home: var("XDG_STATE_HOME"),
        }
    }
}

pub(crate) fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or_default().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-bench".into())
}

/// `$STATE_DIRECTORY` under systemd; else `/var/lib/benchtel` when it can
/// be used; else a per-user directory, so `cargo run` works unprivileged.
pub(crate) fn state_dir(env: &Env) -> PathBuf {
    if let Some(first) = env
        .state_directory
        .as_deref()
        .and_then(|l| l.split(':').next())
        .filter(|s| !s.is_empty())
    {
        return PathBuf::from(first);
    }
    let system = Path::new("/var/lib/benchtel");
    if usable_dir(system) {
        return system.to_path_buf();
    }
    match (&env.xdg_state_home, &env.home) {
        (Some(xdg), _) => Path::new(xdg).join("benchtel"),
        (None, Some(home)) => Path::new(home).join(".local/state/benchtel"),
        (None, None) => PathBuf::from("benchtel-state"),
    }
}

/// True if `dir` exists and is writable, or could be created.
fn usable_dir(dir: &Path) -> bool {
    if std::fs::create_dir_all(dir).is_err() {
        return false;
    }
    let probe = dir.join(format!(".benchtel-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}
