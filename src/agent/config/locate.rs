//! What the commands beside the running agent need from the configuration
//! (`outbox status`, `status`, `context`, `maintenance`, `mark`): the
//! outbox path and the control socket. Read without the rest of the file,
//! so that a mistake elsewhere (a bad `[[checks]]` entry, say) does not
//! stop them; `run` and `validate` stay strict.

use std::path::{Path, PathBuf};

use super::raw::RawOutbox;
use super::{ConfigSource, DEFAULT_PATH, otel_env};
use crate::config::{ConfigErrors, Env, state_dir};

/// Where the running agent keeps its outbox and its control socket.
#[derive(Debug, Clone)]
pub struct Locations {
    /// The file read, or built-in defaults.
    pub source: ConfigSource,
    /// `outbox.path`, else `<state dir>/outbox.db`; the errors when the
    /// file or its `[outbox]` section cannot be read.
    pub outbox: Result<PathBuf, ConfigErrors>,
    /// From the environment alone (`RUNTIME_DIRECTORY`, the state
    /// directory): no key of the file moves it.
    pub control_socket: PathBuf,
    /// Every mistake of the whole file (as `validate` shows them), whether
    /// or not it is in what these commands read.
    pub errors: Option<ConfigErrors>,
}

/// Reads the locations from `explicit` (`--config`), else
/// `$BENCHTEL_CONFIG`, else the default file, as [`super::load`] would.
pub fn locate(explicit: Option<&Path>, env: &Env) -> Locations {
    let (found, outbox) = crate::config::load_section::<RawOutbox>(
        explicit,
        env.benchtel_config.as_ref(),
        DEFAULT_PATH,
        "outbox",
    );
    let state_dir = state_dir(env);
    Locations {
        source: if found.exists {
            ConfigSource::File(found.path)
        } else {
            ConfigSource::Defaults
        },
        outbox: outbox.map(|o| outbox_path(&o, &state_dir)),
        control_socket: otel_env::control_socket(env, &state_dir),
        errors: super::load(explicit, env).err(),
    }
}

/// `outbox.path`, else `outbox.db` in the state directory.
pub(super) fn outbox_path(raw: &RawOutbox, state_dir: &Path) -> PathBuf {
    raw.path
        .clone()
        .unwrap_or_else(|| state_dir.join("outbox.db"))
}
