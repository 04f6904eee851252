//! The command line both binaries share: the options every subcommand
//! takes (flattened into each program's own parser) and the exit status of
//! a finished command. A leaf: it names neither program.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{LogConfig, LogFormat};

/// Options of both programs. Each program words `--config`'s help with its
/// own default path (`mut_arg("config", …)`).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Configuration file
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stdout (overrides log.format)
    #[arg(long, global = true)]
    pub log_format: Option<LogFormat>,
}

impl CommonArgs {
    /// `--log-format` over the file's `log.format`.
    pub fn apply(&self, log: &mut LogConfig) {
        if let Some(format) = self.log_format {
            log.format = format;
        }
    }
}

/// Success, or the error (with its causes, `{:#}`) on stderr and failure.
pub fn exit_status<E: Display>(program: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
