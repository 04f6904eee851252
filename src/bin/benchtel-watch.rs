//! `benchtel-watch`: turns bench heartbeats into liveness, metrics and
//! bench-offline alerts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use benchtel::config::{self, ConfigErrors, Env};
use benchtel::watch::config::WatchConfig;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

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
        Err(errors) => return config_failed(&errors),
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

fn config_failed(errors: &ConfigErrors) -> ExitCode {
    eprintln!(
        "benchtel-watch: the configuration has {} error(s):",
        errors.0.len()
    );
    for e in &errors.0 {
        eprintln!("  {e}");
    }
    ExitCode::from(u8::try_from(config::EX_CONFIG).unwrap_or(78))
}

fn run(cfg: WatchConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
        });
        benchtel::watch::run::run(cfg, cancel).await?;
        anyhow::Ok(())
    })
}
