//! The configuration toolkit both programs build their configuration with.
//! It knows nothing of either program: the agent's configuration lives in
//! [`crate::agent::config`], the watch's in [`crate::watch::config`].
//!
//! - `env`: the environment snapshot ([`Env`]), the hostname, the state
//!   directory.
//! - `secret`: [`Secret`] values, secret and header files.
//! - `pattern`: [`Pattern`], a regular expression whose clones share one
//!   compiled value.
//! - `file`: finding the file (`--config`, an environment variable, or the
//!   default path) and loading it (`load`; `load_section` for commands
//!   that need one section only): read, parse to a TOML table
//!   with located syntax errors, hand each top-level section to the
//!   program's `RawFile`, collect every error.
//! - `section`: one section deserialised on its own, its errors naming the
//!   full key path and the value as written.
//! - `check`: semantic checks of values ([`Checker`]).
//! - `log`: the `[log]` section and the one [`LogFormat`].
//! - `error`: [`ConfigError`] (file, key path, value, message) and
//!   [`ConfigErrors`]; [`EX_CONFIG`].
//!
//! Loading collects every mistake before giving up: the file is parsed to a
//! TOML table first, each section is then deserialised on its own (so one bad
//! section does not hide the next), and semantic checks run on whatever
//! parsed. Each error names the file, the key path and the offending value.

mod check;
mod env;
mod error;
mod file;
mod log;
mod pattern;
mod secret;
mod section;
#[cfg(test)]
pub(crate) mod testing;

pub use check::Checker;
pub use env::Env;
pub(crate) use env::{hostname, state_dir};
pub use error::{ConfigError, ConfigErrors};
pub(crate) use file::{RawFile, load, load_section};
pub use log::{LogConfig, LogFormat};
pub use pattern::Pattern;
pub use secret::{Secret, read_secret};
pub(crate) use secret::{decode, header, read_headers};
pub(crate) use section::{Section, located};

/// `EX_CONFIG` from sysexits.h: systemd and shell scripts know it.
pub const EX_CONFIG: i32 = 78;
