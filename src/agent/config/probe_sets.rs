//! Firmware probe sets (`firmware-probes/*.toml`): reusable groups of
//! checks for one firmware family, instantiated by `[[probe_set]]` entries
//! with per-bench parameters. See `firmware-probes/README.md`.
//!
//! A string that is exactly `"{param}"` becomes the parameter's value with
//! its TOML type (so `baud = "{baud}"` stays a number); `{param}` inside a
//! longer string is replaced by its text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::agent::checks::CheckConfig;
use crate::config::ConfigError;

/// Where sets are looked up unless `firmware_probes` says otherwise; the
/// first directory that has the set wins.
pub fn default_search_path() -> Vec<PathBuf> {
    vec![
        PathBuf::from("/etc/benchtel/firmware-probes"),
        PathBuf::from("/usr/share/benchtel/firmware-probes"),
    ]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    #[serde(default)]
    pub doc: Option<String>,
    /// Makes the parameter optional.
    #[serde(default)]
    pub default: Option<toml::Value>,
    /// For a required parameter: used to validate the set itself.
    #[serde(default)]
    pub example: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFile {
    pub description: String,
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    pub checks: Vec<toml::Value>,
}

/// Reads and parses the set `name` from the search path.
pub fn find(name: &str, search: &[PathBuf]) -> Result<(PathBuf, SetFile), String> {
    let file = search
        .iter()
        .map(|dir| dir.join(format!("{name}.toml")))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let known = known_sets(search);
            format!("no probe set named {name:?} in {search:?}; known: {known:?}")
        })?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let set = toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((file, set))
}

fn known_sets(search: &[PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = search
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let p = e.path();
            if p.extension()? != "toml" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The checks of one set with `values` filled in, names prefixed.
pub fn instantiate(
    set: &SetFile,
    prefix: &str,
    values: &BTreeMap<String, toml::Value>,
) -> Result<Vec<CheckConfig>, String> {
    for key in values.keys() {
        if !set.params.contains_key(key) {
            let known: Vec<&String> = set.params.keys().collect();
            return Err(format!(
                "unknown parameter {key:?}; the set takes {known:?}"
            ));
        }
    }
    let mut params = BTreeMap::new();
    for (name, p) in &set.params {
        let v = values.get(name).or(p.default.as_ref()).ok_or_else(|| {
            format!(
                "missing parameter {name:?}{}",
                p.doc
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )
        })?;
        params.insert(name.clone(), v.clone());
    }
    set.checks
        .iter()
        .map(|c| {
            let mut c = c.clone();
            substitute(&mut c, &params)?;
            let mut check: CheckConfig = c
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_string())?;
            check.name = format!("{prefix}-{}", check.name);
            Ok(check)
        })
        .collect()
}

/// Every required parameter's example, for validating a set on its own.
pub fn examples(set: &SetFile) -> BTreeMap<String, toml::Value> {
    set.params
        .iter()
        .filter_map(|(k, p)| Some((k.clone(), p.example.clone()?)))
        .collect()
}

fn substitute(v: &mut toml::Value, params: &BTreeMap<String, toml::Value>) -> Result<(), String> {
    match v {
        toml::Value::String(s) => {
            if let Some(name) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}'))
                && let Some(value) = params.get(name)
            {
                *v = value.clone();
                return Ok(());
            }
            let mut out = s.clone();
            for (name, value) in params {
                let text = match value {
                    toml::Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                out = out.replace(&format!("{{{name}}}"), &text);
            }
            if let Some(left) = placeholder(&out) {
                return Err(format!(
                    "the set uses {{{left}}}, which is not one of its parameters"
                ));
            }
            *s = out;
        }
        toml::Value::Array(a) => a.iter_mut().try_for_each(|x| substitute(x, params))?,
        toml::Value::Table(t) => t.iter_mut().try_for_each(|(_, x)| substitute(x, params))?,
        _ => {}
    }
    Ok(())
}

/// A leftover `{name}` (regex repetitions like `{2,3}` are not names).
fn placeholder(s: &str) -> Option<&str> {
    let start = s.find('{')?;
    let end = start + s[start..].find('}')?;
    let name = &s[start + 1..end];
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic() || c == '_')).then_some(name)
}

/// Expands every `[[probe_set]]` entry into checks, recording errors.
pub fn expand(
    entries: &[toml::Table],
    search: &[PathBuf],
    file: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<CheckConfig> {
    let mut checks = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let key = |k: &str| format!("probe_set[{i}].{k}");
        let Some(toml::Value::String(set_name)) = entry.get("use") else {
            errors.push(ConfigError::new(
                file,
                &key("use"),
                "(missing)",
                "name the probe set to use",
            ));
            continue;
        };
        let prefix = match entry.get("name") {
            Some(toml::Value::String(n)) => n.clone(),
            _ => set_name.clone(),
        };
        let values: BTreeMap<String, toml::Value> = entry
            .iter()
            .filter(|(k, _)| *k != "use" && *k != "name")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let result = find(set_name, search).and_then(|(path, set)| {
            instantiate(&set, &prefix, &values).map_err(|e| format!("{}: {e}", path.display()))
        });
        match result {
            Ok(mut c) => checks.append(&mut c),
            Err(e) => errors.push(ConfigError::new(
                file,
                &key("use"),
                &format!("{set_name:?}"),
                e,
            )),
        }
    }
    checks
}

/// The sets shipped in the repository, for tests.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-probes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_set_instantiates_with_its_examples() {
        let dir = repo_dir();
        let names = known_sets(std::slice::from_ref(&dir));
        assert!(names.len() >= 5, "{names:?}");
        for name in names {
            let (_, set) = find(&name, std::slice::from_ref(&dir)).unwrap();
            let checks =
                instantiate(&set, "dut", &examples(&set)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!checks.is_empty(), "{name}");
            assert!(checks.iter().all(|c| c.name.starts_with("dut-")));
        }
    }

    #[test]
    fn typed_values_defaults_and_errors() {
        let dir = repo_dir();
        let (_, set) = find("zephyr-shell", std::slice::from_ref(&dir)).unwrap();
        let mut values = BTreeMap::new();
        values.insert("port".to_string(), toml::Value::String("/dev/ttyX".into()));
        let checks = instantiate(&set, "b7", &values).unwrap();
        let crate::agent::checks::Kind::SerialExpect(p) = &checks[0].kind else {
            panic!("not serial_expect");
        };
        assert_eq!(p.baud, 115_200, "default applied with its type");
        assert_eq!(checks[0].name, "b7-version");
        values.insert("baud".into(), toml::Value::Integer(921_600));
        let checks = instantiate(&set, "b7", &values).unwrap();
        let crate::agent::checks::Kind::SerialExpect(p) = &checks[0].kind else {
            panic!("not serial_expect");
        };
        assert_eq!(p.baud, 921_600);
        values.insert("colour".into(), toml::Value::String("red".into()));
        assert!(
            instantiate(&set, "b7", &values)
                .unwrap_err()
                .contains("unknown parameter")
        );
        assert!(
            instantiate(&set, "b7", &BTreeMap::new())
                .unwrap_err()
                .contains("missing parameter \"port\"")
        );
        let missing = find("zephyr-shel", std::slice::from_ref(&dir)).unwrap_err();
        assert!(
            missing.contains("zephyr-shell"),
            "lists the known sets: {missing}"
        );
    }
}
