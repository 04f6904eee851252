//! `benchtel-watch`: turns bench heartbeats into liveness, metrics and
//! bench-offline alerts.

use std::process::ExitCode;

use benchtel::cli::Cli;
use benchtel::watch::config::{self, WatchConfig};
use clap::Subcommand;

#[derive(Subcommand)]
enum Command {
    /// Run the watch (the default)
    Run,
    /// Check the configuration and exit: 0 if valid, 78 if not
    Validate,
}

fn main() -> ExitCode {
    let cli = Cli::<Command>::parse_with(
        "Watches test benches: heartbeat age, liveness and bench-offline alerts",
        "Configuration file [default: $BENCHTEL_WATCH_CONFIG, else /etc/benchtel/watch.toml]",
    );
    let loaded = cli
        .common
        .load_config("benchtel-watch", config::load, |c| &mut c.log);
    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cfg),
        Command::Validate => {
            println!("configuration is valid: {}", cfg.summary());
            if let Some(warning) = cfg.alerts.nowhere() {
                eprintln!("benchtel-watch: warning: {warning}");
            }
            Ok(())
        }
    };
    benchtel::cli::exit_status("benchtel-watch", result)
}

fn run(cfg: WatchConfig) -> anyhow::Result<()> {
    benchtel::service::run_until_signalled(|cancel| benchtel::watch::run::run(cfg, cancel))?;
    Ok(())
}
