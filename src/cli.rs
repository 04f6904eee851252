//! The command line both binaries share: the parser shape ([`Cli`]: the
//! options every subcommand takes, then the program's own subcommands),
//! loading the configuration with `--config` and `--log-format` applied,
//! and the exit status of a finished command. It names neither program.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Subcommand};

use crate::config::{ConfigErrors, EX_CONFIG, Env, LogConfig, LogFormat};

/// A program's command line: the shared options and its own subcommands
/// `C` (none: the program's default, `run`).
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct Cli<C: Subcommand> {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Option<C>,
}

impl<C: Subcommand> Cli<C> {
    /// Parses the process's arguments, or exits as clap does (help,
    /// version, usage errors). `about` and `config_help` are the program's
    /// own words for its help.
    pub fn parse_with(about: &'static str, config_help: &'static str) -> Self {
        let mut command = <Self as CommandFactory>::command()
            .about(about)
            .mut_arg("config", |a| a.help(config_help));
        let matches = command.clone().get_matches();
        <Self as FromArgMatches>::from_arg_matches(&matches)
            .map_err(|e| e.format(&mut command))
            .unwrap_or_else(|e| e.exit())
    }
}

/// Options of both programs. Each program words `--config`'s help with its
/// own default path ([`Cli::parse_with`]).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Configuration file
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stdout (overrides log.format); text is coloured only
    /// on a terminal, never with NO_COLOR set
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

impl CommonArgs {
    /// Loads the configuration with `load` (from `--config`, else its
    /// environment variable, else its default path) and applies
    /// `--log-format` to its `[log]`. On errors, prints every one and
    /// gives exit code 78 (`EX_CONFIG`).
    pub fn load_config<C>(
        &self,
        program: &str,
        load: impl FnOnce(Option<&Path>, &Env) -> Result<C, ConfigErrors>,
        log: impl FnOnce(&mut C) -> &mut LogConfig,
    ) -> Result<C, ExitCode> {
        let mut cfg = load(self.config.as_deref(), &Env::from_process())
            .map_err(|errors| config_failed(program, &errors))?;
        self.apply(log(&mut cfg));
        Ok(cfg)
    }
}

/// `EX_NOINPUT` from sysexits.h: what a command is asked to read does not
/// exist (`benchtel-agent outbox status` before the agent ever ran).
pub const EX_NOINPUT: u8 = 66;

/// `EX_DATAERR` from sysexits.h: the input names something that is not
/// there (`benchtel-agent outbox rejected show ID` with an unknown id).
pub const EX_DATAERR: u8 = 65;

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

/// Prints every configuration error and returns `EX_CONFIG` (78).
pub fn config_failed(program: &str, errors: &ConfigErrors) -> ExitCode {
    eprintln!(
        "{program}: the configuration has {} error(s):",
        errors.0.len()
    );
    for e in &errors.0 {
        eprintln!("  {e}");
    }
    ExitCode::from(u8::try_from(EX_CONFIG).unwrap_or(78))
}
