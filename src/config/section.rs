//! One top-level section of a file, deserialised on its own so that its
//! errors do not hide the next section's; every error names the full key
//! path and the value as written.

use serde::de::DeserializeOwned;

use super::error::ConfigError;

/// The file as a TOML table; a syntax error is recorded with its line.
pub(crate) fn parse_table(
    file: &str,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<toml::Table> {
    match text.parse() {
        Ok(t) => Some(t),
        Err(e) => {
            let (key, value) = syntax_location(text, &e);
            errors.push(ConfigError::new(
                file,
                &key,
                &value,
                e.message().to_string(),
            ));
            None
        }
    }
}

/// One top-level section of a file.
pub(crate) struct Section<'a> {
    pub file: &'a str,
    pub name: &'a str,
    pub value: &'a toml::Value,
    pub errors: &'a mut Vec<ConfigError>,
}

impl Section<'_> {
    pub fn parse_into<T: DeserializeOwned>(&mut self, slot: &mut T) {
        match located(self.file, self.name, self.value) {
            Ok(v) => *slot = v,
            Err(e) => self.errors.push(e),
        }
    }

    /// Records this section as unknown; `expected` lists the known ones.
    pub fn unknown(&mut self, expected: &str) {
        self.errors.push(ConfigError::new(
            self.file,
            self.name,
            &show(self.value),
            format!("unknown key; expected one of {expected}"),
        ));
    }
}

/// Deserialises `value`, found at key path `at`; an error names the key
/// path below `at` that failed and the value written there.
pub(crate) fn located<T: DeserializeOwned>(
    file: &str,
    at: &str,
    value: &toml::Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize::<_, T>(value.clone()).map_err(|e| {
        let inner = e.path().to_string();
        let key = join(at, &inner);
        let shown = lookup(value, &inner).map_or_else(|| "(missing)".into(), show);
        ConfigError::new(file, &key, &shown, e.into_inner().message().to_string())
    })
}

/// `at` followed by a path below it (`.` or empty: `at` itself).
fn join(at: &str, inner: &str) -> String {
    if inner == "." || inner.is_empty() {
        at.to_string()
    } else if inner.starts_with('[') {
        format!("{at}{inner}")
    } else {
        format!("{at}.{inner}")
    }
}

fn lookup<'v>(value: &'v toml::Value, path: &str) -> Option<&'v toml::Value> {
    path.replace('[', ".[")
        .split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect::<Vec<_>>()
        .iter()
        .try_fold(value, |v, part| match v {
            toml::Value::Table(t) => t.get(part.as_str()),
            toml::Value::Array(a) => part
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i)),
            _ => None,
        })
}

/// A value as written; a table inline and one level deep, so an error in
/// an array entry (e.g. one `[[checks]]`) still shows the offending part.
fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(t) => {
            let items: Vec<String> = t
                .iter()
                .map(|(k, v)| match v {
                    toml::Value::Table(_) => format!("{k} = {{…}}"),
                    other => format!("{k} = {other}"),
                })
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// The key and text of the line a syntax error points at.
fn syntax_location(text: &str, e: &toml::de::Error) -> (String, String) {
    let Some(span) = e.span() else {
        return ("(syntax)".into(), String::new());
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    (format!("(syntax, line {line_no})"), line.to_string())
}
