//! Finding and loading a configuration file, the same way for both
//! programs: `--config`, else the path in an environment variable, else the
//! default path, which alone may be absent (built-in defaults). The text is
//! parsed to a TOML table and each top-level section handed to the
//! program's [`RawFile`]; the program's `resolve` step then applies
//! defaults and checks values. Errors of every stage are collected.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::error::{ConfigError, ConfigErrors};
use super::section::{Section, located, parse_table};

/// A configuration file as found.
pub(crate) struct FoundFile {
    pub path: PathBuf,
    /// The path as shown in errors.
    pub label: String,
    /// `None`: absent at the default path, or unreadable (an error was
    /// recorded).
    pub text: Option<String>,
    /// False only when the default path is absent.
    pub exists: bool,
}

/// A program's file as written: one field per top-level section, each at
/// its default until its section parses.
pub(crate) trait RawFile: Default {
    /// The known sections, listed when a section is unknown.
    const SECTIONS: &'static str;

    /// Parses section `s` into `self`; false if there is no such section.
    fn section(&mut self, s: &mut Section<'_>) -> bool;
}

/// Finds the file: `explicit` (`--config`), else `from_env`, else
/// `default`.
pub(crate) fn find_file(
    explicit: Option<&Path>,
    from_env: Option<&String>,
    default: &str,
    errors: &mut Vec<ConfigError>,
) -> FoundFile {
    let (path, required) = match (explicit, from_env) {
        (Some(p), _) => (p.to_path_buf(), true),
        (None, Some(p)) => (PathBuf::from(p), true),
        (None, None) => (PathBuf::from(default), false),
    };
    let label = path.display().to_string();
    let (text, exists) = match std::fs::read_to_string(&path) {
        Ok(text) => (Some(text), true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => (None, false),
        Err(e) => {
            errors.push(ConfigError::new(
                &label,
                "(file)",
                &label,
                format!("cannot read the configuration file: {e}"),
            ));
            (None, true)
        }
    };
    FoundFile {
        path,
        label,
        text,
        exists,
    }
}

/// Finds, reads and parses the file (see [`find_file`]), then lets
/// `resolve` turn it into the program's configuration. `resolve` returns
/// `None` only when it recorded an error.
pub(crate) fn load<R: RawFile, C>(
    explicit: Option<&Path>,
    from_env: Option<&String>,
    default: &str,
    resolve: impl FnOnce(R, &FoundFile, &mut Vec<ConfigError>) -> Option<C>,
) -> Result<C, ConfigErrors> {
    let mut errors = Vec::new();
    let found = find_file(explicit, from_env, default, &mut errors);
    let raw = found
        .text
        .as_deref()
        .map_or_else(R::default, |t| parse(&found.label, t, &mut errors));
    match resolve(raw, &found, &mut errors) {
        Some(cfg) if errors.is_empty() => Ok(cfg),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Finds the file (see [`find_file`]) and parses only its section `name`,
/// at its default when the file or the section is absent: for commands
/// that need one section and must not fail on a mistake elsewhere. The
/// errors are those of reading the file, its syntax, and that section.
pub(crate) fn load_section<T: DeserializeOwned + Default>(
    explicit: Option<&Path>,
    from_env: Option<&String>,
    default: &str,
    name: &str,
) -> (FoundFile, Result<T, ConfigErrors>) {
    let mut errors = Vec::new();
    let found = find_file(explicit, from_env, default, &mut errors);
    let section = match &found.text {
        None => T::default(),
        Some(text) => parse_table(&found.label, text, &mut errors)
            .and_then(|table| table.get(name).cloned())
            .map_or_else(T::default, |value| {
                located(&found.label, name, &value).unwrap_or_else(|e| {
                    errors.push(e);
                    T::default()
                })
            }),
    };
    let result = if errors.is_empty() {
        Ok(section)
    } else {
        Err(ConfigErrors(errors))
    };
    (found, result)
}

/// Parses `text`, one section at a time so every section's errors show.
fn parse<R: RawFile>(file: &str, text: &str, errors: &mut Vec<ConfigError>) -> R {
    let mut raw = R::default();
    let Some(table) = parse_table(file, text, errors) else {
        return raw;
    };
    for (name, value) in &table {
        let mut s = Section {
            file,
            name,
            value,
            errors: &mut *errors,
        };
        if !raw.section(&mut s) {
            s.unknown(R::SECTIONS);
        }
    }
    raw
}
