//! `src/config/` is the toolkit at the bottom of the layers: it names no
//! layer above it, so the configuration of either program can use it
//! without a cycle. The same for `src/cli.rs`, which both binaries share.

use std::path::{Path, PathBuf};

const ABOVE_CONFIG: [&str; 6] = [
    "crate::agent",
    "crate::watch",
    "crate::outbox",
    "crate::mqtt",
    "crate::telemetry",
    "crate::cli",
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn offenders(files: &[PathBuf], names: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for name in names {
                if code.contains(name) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn the_config_toolkit_names_no_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src.join("config"));
    assert!(files.len() >= 5, "{files:?}");
    let found = offenders(&files, &ABOVE_CONFIG);
    assert!(
        found.is_empty(),
        "config/ imports from above:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_shared_command_line_names_neither_program() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = offenders(&[src.join("cli.rs")], &["crate::agent", "crate::watch"]);
    assert!(
        found.is_empty(),
        "cli.rs names a program:\n{}",
        found.join("\n")
    );
}
