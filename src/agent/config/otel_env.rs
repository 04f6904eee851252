//! The agent's environment beyond the toolkit's: the `OTEL_*` lists
//! (headers, resource attributes) and where the control socket goes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::raw::RawOtlp;
use crate::config::{ConfigError, Env, Secret, decode, header, read_headers};

/// The credential file systemd's `LoadCredential=otlp-headers:…` provides.
const CREDENTIAL_NAME: &str = "otlp-headers";

/// OTLP headers from, in rising precedence: `otlp.headers`,
/// `otlp.headers_file`, `$CREDENTIALS_DIRECTORY/otlp-headers`,
/// `OTEL_EXPORTER_OTLP_HEADERS`.
pub(super) fn collect_headers(
    raw: &RawOtlp,
    env: &Env,
    file: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, Secret)> {
    let mut headers: Vec<(String, Secret)> = Vec::new();
    // A later source replaces an earlier one's header of the same name.
    let mut put = |(k, v): (String, Secret)| {
        headers.retain(|(name, _)| *name != k);
        headers.push((k, v));
    };
    for (k, v) in &raw.headers {
        put(header(k, v));
    }
    if let Some(path) = &raw.headers_file {
        match read_headers(path) {
            Ok(pairs) => pairs.into_iter().for_each(&mut put),
            Err(e) => errors.push(ConfigError::new(
                file,
                "otlp.headers_file",
                &format!("{:?}", path.display().to_string()),
                format!("cannot read the headers file: {e}"),
            )),
        }
    }
    if let Some(dir) = &env.credentials_directory {
        let path = Path::new(dir).join(CREDENTIAL_NAME);
        if path.exists() {
            match read_headers(&path) {
                Ok(pairs) => pairs.into_iter().for_each(&mut put),
                Err(e) => errors.push(ConfigError::new(
                    "env CREDENTIALS_DIRECTORY",
                    CREDENTIAL_NAME,
                    &path.display().to_string(),
                    format!("cannot read the credential: {e}"),
                )),
            }
        }
    }
    if let Some(list) = &env.otel_exporter_otlp_headers {
        for item in list.split(',').filter(|s| !s.trim().is_empty()) {
            match item.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => put(header(&decode(k), &decode(v))),
                _ => errors.push(ConfigError::new(
                    "env OTEL_EXPORTER_OTLP_HEADERS",
                    "(list item)",
                    "<redacted>",
                    "each item must be key=value",
                )),
            }
        }
    }
    headers
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `k=v,k2=v2`, percent-decoded.
pub(super) fn resource_attributes(
    env: &Env,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(list) = &env.otel_resource_attributes else {
        return out;
    };
    for item in list.split(',').filter(|s| !s.trim().is_empty()) {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(decode(k), decode(v));
            }
            _ => errors.push(ConfigError::new(
                "env OTEL_RESOURCE_ATTRIBUTES",
                "(list item)",
                item,
                "each item must be key=value",
            )),
        }
    }
    out
}

/// The control socket: in `$RUNTIME_DIRECTORY` under systemd, else in the
/// state directory.
pub(super) fn control_socket(env: &Env, state_dir: &Path) -> PathBuf {
    env.runtime_directory
        .as_deref()
        .and_then(|l| l.split(':').next())
        .filter(|s| !s.is_empty())
        .map_or_else(|| state_dir.to_path_buf(), PathBuf::from)
        .join("control.sock")
}
