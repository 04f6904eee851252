//! Probes of the firmware under test: one folder per transport, one module
//! per probe kind. Probes run as health checks (`type = "serial_expect"`),
//! so they share the checks' scheduling, hysteresis and readiness.

pub mod gpio;
pub mod serial;
pub mod suggest;

#[cfg(test)]
mod tests {
    /// Probes are a hardware library: they report their own errors and
    /// know nothing of the checks that map those to result codes.
    #[test]
    fn probes_never_name_the_checks() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/agent/probes");
        let mut dirs = vec![root];
        // Spelt apart so this file does not name it either.
        let needle = ["agent", "checks"].join("::");
        let mut offenders = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if std::fs::read_to_string(&path).unwrap().contains(&needle) {
                    offenders.push(path);
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:?}");
    }
}
