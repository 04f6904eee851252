//! `benchtel-watch`: turns bench heartbeats into liveness, metrics and
//! bench-offline alerts.

use std::path::PathBuf;
use std::process::ExitCode;

use benchtel::config::{self, Env};
use benchtel::watch::config::WatchConfig;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    version,
    about = "Watches test benches: heartbeat age, liveness and bench-offline alerts"
)]
struct Cli {
    /// Configuration file [default: $BENCHTEL_WATCH_CONFIG, else /etc/benchtel/watch.toml]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format on stdout (overrides log.format)
    #[arg(long, global = true)]
    log_format: Option<Format>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the watch (the default)
    Run,
    /// Check the configuration and exit: 0 if valid, 78 if not
    Validate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut cfg = match benchtel::watch::config::load(cli.config.as_deref(), &Env::from_process()) {
        Ok(cfg) => cfg,
        Err(errors) => return benchtel::service::config_failed("benchtel-watch", &errors),
    };
    if let Some(format) = cli.log_format {
        cfg.log.format = match format {
            Format::Json => config::LogFormat::Json,
            Format::Text => config::LogFormat::Text,
        };
    }
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cfg),
        Command::Validate => {
            println!("configuration is valid: {}", cfg.summary());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchtel-watch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: WatchConfig) -> anyhow::Result<()> {
    benchtel::service::run_until_signalled(|cancel| benchtel::watch::run::run(cfg, cancel))?;
    Ok(())
}
