//! Test support for both programs' configurations.

use std::fmt::Debug;
use std::path::Path;

use super::{ConfigErrors, Env};

/// Loads every `*.toml` in `dir` with `load` (and an empty environment),
/// which must fail; each of the file's `# expect:` lines must appear in the
/// errors, and every error must name the file. At least eight fixtures.
pub(crate) fn check_invalid_fixtures<C: Debug>(
    dir: &Path,
    load: impl Fn(Option<&Path>, &Env) -> Result<C, ConfigErrors>,
) {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let errors = load(Some(&path), &Env::default()).unwrap_err();
        let shown = errors.to_string();
        let wants: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect:"))
            .collect();
        assert!(!wants.is_empty(), "{} has no # expect:", path.display());
        for want in wants {
            assert!(
                shown.contains(want.trim()),
                "{}: {want:?} not in:\n{shown}",
                path.display()
            );
        }
        for e in &errors.0 {
            assert_eq!(e.file, path.display().to_string(), "{shown}");
        }
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} fixtures in {}", dir.display());
}
