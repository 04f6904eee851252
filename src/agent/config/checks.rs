//! `[[checks]]`: each entry parsed on its own, so every bad check is
//! reported at once and each error names the key inside the entry
//! (`checks[3].timeout = "soon": …`); then the checks across entries
//! (unique names, ports shared at one baud).
//!
//! A check's kind is an internally tagged enum (`type = "…"`), for which
//! serde buffers the entry and loses the key path. When an entry fails
//! without a path below it, the entry is parsed again as its kind's own
//! `Config`, which names the offending key.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;

use super::probe_sets;
use super::raw::RawConfig;
use crate::agent::checks::{CheckConfig, Kind, exec, file, http, tcp, usb};
use crate::agent::probes::gpio;
use crate::agent::probes::serial::{PortRef, expect, watch};
use crate::config::{Checker, ConfigError, Section, located};

/// The keys of [`CheckConfig`] itself; the rest belong to its kind.
const COMMON_KEYS: [&str; 7] = [
    "name",
    "interval",
    "timeout",
    "fail_after",
    "recover_after",
    "affects_ready",
    "type",
];

/// Parses the `checks` array entry by entry; `None` where an entry did
/// not parse (its error is recorded).
pub(super) fn parse(s: &mut Section<'_>) -> Vec<Option<CheckConfig>> {
    let Some(entries) = s.value.as_array() else {
        let mut all: Vec<CheckConfig> = Vec::new();
        s.parse_into(&mut all);
        return all.into_iter().map(Some).collect();
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            parse_one(s.file, &format!("{}[{i}]", s.name), entry)
                .map_err(|e| s.errors.push(e))
                .ok()
        })
        .collect()
}

fn parse_one(file: &str, at: &str, entry: &toml::Value) -> Result<CheckConfig, ConfigError> {
    let check = match located::<CheckConfig>(file, at, entry) {
        Err(e) if e.key == at => Err(at_missing_key(at, locate_in_kind(file, at, entry, e))),
        other => other,
    }?;
    without_effect(file, at, entry, &check)?;
    Ok(check)
}

/// Keys a kind would accept but ignore. A `serial_watch` or `gpio_reset`
/// is not run on an interval: it follows its console or line, so there is
/// no run count for `fail_after`/`recover_after` to apply to.
fn without_effect(
    file: &str,
    at: &str,
    entry: &toml::Value,
    check: &CheckConfig,
) -> Result<(), ConfigError> {
    let alive = match &check.kind {
        Kind::SerialWatch(w) => w.alive.is_some(),
        Kind::GpioReset(_) => false,
        _ => return Ok(()),
    };
    fn given<'a>(
        entry: &'a toml::Value,
        key: &'static str,
    ) -> Option<(&'static str, &'a toml::Value)> {
        entry.get(key).map(|v| (key, v))
    }
    let refuse = |(key, value): (&str, &toml::Value), why: &str| {
        ConfigError::new(file, &format!("{at}.{key}"), &value.to_string(), why)
    };
    for key in ["interval", "fail_after", "recover_after"] {
        if let Some(found) = given(entry, key) {
            return Err(refuse(
                found,
                "a serial_watch or gpio_reset follows its console or line continuously: \
                 it has no runs to space or count (remove the key)",
            ));
        }
    }
    if let (true, Some(found)) = (alive, given(entry, "assume_booted_after")) {
        return Err(refuse(
            found,
            "with `alive`, the poke decides whether the device is up: remove one of the two",
        ));
    }
    Ok(())
}

/// An error about a missing key of the entry names that key, as
/// `checks[0].url = (missing)`, rather than showing the whole entry.
fn at_missing_key(at: &str, e: ConfigError) -> ConfigError {
    let missing = e
        .message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_string());
    match missing {
        Some(key) if e.key == at => ConfigError {
            key: format!("{at}.{key}"),
            value: "(missing)".into(),
            ..e
        },
        _ => e,
    }
}

/// `whole`, the error of `entry` that names no key, located within the
/// keys of the entry's kind: at `type` when the kind is unknown, else at
/// the kind's own key that failed. `whole` as it is when the entry has no
/// `type` string or its kind's keys parse.
fn locate_in_kind(file: &str, at: &str, entry: &toml::Value, whole: ConfigError) -> ConfigError {
    let Some(table) = entry.as_table() else {
        return whole;
    };
    let Some(kind) = table.get("type").and_then(toml::Value::as_str) else {
        return whole;
    };
    let Some(parse) = kind_parser(kind) else {
        return ConfigError::new(
            file,
            &format!("{at}.type"),
            &format!("{kind:?}"),
            whole.message,
        );
    };
    let own: toml::Table = table
        .iter()
        .filter(|(k, _)| !COMMON_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    parse(file, at, &toml::Value::Table(own))
        .err()
        .unwrap_or(whole)
}

type Parser = fn(&str, &str, &toml::Value) -> Result<(), ConfigError>;

fn keys_of<T: DeserializeOwned>(
    file: &str,
    at: &str,
    own: &toml::Value,
) -> Result<(), ConfigError> {
    located::<T>(file, at, own).map(drop)
}

/// Every `type`, with a parser of its own keys; the order of [`Kind`].
const KINDS: [(&str, Parser); 11] = [
    ("exec", keys_of::<exec::Config>),
    ("http", keys_of::<http::Config>),
    ("tcp", keys_of::<tcp::Config>),
    ("file", keys_of::<file::Config>),
    ("usb", keys_of::<usb::Config>),
    ("serial_expect", keys_of::<expect::Config>),
    ("serial_watch", keys_of::<watch::Config>),
    ("gpio_level", keys_of::<gpio::LevelConfig>),
    ("gpio_edges", keys_of::<gpio::EdgesConfig>),
    ("gpio_stuck", keys_of::<gpio::StuckConfig>),
    ("gpio_reset", keys_of::<gpio::ResetConfig>),
];

fn kind_parser(kind: &str) -> Option<Parser> {
    KINDS
        .iter()
        .find(|(name, _)| *name == kind)
        .map(|(_, p)| *p)
}

/// The checks of the file and of its probe sets, each with its index in
/// error messages (`checks[i]`); probe-set checks follow the file's.
pub(super) fn expand(
    raw: &RawConfig,
    file: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(usize, CheckConfig)> {
    let search = raw
        .firmware_probes
        .clone()
        .unwrap_or_else(probe_sets::default_search_path);
    let expanded = probe_sets::expand(&raw.probe_set, &search, file, errors);
    let mut checks: Vec<(usize, CheckConfig)> = raw
        .checks
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c.clone()?)))
        .collect();
    let first = raw.checks.len();
    checks.extend(
        expanded
            .into_iter()
            .enumerate()
            .map(|(j, c)| (first + j, c)),
    );
    checks
}

/// Ports shared at one baud; names unique and label-safe, timings
/// positive, thresholds at least 1.
pub(super) fn check_all(check: &mut Checker<'_>, checks: &[(usize, CheckConfig)]) {
    check_bauds(check, checks);
    let mut seen = BTreeSet::new();
    for (i, c) in checks {
        let key = |k: &str| format!("checks[{i}].{k}");
        check.name(&key("name"), &c.name);
        if !seen.insert(c.name.as_str()) {
            check.error(
                &key("name"),
                &format!("{:?}", c.name),
                "another check has this name",
            );
        }
        check.positive(&key("interval"), c.interval);
        check.positive(&key("timeout"), c.timeout);
        check.at_least(&key("fail_after"), u64::from(c.fail_after), 1);
        check.at_least(&key("recover_after"), u64::from(c.recover_after), 1);
    }
}

/// One owner opens each port once, so probes sharing it must agree on its
/// line settings.
fn check_bauds(check: &mut Checker<'_>, checks: &[(usize, CheckConfig)]) {
    let mut bauds: BTreeMap<String, (String, u32)> = BTreeMap::new();
    for (i, c) in checks {
        let (port, baud) = match &c.kind {
            Kind::SerialExpect(p) => (&p.port, p.baud),
            Kind::SerialWatch(w) => (&w.port, w.baud),
            _ => continue,
        };
        let PortRef::Path(path) = port else { continue };
        let path = path.display().to_string();
        match bauds.get(&path) {
            Some((other, b)) if *b != baud => check.error(
                &format!("checks[{i}].baud"),
                &baud.to_string(),
                format!("{path} is also used by check {other:?} at baud {b}; probes sharing a port must agree"),
            ),
            Some(_) => {}
            None => {
                bauds.insert(path, (c.name.clone(), baud));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde lists every kind it knows when it meets an unknown one; each
    /// must have a parser here, or its errors would blame `type`.
    #[test]
    fn every_kind_has_a_parser_of_its_own_keys() {
        let entry: toml::Value = toml::from_str("name = \"x\"\ntype = \"no-such-kind\"").unwrap();
        let message = located::<CheckConfig>("t", "checks[0]", &entry)
            .unwrap_err()
            .message;
        let (_, listed) = message.split_once("expected one of ").unwrap();
        let known: Vec<&str> = listed.split(", ").map(|k| k.trim_matches('`')).collect();
        let ours: Vec<&str> = KINDS.iter().map(|(name, _)| *name).collect();
        assert_eq!(known, ours, "{message}");
    }
}
