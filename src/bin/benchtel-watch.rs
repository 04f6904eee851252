//! `benchtel-watch`: turns bench heartbeats into liveness, metrics and
//! bench-offline alerts.

use std::process::ExitCode;

use benchtel::cli::CommonArgs;
use benchtel::config::Env;
use benchtel::watch::config::{self, WatchConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Watches test benches: heartbeat age, liveness and bench-offline alerts",
    mut_arg("config", |a| a.help(
        "Configuration file [default: $BENCHTEL_WATCH_CONFIG, else /etc/benchtel/watch.toml]"
    ))
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
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
    let mut cfg = match config::load(cli.common.config.as_deref(), &Env::from_process()) {
        Ok(cfg) => cfg,
        Err(errors) => return benchtel::service::config_failed("benchtel-watch", &errors),
    };
    cli.common.apply(&mut cfg.log);
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cfg),
        Command::Validate => {
            println!("configuration is valid: {}", cfg.summary());
            Ok(())
        }
    };
    benchtel::cli::exit_status("benchtel-watch", result)
}

fn run(cfg: WatchConfig) -> anyhow::Result<()> {
    benchtel::service::run_until_signalled(|cancel| benchtel::watch::run::run(cfg, cancel))?;
    Ok(())
}
