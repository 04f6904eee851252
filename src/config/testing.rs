//! Test support for both programs' configurations.

use std::path::Path;

use super::ConfigErrors;

/// Loads every `*.toml` in `dir` with `load`, which must fail; each of the
/// file's `# expect:` lines must appear in the errors, and every error must
/// name the file. Returns how many fixtures were checked.
pub(crate) fn check_invalid_fixtures(dir: &Path, load: impl Fn(&Path) -> ConfigErrors) -> usize {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let errors = load(&path);
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
    seen
}
